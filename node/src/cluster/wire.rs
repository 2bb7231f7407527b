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

/// A message as it crosses to a peer: plain data, with the remaining expiry in milliseconds
/// rather than an `Instant` of this process.
#[derive(serde::Serialize, serde::Deserialize)]
struct WireMessage {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    payload_is_utf8: bool,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    user_properties: Vec<(String, String)>,
    expires_in_ms: Option<u64>,
    publisher: Option<String>,
}

pub fn encode_message(m: &crate::message::Message) -> Result<bytes::Bytes, postcard::Error> {
    let now = std::time::Instant::now();
    let p = &m.properties;
    encode(&WireMessage {
        topic: m.topic.to_string(),
        payload: m.payload.to_vec(),
        qos: m.qos as u8,
        retain: m.retain,
        payload_is_utf8: p.payload_is_utf8,
        content_type: p.content_type.as_ref().map(|s| s.to_string()),
        response_topic: p.response_topic.as_ref().map(|s| s.to_string()),
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        user_properties: p
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        expires_in_ms: m
            .expires_at
            .map(|at| at.saturating_duration_since(now).as_millis() as u64),
        publisher: m.publisher.as_deref().map(str::to_string),
    })
}

pub fn decode_message(bytes: &[u8]) -> Result<crate::message::Message, postcard::Error> {
    use crate::message::{ByteString, Bytes, Message, MessageProperties, QoS};
    let w: WireMessage = decode(bytes)?;
    Ok(Message {
        topic: ByteString::from(w.topic),
        payload: Bytes::from(w.payload),
        qos: QoS::from_u8(w.qos).unwrap_or(QoS::AtMostOnce),
        retain: w.retain,
        properties: MessageProperties {
            payload_is_utf8: w.payload_is_utf8,
            content_type: w.content_type.map(ByteString::from),
            response_topic: w.response_topic.map(ByteString::from),
            correlation_data: w.correlation_data.map(Bytes::from),
            user_properties: w
                .user_properties
                .into_iter()
                .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                .collect(),
        },
        expires_at: w
            .expires_in_ms
            .map(|ms| std::time::Instant::now() + std::time::Duration::from_millis(ms)),
        publisher: w.publisher.map(|p| std::sync::Arc::from(p.as_str())),
    })
}
