//! What the broker records in the replicated store, and how it comes back after a restart.
//!
//! Sessions (owner, expiry, subscriptions) and retained messages are replicated; what offline
//! sessions hold (queued messages, in-flight flows) is kept on this node's disk (`spool.rs`): a
//! restarted node resumes persistent sessions with their subscriptions, every retained message
//! and the messages that waited for them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use realmq_raft_store::client::BoxFuture;
use realmq_raft_store::model::{RetainedRecord, SessionRecord, SubscriptionRecord};
use realmq_raft_store::{Command, WriteError};

use super::Broker;
use crate::auth::ClientInfo;
use crate::message::{
    ByteString, Bytes, CloseReason, Message, MessageProperties, QoS, RetainHandling, SubOptions,
};
use crate::routing::topic::parse_filter;
use crate::session::SessionCell;

/// Wall-clock milliseconds, the timestamp unit of replicated records.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(super) fn subscription_record(filter: &str, o: &SubOptions) -> SubscriptionRecord {
    SubscriptionRecord {
        filter: filter.to_string(),
        qos: o.qos as u8,
        no_local: o.no_local,
        retain_as_published: o.retain_as_published,
        retain_handling: match o.retain_handling {
            RetainHandling::SendAtSubscribe => 0,
            RetainHandling::SendIfNew => 1,
            RetainHandling::DoNotSend => 2,
        },
        subscription_id: o.subscription_id,
    }
}

fn sub_options(r: &SubscriptionRecord) -> SubOptions {
    SubOptions {
        qos: QoS::from_u8(r.qos).unwrap_or(QoS::AtMostOnce),
        no_local: r.no_local,
        retain_as_published: r.retain_as_published,
        retain_handling: match r.retain_handling {
            1 => RetainHandling::SendIfNew,
            2 => RetainHandling::DoNotSend,
            _ => RetainHandling::SendAtSubscribe,
        },
        subscription_id: r.subscription_id,
    }
}

/// Converts between the clocks: `Instant` for timers in memory, Unix ms when replicated.
fn expiry_to_wall(at: Option<Instant>) -> Option<i64> {
    at.map(|t| {
        now_ms()
            + i64::try_from(t.saturating_duration_since(Instant::now()).as_millis())
                .unwrap_or(i64::MAX)
    })
}

fn expiry_from_wall(at: Option<i64>) -> Option<Instant> {
    at.map(|ms| Instant::now() + Duration::from_millis(u64::try_from(ms - now_ms()).unwrap_or(0)))
}

/// A message as plain data (the replicated form of a retained message; also how a message
/// crosses to a peer, `cluster/wire.rs`).
pub(crate) fn retained_record(m: &Message) -> RetainedRecord {
    let p = &m.properties;
    RetainedRecord {
        topic: m.topic.to_string(),
        payload: m.payload.to_vec(),
        qos: m.qos as u8,
        expires_at: expiry_to_wall(m.expires_at),
        payload_is_utf8: p.payload_is_utf8,
        content_type: p.content_type.as_ref().map(|s| s.to_string()),
        response_topic: p.response_topic.as_ref().map(|s| s.to_string()),
        correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
        user_properties: p
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

pub(crate) fn retained_message(r: RetainedRecord) -> Message {
    Message {
        topic: ByteString::from(r.topic),
        payload: Bytes::from(r.payload),
        qos: QoS::from_u8(r.qos).unwrap_or(QoS::AtMostOnce),
        retain: true,
        properties: MessageProperties {
            payload_is_utf8: r.payload_is_utf8,
            content_type: r.content_type.map(ByteString::from),
            response_topic: r.response_topic.map(ByteString::from),
            correlation_data: r.correlation_data.map(Bytes::from),
            user_properties: r
                .user_properties
                .into_iter()
                .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                .collect(),
        },
        expires_at: expiry_from_wall(r.expires_at),
        publisher: None,
    }
}

/// What `Broker::restore` brought back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    pub sessions: usize,
    pub retained: usize,
    /// Messages back in offline sessions' queues.
    pub queued: usize,
}

impl Broker {
    /// Queues a retained message (or its clearing) for replication. `$SYS` topics are
    /// regenerated on every interval, so they are not persisted.
    ///
    /// With `confirmed`, returns what resolves once the cluster has it (an acknowledged QoS 1/2
    /// retained message is replicated before its PUBACK / PUBREC), `Ok` or the write's error.
    pub(super) fn persist_retained(
        &self,
        msg: &Message,
        confirmed: bool,
    ) -> Option<BoxFuture<'static, Result<(), WriteError>>> {
        if msg.topic.starts_with("$SYS/") {
            return None;
        }
        let cmd = Command::SetRetained {
            record: retained_record(msg),
        };
        if confirmed {
            return Some(self.meta.record_confirmed(cmd));
        }
        self.meta.record(cmd);
        None
    }

    /// Rebuilds the in-memory broker from the replicated records after a start: retained
    /// messages, and this node's persistent sessions (offline, with their subscriptions and the
    /// rest of their expiry). Connections the previous process held are recorded as ended.
    pub fn restore(
        self: &Arc<Self>,
        sessions: Vec<SessionRecord>,
        retained: Vec<RetainedRecord>,
        mut spooled: std::collections::HashMap<String, Vec<Vec<u8>>>,
    ) -> Restored {
        let mut restored = Restored::default();
        let now = now_ms();
        for r in retained {
            if r.expires_at.is_some_and(|at| at <= now) {
                continue;
            }
            self.retained.set(Arc::new(retained_message(r)));
            restored.retained += 1;
        }
        for s in sessions.into_iter().filter(|s| s.node_id == self.node_id) {
            if s.connected {
                self.meta.record(Command::ClientDisconnected {
                    client_id: s.client_id.clone(),
                    node_id: s.node_id,
                    conn_id: s.conn_id,
                    at: now,
                });
            }
            if s.expiry_interval == 0 {
                continue;
            }
            let gone_at = if s.connected {
                now
            } else {
                s.disconnected_at.unwrap_or(now)
            };
            let away = u32::try_from((now - gone_at).max(0) / 1000).unwrap_or(u32::MAX);
            if s.expiry_interval != u32::MAX && away >= s.expiry_interval {
                self.meta.record(Command::RemoveSession {
                    client_id: s.client_id,
                    owner: Some(self.node_id),
                });
                continue;
            }
            let cell = self
                .sessions
                .restore(Arc::from(s.client_id.as_str()), s.expiry_interval);
            let client = ClientInfo {
                client_id: cell.client_id.clone(),
                username: s.username.as_deref().map(Arc::from),
                scope: None,
            };
            {
                let mut inner = cell.lock();
                inner.username = client.username.clone();
                for sub in &s.subscriptions {
                    let Ok(spec) = parse_filter(&sub.filter) else {
                        continue;
                    };
                    let opts = sub_options(sub);
                    let guard = self.auth.subscribe_access(&client, spec.filter).guard;
                    self.add_subscription(&cell, spec, opts, guard);
                    inner
                        .state
                        .subscriptions
                        .insert(ByteString::from(sub.filter.clone()), opts);
                }
            }
            if let Some(entries) = spooled.remove(&s.client_id) {
                restored.queued += entries.len();
                self.restore_spooled(&cell, &entries);
            }
            if s.expiry_interval != u32::MAX {
                let me = self.clone();
                let generation = cell.lock().generation;
                self.after(s.expiry_interval - away, async move {
                    me.end_session(&cell, generation, &client);
                });
            }
            restored.sessions += 1;
        }
        // Entries of sessions that ended while the node was down.
        for client_id in spooled.into_keys() {
            self.spool_clear(&Arc::from(client_id.as_str()));
        }
        restored
    }

    /// Rebuilds a session that lived on another node from its replicated record: its
    /// subscriptions, decided again for this connection. Returns whether there was one.
    /// (Messages queued on the other node come by handover, `handover.rs`.)
    pub(super) fn resume_from_record(&self, cell: &Arc<SessionCell>, client: &ClientInfo) -> bool {
        let record = match self.registry.session(&cell.client_id) {
            Ok(Some(r)) if !r.subscriptions.is_empty() => r,
            Ok(_) => return false,
            Err(e) => {
                tracing::warn!(client_id = %cell.client_id, error = %e, "failed to read a session record");
                return false;
            }
        };
        let mut inner = cell.lock();
        for sub in &record.subscriptions {
            let Ok(spec) = parse_filter(&sub.filter) else {
                continue;
            };
            let access = self.auth.subscribe_access(client, spec.filter);
            if !access.granted {
                continue;
            }
            let opts = sub_options(sub);
            self.add_subscription(cell, spec, opts, access.guard);
            inner
                .state
                .subscriptions
                .insert(ByteString::from(sub.filter.clone()), opts);
        }
        true
    }

    /// Disconnects `client_id`'s current connection, if any (a disabled or deleted device).
    pub fn kick(&self, client_id: &str, reason: CloseReason) -> bool {
        let Some(cell) = self.sessions.get(client_id) else {
            return false;
        };
        let link = cell.lock().conn.clone();
        link.map(|l| l.close(reason)).is_some()
    }
}
