//! Broker counters: plain relaxed atomics bumped on the hot path, read by `$SYS`, the API and
//! the Prometheus endpoint (`prometheus.rs`) when asked.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub connects_total: AtomicU64,
    pub connects_refused: AtomicU64,
    pub messages_received: AtomicU64,
    pub messages_sent: AtomicU64,
    /// The same two, by QoS (0, 1, 2).
    pub received_by_qos: [AtomicU64; 3],
    pub sent_by_qos: [AtomicU64; 3],
    /// CONNECTs refused for their credentials (bad user name or password, not authorized).
    pub auth_failures: AtomicU64,
    pub bytes_received: AtomicU64,
    pub bytes_sent: AtomicU64,
    /// Dropped because a session queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Times a publisher's reading paused for a congested subscriber (backpressure).
    pub publisher_pauses: AtomicU64,
    /// Dropped because the Message Expiry Interval passed while queued.
    pub dropped_expired: AtomicU64,
    /// Dropped because they exceeded the receiver's Maximum Packet Size.
    pub dropped_too_large: AtomicU64,
    /// PUBLISH or SUBSCRIBE refused by the authorization seam.
    pub denied: AtomicU64,
    /// Publishes for another node's subscribers dropped because that peer's queue was full.
    pub forward_dropped: AtomicU64,
    /// QoS 1/2 publishes acknowledged to their publisher without a peer's confirmation (it had
    /// no link for `peer_ack_timeout_ms`); still delivered if it comes back.
    pub forward_unconfirmed: AtomicU64,
    /// Retained publishes refused at `max_retained` / `max_retained_bytes`.
    pub retained_refused: AtomicU64,
    /// Subscriptions refused at `max_subscriptions`.
    pub subscriptions_refused: AtomicU64,
    /// Connections refused at `max_connections`.
    pub connections_refused: AtomicU64,
    /// REST requests refused at `[api] max_text` / `max_topics`.
    pub api_refused: AtomicU64,
}

/// A point-in-time copy of the counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq, Eq)]
pub struct Snapshot {
    pub connections: i64,
    pub connects_total: u64,
    pub connects_refused: u64,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub dropped_queue_full: u64,
    pub publisher_pauses: u64,
    pub dropped_expired: u64,
    pub dropped_too_large: u64,
    pub denied: u64,
    pub forward_dropped: u64,
    pub forward_unconfirmed: u64,
    pub retained_refused: u64,
    pub subscriptions_refused: u64,
    pub connections_refused: u64,
    pub api_refused: u64,
}

pub fn inc(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            connections: self.connections.load(Ordering::Relaxed),
            connects_total: g(&self.connects_total),
            connects_refused: g(&self.connects_refused),
            messages_received: g(&self.messages_received),
            messages_sent: g(&self.messages_sent),
            bytes_received: g(&self.bytes_received),
            bytes_sent: g(&self.bytes_sent),
            dropped_queue_full: g(&self.dropped_queue_full),
            publisher_pauses: g(&self.publisher_pauses),
            dropped_expired: g(&self.dropped_expired),
            dropped_too_large: g(&self.dropped_too_large),
            denied: g(&self.denied),
            forward_dropped: g(&self.forward_dropped),
            forward_unconfirmed: g(&self.forward_unconfirmed),
            retained_refused: g(&self.retained_refused),
            subscriptions_refused: g(&self.subscriptions_refused),
            connections_refused: g(&self.connections_refused),
            api_refused: g(&self.api_refused),
        }
    }
}
