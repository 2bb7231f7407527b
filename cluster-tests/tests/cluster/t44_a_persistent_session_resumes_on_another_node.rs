//! A persistent session follows its client to another node when the node it was on died
//! (kill -9): the subscriptions it made on node 1 are rebuilt on node 2 from the replicated
//! record (CONNACK session present) and deliver there without subscribing again.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT, eventually};
use rumqttc::QoS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t44_a_persistent_session_resumes_on_another_node() {
    let cluster = Cluster::start(3).await;
    let mut opts = MqttClient::options(cluster.mqtt_addr(1), "t44-roamer", None);
    opts.set_clean_session(false);
    let mut first = MqttClient::connect_with(opts)
        .await
        .expect("connects to node 1");
    first.subscribe("roam/#", QoS::AtLeastOnce).await;
    // The subscription is committed before node 1 dies (it is recorded without waiting).
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.kill9(1);
    drop(first);

    // Refused (server unavailable) while the two survivors elect a leader, if node 1 led.
    let mut resumed = eventually("resume on node 2", WAIT, async || {
        let mut opts = MqttClient::options(cluster.mqtt_addr(2), "t44-roamer", None);
        opts.set_clean_session(false);
        MqttClient::connect_with(opts)
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    assert!(resumed.session_present(), "CONNACK session present");

    // No waiting after CONNACK: the resumed subscriptions are live cluster-wide by then.
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(3), "t44-pub", None)
        .await
        .expect("publisher connects to node 3");
    for i in 0..10 {
        publisher
            .publish(
                "roam/x",
                QoS::AtLeastOnce,
                false,
                format!("m{i}").as_bytes(),
            )
            .await;
    }
    for i in 0..10 {
        let p = resumed
            .next_publish(WAIT)
            .await
            .expect("delivered on node 2");
        assert_eq!(p.payload, format!("m{i}").as_bytes(), "in order, once");
    }
    assert!(
        resumed
            .next_publish(Duration::from_millis(500))
            .await
            .is_none(),
        "a message arrived twice"
    );

    cluster.restart(1).await;
    cluster.invariant_check().await;
}
