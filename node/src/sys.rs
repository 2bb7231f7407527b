//! `$SYS/brokers/{node}/...`: broker statistics published (retained, QoS 0) every `sys_interval`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::message::{ByteString, Bytes, Message, MessageProperties, QoS};

/// Publishes the statistics once; returns how many topics were published.
pub fn publish_once(broker: &Broker) -> usize {
    let m = broker.metrics.snapshot();
    let uptime = broker.started.elapsed().as_secs();
    let stats: [(&str, String); 19] = [
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("uptime", uptime.to_string()),
        ("clients/connected", m.connections.to_string()),
        ("clients/total", m.connects_total.to_string()),
        ("sessions/count", broker.sessions.len().to_string()),
        ("subscriptions/count", broker.router.len().to_string()),
        ("retained/count", broker.retained.len().to_string()),
        ("retained/bytes", broker.retained.bytes().to_string()),
        ("messages/received", m.messages_received.to_string()),
        ("messages/sent", m.messages_sent.to_string()),
        ("bytes/received", m.bytes_received.to_string()),
        ("bytes/sent", m.bytes_sent.to_string()),
        (
            "messages/dropped",
            (m.dropped_queue_full + m.dropped_expired + m.dropped_too_large).to_string(),
        ),
        ("cluster/forward/dropped", m.forward_dropped.to_string()),
        (
            "cluster/forward/unconfirmed",
            m.forward_unconfirmed.to_string(),
        ),
        // What the configured limits refused (`[mqtt] max_*`).
        ("limits/retained_refused", m.retained_refused.to_string()),
        (
            "limits/subscriptions_refused",
            m.subscriptions_refused.to_string(),
        ),
        (
            "limits/connections_refused",
            m.connections_refused.to_string(),
        ),
        ("limits/api_refused", m.api_refused.to_string()),
    ];
    for (suffix, value) in &stats {
        let msg = Message {
            topic: ByteString::from(format!("$SYS/brokers/{}/{suffix}", broker.node_id)),
            payload: Bytes::from(value.clone().into_bytes()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: None,
        };
        // `None`: the broker's own messages bypass client authorization.
        let _ = broker.publish(None, msg);
    }
    stats.len()
}

/// Runs the periodic publisher until `stop` is cancelled.
pub fn spawn(rt: &tokio::runtime::Handle, broker: Arc<Broker>, stop: CancellationToken) {
    let secs = broker.limits.sys_interval;
    if secs == 0 {
        return;
    }
    rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(u64::from(secs)));
        loop {
            tokio::select! {
                _ = tick.tick() => { publish_once(&broker); }
                () = stop.cancelled() => break,
            }
        }
    });
}
