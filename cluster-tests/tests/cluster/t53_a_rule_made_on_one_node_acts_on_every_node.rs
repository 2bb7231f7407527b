//! A rule created through node 1 runs on node 3, where the message enters the cluster, and its
//! republished alarm reaches a subscriber on node 2; the rule's detail on any node sums every
//! node's counters; disabling it through node 2 and deleting it through node 3 stop it on
//! every node.

use std::time::Duration;

use realmq_cluster_tests::{Cluster, MqttClient, NodeId, WAIT, eventually};
use rumqttc::QoS;
use serde_json::{Value, json};

use crate::fixtures::ok;

/// Waits until node `on` reports rule `id` as running (`true`) or stopped there.
async fn running_on(cluster: &Cluster, on: NodeId, id: u64, running: bool) {
    eventually(
        &format!("rule {id} running={running} on node {on}"),
        WAIT,
        async || {
            let (status, body) = cluster
                .api(on, "GET", &format!("/api/v1/rules/{id}"), None)
                .await;
            let row = body["data"]["node_metrics"]
                .as_array()
                .and_then(|rows| rows.iter().find(|r| r["node"] == on))
                .cloned()
                .unwrap_or(Value::Null);
            if status == 200 && row["running"] == running {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t53_a_rule_made_on_one_node_acts_on_every_node() {
    let cluster = Cluster::start(3).await;
    let created = ok(
        "create a rule on node 1",
        cluster
            .api(
                1,
                "POST",
                "/api/v1/rules",
                Some(json!({
                    "name": "overheat",
                    "sql": "SELECT payload.t AS t, clientid FROM \"plant/+/temp\" WHERE payload.t > 80",
                    "actions": [{"type": "republish", "topic": "alarm/${clientid}", "payload": "${t}", "qos": 1}],
                })),
            )
            .await,
    );
    let id = created["data"]["id"].as_u64().expect("rule id");
    for n in 1..=3 {
        running_on(&cluster, n, id, true).await;
    }

    let mut sub = MqttClient::connect(cluster.mqtt_addr(2), "t53-sub", None)
        .await
        .expect("subscriber connects to node 2");
    sub.subscribe("alarm/#", QoS::AtLeastOnce).await;
    let mut publisher = MqttClient::connect(cluster.mqtt_addr(3), "t53-pub", None)
        .await
        .expect("publisher connects to node 3");
    for t in [20, 95, 40] {
        publisher
            .publish(
                "plant/boiler/temp",
                QoS::AtLeastOnce,
                false,
                format!("{{\"t\":{t}}}").as_bytes(),
            )
            .await;
    }
    let alarm = sub.next_publish(WAIT).await.expect("the alarm");
    assert_eq!(alarm.topic, "alarm/t53-pub");
    assert_eq!(&alarm.payload[..], b"95");
    assert!(
        sub.next_publish(Duration::from_millis(500)).await.is_none(),
        "one alarm only"
    );
    // Node 1's detail sums what node 3 counted.
    let detail = eventually("summed counters", WAIT, async || {
        let body = ok(
            "rule detail on node 1",
            cluster
                .api(1, "GET", &format!("/api/v1/rules/{id}"), None)
                .await,
        );
        if body["data"]["metrics"]["matched"] == 3 {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let metrics = &detail["data"]["metrics"];
    assert_eq!(metrics["passed"], 1, "{detail}");
    assert_eq!(metrics["actions_success"], 1, "{detail}");
    let node3 = detail["data"]["node_metrics"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["node"] == 3))
        .cloned()
        .expect("node 3's row");
    assert_eq!(node3["matched"], 3, "{detail}");

    // Disabled through node 2: once node 3 has applied it, the rule acts there no more.
    ok(
        "disable on node 2",
        cluster
            .api(
                2,
                "PUT",
                &format!("/api/v1/rules/{id}"),
                Some(json!({"enable": false})),
            )
            .await,
    );
    running_on(&cluster, 3, id, false).await;
    publisher
        .publish("plant/boiler/temp", QoS::AtLeastOnce, false, b"{\"t\":99}")
        .await;
    assert!(
        sub.next_publish(Duration::from_millis(800)).await.is_none(),
        "a disabled rule acted"
    );

    // Enabled again and deleted through node 3: gone from every node.
    ok(
        "enable on node 1",
        cluster
            .api(
                1,
                "PUT",
                &format!("/api/v1/rules/{id}"),
                Some(json!({"enable": true})),
            )
            .await,
    );
    running_on(&cluster, 3, id, true).await;
    ok(
        "delete on node 3",
        cluster
            .api(3, "DELETE", &format!("/api/v1/rules/{id}"), None)
            .await,
    );
    for n in 1..=3 {
        eventually(&format!("rule gone on node {n}"), WAIT, async || {
            let (status, body) = cluster
                .api(n, "GET", &format!("/api/v1/rules/{id}"), None)
                .await;
            let (_, all) = cluster.api(n, "GET", "/api/v1/rules", None).await;
            if status == 404 && all["meta"]["count"] == 0 {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        })
        .await;
    }
    publisher
        .publish("plant/boiler/temp", QoS::AtLeastOnce, false, b"{\"t\":99}")
        .await;
    assert!(
        sub.next_publish(Duration::from_millis(800)).await.is_none(),
        "a deleted rule acted"
    );

    cluster.invariant_check().await;
}
