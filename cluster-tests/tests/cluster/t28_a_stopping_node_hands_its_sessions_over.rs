//! A node stopped with SIGTERM (a rolling restart, a scale-in) closes its clients' connections
//! but keeps answering its peers until the persistent sessions it held have been taken over, for
//! a few seconds at most: a client that resumes on another node meanwhile gets the messages that
//! were in flight to it on the stopping node, rather than only its subscriptions.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;

fn persistent(cluster: &Cluster, node: u64, manual_acks: bool) -> rumqttc::MqttOptions {
    let mut opts = MqttClient::options(cluster.mqtt_addr(node), "t28-roamer", None);
    opts.set_clean_session(false);
    opts.set_manual_acks(manual_acks);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t28_a_stopping_node_hands_its_sessions_over() {
    let cluster = Cluster::start(3).await;
    // Five messages reach the session on node 2 and are never acknowledged by its client.
    let mut roamer = MqttClient::connect_with(persistent(&cluster, 2, true))
        .await
        .expect("roamer connects to node 2");
    roamer.subscribe("t28/#", QoS::AtLeastOnce).await;
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t28-pub", None)
        .await
        .expect("publisher connects to node 1");
    let sent: Vec<String> = (0..5).map(|i| format!("m{i}")).collect();
    for m in &sent {
        publisher
            .publish("t28/x", QoS::AtLeastOnce, false, m.as_bytes())
            .await;
    }
    for m in &sent {
        let p = roamer
            .next_publish(WAIT)
            .await
            .unwrap_or_else(|| panic!("{m} reaches the roamer on node 2"));
        assert_eq!(String::from_utf8_lossy(&p.payload), m.as_str());
    }

    // Node 2 is stopped; the client notices and resumes on node 3 while node 2 drains.
    let resume = async {
        roamer.expect_closed(WAIT).await;
        let mut moved = MqttClient::connect_with(persistent(&cluster, 3, false))
            .await
            .expect("resumes on node 3");
        assert!(moved.session_present(), "node 3 resumed the session");
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let Some(p) = moved.next_publish(Duration::from_secs(5)).await else {
                break;
            };
            got.push(String::from_utf8_lossy(&p.payload).into_owned());
        }
        got
    };
    let ((), got) = tokio::join!(cluster.stop(2), resume);
    assert_eq!(
        got, sent,
        "the messages in flight on the stopping node 2 follow the session to node 3"
    );

    cluster.restart(2).await;
    cluster.invariant_check().await;
}
