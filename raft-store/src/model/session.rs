use serde::{Deserialize, Serialize};

/// An MQTT session as the cluster knows it: which node owns the client id and what a resuming
/// connection (on any node, after any restart) gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub client_id: String,
    pub node_id: u64,
    /// The owning connection, unique on its node: a late disconnect of a connection that was
    /// taken over must not touch its successor's record.
    pub conn_id: u64,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    pub subscriptions: Vec<SubscriptionRecord>,
    pub connected: bool,
    pub disconnected_at: Option<i64>,
}

/// One subscription with its granted options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// As the client sent it, including a `$share/{group}/` prefix.
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0, 1 or 2 as in MQTT 5.
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

/// A retained message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetainedRecord {
    pub topic: String,
    #[serde(with = "serde_bytes_b64")]
    pub payload: Vec<u8>,
    pub qos: u8,
    /// Absolute expiry (Unix ms) from the Message Expiry Interval.
    pub expires_at: Option<i64>,
    pub payload_is_utf8: bool,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    #[serde(with = "serde_opt_bytes_b64", default)]
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}

/// Payload bytes as base64 in the JSON encoding, not as an array of numbers.
mod serde_bytes_b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

mod serde_opt_bytes_b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => super::serde_bytes_b64::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::serde_bytes_b64")] Vec<u8>);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}
