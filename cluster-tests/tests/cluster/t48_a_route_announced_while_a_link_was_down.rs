//! A route announced while a peer link is cut is known once the link is back: the reconnecting
//! link sends the whole route set first.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t48_a_route_announced_while_a_link_was_down() {
    let cluster = Cluster::start(3).await;
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t48-pub", None)
        .await
        .expect("publisher connects to node 1");
    let mut sub = MqttClient::connect(cluster.mqtt_addr(2), "t48-sub", None)
        .await
        .expect("subscriber connects to node 2");
    // Node 2 cannot reach node 1 (node 1 can still reach node 2): node 2's routes cannot be
    // announced to node 1.
    cluster.cut_link(2, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sub.subscribe("valve/#", QoS::AtLeastOnce).await;
    publisher
        .publish("valve/1", QoS::AtLeastOnce, false, b"while-cut")
        .await;
    assert!(
        sub.next_publish(Duration::from_millis(500)).await.is_none(),
        "node 1 cannot know the route yet (the test would prove nothing)"
    );

    cluster.heal_link(2, 1);
    // Once node 2's link to node 1 is back (reconnect backoff is at most 2 s), its dump carries
    // the route: a message published on node 1 then arrives.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0;
    loop {
        n += 1;
        publisher
            .publish(
                "valve/1",
                QoS::AtLeastOnce,
                false,
                format!("after-{n}").as_bytes(),
            )
            .await;
        if let Some(p) = sub.next_publish(Duration::from_millis(200)).await {
            assert!(p.payload.starts_with(b"after-"), "{:?}", p.payload);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route never reached node 1 after the link healed"
        );
    }

    cluster.invariant_check().await;
}
