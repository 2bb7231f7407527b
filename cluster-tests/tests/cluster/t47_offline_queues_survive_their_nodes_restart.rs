//! Messages waiting in offline persistent sessions are on their node's disk: kill -9 that node
//! and start it again on its data, and the sessions' queued messages (published on other
//! nodes while the clients were away) are delivered when the clients come back.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;

fn persistent(cluster: &Cluster, id: &str) -> rumqttc::MqttOptions {
    let mut opts = MqttClient::options(cluster.mqtt_addr(2), id, None);
    opts.set_clean_session(false);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t47_offline_queues_survive_their_nodes_restart() {
    let cluster = Cluster::start(3).await;
    let ids = ["t47-a", "t47-b"];
    for id in ids {
        let mut c = MqttClient::connect_with(persistent(&cluster, id))
            .await
            .expect("connects to node 2");
        c.subscribe(&format!("inbox/{id}"), QoS::AtLeastOnce).await;
        c.disconnect().await;
    }
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(1), "t47-pub", None)
        .await
        .expect("publisher connects to node 1");
    for i in 0..20 {
        for id in ids {
            publisher
                .publish(
                    &format!("inbox/{id}"),
                    QoS::AtLeastOnce,
                    false,
                    format!("{i}").as_bytes(),
                )
                .await;
        }
    }
    // Written to disk off the hot path, within milliseconds of being queued.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.restart(2).await;

    for id in ids {
        let mut c = MqttClient::connect_with(persistent(&cluster, id))
            .await
            .expect("resumes on node 2");
        assert!(c.session_present(), "{id}: session present");
        for i in 0..20 {
            let p = c
                .next_publish(WAIT)
                .await
                .unwrap_or_else(|| panic!("{id}: message {i} was lost in the restart"));
            assert_eq!(p.payload, format!("{i}").as_bytes(), "{id}: in order");
        }
        assert!(
            c.next_publish(Duration::from_millis(300)).await.is_none(),
            "{id}: a message arrived twice"
        );
    }

    cluster.invariant_check().await;
}
