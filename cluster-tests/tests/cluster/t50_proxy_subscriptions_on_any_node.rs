//! `POST /api/v1/mqtt/subscribe` and `unsubscribe` on any node act on the client's session
//! wherever it is held; a client with no session anywhere is a 404 on every node.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;
use serde_json::json;

use crate::fixtures::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_proxy_subscriptions_on_any_node() {
    let cluster = Cluster::start(3).await;
    let mut device = MqttClient::connect(cluster.mqtt_addr(2), "t50-device", None)
        .await
        .expect("device connects to node 2");
    // Subscribed for it through node 1's API.
    ok(
        "proxy subscribe on node 1",
        cluster
            .api(
                1,
                "POST",
                "/api/v1/mqtt/subscribe",
                Some(json!({"topic": "cmd/t50", "clientid": "t50-device", "qos": 1})),
            )
            .await,
    );
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(3), "t50-pub", None)
        .await
        .expect("publisher connects to node 3");
    publisher
        .publish("cmd/t50", QoS::AtLeastOnce, false, b"reboot")
        .await;
    let p = device
        .next_publish(WAIT)
        .await
        .expect("the proxy subscription delivers");
    assert_eq!(&p.payload[..], b"reboot");

    // Removed through node 3's API: nothing more arrives.
    ok(
        "proxy unsubscribe on node 3",
        cluster
            .api(
                3,
                "POST",
                "/api/v1/mqtt/unsubscribe",
                Some(json!({"topic": "cmd/t50", "clientid": "t50-device"})),
            )
            .await,
    );
    publisher
        .publish("cmd/t50", QoS::AtLeastOnce, false, b"again")
        .await;
    assert!(
        device
            .next_publish(Duration::from_millis(500))
            .await
            .is_none(),
        "unsubscribed through another node"
    );
    // Unsubscribing again: that session has no such subscription.
    let (status, body) = cluster
        .api(
            1,
            "POST",
            "/api/v1/mqtt/unsubscribe",
            Some(json!({"topic": "cmd/t50", "clientid": "t50-device"})),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    for node in [1, 2, 3] {
        let (status, body) = cluster
            .api(
                node,
                "POST",
                "/api/v1/mqtt/subscribe",
                Some(json!({"topic": "x", "clientid": "t50-nobody"})),
            )
            .await;
        assert_eq!(status, 404, "node {node}: {body}");
        assert_ne!(body["code"], json!(0));
    }

    cluster.invariant_check().await;
}
