//! How the broker follows metadata writes applied anywhere in the cluster: the state machine's
//! `Applied` events, consumed on every node in log order.
//!
//! - a device whose credentials were revoked or changed loses its connection here, whichever
//!   node's REST API took the change;
//! - retained messages set through another node reach this node's retained store (a node's own
//!   writes replay harmlessly: every node applies the same sequence, so all converge on the
//!   last write in log order);
//! - a client id whose session now belongs to a connection on another node has its connection
//!   here closed (0x8E), once this node's own registration of it was applied before, so an old
//!   registration replayed late never closes the newer connection; a resumed session is handed
//!   over with what it had not delivered;
//! - after a snapshot install (or if this consumer fell behind), everything is rebuilt from the
//!   registry.

use std::collections::HashMap;
use std::sync::Arc;

use realmq_raft_store::Registry;
use realmq_raft_store::applied::{Applied, Receiver};
use tokio::sync::broadcast::error::RecvError;

use super::Broker;
use super::persist::retained_message;
use crate::message::CloseReason;

impl Broker {
    /// Consumes `rx` until the store stops publishing; spawn on the node's runtime.
    pub async fn follow_applied(self: Arc<Self>, mut rx: Receiver, registry: Registry) {
        // Local connections whose registration has been applied: client id → connection id.
        let mut registered: HashMap<String, u64> = HashMap::new();
        loop {
            match rx.recv().await {
                Ok(e) => self.on_applied(e, &registry, &mut registered),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "fell behind applied metadata events; resynchronizing"
                    );
                    self.on_applied(Applied::Reset, &registry, &mut registered);
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Rule `id` was written through this node's REST API and the write is applied here: the
    /// engine takes it now rather than when this consumer reaches the event, so the caller's
    /// next message meets the rule as written.
    pub fn rule_written(&self, id: u64) {
        self.rules.reload(id, &self.registry, &self.runtime);
    }

    fn on_applied(
        self: &Arc<Self>,
        e: Applied,
        registry: &Registry,
        registered: &mut HashMap<String, u64>,
    ) {
        match e {
            Applied::CredentialsRevoked { client_id } => {
                if self.kick(&client_id, CloseReason::NotAuthorized) {
                    tracing::info!(client_id = %client_id, "disconnected a client whose credentials were revoked");
                }
            }
            Applied::Retained(record) => {
                if !record.topic.starts_with("$SYS/") {
                    self.retained
                        .set(Arc::new(retained_message((*record).clone())));
                }
            }
            Applied::SessionOwner {
                client_id,
                node_id,
                conn_id,
                resumed,
            } => {
                if node_id == self.node_id {
                    registered.insert(client_id, conn_id);
                } else if let Some(mine) = registered.remove(&client_id) {
                    self.session_moved(&client_id, mine, node_id, resumed);
                }
            }
            Applied::SessionRemoved { client_id } => {
                registered.remove(&client_id);
            }
            Applied::Rule { id } => self.rules.reload(id, registry, &self.runtime),
            Applied::Reset => {
                self.rules.reload_all(registry, &self.runtime);
                self.resync(registry, registered);
            }
        }
    }

    /// `client_id`'s session now lives on node `owner`. If the new connection resumed it, the
    /// local copy is handed over (`handover.rs`). Otherwise this closes its local connection if
    /// that is still `conn_id` (0x8E), and ends the local copy once the close went through, so
    /// this node neither withholds its routes nor queues messages for a session that lives
    /// elsewhere. A newer local connection is left alone.
    fn session_moved(self: &Arc<Self>, client_id: &str, conn_id: u64, owner: u64, resumed: bool) {
        let Some(cell) = self.sessions.get(client_id) else {
            return;
        };
        let attached = cell.lock().conn.as_ref().map(|l| l.conn_id);
        if resumed && attached.is_none_or(|c| c == conn_id) {
            self.detach_moved(client_id);
            return;
        }
        let (link, generation, username) = {
            let inner = cell.lock();
            (inner.conn.clone(), inner.generation, inner.username.clone())
        };
        match link {
            Some(l) if l.conn_id != conn_id => return,
            Some(l) => {
                tracing::info!(
                    client_id,
                    node = owner,
                    "session taken over on another node"
                );
                l.close(CloseReason::SessionTakenOver);
            }
            None => {}
        }
        let me = self.clone();
        let client = crate::auth::ClientInfo {
            client_id: cell.client_id.clone(),
            username,
            scope: None,
        };
        self.after(1, async move { me.end_session(&cell, generation, &client) });
    }

    /// Rebuilds what follows the replicated state: retained messages, and local connections
    /// that the state no longer allows (revoked devices, sessions owned elsewhere).
    fn resync(&self, registry: &Registry, registered: &mut HashMap<String, u64>) {
        match registry.retained() {
            Ok(records) => self
                .retained
                .replace_all(records.into_iter().map(|r| Arc::new(retained_message(r)))),
            Err(e) => tracing::error!(error = %e, "failed to reload retained messages"),
        }
        registered.clear();
        for (client_id, link) in self.sessions.attached() {
            let revoked = match registry.device_by_client_id(&client_id) {
                Ok(Some(d)) => !d.enable,
                _ => false,
            };
            let owner = registry.session(&client_id).ok().flatten();
            match owner {
                _ if revoked => link.close(CloseReason::NotAuthorized),
                Some(s) if s.node_id != self.node_id => link.close(CloseReason::SessionTakenOver),
                Some(s) if s.conn_id == link.conn_id => {
                    registered.insert(client_id.to_string(), link.conn_id);
                }
                _ => {}
            }
        }
    }
}
