//! Connection lifecycle: CONNECT (client id, authentication, session open or takeover), the end of
//! a connection (will message, session expiry) and server shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use realmq_raft_store::Command;
use realmq_raft_store::model::SessionRecord;

use super::Broker;
use super::persist::now_ms;
use crate::auth::{AuthError, ClientInfo, ConnectInfo};
use crate::message::{ByteString, Bytes, CloseReason, Protocol, Will};
use crate::metrics::inc;
use crate::session::{ConnLink, Detached, SessionCell};

/// A CONNECT as the core sees it.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    pub protocol: Protocol,
    /// May be empty: the broker assigns one where the protocol allows.
    pub client_id: ByteString,
    pub clean_start: bool,
    /// Session Expiry Interval in seconds; v3.1.1 maps clean session to 0 and persistent to never.
    pub session_expiry: u32,
    /// The client's Receive Maximum (65535 for v3.1.1).
    pub receive_max: u16,
    /// The keep-alive the client asked for, in seconds.
    pub keep_alive: u16,
    pub username: Option<ByteString>,
    pub password: Option<Bytes>,
    pub peer: Option<SocketAddr>,
    /// The common name of the client certificate a TLS listener verified: the client's user
    /// name, standing in for its password.
    pub certified: Option<String>,
}

/// Why a CONNECT is refused; the edge maps it to the version's CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectRefused {
    /// v3.1.1 0x02 / v5 0x85.
    IdentifierRejected,
    /// v3.1.1 0x04 / v5 0x86.
    BadCredentials,
    /// v3.1.1 0x05 / v5 0x87.
    NotAuthorized,
    /// v3.1.1 0x03 / v5 0x88.
    Unavailable,
    /// The node holds `max_connections` already: v3.1.1 0x03 / v5 0x97.
    QuotaExceeded,
}

impl From<AuthError> for ConnectRefused {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::BadCredentials => ConnectRefused::BadCredentials,
            AuthError::NotAuthorized => ConnectRefused::NotAuthorized,
            AuthError::Unavailable => ConnectRefused::Unavailable,
        }
    }
}

/// An accepted connection, attached to its session.
pub struct Accepted {
    pub client: ClientInfo,
    /// True when the broker chose the client id (v5 Assigned Client Identifier).
    pub assigned_client_id: bool,
    pub session: Arc<SessionCell>,
    pub link: Arc<ConnLink>,
    /// CONNACK Session Present.
    pub present: bool,
    /// The Session Expiry Interval in force, after the server's cap.
    pub session_expiry: u32,
}

/// What the edge reports when a connection ends.
pub struct Closed {
    pub client: ClientInfo,
    pub session: Arc<SessionCell>,
    pub conn_id: u64,
    /// The will still registered: `None` after a normal DISCONNECT (reason 0x00).
    pub will: Option<Will>,
    /// Why the server closed it, if it did.
    pub server_reason: Option<CloseReason>,
}

/// MQTT wildcards (and NUL) in a client id or user name, which ACL placeholders would carry
/// into topic filters.
fn has_wildcard(name: &str) -> bool {
    name.contains(['+', '#', '\0'])
}

impl Broker {
    /// Decides a CONNECT, and says so in the log (target `realmq::clients`, INFO: an operator
    /// follows devices coming and going, and lowers it with `[log] level` when it is too much).
    pub async fn connect(&self, req: ConnectRequest) -> Result<Accepted, ConnectRefused> {
        let (client_id, username, peer, protocol) = (
            req.client_id.clone(),
            req.username.clone(),
            req.peer,
            req.protocol,
        );
        let ip = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        let (keep_alive, clean_start) = (req.keep_alive, req.clean_start);
        let decided = self.admit(req).await;
        if let Ok(a) = &decided {
            self.client_connected_event(&a.client, peer, protocol, keep_alive, clean_start);
        }
        if let (Some(hooks), Ok(a)) = (self.webhooks.get(), &decided) {
            hooks.client_connected(&a.client, &ip, protocol);
            self.device_status(hooks, &a.client, true);
        }
        match &decided {
            Ok(a) => tracing::info!(
                target: "realmq::clients",
                client_id = %a.client.client_id,
                username = a.client.username.as_deref().unwrap_or(""),
                %ip,
                ?protocol,
                session_present = a.present,
                "client connected"
            ),
            Err(why) => tracing::info!(
                target: "realmq::clients",
                client_id = %client_id,
                username = username.as_deref().unwrap_or(""),
                %ip,
                ?protocol,
                reason = ?why,
                "client refused"
            ),
        }
        decided
    }

    /// Tells the hooks that want it when a registered device's connection comes or goes.
    fn device_status(&self, hooks: &crate::webhook::Webhooks, client: &ClientInfo, online: bool) {
        if !hooks.wants_devices() {
            return;
        }
        let Some(username) = client.username.as_deref() else {
            return;
        };
        if let Ok(Some(d)) = self.registry.device_by_username(username) {
            let device =
                serde_json::json!({"id": d.id, "name": d.name, "product_id": d.product_id});
            hooks.device_status(client, &device, online);
        }
    }

    async fn admit(&self, mut req: ConnectRequest) -> Result<Accepted, ConnectRefused> {
        let limit = i64::try_from(self.limits.max_connections).unwrap_or(i64::MAX);
        if self.metrics.connections.load(Ordering::Relaxed) >= limit {
            inc(&self.metrics.connections_refused, 1);
            return Err(self.refused(ConnectRefused::QuotaExceeded));
        }
        let (client_id, assigned) = if req.client_id.is_empty() {
            // v3.1.1 allows an empty id only with clean session [MQTT-3.1.3-8]; v5 always.
            if req.protocol == Protocol::V311 && !req.clean_start {
                return Err(self.refused(ConnectRefused::IdentifierRejected));
            }
            let id = format!("realmq-{:016x}", rand::random::<u64>());
            (Arc::<str>::from(id), true)
        } else if has_wildcard(&req.client_id) {
            // `%c` in an ACL rule must never turn into a wildcard.
            return Err(self.refused(ConnectRefused::IdentifierRejected));
        } else {
            (Arc::<str>::from(&*req.client_id), false)
        };
        let certified = req.certified.take().map(ByteString::from);
        if let Some(cn) = &certified {
            // A certificate names one identity; a CONNECT claiming another is refused.
            if req.username.as_ref().is_some_and(|u| u != cn) {
                return Err(self.refused(ConnectRefused::NotAuthorized));
            }
            req.username = Some(cn.clone());
        }
        if req.username.as_deref().is_some_and(has_wildcard) {
            // Nor `%u`; no registry name can carry one either.
            return Err(self.refused(ConnectRefused::BadCredentials));
        }
        let info = ConnectInfo {
            client_id: client_id.clone(),
            username: req.username.as_deref().map(Arc::from),
            password: req.password.as_ref().map(|p| p.to_vec()),
            peer: req.peer,
            protocol: req.protocol,
            certified: certified.is_some(),
        };
        // Credentials are read locally; a miss may only mean this node has not applied a
        // device created elsewhere yet, so a refusal is decided again after the read barrier.
        if self.auth.authenticate(&info).await.is_err() {
            if let Err(e) = self.meta.barrier().await {
                tracing::warn!(client_id = %client_id, error = %e, "no quorum to check credentials");
                return Err(self.refused(ConnectRefused::Unavailable));
            }
            if let Err(e) = self.auth.authenticate(&info).await {
                return Err(self.refused(e.into()));
            }
        }

        let expiry = match self.limits.max_session_expiry {
            0 => req.session_expiry,
            cap => req.session_expiry.min(cap),
        };
        let window = usize::from(req.receive_max.min(self.limits.max_inflight).max(1));
        let link = ConnLink::with_info(
            self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            crate::session::ConnInfo {
                peer: req.peer,
                protocol: Some(req.protocol),
                keep_alive: req.keep_alive,
                clean_start: req.clean_start,
                connected_at: chrono::Utc::now().timestamp_millis(),
            },
        );
        // A session resumed from another node is taken over from it after registering.
        let previous_owner = if req.clean_start {
            None
        } else {
            self.session_owner(&client_id)
                .filter(|n| *n != self.node_id)
        };
        // The cluster learns who owns the client id before the client hears CONNACK.
        let registered = self
            .meta
            .write(Command::ClientConnected {
                session: SessionRecord {
                    client_id: client_id.to_string(),
                    node_id: self.node_id,
                    conn_id: link.conn_id,
                    username: info.username.as_deref().map(str::to_string),
                    expiry_interval: expiry,
                    subscriptions: Vec::new(),
                    connected: true,
                    disconnected_at: None,
                },
                ip: req.peer.map(|p| p.ip().to_string()),
                at: now_ms(),
                clean_start: req.clean_start,
            })
            .await;
        if let Err(e) = &registered {
            tracing::warn!(client_id = %client_id, error = %e, "session registration failed");
            return Err(self.refused(ConnectRefused::Unavailable));
        }
        // The registration is applied here, so every write committed before it is too: a device
        // disabled on any node just before this CONNECT is refused now, without a read barrier.
        let scope = match self.auth.authenticate(&info).await {
            Ok(scope) => scope,
            Err(e) => {
                self.meta.record(Command::ClientDisconnected {
                    client_id: client_id.to_string(),
                    node_id: self.node_id,
                    conn_id: link.conn_id,
                    at: now_ms(),
                });
                return Err(self.refused(e.into()));
            }
        };
        let opened = self.sessions.open(
            client_id.clone(),
            req.clean_start,
            link.clone(),
            window,
            expiry,
        );
        // Whatever this client's session had on disk is in memory now, or discarded.
        self.spool_clear(&client_id);
        let client = ClientInfo {
            client_id,
            username: info.username,
            scope,
        };
        opened.cell.lock().username = client.username.clone();
        let mut present = opened.present;
        if present {
            self.reauthorize(&opened.cell, &client);
        } else if !req.clean_start {
            // Not here, but maybe on another node: its subscriptions are in the replicated
            // record (this connection's registration, applied by now, kept them).
            present = self.resume_from_record(&opened.cell, &client);
            // What the previous node had not delivered, if it is alive to hand it over.
            if let Some(from) = previous_owner {
                present |= self.take_over_from(from, &opened.cell).await;
            }
            // Its subscriptions are live cluster-wide by CONNACK, as after a SUBACK.
            if present && let Some(settled) = self.routes_settled() {
                settled.await;
            }
        }
        if let Some(old) = opened.kicked {
            old.close(CloseReason::SessionTakenOver);
        }
        if let Some(old) = &opened.discarded {
            self.drop_subscriptions(old);
            if let Some(will) = opened.due_will {
                self.publish_will(&client, will);
            }
        }
        crate::metrics::inc(&self.metrics.connects_total, 1);
        self.metrics.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Accepted {
            client,
            assigned_client_id: assigned,
            session: opened.cell,
            link,
            present,
            session_expiry: expiry,
        })
    }

    fn refused(&self, why: ConnectRefused) -> ConnectRefused {
        crate::metrics::inc(&self.metrics.connects_refused, 1);
        if matches!(
            why,
            ConnectRefused::BadCredentials | ConnectRefused::NotAuthorized
        ) {
            crate::metrics::inc(&self.metrics.auth_failures, 1);
        }
        why
    }

    /// Called once when an accepted connection ends, for whatever reason.
    pub fn disconnected(self: &Arc<Self>, closed: Closed) {
        self.metrics.connections.fetch_sub(1, Ordering::Relaxed);
        let Closed {
            client,
            session,
            conn_id,
            will,
            server_reason,
        } = closed;
        let reason =
            server_reason.map_or("closed by the client or the network", CloseReason::describe);
        tracing::info!(
            target: "realmq::clients",
            client_id = %client.client_id,
            username = client.username.as_deref().unwrap_or(""),
            reason,
            "client disconnected"
        );
        if let Some(hooks) = self.webhooks.get() {
            hooks.client_disconnected(&client, reason);
            self.device_status(hooks, &client, false);
        }
        self.client_disconnected_event(&client, reason);
        match self.sessions.detach(&session, conn_id) {
            // A takeover that resumed the session cancels the will; one that started afresh ended
            // the old session, which makes the will due [MQTT-3.1.2-8, v5 §3.1.2.5].
            Detached::TakenOver { ended } => {
                if let Some(will) = will.filter(|_| ended) {
                    self.publish_will(&client, will);
                }
            }
            Detached::Owner {
                generation,
                expiry_interval,
            } => {
                self.meta.record(Command::ClientDisconnected {
                    client_id: client.client_id.to_string(),
                    node_id: self.node_id,
                    conn_id,
                    at: now_ms(),
                });
                if let Some(will) = will {
                    if will.delay == 0 || expiry_interval == 0 {
                        self.publish_will(&client, will);
                    } else {
                        let delay = will.delay;
                        self.sessions.park_will(&session, will);
                        let (me, cell, who) = (self.clone(), session.clone(), client.clone());
                        self.after(delay, async move {
                            if let Some(will) = me.sessions.take_due_will(&cell, generation) {
                                me.publish_will(&who, will);
                            }
                        });
                    }
                }
                if expiry_interval == 0 {
                    self.end_session(&session, generation, &client);
                    return;
                }
                self.spool_offline(&session);
                if expiry_interval != u32::MAX {
                    let (me, who) = (self.clone(), client);
                    self.after(expiry_interval, async move {
                        me.end_session(&session, generation, &who);
                    });
                }
            }
        }
    }

    /// Ends an offline session (expiry or clean session) unless a connection came back.
    pub(super) fn end_session(
        &self,
        session: &Arc<SessionCell>,
        generation: u64,
        client: &ClientInfo,
    ) {
        if let Some(ended) = self.sessions.end_if_idle(session, generation) {
            self.spool_clear(&session.client_id);
            self.drop_subscriptions(session);
            self.meta.record(Command::RemoveSession {
                client_id: session.client_id.to_string(),
                owner: Some(self.node_id),
            });
            if let Some(will) = ended.will {
                self.publish_will(client, will);
            }
        }
    }

    /// Updates the Session Expiry Interval from a v5 DISCONNECT.
    pub fn set_session_expiry(&self, session: &SessionCell, expiry: u32) {
        let expiry = match self.limits.max_session_expiry {
            0 => expiry,
            cap => expiry.min(cap),
        };
        self.sessions.set_expiry(session, expiry);
    }

    /// Asks every connection to close with `reason` (used on shutdown); returns the client ids
    /// of the persistent sessions among them, which their clients may resume on another node.
    pub fn close_all(&self, reason: CloseReason) -> Vec<crate::session::ClientId> {
        let mut persistent = Vec::new();
        for (client_id, link) in self.sessions.attached() {
            link.close(reason);
            if self
                .sessions
                .get(&client_id)
                .is_some_and(|c| c.lock().expiry_interval > 0)
            {
                persistent.push(client_id);
            }
        }
        persistent
    }

    /// How many of `client_ids` still have their session here, attached or waiting in the
    /// stash for the new owner's handover request.
    pub fn still_held(&self, client_ids: &[crate::session::ClientId]) -> usize {
        client_ids
            .iter()
            .filter(|id| self.sessions.get(id).is_some() || self.stash.holds(id))
            .count()
    }

    pub(super) fn after(&self, secs: u32, job: impl Future<Output = ()> + Send + 'static) {
        self.runtime.spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
            job.await;
        });
    }
}
