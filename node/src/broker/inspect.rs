//! What an operator looks up on this node (`GET /api/v1/clients`, `/subscriptions`, `/routes`,
//! `/stats`): read from the sessions and counters when asked. `cluster/` asks every member and
//! the API merges the answers.

use std::collections::BTreeSet;

use realmq_api::{ClientView, Inspect, NodeStats, RouteView, SubscriptionView};
use serde_json::Value;

use super::Broker;
use crate::message::Protocol;
use crate::routing::topic::filter_matches;

impl Broker {
    /// This node's rows for `query`, as JSON (they travel between nodes so).
    pub fn inspect(&self, query: &Inspect) -> Vec<Value> {
        let rows: Result<Vec<Value>, _> = match query {
            Inspect::Clients { clientid, username } => self
                .client_views(clientid.as_deref(), username.as_deref())
                .into_iter()
                .map(serde_json::to_value)
                .collect(),
            Inspect::Subscriptions { clientid } => self
                .subscription_views(clientid.as_deref())
                .into_iter()
                .map(serde_json::to_value)
                .collect(),
            Inspect::Routes { topic } => self
                .route_views(topic.as_deref())
                .into_iter()
                .map(serde_json::to_value)
                .collect(),
            Inspect::Stats => serde_json::to_value(self.node_stats()).map(|v| vec![v]),
            Inspect::Metrics => self.metrics_row().map(|v| vec![v]),
            Inspect::Rules { id } => Ok(self.rules.metric_rows(*id)),
        };
        rows.unwrap_or_default()
    }

    fn client_views(&self, clientid: Option<&str>, username: Option<&str>) -> Vec<ClientView> {
        let cells = match clientid {
            Some(id) => self.sessions.get(id).into_iter().collect(),
            None => self.sessions.cells(),
        };
        cells
            .into_iter()
            .filter_map(|cell| {
                let inner = cell.lock();
                let conn = inner.conn.as_ref()?;
                let user = inner.username.as_deref();
                if username.is_some_and(|u| Some(u) != user) {
                    return None;
                }
                let info = conn.info;
                Some(ClientView {
                    clientid: cell.client_id.to_string(),
                    username: user.map(String::from),
                    node: self.node_id,
                    ip_address: info.peer.map(|p| p.ip().to_string()),
                    port: info.peer.map(|p| p.port()),
                    proto_ver: match info.protocol {
                        Some(Protocol::V5) => 5,
                        _ => 4,
                    },
                    keepalive: info.keep_alive,
                    clean_start: info.clean_start,
                    expiry_interval: inner.expiry_interval,
                    connected_at: realmq_api::format_ms(info.connected_at),
                    subscriptions_cnt: inner.state.subscriptions.len(),
                    inflight: inner.state.inflight(),
                    mqueue_len: inner.state.queued(),
                })
            })
            .collect()
    }

    fn subscription_views(&self, clientid: Option<&str>) -> Vec<SubscriptionView> {
        let cells = match clientid {
            Some(id) => self.sessions.get(id).into_iter().collect(),
            None => self.sessions.cells(),
        };
        let mut out = Vec::new();
        for cell in cells {
            let inner = cell.lock();
            if inner.ended {
                continue;
            }
            for (filter, opts) in &inner.state.subscriptions {
                out.push(SubscriptionView {
                    node: self.node_id,
                    clientid: cell.client_id.to_string(),
                    topic: filter.to_string(),
                    qos: opts.qos as u8,
                });
            }
        }
        out
    }

    /// The distinct filters this node's sessions subscribe to; with `topic`, those a message on
    /// it would match (a topic name), or that filter itself (a filter).
    fn route_views(&self, topic: Option<&str>) -> Vec<RouteView> {
        let mut filters = BTreeSet::new();
        for cell in self.sessions.cells() {
            let inner = cell.lock();
            if inner.ended {
                continue;
            }
            filters.extend(
                inner
                    .state
                    .subscriptions
                    .keys()
                    .filter(|f| match topic {
                        None => true,
                        Some(t) if t.contains(['+', '#']) => &***f == t,
                        // A shared subscription routes as its filter: `$share/{group}/{filter}`.
                        Some(t) => filter_matches(unshared(f), t),
                    })
                    .map(|f| f.to_string()),
            );
        }
        filters
            .into_iter()
            .map(|topic| RouteView {
                topic,
                node: self.node_id,
            })
            .collect()
    }

    /// Every counter of `metrics.rs`, with the node's id.
    fn metrics_row(&self) -> Result<Value, serde_json::Error> {
        let mut row = serde_json::to_value(self.metrics.snapshot())?;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        if let Value::Object(m) = &mut row {
            m.insert("node".into(), self.node_id.into());
            m.insert(
                "auth_failures".into(),
                load(&self.metrics.auth_failures).into(),
            );
            for (q, (r, s)) in self
                .metrics
                .received_by_qos
                .iter()
                .zip(&self.metrics.sent_by_qos)
                .enumerate()
            {
                m.insert(format!("messages_received_qos{q}"), load(r).into());
                m.insert(format!("messages_sent_qos{q}"), load(s).into());
            }
        }
        Ok(row)
    }

    fn node_stats(&self) -> NodeStats {
        let m = self.metrics.snapshot();
        NodeStats {
            node: self.node_id,
            connections: m.connections,
            sessions: self.sessions.len(),
            subscriptions: self.router.len(),
            retained: self.retained.len(),
            messages_received: m.messages_received,
            messages_sent: m.messages_sent,
            messages_dropped: m.dropped_queue_full + m.dropped_expired + m.dropped_too_large,
            bytes_received: m.bytes_received,
            bytes_sent: m.bytes_sent,
            uptime_seconds: self.started.elapsed().as_secs(),
        }
    }
}

/// The filter of a shared subscription (`$share/{group}/{filter}`), or `f` itself.
fn unshared(f: &str) -> &str {
    f.strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(f, |(_, filter)| filter)
}
