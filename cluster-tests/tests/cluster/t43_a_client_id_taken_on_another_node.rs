//! A client id connecting to another node takes the session over: the connection on the first
//! node is closed, whichever node it was on (the owner change travels with the replicated
//! session record).

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t43_a_client_id_taken_on_another_node() {
    let cluster = Cluster::start(3).await;
    let mut first = MqttClient::connect(cluster.mqtt_addr(1), "t43-roamer", None)
        .await
        .expect("connects to node 1");
    let mut second = MqttClient::connect(cluster.mqtt_addr(2), "t43-roamer", None)
        .await
        .expect("connects to node 2 with the same client id");
    first.expect_closed(WAIT).await;

    // Again: the connection on node 2 goes when the client id shows up on node 3.
    let _third = MqttClient::connect(cluster.mqtt_addr(3), "t43-roamer", None)
        .await
        .expect("connects to node 3");
    second.expect_closed(WAIT).await;

    cluster.invariant_check().await;
}
