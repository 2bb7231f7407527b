//! `Applied`: what applying a command changed that nodes keep outside the store. The state
//! machine publishes these on every node, in log order, once the entry is durable, so each
//! node's in-memory state (retained messages, connections of revoked devices, session owners)
//! follows the replicated state whichever node took the write.
//!
//! The channel is a broadcast with a bounded backlog: a consumer that falls behind gets
//! `Lagged` and must treat it as `Reset`, rebuilding from the registry.

use std::sync::Arc;

use crate::model::RetainedRecord;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A device's credentials were revoked or changed (disabled, deleted, a new user name,
    /// password or client id): its connection must end, on whichever node holds it.
    CredentialsRevoked { client_id: String },
    /// A retained message was set, or cleared (empty payload).
    Retained(Arc<RetainedRecord>),
    /// `client_id`'s session now belongs to connection `conn_id` on node `node_id`; with
    /// `resumed`, that connection continues the session (no clean start), so a previous owner
    /// hands over what it holds instead of ending it.
    SessionOwner {
        client_id: String,
        node_id: u64,
        conn_id: u64,
        resumed: bool,
    },
    /// A session ended (expiry, or a clean start elsewhere).
    SessionRemoved { client_id: String },
    /// A rule was created, changed or deleted: nodes reload it from the registry.
    Rule { id: u64 },
    /// The whole state was replaced by a snapshot: rebuild everything derived from it.
    Reset,
}

/// Events kept for consumers that fall behind before they see `Lagged`.
pub const BACKLOG: usize = 16 * 1024;

pub type Sender = tokio::sync::broadcast::Sender<Applied>;
pub type Receiver = tokio::sync::broadcast::Receiver<Applied>;
