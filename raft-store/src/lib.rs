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
//! - `model/`: the records
//! - `keys.rs`: column families and key encoding; `codec.rs`: value encoding
//! - `log_store.rs`: the raft log (`RaftLogStorage`)
//! - `state_machine/`: `apply` (one `match`, one fn per command), snapshots, the write set
//! - `read.rs`: `Registry`, every read, through secondary indexes
//! - `client.rs`: `Writer`, the group-committing proposer and single call site of
//!   `Raft::client_write`
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

pub mod client;
mod codec;
pub mod command;
pub mod error;
pub mod keys;
mod log_store;
pub mod model;
mod no_peers;
pub mod read;
mod state_machine;
pub mod typ;

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use serde::{Deserialize, Serialize};

pub use command::{Command, CommandResult, Rejection};
pub use error::{OpenError, StartError, WriteError};
pub use log_store::LogStore;
pub use no_peers::NoPeers;
pub use read::Registry;
pub use state_machine::StateMachineStore;

/// How to reach a node: its internal gRPC address and its REST address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    pub rpc_addr: String,
    pub api_addr: String,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rpc={} api={}", self.rpc_addr, self.api_addr)
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
}

/// Opens (or creates) the store under `dir`: RocksDB in `dir/rocksdb`, snapshots in
/// `dir/snapshots`. A restart finds the log, the applied state and every index as they were.
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
    let path = dir.join("rocksdb");
    let cfs = keys::all().map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|source| OpenError::Rocks {
        path: path.display().to_string(),
        source,
    })?;
    let db = Arc::new(db);
    Ok(Store {
        log: LogStore::new(db.clone()),
        state_machine: StateMachineStore::new(db.clone(), snapshots)?,
        registry: Registry::new(db),
    })
}

/// A started raft member, the writer that proposes to it and the registry that reads its state.
pub struct Member {
    pub raft: typ::Raft,
    pub writer: client::Writer,
    pub registry: Registry,
}

/// Opens the store under `dir`, starts raft as `node_id`, makes a fresh store a one-member
/// cluster, and returns once this node leads (a restart recovers log and state and elects
/// itself again).
pub async fn start_single<N>(
    dir: &Path,
    node_id: typ::NodeId,
    me: NodeAddr,
    network: N,
) -> Result<Member, StartError>
where
    N: openraft::network::RaftNetworkFactory<TypeConfig>,
{
    let store = open(dir)?;
    let config = openraft::Config {
        cluster_name: "realmq".into(),
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        // Snapshots stream the whole state machine to a file; every 100k entries keeps that
        // rare while bounding the log.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(100_000),
        max_in_snapshot_log_to_keep: 1_000,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let raft = typ::Raft::new(
        node_id,
        Arc::new(config),
        network,
        store.log,
        store.state_machine,
    )
    .await
    .map_err(|e| StartError::Raft(e.to_string()))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
    if !initialized {
        raft.initialize(std::collections::BTreeMap::from([(node_id, me)]))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        tracing::info!(node_id, "bootstrapped a one-member raft cluster");
    }
    raft.wait(Some(std::time::Duration::from_secs(30)))
        .current_leader(node_id, "single node becomes leader")
        .await
        .map_err(|e| StartError::Raft(format!("this node did not become leader: {e}")))?;
    Ok(Member {
        writer: client::Writer::start(raft.clone()),
        raft,
        registry: store.registry,
    })
}
