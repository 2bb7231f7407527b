//! A node beyond the three voters joins as a learner: every node lists it, reachable, beside an
//! unchanged leader; it serves REST (linearizable reads, writes forwarded to the leader) and MQTT
//! like any node. An administrator then removes it through another node, and the voters drop it
//! from the member list.

use realmq_cluster_tests::{Cluster, MqttClient, NodeId, NodeStatus, WAIT, eventually};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::json;

use crate::fixtures::{create_product, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t30_a_fourth_node_joins_as_learner_and_is_removed() {
    let cluster = Cluster::start(3).await;
    let before = create_product(&cluster, 1, "t30-before-join").await;

    let learner = cluster.add_node().await;
    assert_eq!(learner, 4);
    for i in cluster.ids() {
        eventually(
            &format!("node {i} to list node {learner} as a reachable learner"),
            WAIT,
            async || view_with_learner(i, &cluster.nodes_seen_by(i).await?, learner),
        )
        .await;
    }

    // REST: a read of what was written before it joined, a write read back on a voter.
    let body = ok(
        "read on the learner",
        cluster
            .api(
                learner,
                "GET",
                &format!("/api/v1/products/{}", before.id),
                None,
            )
            .await,
    );
    assert_eq!(body["data"][0]["name"], "t30-before-join", "{body}");
    let via = create_product(&cluster, learner, "t30-via-learner").await;
    let body = ok(
        "read the learner's write on node 1",
        cluster
            .api(1, "GET", &format!("/api/v1/products/{}", via.id), None)
            .await,
    );
    assert_eq!(body["data"][0]["name"], "t30-via-learner", "{body}");

    // MQTT: a client of the learner gets what is published on the learner.
    let mut sub = MqttClient::connect(cluster.mqtt_addr(learner), "t30-sub", None)
        .await
        .expect("a client connects to the learner");
    let granted = sub.subscribe("t30/#", QoS::AtLeastOnce).await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    ok(
        "publish on the learner",
        cluster
            .api(
                learner,
                "POST",
                "/api/v1/mqtt/publish",
                Some(json!({"topic": "t30/hello", "payload": "from rest", "qos": 1})),
            )
            .await,
    );
    let msg = sub
        .next_publish(WAIT)
        .await
        .expect("the learner's client gets the message");
    assert_eq!(
        (msg.topic.as_str(), &msg.payload[..]),
        ("t30/hello", &b"from rest"[..])
    );
    sub.disconnect().await;

    ok(
        "remove the learner through node 2",
        cluster
            .api(2, "DELETE", &format!("/api/v1/nodes/{learner}"), None)
            .await,
    );
    for i in 1..=3 {
        eventually(
            &format!("node {i} to list the three voters only"),
            WAIT,
            async || voters_only(i, &cluster.nodes_seen_by(i).await?),
        )
        .await;
    }
    let (status, body) = cluster
        .api(1, "DELETE", &format!("/api/v1/nodes/{learner}"), None)
        .await;
    assert_eq!(status, 404, "removing node {learner} again: {body}");

    cluster.retire(learner);
    cluster.invariant_check().await;
}

/// Node `on`'s view once the learner joined: nodes 1 to 4, all reachable, voters 1 to 3 with one
/// leader that everyone follows, `learner` a learner.
fn view_with_learner(on: NodeId, nodes: &[NodeStatus], learner: NodeId) -> Result<(), String> {
    let leader = one_leader(on, nodes, &[1, 2, 3, learner])?;
    for n in nodes {
        let role = match n.id {
            id if id == learner => "learner",
            id if id == leader => "leader",
            _ => "follower",
        };
        if !(n.reachable && n.role.as_deref() == Some(role) && n.leader == Some(leader)) {
            return Err(format!(
                "node {on} reports node {} as {n:?}, expected a reachable {role} of leader {leader}",
                n.id
            ));
        }
    }
    Ok(())
}

/// Node `on`'s view once the learner was removed: nodes 1 to 3, one leader.
fn voters_only(on: NodeId, nodes: &[NodeStatus]) -> Result<(), String> {
    one_leader(on, nodes, &[1, 2, 3]).map(|_| ())
}

/// The one leader in `nodes` if they are exactly `ids` and one of them is the leader.
fn one_leader(on: NodeId, nodes: &[NodeStatus], ids: &[NodeId]) -> Result<NodeId, String> {
    let mut listed: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
    listed.sort();
    if listed != ids {
        return Err(format!(
            "node {on} lists nodes {listed:?}, expected {ids:?}"
        ));
    }
    let leaders: Vec<NodeId> = nodes
        .iter()
        .filter(|n| n.role.as_deref() == Some("leader"))
        .map(|n| n.id)
        .collect();
    match leaders[..] {
        [leader] => Ok(leader),
        _ => Err(format!("node {on} sees leaders {leaders:?}: {nodes:?}")),
    }
}
