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
