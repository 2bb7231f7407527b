//! # realmq-cluster-tests
//!
//! Tests that start several real `realmq` processes on loopback and inject faults (node kill and
//! restart, link partitions and latency). Single-node behaviour is tested in `node/tests/`; the
//! tests themselves live in one binary, `tests/cluster/main.rs`, one file per test, numbered as
//! in openraft (`t1x` the cluster works, `t2x` crashes, partitions and restarts, `t3x`
//! membership changes, `t5x` link faults, `t9x` regressions).
//!
//! ## Layout
//!
//! - `cluster.rs`: [`Cluster`] and [`ClusterBuilder`], the sandbox a test drives: start, kill,
//!   restart, wipe, add and retire nodes; holds the process-wide test lock.
//! - `node.rs`: one `realmq` process: its arguments, data dir, log capture and readiness.
//! - `proxy.rs`: one TCP proxy per directed cluster link, each open, cut or delayed.
//! - `faults.rs`: which links a fault (`cut`, `heal`, `delay`) applies to.
//! - `api.rs`: REST calls to one node ([`Auth`]) and the `GET /api/v1/nodes` view
//!   ([`NodeStatus`]), including waiting for a node to catch up.
//! - `mqtt.rs`: [`MqttClient`], a bounded-time wrapper over rumqttc.
//! - `wait.rs`: [`eventually`], the one polling loop.
//! - `invariants/`: checks run at the end of every test by [`Cluster::invariant_check`].
//! - `logs.rs`: captured node logs and what is printed when a test fails.
//! - `containers/`: the Helm chart's pods as Docker containers, for `make cluster-test`
//!   (`src/bin/container-faults.rs`): the same kind of faults on the chart's own configuration
//!   and the `make image` image.
//!
//! ## How a test runs
//!
//! `Cluster::start(3)` → take the test lock → reserve a cluster port per node → open a proxy
//! per directed link (`proxy.rs`) → spawn every process with `--peers` naming the proxies
//! (`node.rs`) → wait for each "realmq node started" log line → the test body → `cut`/`kill9`/
//! `restart` as it likes → `invariant_check()` (`invariants/`) → drop: kill every process, stop
//! the proxies; if the test panicked, print the harness's actions and every node's panics and
//! last log lines, and keep the nodes' data dirs for a post-mortem.
//!
//! ## The wiring of one link
//!
//! Node `i` dials node `j` (a voter) at `127.0.0.1:P_ij`, a proxy that forwards to `j`'s real
//! cluster listener `R_j`; so `i`'s `--peers` lists `j=127.0.0.1:P_ij` for every other voter and
//! its own real address for itself, and each node advertises its real address. Nodes beyond the
//! voters (learners) are dialled at the address they advertise, which is one inbound proxy per
//! learner shared by every caller (the callers learn it from the raft membership, not from
//! `--peers`), so faults on those links follow the learner only: see `faults.rs`.
//!
//! The binary under test is `$REALMQ_BIN`, else `realmq` next to the test executable's `deps/`
//! directory (`cargo test --workspace` builds it).

mod api;
mod cluster;
pub mod containers;
mod faults;
mod invariants;
mod logs;
mod mqtt;
mod node;
mod proxy;
mod wait;

use std::time::Duration;

pub use api::{Auth, NodeStatus, WriteOutcome, all_pages};
pub use cluster::{Cluster, ClusterBuilder};
pub use mqtt::MqttClient;
pub use wait::eventually;

/// A raft node id, as given to `--node-id`; nodes are numbered from 1.
pub type NodeId = u64;

/// Bound for anything a test waits for that involves no process start.
pub const WAIT: Duration = Duration::from_secs(10);

/// Bound for a group of nodes to log "realmq node started": debug builds of several processes
/// opening RocksDB and electing a leader on 2 cores.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Bound for live nodes to reach the same applied index in the invariant check.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(15);
