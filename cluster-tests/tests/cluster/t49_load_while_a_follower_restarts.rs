//! Load on every node while a follower is killed (kill -9) and restarted on its data: not one
//! QoS 1 message acknowledged to a publisher is lost for the subscribers on the nodes that stayed
//! up, whichever node it was published on (the dead node's own acknowledged messages included),
//! and each arrives in order per publisher.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, NodeId, WAIT};
use rumqttc::QoS;

const LOAD: Duration = Duration::from_secs(20);

/// Publishes `{node}:{n}` on `load/{node}` until stopped or its connection ends; returns how
/// many were acknowledged.
async fn publisher(mut c: MqttClient, node: NodeId, stop: Arc<AtomicBool>) -> usize {
    let mut acked = 0;
    while !stop.load(Ordering::Relaxed) {
        let payload = format!("{node}:{acked}");
        match c
            .try_publish(
                &format!("load/{node}"),
                QoS::AtLeastOnce,
                false,
                payload.as_bytes(),
            )
            .await
        {
            Ok(()) => acked += 1,
            Err(_) => break,
        }
    }
    acked
}

/// Collects every message until stopped and drained; per publishing node, the sequence numbers
/// in arrival order. Ends early, with what it got, if its node dies.
async fn subscriber(mut c: MqttClient, stop: Arc<AtomicBool>) -> BTreeMap<NodeId, Vec<usize>> {
    let mut got: BTreeMap<NodeId, Vec<usize>> = BTreeMap::new();
    loop {
        match c.try_next_publish(Duration::from_millis(500)).await {
            Ok(Some(p)) => {
                let text = String::from_utf8_lossy(&p.payload).into_owned();
                let (node, n) = text.split_once(':').expect("node:n");
                got.entry(node.parse().unwrap())
                    .or_default()
                    .push(n.parse().unwrap());
            }
            Ok(None) if stop.load(Ordering::Relaxed) => return got,
            Ok(None) => {}
            Err(_) => return got,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t49_load_while_a_follower_restarts() {
    let cluster = Cluster::start(3).await;
    let leader = cluster
        .status(1)
        .await
        .expect("status of node 1")
        .leader
        .expect("a leader");
    let follower = cluster.ids().into_iter().find(|&n| n != leader).unwrap();

    let (stop_pub, stop_sub) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut subs = Vec::new();
    for node in cluster.ids() {
        let mut s = MqttClient::connect(cluster.mqtt_addr(node), &format!("t49-sub{node}"), None)
            .await
            .expect("subscriber connects");
        s.subscribe("load/#", QoS::AtLeastOnce).await;
        subs.push((node, tokio::spawn(subscriber(s, stop_sub.clone()))));
    }
    let mut pubs = Vec::new();
    for node in cluster.ids() {
        let p = MqttClient::connect(cluster.mqtt_addr(node), &format!("t49-pub{node}"), None)
            .await
            .expect("publisher connects");
        pubs.push((node, tokio::spawn(publisher(p, node, stop_pub.clone()))));
    }

    tokio::time::sleep(LOAD / 4).await;
    cluster.kill9(follower);
    tokio::time::sleep(LOAD / 4).await;
    cluster.restart(follower).await;
    tokio::time::sleep(LOAD / 2).await;
    stop_pub.store(true, Ordering::Relaxed);
    let mut acked = BTreeMap::new();
    for (node, p) in pubs {
        acked.insert(node, p.await.expect("publisher task"));
    }
    stop_sub.store(true, Ordering::Relaxed);

    let mut lines = Vec::new();
    for (node, s) in subs {
        let got = tokio::time::timeout(WAIT * 3, s)
            .await
            .expect("subscriber drains")
            .expect("subscriber task");
        if node == follower {
            continue;
        }
        for (&from, &n) in &acked {
            let seq = got.get(&from).cloned().unwrap_or_default();
            lines.push(format!(
                "subscriber on node {node}: {} of {n} acknowledged from node {from}",
                seq.len()
            ));
            // Every acknowledged message, once, in order (what was published but not yet
            // acknowledged when a publisher's node died may arrive too, after them).
            assert!(
                seq.len() >= n && seq[..n] == (0..n).collect::<Vec<_>>()[..],
                "subscriber on node {node}, messages from node {from}: {} received for {n} acknowledged; first gap at {:?}",
                seq.len(),
                seq.iter().enumerate().find(|(i, v)| *i != **v)
            );
        }
    }
    println!("t49: follower {follower} killed and restarted under load");
    for l in lines {
        println!("t49: {l}");
    }
    assert!(
        acked.iter().all(|(node, n)| *node == follower || *n > 100),
        "the load was too light to prove anything: {acked:?}"
    );

    cluster.invariant_check().await;
}
