//! Errors of this crate's public API.

use crate::NodeAddr;
use crate::typ::NodeId;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("failed to open rocksdb at {path}: {source}")]
    Rocks {
        path: String,
        #[source]
        source: rocksdb::Error,
    },
    #[error("failed to prepare the snapshot directory {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read the stored state: {0}")]
    Storage(#[from] crate::typ::StorageError),
}

/// Why a replicated write did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// This node is not the leader; `leader` is where to send the write, if known.
    #[error("not the raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<(NodeId, NodeAddr)> },
    /// No quorum or the raft core is shutting down; the write may be retried.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("raft failed to start: {0}")]
    Raft(String),
}
