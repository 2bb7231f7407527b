//! A client id connecting to another node takes the session over. With a clean start the old
//! connection is just closed; resuming (no clean start), the session moves with what it had not
//! delivered: messages in flight to the old connection and messages queued while offline follow
//! it to the new node, in order.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT};
use rumqttc::QoS;

fn persistent(cluster: &Cluster, node: u64, manual_acks: bool) -> rumqttc::MqttOptions {
    let mut opts = MqttClient::options(cluster.mqtt_addr(node), "t43-roamer", None);
    opts.set_clean_session(false);
    opts.set_manual_acks(manual_acks);
    opts
}

/// Expects `payloads` in order. Re-sends (DUP) of messages the client may not have
/// acknowledged before it left (`resent`) may come first: at least once, as on one node.
async fn expect(client: &mut MqttClient, payloads: &[String], resent: &[String], what: &str) {
    let mut want = payloads.iter().peekable();
    while let Some(next) = want.peek() {
        let p = client
            .next_publish(WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: {next} never arrived"));
        let got = String::from_utf8_lossy(&p.payload).into_owned();
        if p.dup && resent.contains(&got) {
            continue;
        }
        assert_eq!(&got, *next, "{what}: in order");
        want.next();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t43_a_client_id_taken_on_another_node() {
    let cluster = Cluster::start(3).await;
    let mut first = MqttClient::connect(cluster.mqtt_addr(1), "t43-kicked", None)
        .await
        .expect("connects to node 1");
    let mut second = MqttClient::connect(cluster.mqtt_addr(2), "t43-kicked", None)
        .await
        .expect("connects to node 2 with the same client id");
    first.expect_closed(WAIT).await;
    // Again: the connection on node 2 goes when the client id shows up on node 3.
    let _third = MqttClient::connect(cluster.mqtt_addr(3), "t43-kicked", None)
        .await
        .expect("connects to node 3");
    second.expect_closed(WAIT).await;

    // A persistent session on node 1 receives five messages and acknowledges none of them.
    let mut roamer = MqttClient::connect_with(persistent(&cluster, 1, true))
        .await
        .expect("roamer connects to node 1");
    roamer.subscribe("roam/#", QoS::AtLeastOnce).await;
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(3), "t43-pub", None)
        .await
        .expect("publisher connects to node 3");
    let m = |i: usize| format!("m{i}");
    for i in 0..5 {
        publisher
            .publish("roam/x", QoS::AtLeastOnce, false, m(i).as_bytes())
            .await;
    }
    let first: Vec<String> = (0..5).map(m).collect();
    expect(&mut roamer, &first, &[], "node 1").await;

    // The client resumes on node 2 while node 1 still holds it: node 1 closes the old
    // connection, and the unacknowledged messages are delivered again on node 2.
    let mut moved = MqttClient::connect_with(persistent(&cluster, 2, false))
        .await
        .expect("resumes on node 2");
    roamer.expect_closed(WAIT).await;
    expect(&mut moved, &first, &[], "in flight, on node 2").await;
    moved.disconnect().await;

    // Offline on node 2, messages queue there; resuming on node 3 brings them along.
    for i in 5..10 {
        publisher
            .publish("roam/x", QoS::AtLeastOnce, false, m(i).as_bytes())
            .await;
    }
    let mut again = MqttClient::connect_with(persistent(&cluster, 3, false))
        .await
        .expect("resumes on node 3");
    // What node 2 re-sent may still have been unacknowledged when the client left it.
    expect(
        &mut again,
        &(5..10).map(m).collect::<Vec<_>>(),
        &first,
        "queued, on node 3",
    )
    .await;
    publisher
        .publish("roam/x", QoS::AtLeastOnce, false, b"live")
        .await;
    expect(&mut again, &["live".to_string()], &[], "live, on node 3").await;
    assert!(
        again
            .next_publish(Duration::from_millis(500))
            .await
            .is_none(),
        "a message arrived twice"
    );

    cluster.invariant_check().await;
}
