//! Killing the leader (SIGKILL) under a steady write load loses no acknowledged write: writes
//! through the two other nodes resume within seconds, once they elect a new leader; every write
//! acknowledged before, during or after the failover is on both survivors; and the killed node
//! has them all once it is back on its data dir. Writes refused meanwhile (503) may or may not
//! have taken effect, so nothing is asserted about them beyond the refusal being a clean 503.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use realmq_cluster_tests::{Auth, Cluster, NodeId, WriteOutcome};
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fixtures::{leader, missing_products};

/// Election timeouts of 0.5–1 s plus the time to notice: writes must flow again well within it.
const RESUME_BOUND: Duration = Duration::from_secs(5);
const LOAD_BEFORE_KILL: Duration = Duration::from_secs(2);
const LOAD_AFTER_KILL: Duration = Duration::from_secs(8);
/// Concurrent writers per surviving node: one of them stuck on a request sent to the dying
/// leader must not hide that the others already got through.
const WRITERS_PER_NODE: usize = 2;

struct Write {
    name: String,
    sent: Instant,
    done: Instant,
    outcome: WriteOutcome,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_leader_killed_under_write_load() {
    let cluster = Arc::new(Cluster::start(3).await);
    let old_leader = leader(&cluster, &cluster.ids()).await;
    let survivors: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|&i| i != old_leader)
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = JoinSet::new();
    for &node in &survivors {
        for w in 0..WRITERS_PER_NODE {
            writers.spawn(write_until(cluster.clone(), node, w, stop.clone()));
        }
    }
    tokio::time::sleep(LOAD_BEFORE_KILL).await;
    let killed_at = Instant::now();
    cluster.kill9(old_leader);
    tokio::time::sleep(LOAD_AFTER_KILL).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes: Vec<Write> = Vec::new();
    while let Some(done) = writers.join_next().await {
        writes.extend(done.expect("a writer task panicked"));
    }

    let since_kill = |t: Instant| t.saturating_duration_since(killed_at);
    // Signed, for attempts sent before the kill too.
    let at = |t: Instant| match t.checked_duration_since(killed_at) {
        Some(d) => format!("kill+{:.3}s", d.as_secs_f64()),
        None => format!("kill-{:.3}s", (killed_at - t).as_secs_f64()),
    };
    let acked: BTreeSet<String> = writes
        .iter()
        .filter(|w| w.outcome.acked())
        .map(|w| w.name.clone())
        .collect();
    let mut failed: Vec<&Write> = writes.iter().filter(|w| !w.outcome.acked()).collect();
    failed.sort_by_key(|w| w.sent);
    let failures = match (failed.first(), failed.last()) {
        (Some(first), Some(last)) => format!(
            "{} refused, sent from {} to {}; first: {}",
            failed.len(),
            at(first.sent),
            at(last.sent),
            first.outcome
        ),
        _ => "none refused".into(),
    };
    assert!(
        writes
            .iter()
            .any(|w| w.outcome.acked() && w.done < killed_at),
        "no write succeeded before the leader was killed: {failures}"
    );
    let resumed = writes
        .iter()
        .filter(|w| w.outcome.acked() && w.sent >= killed_at)
        .map(|w| w.done)
        .min()
        .unwrap_or_else(|| {
            panic!("no write sent after the kill of leader {old_leader} succeeded in {LOAD_AFTER_KILL:?}: {failures}")
        });
    let gap = since_kill(resumed);
    eprintln!(
        "t20: leader {old_leader} killed; writes resumed {gap:?} after the kill; {} acknowledged; {failures}",
        acked.len()
    );
    assert!(
        gap <= RESUME_BOUND,
        "writes resumed {gap:?} after leader {old_leader} was killed, expected within {RESUME_BOUND:?}; {failures}"
    );
    // A survivor always answers, and refuses with the documented 503 and an error envelope.
    let unclean: Vec<String> = failed
        .iter()
        .filter(|w| !w.outcome.clean_refusal())
        .map(|w| {
            format!(
                "{} sent at {}, ended after {:?}: {}",
                w.name,
                at(w.sent),
                w.done - w.sent,
                w.outcome
            )
        })
        .collect();
    assert!(
        unclean.is_empty(),
        "writes failed otherwise than with a 503 error envelope: {unclean:?}"
    );

    for &i in &survivors {
        if let Some(missing) = missing_products(&cluster, i, &acked).await {
            panic!("acknowledged writes lost after the leader was killed: {missing}");
        }
    }
    cluster.restart(old_leader).await;
    cluster.wait_caught_up(old_leader, survivors[0]).await;
    if let Some(missing) = missing_products(&cluster, old_leader, &acked).await {
        panic!("the restarted former leader lacks acknowledged writes: {missing}");
    }

    cluster.invariant_check().await;
}

/// Creates products named `t20-n{node}-w{writer}-{seq}` through `node`, one at a time, until
/// `stop`; returns every attempt.
async fn write_until(
    cluster: Arc<Cluster>,
    node: NodeId,
    writer: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for seq in 0.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let name = format!("t20-n{node}-w{writer}-{seq}");
        let sent = Instant::now();
        let answer = cluster
            .try_api(
                node,
                &Auth::Root,
                "POST",
                "/api/v1/products",
                Some(json!({"name": name})),
            )
            .await;
        let outcome = WriteOutcome::of(answer);
        let refused = !outcome.acked();
        writes.push(Write {
            name,
            sent,
            done: Instant::now(),
            outcome,
        });
        if refused {
            // Do not spin on a node that refuses at once.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    writes
}
