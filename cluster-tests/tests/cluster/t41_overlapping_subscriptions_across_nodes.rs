//! Overlapping and wildcard subscriptions spread over the nodes: every session gets one copy
//! of each message, however many of its filters match and whichever node it is on, and an HTTP
//! publish reports the sessions it reached on every node.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;
use serde_json::json;

use crate::fixtures::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t41_overlapping_subscriptions_across_nodes() {
    let cluster = Cluster::start(3).await;
    // Node 2: one session with three overlapping filters; node 3: one with `#`; node 1 (the
    // publisher's node): one with the exact topic.
    let mut a = MqttClient::connect(cluster.mqtt_addr(2), "t41-a", None)
        .await
        .expect("a connects to node 2");
    for f in ["site/+/temp", "site/#", "site/s1/temp"] {
        a.subscribe(f, QoS::AtLeastOnce).await;
    }
    let mut b = MqttClient::connect(cluster.mqtt_addr(3), "t41-b", None)
        .await
        .expect("b connects to node 3");
    b.subscribe("#", QoS::AtLeastOnce).await;
    let mut c = MqttClient::connect(cluster.mqtt_addr(1), "t41-c", None)
        .await
        .expect("c connects to node 1");
    c.subscribe("site/s1/temp", QoS::AtLeastOnce).await;
    // A second session on node 3 matching nothing published below.
    let mut d = MqttClient::connect(cluster.mqtt_addr(3), "t41-d", None)
        .await
        .expect("d connects to node 3");
    d.subscribe("other/+", QoS::AtLeastOnce).await;

    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t41-pub", None)
        .await
        .expect("publisher connects to node 1");
    for i in 0..20 {
        publisher
            .publish(
                "site/s1/temp",
                QoS::AtLeastOnce,
                false,
                format!("m{i}").as_bytes(),
            )
            .await;
    }
    // Over HTTP on node 3: a, b and c are reached, on three nodes.
    let body = ok(
        "publish over HTTP on node 3",
        cluster
            .api(
                3,
                "POST",
                "/api/v1/mqtt/publish",
                Some(json!({"topic": "site/s1/temp", "payload": "http", "qos": 1})),
            )
            .await,
    );
    assert_eq!(
        body["data"]["matched"],
        json!(3),
        "matched counts the sessions on every node: {body}"
    );

    let expected: Vec<String> = (0..20)
        .map(|i| format!("m{i}"))
        .chain(["http".to_string()])
        .collect();
    for (name, client) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let mut got = Vec::new();
        while got.len() < expected.len() {
            match client.next_publish(WAIT).await {
                Some(p) => got.push(String::from_utf8_lossy(&p.payload).into_owned()),
                None => panic!("{name} got {} of {}: {got:?}", got.len(), expected.len()),
            }
        }
        let mut mqtt: Vec<String> = got.iter().filter(|p| *p != "http").cloned().collect();
        assert_eq!(mqtt.len(), 20, "{name}: one copy of each: {got:?}");
        mqtt.dedup();
        assert_eq!(mqtt, expected[..20], "{name}: in order, once each");
        assert!(
            client
                .next_publish(Duration::from_millis(300))
                .await
                .is_none(),
            "{name} got a second copy"
        );
    }
    assert!(
        d.next_publish(Duration::from_millis(300)).await.is_none(),
        "d matches nothing"
    );

    cluster.invariant_check().await;
}
