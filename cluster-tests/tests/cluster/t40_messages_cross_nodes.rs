//! A subscriber on one node gets what is published on the others: over MQTT at QoS 0, 1 and 2,
//! and through `POST /api/v1/mqtt/publish`, each message once, in order per publisher, with no
//! wait after SUBACK (it is sent once the other nodes know the route); a route withdrawn with its
//! last subscriber is announced again with the next.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;
use serde_json::json;

use crate::fixtures::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_messages_cross_nodes() {
    let cluster = Cluster::start(3).await;
    let mut sub = MqttClient::connect(cluster.mqtt_addr(2), "t40-sub", None)
        .await
        .expect("subscriber connects to node 2");
    // No waiting after SUBACK: it is sent once the other nodes know the route.
    sub.subscribe("plant/#", QoS::ExactlyOnce).await;

    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t40-pub", None)
        .await
        .expect("publisher connects to node 1");
    let mut sent = Vec::new();
    for i in 0..30 {
        let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][i % 3];
        let payload = format!("mqtt-{i}");
        publisher
            .publish("plant/line1", qos, false, payload.as_bytes())
            .await;
        sent.push(payload);
    }
    for i in 0..10 {
        let payload = format!("http-{i}");
        ok(
            "publish over HTTP on node 3",
            cluster
                .api(
                    3,
                    "POST",
                    "/api/v1/mqtt/publish",
                    Some(json!({"topic": "plant/line2", "payload": payload, "qos": 1})),
                )
                .await,
        );
        sent.push(payload);
    }

    let mut got = Vec::new();
    while got.len() < sent.len() {
        match sub.next_publish(WAIT).await {
            Some(p) => got.push(String::from_utf8_lossy(&p.payload).into_owned()),
            None => panic!("got {} of {} messages: {got:?}", got.len(), sent.len()),
        }
    }
    assert!(
        sub.next_publish(Duration::from_millis(500)).await.is_none(),
        "a message arrived twice"
    );
    let order = |prefix: &str| -> Vec<String> {
        got.iter()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect()
    };
    assert_eq!(order("mqtt-"), sent[..30], "in order per publisher");
    assert_eq!(order("http-"), sent[30..], "in order per publisher");

    // The last subscriber of the filter leaves (its route is withdrawn) and a new one comes:
    // the route is announced again and messages flow again.
    sub.disconnect().await;
    let mut again = MqttClient::connect(cluster.mqtt_addr(2), "t40-sub2", None)
        .await
        .expect("reconnect");
    again.subscribe("plant/#", QoS::AtLeastOnce).await;
    publisher
        .publish("plant/line1", QoS::AtLeastOnce, false, b"after")
        .await;
    let p = again
        .next_publish(WAIT)
        .await
        .expect("delivered after resubscribing");
    assert_eq!(&p.payload[..], b"after");

    cluster.invariant_check().await;
}
