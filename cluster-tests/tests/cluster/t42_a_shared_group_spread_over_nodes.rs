//! A `$share` group with members on every node: each message goes to exactly one member in the
//! whole cluster. A member on the publisher's node is preferred; with members only on the other
//! nodes, the messages are spread over them.

use std::collections::BTreeMap;
use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;
use serde_json::json;

use crate::fixtures::ok;

/// Everything the members got within a short wait after the last message, by member.
async fn collect(members: &mut [(String, MqttClient)], total: usize) -> BTreeMap<String, String> {
    let mut owner = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while owner.len() < total && tokio::time::Instant::now() < deadline {
        for (name, m) in members.iter_mut() {
            while let Some(p) = m.next_publish(Duration::from_millis(50)).await {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                if let Some(first) = owner.insert(payload.clone(), name.clone()) {
                    panic!("{payload} delivered to {first} and to {name}");
                }
            }
        }
    }
    for (name, m) in members.iter_mut() {
        if let Some(p) = m.next_publish(Duration::from_millis(300)).await {
            panic!("{name} got an extra {:?}", p.payload);
        }
    }
    owner
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t42_a_shared_group_spread_over_nodes() {
    let cluster = Cluster::start(3).await;
    let mut members = Vec::new();
    for node in [1, 2, 3] {
        let mut m = MqttClient::connect(cluster.mqtt_addr(node), &format!("t42-m{node}"), None)
            .await
            .expect("member connects");
        m.subscribe("$share/workers/jobs/+", QoS::AtLeastOnce).await;
        members.push((format!("node{node}"), m));
    }
    // Published on node 2, over MQTT and HTTP: the local member takes each one, once.
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(2), "t42-pub", None)
        .await
        .expect("publisher connects to node 2");
    for i in 0..30 {
        publisher
            .publish(
                "jobs/a",
                QoS::AtLeastOnce,
                false,
                format!("j{i}").as_bytes(),
            )
            .await;
    }
    for i in 0..10 {
        ok(
            "publish over HTTP on node 2",
            cluster
                .api(
                    2,
                    "POST",
                    "/api/v1/mqtt/publish",
                    Some(json!({"topic": "jobs/b", "payload": format!("h{i}"), "qos": 1})),
                )
                .await,
        );
    }
    let owner = collect(&mut members, 40).await;
    assert_eq!(owner.len(), 40, "every message delivered: {owner:?}");
    assert!(
        owner.values().all(|n| n == "node2"),
        "the member on the publisher's node is preferred: {owner:?}"
    );

    // The member on node 2 leaves: messages published there go to the members on nodes 1 and
    // 3, each to exactly one, spread over both.
    let (_, gone) = members.remove(1);
    gone.disconnect().await;
    // Until node 2 has processed the DISCONNECT, its member still takes messages (and, with a
    // clean session, loses them), exactly as on a single node.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for i in 0..40 {
        publisher
            .publish(
                "jobs/c",
                QoS::AtLeastOnce,
                false,
                format!("k{i}").as_bytes(),
            )
            .await;
    }
    let owner = collect(&mut members, 40).await;
    assert_eq!(owner.len(), 40, "every message delivered once: {owner:?}");
    for name in ["node1", "node3"] {
        let n = owner.values().filter(|v| *v == name).count();
        assert!(n >= 10, "{name} got {n} of 40: round robin spreads them");
    }

    cluster.invariant_check().await;
}
