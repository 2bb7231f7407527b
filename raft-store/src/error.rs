//! Errors of this crate's public API.

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

/// Why a replicated write (or a read barrier) did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// No leader with a majority behind it answered in time; the write may still commit later.
    #[error("no quorum: {0}")]
    NoQuorum(String),
    /// The raft core stopped (shutdown or a fatal storage error).
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// A command was answered with a result of another shape than its own (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("raft failed to start: {0}")]
    Raft(String),
}
