//! Retained messages and wills across nodes: a retained message set on one node (acknowledged
//! once it is replicated) reaches later subscribers on another and is cleared cluster-wide; a
//! will is published once, by the node that held the connection, to subscribers on every node.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT, eventually};
use rumqttc::{LastWill, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t45_retained_and_will_across_nodes() {
    let cluster = Cluster::start(3).await;

    // Retained: set on node 3 over MQTT, seen by a subscriber on node 1, cleared from node 2.
    let mut setter = MqttClient::connect(cluster.mqtt_addr(3), "t45-setter", None)
        .await
        .expect("setter connects to node 3");
    setter
        .publish("cfg/fw", QoS::AtLeastOnce, true, b"v2")
        .await;
    // The PUBACK came once the retained message was committed; the other nodes apply it
    // within a heartbeat or so. A new subscription on node 1 then gets it.
    let retained_on = async |node, want: &'static [u8]| {
        eventually(
            &format!("the retained message as {want:?} on node {node}"),
            WAIT,
            async || {
                let mut c = MqttClient::connect(cluster.mqtt_addr(node), "t45-probe", None)
                    .await
                    .map_err(|e| e.to_string())?;
                c.subscribe("cfg/#", QoS::AtLeastOnce).await;
                let got = c.next_publish(Duration::from_millis(300)).await;
                c.disconnect().await;
                match got {
                    Some(p) if p.retain && p.payload == want => Ok(()),
                    None if want.is_empty() => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    };
    retained_on(1, b"v2").await;
    let mut live = MqttClient::connect(cluster.mqtt_addr(1), "t45-live", None)
        .await
        .expect("connects to node 1");
    live.subscribe("cfg/#", QoS::AtLeastOnce).await;
    assert_eq!(
        &live.next_publish(WAIT).await.expect("retained").payload[..],
        b"v2"
    );
    let mut clearer = MqttClient::connect(cluster.mqtt_addr(2), "t45-clearer", None)
        .await
        .expect("clearer connects to node 2");
    clearer.publish("cfg/fw", QoS::AtLeastOnce, true, b"").await;
    // The clear itself is delivered live (empty payload) to the subscriber on node 1, and node
    // 3 forgets the retained message.
    let p = live.next_publish(WAIT).await.expect("the clear, live");
    assert!(p.payload.is_empty());
    retained_on(3, b"").await;

    // Will: subscribers on all three nodes; the device on node 2 drops its connection.
    let mut watchers = Vec::new();
    for node in [1, 2, 3] {
        let mut w = MqttClient::connect(cluster.mqtt_addr(node), &format!("t45-w{node}"), None)
            .await
            .expect("watcher connects");
        w.subscribe("status/+", QoS::AtLeastOnce).await;
        watchers.push(w);
    }
    let mut opts = MqttClient::options(cluster.mqtt_addr(2), "t45-device", None);
    opts.set_last_will(LastWill::new(
        "status/device",
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    let device = MqttClient::connect_with(opts)
        .await
        .expect("device connects to node 2");
    // Dropped without DISCONNECT: the socket closes, the will goes out.
    drop(device);
    for (i, w) in watchers.iter_mut().enumerate() {
        let p = w
            .next_publish(WAIT)
            .await
            .unwrap_or_else(|| panic!("watcher on node {} got no will", i + 1));
        assert_eq!(&p.payload[..], b"offline");
        assert!(
            w.next_publish(Duration::from_millis(500)).await.is_none(),
            "the will was published more than once (watcher on node {})",
            i + 1
        );
    }

    cluster.invariant_check().await;
}
