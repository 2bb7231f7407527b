//! # realmq-raft-store: RealMQ's replicated metadata
//!
//! Users, the API token secret, products, devices, MQTT sessions and retained messages, kept by
//! openraft on RocksDB. This crate does no networking; the node wires its `Raft` to the network.
//!
//! ## Layout
//!
//! - `lib.rs`: the openraft `TypeConfig`, `NodeAddr`, and `open()`
//! - `typ.rs`: every openraft alias
//! - `command.rs`: `Command` (each replicated write) and `CommandResult`
//! - `applied.rs`: `Applied`, what each applied entry changed, published on every node
//! - `model/`: the records
//! - `keys.rs`: column families and key encoding; `codec.rs`: value encoding
//! - `log_store.rs`: the raft log (`RaftLogStorage`)
//! - `state_machine/`: `apply` (one `match`, one fn per command), snapshots, the write set
//! - `read.rs`: `Registry`, every read, through secondary indexes
//! - `client.rs`: `Writer`, the group-committing proposer (forwarding to the leader through
//!   `Remote`), the single call site of `Raft::client_write`, and the read barrier
//! - `queues.rs`: node-local storage outside raft (offline sessions' queued messages)
//!
//! ## How a write flows
//!
//! REST handler or MQTT session code → `client::Writer` (batches concurrent commands into one
//! entry) → `Raft::client_write` → (replicated to a quorum) → `LogStore::append` (one synced
//! batch) → `StateMachineStore::apply`
//! (`state_machine/apply.rs` into one `Tx`) → one synced `WriteBatch` with the applied log id →
//! the `CommandResult` goes back to the caller → `Registry` reads see the write.

// openraft's storage errors are large by design and are what its traits return; boxing them at
// every internal call would only add allocations.
#![allow(clippy::result_large_err)]

pub mod applied;
pub mod client;
mod codec;
pub mod command;
pub mod error;
pub mod keys;
mod log_store;
pub mod model;
mod no_peers;
pub mod queues;
pub mod read;
mod state_machine;
pub mod typ;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use serde::{Deserialize, Serialize};

pub use command::{Answer, Command, CommandResult, Created, Registered, Rejection};
pub use error::{OpenError, StartError, WriteError};
pub use log_store::LogStore;
pub use no_peers::NoPeers;
pub use read::Registry;
pub use state_machine::StateMachineStore;

/// How to reach a node, as stored in the raft membership. Every address is there from the
/// start: membership is stored encoded, so a field added later could not be read back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// The cluster gRPC address peers dial (raft, forwarding).
    pub cluster_addr: String,
    pub mqtt_addr: String,
    pub api_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cluster={} mqtt={} api={}",
            self.cluster_addr, self.mqtt_addr, self.api_addr
        )
    }
}

openraft::declare_raft_types!(
    /// RealMQ's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = NodeAddr,
        SnapshotData = tokio::fs::File,
);

/// The opened store: the raft log and state machine to hand to `Raft::new`, and the registry
/// every read goes through.
pub struct Store {
    pub log: LogStore,
    pub state_machine: StateMachineStore,
    pub registry: Registry,
    pub applied: applied::Sender,
    pub queues: queues::Queues,
}

/// Opens (or creates) the store under `dir`: RocksDB in `dir/rocksdb`, snapshots in
/// `dir/snapshots`. A restart finds the log, the applied state and every index as they were.
/// Table files RocksDB keeps open.
const MAX_OPEN_FILES: i32 = 64;

/// Memtable memory of all column families together.
const MEMTABLES: usize = 8 << 20;

pub fn open(dir: &Path) -> Result<Store, OpenError> {
    let snapshots = dir.join("snapshots");
    std::fs::create_dir_all(&snapshots).map_err(|source| OpenError::Io {
        path: snapshots.display().to_string(),
        source,
    })?;
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    // RocksDB's default lets each of the 17 column families hold 64 MiB of memtables before a
    // flush: a node's memory would grow with every session registration (a raft entry and a
    // session record per CONNECT) towards a gigabyte. Metadata writes are small and a flush
    // costs little, so all memtables together stay within MEMTABLES.
    opts.set_db_write_buffer_size(MEMTABLES);
    // The node's descriptors are its clients' sockets: RocksDB keeps at most this many table
    // files open (closing the least used) rather than one per file for the life of the node,
    // so a node near its descriptor limit can still flush and compact.
    opts.set_max_open_files(MAX_OPEN_FILES);
    let path = dir.join("rocksdb");
    let cfs = keys::all().map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| OpenError::Rocks {
        path: path.display().to_string(),
        source,
    })?;
    let db = Arc::new(db);
    let (applied, _) = tokio::sync::broadcast::channel(applied::BACKLOG);
    let installing = Arc::default();
    Ok(Store {
        log: LogStore::new(db.clone()),
        state_machine: StateMachineStore::new(
            db.clone(),
            snapshots,
            applied.clone(),
            Arc::clone(&installing),
        )?,
        registry: Registry::new(db.clone(), installing),
        applied,
        queues: queues::Queues::new(db),
    })
}

/// A started raft member, the writer that proposes to it and the registry that reads its state.
pub struct Member {
    pub raft: typ::Raft,
    pub writer: client::Writer,
    pub registry: Registry,
    /// Subscribe for what every applied entry changed (`applied.rs`).
    pub applied: applied::Sender,
    /// This node's offline queues, outside raft.
    pub queues: queues::Queues,
}

/// Raft timings, from the node's config.
#[derive(Debug, Clone, Copy)]
pub struct RaftSettings {
    pub heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Log entries between snapshots.
    pub snapshot_logs: u64,
    /// How long a write or read barrier may wait for a quorum; 0: two elections' worth.
    pub write_timeout_ms: u64,
}

impl RaftSettings {
    fn openraft(&self) -> Result<openraft::Config, StartError> {
        openraft::Config {
            cluster_name: "realmq".into(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            // A snapshot streams as one RPC; allow it the time a large state takes to send.
            install_snapshot_timeout: 60_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_logs),
            max_in_snapshot_log_to_keep: 1_000.min(self.snapshot_logs),
            // Purge as soon as a snapshot allows, even with a small snapshot interval.
            purge_batch_size: 256.min(self.snapshot_logs).max(1),
            // With entries of at most `client::MAX_BATCH_BYTES`, one append stays within the
            // cluster port's message limit.
            max_payload_entries: client::MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))
    }

    /// How long a write or read barrier may wait for a quorum: as set, else two elections'
    /// worth (openraft's followers refuse a vote while their leader's lease runs, so a lost
    /// leader is often replaced only in the second round).
    pub fn write_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(match self.write_timeout_ms {
            0 => 2 * self.election_timeout_max_ms + self.heartbeat_interval_ms,
            set => set,
        })
    }
}

/// Opens the store under `dir` and starts raft as `node_id` with `network` to its peers and
/// `remote` to reach the leader. Does not initialize a cluster or wait for a leader: that is
/// the node's membership logic.
pub async fn start<N>(
    dir: &Path,
    node_id: typ::NodeId,
    settings: RaftSettings,
    network: N,
    remote: Arc<dyn client::Remote>,
) -> Result<Member, StartError>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
{
    let store = open(dir)?;
    let applied = store.applied.clone();
    let queues = store.queues.clone();
    let raft = typ::Raft::new(
        node_id,
        Arc::new(settings.openraft()?),
        network,
        store.log,
        store.state_machine,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let writer = client::Writer::start(
        raft.clone(),
        remote,
        client::WriterConfig {
            write_timeout: settings.write_timeout(),
        },
    );
    Ok(Member {
        raft,
        writer,
        registry: store.registry,
        applied,
        queues,
    })
}

/// A one-member cluster under `dir` with no network, leading: for tests and offline tools that
/// prepare a data directory (a node later started on it finds itself the only member).
pub async fn start_offline(dir: &Path, node_id: typ::NodeId) -> Result<Member, StartError> {
    let settings = RaftSettings {
        heartbeat_interval_ms: 100,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        snapshot_logs: 100_000,
        write_timeout_ms: 0,
    };
    let member = start(dir, node_id, settings, NoPeers, Arc::new(NoPeers)).await?;
    let raft_err = |e: &dyn fmt::Display| StartError::Raft(e.to_string());
    if !member
        .raft
        .is_initialized()
        .await
        .map_err(|e| raft_err(&e))?
    {
        member
            .raft
            .initialize(std::collections::BTreeMap::from([(
                node_id,
                NodeAddr::default(),
            )]))
            .await
            .map_err(|e| raft_err(&e))?;
    }
    member
        .raft
        .wait(Some(std::time::Duration::from_secs(30)))
        .current_leader(node_id, "the only member leads")
        .await
        .map_err(|e| raft_err(&e))?;
    Ok(member)
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::Command;
    use crate::model::{Role, User};

    /// Creating the viewer `name`: a small command every test can tell apart by name.
    pub fn create_viewer(name: &str) -> Command {
        Command::CreateUser {
            user: User {
                username: name.into(),
                password_hash: "h".into(),
                role: Role::Viewer,
                created_at: 1,
            },
        }
    }
}
