//! How raft payloads, forwarded messages and handed-over sessions are put into the proto
//! envelopes: postcard, as the store encodes them on disk (compact, and the same types).
//! Errors, rare and debugged by people, travel as JSON.

use std::sync::Arc;

use realmq_raft_store::client::ForwardError;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::message::{Delivery, Message, QoS};
use crate::session::{InflightFlow, Undelivered};

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<bytes::Bytes, postcard::Error> {
    postcard::to_allocvec(value).map(bytes::Bytes::from)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireForwardError {
    delivered: bool,
    message: String,
}

/// A leader's refusal of a forwarded command, for the reply.
pub fn forward_error_bytes(e: &ForwardError) -> bytes::Bytes {
    let (delivered, message) = match e {
        ForwardError::NotDelivered(m) => (false, m.clone()),
        ForwardError::Unknown(m) => (true, m.clone()),
    };
    serde_json::to_vec(&WireForwardError { delivered, message })
        .unwrap_or_default()
        .into()
}

pub fn forward_error(bytes: &[u8]) -> ForwardError {
    match serde_json::from_slice::<WireForwardError>(bytes) {
        Ok(WireForwardError {
            delivered: false,
            message,
        }) => ForwardError::NotDelivered(message),
        Ok(WireForwardError { message, .. }) => ForwardError::Unknown(message),
        Err(e) => ForwardError::Unknown(format!("undecodable error from the leader: {e}")),
    }
}

/// A message as it crosses to a peer: the plain-data record a retained message is replicated
/// as, with the remaining expiry in milliseconds (not an `Instant` of this process, nor a wall
/// time that would depend on the nodes' clocks agreeing), the retain flag and the publisher.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireMessage {
    record: realmq_raft_store::model::RetainedRecord,
    retain: bool,
    expires_in_ms: Option<u64>,
    publisher: Option<String>,
}

fn wire_message(m: &Message) -> WireMessage {
    let mut record = crate::broker::retained_record(m);
    record.expires_at = None;
    WireMessage {
        record,
        retain: m.retain,
        expires_in_ms: m.expires_at.map(|at| {
            at.saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        }),
        publisher: m.publisher.as_deref().map(str::to_string),
    }
}

fn message(w: WireMessage) -> Message {
    let mut m = crate::broker::retained_message(w.record);
    m.retain = w.retain;
    m.expires_at = w
        .expires_in_ms
        .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms));
    m.publisher = w.publisher.map(|p| Arc::from(p.as_str()));
    m
}

pub fn encode_message(m: &Message) -> Result<bytes::Bytes, postcard::Error> {
    encode(&wire_message(m))
}

pub fn decode_message(bytes: &[u8]) -> Result<Message, postcard::Error> {
    decode(bytes).map(message)
}

/// One session's copy of a message, as a session's undelivered messages travel.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireDelivery {
    message: WireMessage,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<u32>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct WireUndelivered {
    /// (packet id, PUBREL sent, delivery)
    inflight: Vec<(u16, bool, WireDelivery)>,
    queue: Vec<WireDelivery>,
    inbound_qos2: Vec<u16>,
}

fn wire_delivery(d: &Delivery) -> WireDelivery {
    WireDelivery {
        message: wire_message(&d.msg),
        qos: d.qos as u8,
        retain: d.retain,
        subscription_ids: d.subscription_ids.clone(),
    }
}

fn delivery(w: WireDelivery) -> Delivery {
    Delivery {
        msg: Arc::new(message(w.message)),
        qos: QoS::from_u8(w.qos).unwrap_or(QoS::AtMostOnce),
        retain: w.retain,
        subscription_ids: w.subscription_ids,
    }
}

pub fn encode_undelivered(u: &Undelivered) -> Result<bytes::Bytes, postcard::Error> {
    encode(&WireUndelivered {
        inflight: u
            .inflight
            .iter()
            .map(|f| (f.packet_id, f.released, wire_delivery(&f.delivery)))
            .collect(),
        queue: u.queue.iter().map(wire_delivery).collect(),
        inbound_qos2: u.inbound_qos2.clone(),
    })
}

pub fn decode_undelivered(bytes: &[u8]) -> Result<Undelivered, postcard::Error> {
    let w: WireUndelivered = decode(bytes)?;
    Ok(Undelivered {
        inflight: w
            .inflight
            .into_iter()
            .map(|(packet_id, released, d)| InflightFlow {
                packet_id,
                released,
                delivery: delivery(d),
            })
            .collect(),
        queue: w.queue.into_iter().map(delivery).collect(),
        inbound_qos2: w.inbound_qos2,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::message::{ByteString, Bytes, Message, MessageProperties, QoS};

    #[test]
    fn a_forwarded_message_keeps_everything_but_the_clock() {
        let m = Message {
            topic: ByteString::from("a/b"),
            payload: Bytes::from_static(b"p"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: MessageProperties {
                payload_is_utf8: true,
                content_type: Some(ByteString::from("text/plain")),
                response_topic: Some(ByteString::from("r")),
                correlation_data: Some(Bytes::from_static(b"c")),
                user_properties: vec![(ByteString::from("k"), ByteString::from("v"))],
            },
            expires_at: Some(Instant::now() + Duration::from_secs(30)),
            publisher: Some(Arc::from("pub")),
        };
        let back = super::decode_message(&super::encode_message(&m).unwrap()).unwrap();
        assert_eq!(
            (
                &back.topic,
                &back.payload,
                back.qos,
                back.retain,
                &back.publisher
            ),
            (&m.topic, &m.payload, m.qos, m.retain, &m.publisher)
        );
        assert_eq!(back.properties.content_type, m.properties.content_type);
        assert_eq!(
            back.properties.user_properties,
            m.properties.user_properties
        );
        assert_eq!(
            back.properties.correlation_data,
            m.properties.correlation_data
        );
        assert!(back.properties.payload_is_utf8);
        let left = back.remaining_expiry(Instant::now()).unwrap();
        assert!((29..=30).contains(&left), "{left} s of expiry left");
    }

    #[test]
    fn undelivered_messages_travel_whole() {
        use crate::message::Delivery;
        use crate::session::{InflightFlow, Undelivered};
        let d = |t: &str, qos| Delivery {
            msg: Arc::new(Message {
                topic: ByteString::from(t.to_string()),
                payload: Bytes::from_static(b"p"),
                qos,
                retain: false,
                properties: MessageProperties::default(),
                expires_at: None,
                publisher: None,
            }),
            qos,
            retain: true,
            subscription_ids: vec![3, 9],
        };
        let u = Undelivered {
            inflight: vec![InflightFlow {
                packet_id: 42,
                released: true,
                delivery: d("a", QoS::ExactlyOnce),
            }],
            queue: vec![d("b", QoS::AtLeastOnce)],
            inbound_qos2: vec![7],
        };
        let back = super::decode_undelivered(&super::encode_undelivered(&u).unwrap()).unwrap();
        let f = &back.inflight[0];
        assert_eq!((f.packet_id, f.released), (42, true));
        assert_eq!(
            (&*f.delivery.msg.topic, f.delivery.qos),
            ("a", QoS::ExactlyOnce)
        );
        let q = &back.queue[0];
        assert_eq!(
            (&*q.msg.topic, q.qos, q.retain, &q.subscription_ids),
            ("b", QoS::AtLeastOnce, true, &vec![3, 9])
        );
        assert_eq!(back.inbound_qos2, [7]);
    }
}
