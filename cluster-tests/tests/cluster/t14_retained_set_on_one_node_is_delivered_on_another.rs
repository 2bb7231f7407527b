//! Retained messages live in the replicated state: one published (or replaced) through one node
//! is delivered to a new subscriber on another node.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, NodeId, WAIT};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;

use crate::fixtures::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t14_retained_set_on_one_node_is_delivered_on_another() {
    let cluster = Cluster::start(3).await;

    publish_retained(&cluster, 2, "on").await;
    // Retained messages are looked up in the subscriber's node's local state machine.
    cluster.wait_caught_up(3, 2).await;
    assert_eq!(retained_on(&cluster, 3, "t14-sub-3").await, "on");

    // Replacing it elsewhere replaces it everywhere: one retained message per topic.
    publish_retained(&cluster, 1, "off").await;
    cluster.wait_caught_up(2, 1).await;
    assert_eq!(retained_on(&cluster, 2, "t14-sub-2").await, "off");

    cluster.invariant_check().await;
}

async fn publish_retained(cluster: &Cluster, on: NodeId, payload: &str) {
    ok(
        &format!("retained publish on node {on}"),
        cluster
            .api(
                on,
                "POST",
                "/api/v1/mqtt/publish",
                Some(json!({"topic": "t14/lamp/state", "payload": payload, "qos": 1, "retain": true})),
            )
            .await,
    );
}

/// Subscribes a new client on `node` and returns the one retained message it gets.
async fn retained_on(cluster: &Cluster, node: NodeId, client_id: &str) -> String {
    let mut sub = MqttClient::connect(cluster.mqtt_addr(node), client_id, None)
        .await
        .expect("anonymous subscriber connects");
    let granted = sub.subscribe("t14/#", QoS::AtLeastOnce).await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let msg = sub
        .next_publish(WAIT)
        .await
        .unwrap_or_else(|| panic!("no retained message on node {node}"));
    assert_eq!((msg.topic.as_str(), msg.retain), ("t14/lamp/state", true));
    // Anything else retained under the filter would be a stale copy of the replaced message.
    let extra = sub.next_publish(Duration::from_millis(500)).await;
    assert!(extra.is_none(), "a second retained message: {extra:?}");
    String::from_utf8(msg.payload.to_vec()).expect("utf-8 payload")
}
