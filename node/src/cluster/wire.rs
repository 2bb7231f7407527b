//! How raft payloads are put into the proto envelopes: postcard, as the store encodes them on
//! disk (compact, and the same types). Errors, rare and debugged by people, travel as JSON.

use realmq_raft_store::client::ForwardError;
use serde::Serialize;
use serde::de::DeserializeOwned;

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

pub fn encode_message(m: &crate::message::Message) -> Result<bytes::Bytes, postcard::Error> {
    let mut record = crate::broker::retained_record(m);
    record.expires_at = None;
    encode(&WireMessage {
        record,
        retain: m.retain,
        expires_in_ms: m.expires_at.map(|at| {
            at.saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64
        }),
        publisher: m.publisher.as_deref().map(str::to_string),
    })
}

pub fn decode_message(bytes: &[u8]) -> Result<crate::message::Message, postcard::Error> {
    let w: WireMessage = decode(bytes)?;
    let mut m = crate::broker::retained_message(w.record);
    m.retain = w.retain;
    m.expires_at = w
        .expires_in_ms
        .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms));
    m.publisher = w.publisher.map(|p| std::sync::Arc::from(p.as_str()));
    Ok(m)
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
}
