//! A node that stays unreachable past `dead_node_grace` cannot report its clients' disconnects
//! itself: the leader marks them disconnected (devices offline) for it, and the node, back on
//! its data, finds them so.

use std::time::{Duration, Instant};

use realmq_cluster_tests::{Cluster, MqttClient, WAIT, eventually};

use crate::fixtures::{create_device, create_product, device};

const GRACE_S: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t24_a_lost_nodes_clients_go_offline() {
    let cluster = Cluster::builder()
        .allow_anonymous(false)
        .cluster_toml(&format!("dead_node_grace = {GRACE_S}"))
        .start()
        .await;
    let lost = cluster
        .status(1)
        .await
        .expect("status")
        .leader
        .expect("leader")
        % 3
        + 1;
    let other = lost % 3 + 1;
    let product = create_product(&cluster, other, "t24-meters").await;
    let dev = create_device(&cluster, other, &product.key, "t24-meter").await;
    let credentials = Some((dev.username.as_str(), dev.password.as_str()));
    let _conn = MqttClient::connect(cluster.mqtt_addr(lost), &dev.client_id, credentials)
        .await
        .expect("the device connects to the node about to be lost");
    eventually(
        "the device online everywhere",
        WAIT,
        async || match device(&cluster, other, dev.id).await["status"].as_u64() {
            Some(3) => Ok(()),
            s => Err(format!("status {s:?}")),
        },
    )
    .await;

    cluster.kill9(lost);
    let killed = Instant::now();
    eventually(
        "the leader to mark the lost node's device offline",
        Duration::from_secs(GRACE_S) + WAIT,
        async || match device(&cluster, other, dev.id).await["status"].as_u64() {
            Some(2) => Ok(()),
            s => Err(format!("status {s:?}")),
        },
    )
    .await;
    assert!(
        killed.elapsed() >= Duration::from_secs(GRACE_S),
        "marked offline after {:?}, before the grace period",
        killed.elapsed()
    );

    cluster.restart(lost).await;
    cluster.wait_caught_up(lost, other).await;
    assert_eq!(device(&cluster, lost, dev.id).await["status"], 2, "offline");
    cluster.invariant_check().await;
}
