//! Broker-level messages: what crosses from the MQTT edge into routing and sessions, and back.
//!
//! Nothing here names an ntex-mqtt type; `mqtt/` converts wire packets into these and back.
//! Payloads and topics are `ntex_bytes` buffers so a publish is routed to every subscriber without
//! copying its bytes (the codec hands them out, and the encoder takes them back by reference count).

use std::sync::Arc;
use std::time::Instant;

pub use ntex_bytes::{ByteString, Bytes};

/// MQTT quality of service. Ordered, so `min`/`max` give the downgraded / upgraded level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    #[default]
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// The MQTT protocol revision a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V311,
    V5,
}

/// MQTT 5 application-message properties that travel with a message from publisher to subscriber.
/// Empty for MQTT 3.1.1 publishers; ignored when delivering to MQTT 3.1.1 subscribers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    pub payload_is_utf8: bool,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(ByteString, ByteString)>,
}

/// An application message as the broker routes it: one allocation shared by every delivery.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    /// Absolute expiry from the v5 Message Expiry Interval; `None` never expires.
    pub expires_at: Option<Instant>,
    /// Client id of the publishing session, for No Local and the hash-by-clientid share strategy.
    pub publisher: Option<Arc<str>>,
}

impl Message {
    /// Seconds left before expiry (rounded up), as forwarded in Message Expiry Interval;
    /// `Some(0)` means it has expired and must not be sent.
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            if left.is_zero() {
                0
            } else {
                u32::try_from(left.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)
            }
        })
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.remaining_expiry(now) == Some(0)
    }
}

/// One subscriber's copy of a message: the granted QoS, the retain flag it sees, and the
/// identifiers of every one of its subscriptions that matched.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<u32>,
}

/// v5 Retain Handling subscription option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// Send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe,
    /// Send retained messages only if the subscription did not exist before.
    SendIfNew,
    /// Do not send retained messages at subscribe.
    DoNotSend,
}

/// Options of one subscription, as granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: RetainHandling,
    pub subscription_id: Option<u32>,
}

/// The will message a connection registered in its CONNECT.
#[derive(Debug, Clone)]
pub struct Will {
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    pub message_expiry: Option<u32>,
    /// v5 Will Delay Interval in seconds (0 for v3.1.1).
    pub delay: u32,
}

/// Why the server closes a connection, mapped to a v5 DISCONNECT reason code at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Another connection took over this client id (0x8E).
    SessionTakenOver,
    /// The node is shutting down (0x8B).
    ServerShuttingDown,
    /// An administrator or the device registry revoked the client (0x87).
    NotAuthorized,
    /// An operator disconnected the client (`DELETE /api/v1/clients/{id}`, 0x98).
    Kicked,
}

impl CloseReason {
    /// For the log.
    pub fn describe(self) -> &'static str {
        match self {
            CloseReason::SessionTakenOver => "taken over by another connection",
            CloseReason::ServerShuttingDown => "the node is shutting down",
            CloseReason::NotAuthorized => "its credentials were revoked",
            CloseReason::Kicked => "disconnected by an operator",
        }
    }
}
