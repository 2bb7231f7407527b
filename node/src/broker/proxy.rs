//! Proxy operations: a subscription added to or removed from a client's session on behalf of
//! an operator (the REST API), decided as the client's own SUBSCRIBE would be, and an operator's
//! kick. The node that holds the session applies them; `cluster/` carries the request there from
//! any other node.

use std::sync::Arc;

use crate::auth::ClientInfo;
use crate::message::{ByteString, CloseReason, QoS, SubOptions};
use crate::routing::topic::parse_filter;
use crate::session::SessionCell;

use super::{Broker, SubRequest, SubResult};

/// Why a proxy operation was refused; the API turns these into status codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProxyError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A proxy operation as it travels to the node holding the session.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ProxyOp {
    Subscribe {
        filter: String,
        qos: u8,
    },
    Unsubscribe {
        filter: String,
    },
    /// Disconnect the client (`DELETE /api/v1/clients/{id}`); its session stays.
    Kick,
}

impl Broker {
    /// Whether this node holds `client_id`'s session (connected or not).
    pub fn holds_session(&self, client_id: &str) -> bool {
        self.sessions.get(client_id).is_some()
    }

    /// The node that holds `client_id`'s session as the replicated record says (`None`: no
    /// session anywhere).
    pub fn session_owner(&self, client_id: &str) -> Option<u64> {
        self.registry
            .session(client_id)
            .ok()
            .flatten()
            .map(|r| r.node_id)
    }

    /// Applies `op` to the session held here.
    pub fn proxy(&self, client_id: &str, op: &ProxyOp) -> Result<(), ProxyError> {
        match op {
            ProxyOp::Kick => {
                if self.kick(client_id, CloseReason::Kicked) {
                    tracing::info!(client_id, "disconnected by an operator");
                    Ok(())
                } else {
                    Err(ProxyError::NotFound(format!(
                        "client {client_id:?} is not connected"
                    )))
                }
            }
            ProxyOp::Subscribe { filter, qos } => self.proxy_subscribe(client_id, filter, *qos),
            ProxyOp::Unsubscribe { filter } => self.proxy_unsubscribe(client_id, filter),
        }
    }

    /// The session a subscribe or unsubscribe with `filter` acts on, once the filter is valid.
    fn proxy_target(&self, client_id: &str, filter: &str) -> Result<Arc<SessionCell>, ProxyError> {
        parse_filter(filter)
            .map_err(|e| ProxyError::Invalid(format!("topic filter {filter:?}: {e}")))?;
        self.sessions.get(client_id).ok_or_else(|| gone(client_id))
    }

    fn proxy_subscribe(&self, client_id: &str, filter: &str, qos: u8) -> Result<(), ProxyError> {
        let session = self.proxy_target(client_id, filter)?;
        let qos =
            QoS::from_u8(qos).ok_or_else(|| ProxyError::Invalid("qos must be 0, 1 or 2".into()))?;
        // Decided by the ACL as the session's own user's subscription would be.
        let client = ClientInfo {
            client_id: session.client_id.clone(),
            username: session.lock().username.clone(),
            // An operator's request: the device's isolation does not bind it.
            scope: None,
        };
        let request = SubRequest {
            filter: ByteString::from(filter),
            opts: SubOptions {
                qos,
                ..SubOptions::default()
            },
        };
        match self.subscribe(&session, &client, vec![request]).as_slice() {
            [SubResult::Granted(_)] => Ok(()),
            [SubResult::NotAuthorized] => Err(ProxyError::Denied(format!(
                "the ACL denies {client_id:?} subscribing to {filter:?}"
            ))),
            [SubResult::SessionGone] => Err(gone(client_id)),
            [SubResult::QuotaExceeded] => Err(ProxyError::Invalid(format!(
                "client {client_id:?} holds max_subscriptions subscriptions already"
            ))),
            _ => Err(ProxyError::Invalid(format!(
                "topic filter {filter:?} is invalid"
            ))),
        }
    }

    fn proxy_unsubscribe(&self, client_id: &str, filter: &str) -> Result<(), ProxyError> {
        let session = self.proxy_target(client_id, filter)?;
        if self.unsubscribe(&session, &[ByteString::from(filter)]) == [true] {
            Ok(())
        } else {
            Err(ProxyError::NotFound(format!(
                "client {client_id:?} has no subscription to {filter:?}"
            )))
        }
    }
}

fn gone(client_id: &str) -> ProxyError {
    ProxyError::NotFound(format!("client {client_id:?} has no session"))
}
