//! A node that was down while the others wrote past the log they keep is brought up to date by a
//! snapshot from the leader, serves every write made meanwhile, and keeps the installed snapshot
//! across a further crash: it restarts from it without needing another one.

use std::collections::BTreeSet;
use std::sync::Arc;

use realmq_cluster_tests::{Cluster, NodeId, WAIT, eventually};
use tokio::task::JoinSet;

use crate::fixtures::{create_product, logged_since_last_start, missing_products};

/// Log entries between snapshots; the log is purged behind a snapshot down to this many.
const SNAPSHOT_LOGS: u64 = 20;
/// The node purges its log in batches of at least this many entries (`purge_batch_size` in
/// raft-store), so nothing is purged before the log has grown this much past a snapshot.
const PURGE_BATCH: u64 = 256;
/// Log entries to write while node 3 is down: enough for the leader to purge past it.
const ENTRIES: u64 = PURGE_BATCH + 3 * SNAPSHOT_LOGS;
/// Writes in flight at once: few enough that group commit still leaves many log entries.
const GROUP: usize = 5;
/// A bound on the writes, should group commit pack them far more tightly than expected.
const MAX_WRITES: usize = 3000;
const INSTALLED: &str = "received a snapshot from the leader";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t23_a_node_far_behind_catches_up_by_snapshot() {
    let cluster = Arc::new(
        Cluster::builder()
            .cluster_toml(&format!("snapshot_logs = {SNAPSHOT_LOGS}"))
            .start()
            .await,
    );
    let behind: NodeId = 3;
    let applied = async |i: NodeId| {
        cluster
            .status(i)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .last_applied
            .expect("last_applied")
    };
    let at_kill = applied(1).await;
    cluster.kill9(behind);

    let mut names = BTreeSet::new();
    let mut written = at_kill;
    for group in 0.. {
        if group % 10 == 0 {
            written = applied(1).await;
            if written - at_kill >= ENTRIES || names.len() >= MAX_WRITES {
                break;
            }
        }
        let mut writes = JoinSet::new();
        for k in 0..GROUP {
            let name = format!("t23-{}", group * GROUP + k);
            names.insert(name.clone());
            let cluster = cluster.clone();
            let on = 1 + (k % 2) as NodeId;
            writes.spawn(async move {
                create_product(&cluster, on, &name).await;
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("a write failed");
        }
    }
    // Not the property under test: a check that this test wrote enough to purge the log past
    // node 3.
    assert!(
        written - at_kill >= ENTRIES,
        "only {} log entries from {} writes while node {behind} was down (applied {at_kill} -> {written})",
        written - at_kill,
        names.len()
    );

    cluster.restart(behind).await;
    eventually(
        &format!("node {behind} to log {INSTALLED:?}"),
        WAIT,
        async || {
            if logged_since_last_start(&cluster, behind, INSTALLED) {
                Ok(())
            } else {
                Err(format!(
                    "node {behind} did not install a snapshot; leader applied {written}, node {behind} was at most at {at_kill}"
                ))
            }
        },
    )
    .await;
    cluster.wait_caught_up(behind, 1).await;
    if let Some(missing) = missing_products(&cluster, behind, &names).await {
        panic!("after catching up by snapshot: {missing}");
    }

    // The installed snapshot is durable: after another crash the node has everything without
    // being sent a snapshot again (the leader still holds the log from where node 3 stopped).
    let before = applied(1).await;
    cluster.kill9(behind);
    cluster.restart(behind).await;
    cluster.wait_caught_up(behind, 1).await;
    if let Some(missing) = missing_products(&cluster, behind, &names).await {
        panic!("after restarting on the installed snapshot: {missing}");
    }
    let after = applied(1).await;
    assert!(
        !logged_since_last_start(&cluster, behind, INSTALLED),
        "node {behind} needed another snapshot after a restart, so it had not kept the one it \
         installed (the leader's applied index moved {before} -> {after} meanwhile; the log keeps \
         {SNAPSHOT_LOGS} entries behind a snapshot)"
    );

    cluster.invariant_check().await;
}
