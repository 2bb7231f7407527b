//! A QoS 1 PUBACK means the message is in the sessions of the subscribers on every node: kill -9
//! the publisher's node right after it acknowledged a burst, and subscribers on the surviving
//! nodes still get every acknowledged message, in order.

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t46_acknowledged_messages_survive_the_publishers_node() {
    let cluster = Cluster::start(3).await;
    let mut subs = Vec::new();
    for node in [2, 3] {
        let mut s = MqttClient::connect(cluster.mqtt_addr(node), &format!("t46-sub{node}"), None)
            .await
            .expect("subscriber connects");
        s.subscribe("meter/#", QoS::AtLeastOnce).await;
        subs.push(s);
    }
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t46-pub", None)
        .await
        .expect("publisher connects to node 1");
    const N: usize = 300;
    for i in 0..N {
        // Each call returns once the PUBACK arrived.
        publisher
            .publish(
                "meter/1",
                QoS::AtLeastOnce,
                false,
                format!("{i}").as_bytes(),
            )
            .await;
    }
    // The very moment the last PUBACK is in, node 1 dies.
    cluster.kill9(1);
    for (k, s) in subs.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.len() < N {
            match s.next_publish(WAIT).await {
                Some(p) => got.push(
                    String::from_utf8_lossy(&p.payload)
                        .parse::<usize>()
                        .unwrap(),
                ),
                None => panic!(
                    "subscriber {} got {} of {N} acknowledged messages",
                    k + 2,
                    got.len()
                ),
            }
        }
        assert_eq!(got, (0..N).collect::<Vec<_>>(), "every one, in order, once");
    }
    println!("t46: {N} acknowledged messages reached both surviving nodes' subscribers");

    cluster.restart(1).await;
    cluster.invariant_check().await;
}
