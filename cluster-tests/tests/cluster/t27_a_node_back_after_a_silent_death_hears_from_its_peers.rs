//! A node whose death its peers did not see (its machine vanished: no reset reached them, so
//! their connections to it linger until their own timeouts) comes back on its data. Its peers
//! must not keep talking into the dead connections: the restarted node catches up, learns
//! where the subscribers are and serves without waiting out their timeouts, and the first
//! message published through it reaches a subscriber on another node.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;
use tokio::time::Instant;

/// Well under the HTTP/2 keep-alive (ping every 5 s, 5 s to answer) after which the peers
/// would notice the dead connections by themselves.
const BACK_WITHIN: Duration = Duration::from_secs(4);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t27_a_node_back_after_a_silent_death_hears_from_its_peers() {
    let cluster = Cluster::start(3).await;
    let mut sub = MqttClient::connect(cluster.mqtt_addr(2), "t27-sub", None)
        .await
        .expect("subscriber connects to node 2");
    sub.subscribe("t27/#", QoS::AtLeastOnce).await;

    cluster.hide_deaths(1);
    cluster.kill9(1);
    let restarted = Instant::now();
    cluster.restart(1).await;
    let took = restarted.elapsed();
    assert!(
        took < BACK_WITHIN,
        "node 1 took {took:?} to serve again: its peers were still talking into the connections \
         its old process left"
    );
    assert!(
        !cluster.logged(
            1,
            "serving clients before these members sent their subscriptions"
        ),
        "node 1 served before it knew the other nodes' subscriptions"
    );
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t27-pub", None)
        .await
        .expect("publisher connects to the restarted node 1");
    publisher
        .publish("t27/first", QoS::AtLeastOnce, false, b"first")
        .await;
    let got = sub
        .next_publish(WAIT)
        .await
        .expect("the subscriber on node 2 gets the first message node 1 acknowledged");
    assert_eq!(got.topic, "t27/first");

    cluster.invariant_check().await;
}
