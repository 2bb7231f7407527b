//! Disabling a device through any node disconnects it wherever it is connected, and no node
//! lets it back in: the kick travels with the replicated write, not with the REST request.

use realmq_cluster_tests::{Cluster, MqttClient, NodeId, WAIT, eventually};
use rumqttc::{ConnectReturnCode, ConnectionError};
use serde_json::json;

use crate::fixtures::{create_device, create_product, device, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t13_disabling_a_device_on_one_node_kicks_it_off_another() {
    let cluster = Cluster::builder().allow_anonymous(false).start().await;
    let product = create_product(&cluster, 1, "t13-lamps").await;
    let dev = create_device(&cluster, 1, &product.key, "t13-lamp").await;
    let credentials = Some((dev.username.as_str(), dev.password.as_str()));

    let mut conn = MqttClient::connect(cluster.mqtt_addr(1), &dev.client_id, credentials)
        .await
        .expect("the device connects to node 1");
    // Node 3 must know the device is online before the test relies on it being kicked: the
    // status write and the kick are separate paths.
    eventually(
        "node 3 to show the device online",
        WAIT,
        async || match device(&cluster, 3, dev.id).await["status"].as_u64() {
            Some(3) => Ok(()),
            other => Err(format!("status {other:?}")),
        },
    )
    .await;

    ok(
        "disable the device on node 3",
        cluster
            .api(
                3,
                "PUT",
                &format!("/api/v1/devices/{}", dev.id),
                Some(json!({"enable": false})),
            )
            .await,
    );
    conn.expect_closed(WAIT).await;

    // Refused at once on every node, with no wait for replication: a node checks CONNECT again
    // once the connection's own registration is applied there, and by then so is every write
    // acknowledged before it (the disable included).
    refused(&cluster, 1, &dev.client_id, credentials).await;
    refused(&cluster, 2, &dev.client_id, credentials).await;
    assert_eq!(device(&cluster, 2, dev.id).await["status"], 0, "disabled");

    cluster.invariant_check().await;
}

async fn refused(
    cluster: &Cluster,
    node: NodeId,
    client_id: &str,
    credentials: Option<(&str, &str)>,
) {
    match MqttClient::connect(cluster.mqtt_addr(node), client_id, credentials).await {
        Err(ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized | ConnectReturnCode::BadUserNamePassword,
        )) => {}
        Err(other) => panic!("reconnect to node {node} failed otherwise: {other}"),
        Ok(_) => panic!("a disabled device was let in by node {node}"),
    }
}
