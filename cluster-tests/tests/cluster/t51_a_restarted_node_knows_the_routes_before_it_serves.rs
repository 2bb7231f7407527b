//! A node that starts (after a crash, a rolling restart, a scale-out) serves clients only once
//! the other nodes have told it their subscriptions: a message its first client publishes right
//! after it logged that it started, and that it acknowledged, reaches a subscriber on another
//! node. Before, the restarted node acknowledged such messages with no route to the subscriber
//! (the peers reconnect their links to it with a backoff of up to 2 s) and they were lost.

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t51_a_restarted_node_knows_the_routes_before_it_serves() {
    let cluster = Cluster::start(3).await;
    let mut sub = MqttClient::connect(cluster.mqtt_addr(2), "t51-sub", None)
        .await
        .expect("subscriber connects to node 2");
    sub.subscribe("t51/#", QoS::AtLeastOnce).await;

    cluster.kill9(1);
    // Long enough for node 2's link to node 1 to back off to its longest pause.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    cluster.restart(1).await;
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t51-pub", None)
        .await
        .expect("publisher connects to the restarted node 1");
    publisher
        .publish(
            "t51/first",
            QoS::AtLeastOnce,
            false,
            b"right after the restart",
        )
        .await;
    let got = sub
        .next_publish(WAIT)
        .await
        .expect("the subscriber on node 2 gets the first message node 1 acknowledged");
    assert_eq!(got.topic, "t51/first");

    cluster.invariant_check().await;
}
