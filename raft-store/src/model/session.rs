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
    /// The user name of the connection that last owned the session: the ACL's `%u` and
    /// `username` rules decide its subscriptions' deliveries while it is offline.
    pub username: Option<String>,
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
    pub payload: Vec<u8>,
    pub qos: u8,
    /// Absolute expiry (Unix ms) from the Message Expiry Interval.
    pub expires_at: Option<i64>,
    pub payload_is_utf8: bool,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
    pub user_properties: Vec<(String, String)>,
}
