//! A rolling restart (each node stopped with SIGTERM and started on its data, one after the
//! other, twice over) under load: a publisher on every node, and persistent subscribers that
//! follow the serving nodes without subscribing again. Every QoS 1 message acknowledged while a
//! subscriber was connected must reach it, as `make cluster-test` demands of the chart's pods
//! (the same ledger and rule of what is due, `containers/workload.rs`), here with processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use realmq_cluster_tests::Cluster;
use realmq_cluster_tests::containers::workload::{Ledger, publish, subscribe};
use tokio::time::Instant;

use crate::fixtures::leader;

const ROUNDS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t26_persistent_sessions_through_rolling_restarts() {
    let cluster = Arc::new(Cluster::start(3).await);
    let start = Instant::now();
    let ledger = Arc::new(Ledger::new(start));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for node in cluster.ids() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.push(tokio::spawn(subscribe(
            cluster.clone(),
            ledger.clone(),
            format!("ct-sub-{node}"),
            node as usize,
            stop.clone(),
            tx,
        )));
        rx.await.expect("subscribed");
    }
    for node in cluster.ids() {
        tasks.push(tokio::spawn(publish(
            cluster.clone(),
            ledger.clone(),
            node as usize,
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // As the chart's test does before its rolling restart: the leader killed and restarted,
    // then a follower cut off and healed.
    let old = leader(&cluster, &cluster.ids()).await;
    ledger
        .downs
        .lock()
        .unwrap()
        .push((old as usize, Instant::now()));
    cluster.kill9(old);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart(old).await;
    let now = leader(&cluster, &cluster.ids()).await;
    let follower = cluster.ids().into_iter().find(|&i| i != now).unwrap();
    cluster.cut(follower);
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.heal(follower);
    tokio::time::sleep(Duration::from_secs(3)).await;
    for _ in 0..ROUNDS {
        for node in cluster.ids().into_iter().rev() {
            ledger
                .downs
                .lock()
                .unwrap()
                .push((node as usize, Instant::now()));
            cluster.stop(node).await;
            cluster.restart(node).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let until = Instant::now();
    let deadline = until + Duration::from_secs(20);
    let accounts = loop {
        let accounts = ledger.accounts(start, until);
        if accounts.iter().all(|a| a.missing.is_empty()) || Instant::now() >= deadline {
            break accounts;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let problems: Vec<String> = accounts.iter().filter_map(|a| a.problem()).collect();
    let due: usize = accounts.iter().map(|a| a.due).sum();
    assert!(due > 500, "too little was due to prove anything: {due}");
    assert!(problems.is_empty(), "{problems:#?}");
    cluster.invariant_check().await;
}
