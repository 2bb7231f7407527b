//! A node cut off from the others (first the leader, then a follower) refuses REST writes and
//! reads within a bound, with 503 "no quorum" rather than a hang or a stale answer, and keeps
//! carrying MQTT messages between the clients connected to it. Meanwhile the majority elects a
//! leader and takes writes; once healed, the node serves those writes and takes writes again.

use std::time::Duration;

use realmq_cluster_tests::{Auth, Cluster, MqttClient, NodeId, WAIT, eventually};
use rumqttc::{QoS, SubscribeReasonCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::fixtures::{leader, ok};

/// The design's bound is about 2 x election_timeout_max + heartbeat (2.1 s here).
const REFUSE_BOUND: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t21_a_cut_off_minority_refuses_writes_and_keeps_serving_mqtt() {
    let cluster = Cluster::start(3).await;

    // The leader first: it still believes it leads when the cut starts.
    let first = leader(&cluster, &cluster.ids()).await;
    cut_off_and_heal(&cluster, first, "leader").await;

    // Then a follower, preferably another node than the one already cut off.
    let now_leader = leader(&cluster, &cluster.ids()).await;
    let followers: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|&i| i != now_leader)
        .collect();
    let second = followers
        .iter()
        .copied()
        .find(|&i| i != first)
        .unwrap_or(followers[0]);
    cut_off_and_heal(&cluster, second, "follower").await;

    cluster.invariant_check().await;
}

/// Cuts node `x` (`role` names what it was, for names and messages) off and checks what it and
/// the majority do; heals it and checks it converges.
async fn cut_off_and_heal(cluster: &Cluster, x: NodeId, role: &str) {
    let majority: Vec<NodeId> = cluster.ids().into_iter().filter(|&i| i != x).collect();
    let mut sub = MqttClient::connect(cluster.mqtt_addr(x), &format!("t21-{role}-sub"), None)
        .await
        .expect("the subscriber connects before the cut");
    let granted = sub
        .subscribe(&format!("t21/{role}/#"), QoS::AtLeastOnce)
        .await;
    assert_eq!(granted, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(x), &format!("t21-{role}-pub"), None)
        .await
        .expect("the publisher connects before the cut");

    cluster.cut(x);
    // X refuses a write while the majority, once it has a leader, takes one.
    let during = format!("t21-{role}-majority-write");
    let (refused_write, ()) = tokio::join!(
        timed(cluster.api(
            x,
            "POST",
            "/api/v1/products",
            Some(json!({"name": format!("t21-{role}-minority-write")})),
        )),
        write_eventually(cluster, majority[0], &during),
    );
    assert_no_quorum(x, role, "a write", refused_write);
    let body = ok(
        &format!("read the majority's write on node {}", majority[1]),
        cluster
            .api(
                majority[1],
                "GET",
                &format!("/api/v1/products?product_name={during}"),
                None,
            )
            .await,
    );
    assert!(body["meta"]["count"].as_u64() >= Some(1), "{body}");

    // A read on X now could only be stale: it must be refused too.
    let refused_read = timed(cluster.api(
        x,
        "GET",
        &format!("/api/v1/products?product_name={during}"),
        None,
    ))
    .await;
    assert_no_quorum(x, role, "a read", refused_read);

    // MQTT between two clients of X needs no quorum.
    let topic = format!("t21/{role}/during-cut");
    publisher
        .publish(&topic, QoS::AtLeastOnce, false, b"still here")
        .await;
    let msg = sub.next_publish(WAIT).await.unwrap_or_else(|| {
        panic!(
            "the subscriber on cut-off node {x} ({role}) got no message from the publisher there"
        )
    });
    assert_eq!(
        (msg.topic.as_str(), &msg.payload[..]),
        (topic.as_str(), &b"still here"[..])
    );
    drop((sub, publisher));

    cluster.heal(x);
    eventually(
        &format!("healed node {x} ({role}) to serve the write the majority took meanwhile"),
        WAIT,
        async || {
            let path = format!("/api/v1/products?product_name={during}");
            match cluster.try_api(x, &Auth::Root, "GET", &path, None).await? {
                (200, body) if body["meta"]["count"].as_u64() >= Some(1) => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    let after = format!("t21-{role}-after-heal");
    write_eventually(cluster, x, &after).await;
    let body = ok(
        &format!("read node {x}'s write on node {}", majority[0]),
        cluster
            .api(
                majority[0],
                "GET",
                &format!("/api/v1/products?product_name={after}"),
                None,
            )
            .await,
    );
    assert!(body["meta"]["count"].as_u64() >= Some(1), "{body}");
}

/// Creates a product named `name` on `node`, retrying while the node refuses (no leader yet);
/// a refused attempt may still have taken effect, so the name may end up listed twice.
async fn write_eventually(cluster: &Cluster, node: NodeId, name: &str) {
    eventually(
        &format!("node {node} to take the write {name}"),
        WAIT,
        async || {
            let body = Some(json!({"name": name}));
            match cluster
                .try_api(node, &Auth::Root, "POST", "/api/v1/products", body)
                .await?
            {
                (200, body) if body["code"] == 0 => Ok(()),
                (status, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await
}

async fn timed<T>(f: impl Future<Output = T>) -> (Duration, T) {
    let start = Instant::now();
    let out = f.await;
    (start.elapsed(), out)
}

fn assert_no_quorum(
    x: NodeId,
    role: &str,
    what: &str,
    (took, (status, body)): (Duration, (u16, Value)),
) {
    eprintln!("t21: {what} on cut-off node {x} ({role}) answered {status} after {took:?}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        status == 503 && body["code"] != 0 && message.contains("no quorum"),
        "{what} on cut-off node {x} ({role}) answered {status} {body} after {took:?}, expected 503 no quorum"
    );
    assert!(
        took <= REFUSE_BOUND,
        "{what} on cut-off node {x} ({role}) was refused after {took:?}, expected within {REFUSE_BOUND:?}"
    );
}
