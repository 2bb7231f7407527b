//! The operator endpoints over real connections: `GET /api/v1/clients` (and one client),
//! `DELETE /api/v1/clients/{id}` (kick), `/subscriptions`, `/routes`, `/stats`.

use std::time::Duration;

use ntex_mqtt::v5;
use serde_json::json;

use crate::common::{Node, Raw5, WAIT, connect5, sub_opts};

async fn get(node: &Node, path: &str) -> serde_json::Value {
    let (status, body) = node.api("GET", path, None).await;
    assert_eq!(status, 200, "{path}: {body}");
    assert_eq!(body["code"], 0, "{body}");
    body
}

#[tokio::test]
async fn clients_subscriptions_routes_and_kicks() {
    let node = Node::start("");
    // A 3.1.1 client (rumqttc) with one subscription, and a 5.0 one (raw) with two.
    let mut opts = rumqttc::MqttOptions::new("op-v3", "127.0.0.1", node.port());
    opts.set_keep_alive(Duration::from_secs(45));
    let (c3, mut events) = rumqttc::AsyncClient::new(opts, 8);
    c3.subscribe("sensors/+/temp", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut pkt = connect5("op-v5");
    pkt.keep_alive = 20;
    let (mut c5, _) = Raw5::connect(node.mqtt, pkt).await;
    c5.subscribe(1, None, &[("alarms/#", sub_opts(v5::QoS::ExactlyOnce))])
        .await;
    c5.subscribe(
        2,
        None,
        &[("sensors/1/temp", sub_opts(v5::QoS::AtMostOnce))],
    )
    .await;
    // rumqttc subscribes in the background; wait until its SUBSCRIBE went through.
    let listed = tokio::time::timeout(WAIT, async {
        loop {
            let b = get(&node, "/api/v1/clients").await;
            if b["meta"]["count"] == 2 && b["data"][0]["subscriptions_cnt"] == 1 {
                return b;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both clients listed with their subscriptions");
    let data = listed["data"].as_array().unwrap();
    assert_eq!(
        data[0]["clientid"], "op-v3",
        "sorted by client id: {listed}"
    );
    assert_eq!(data[0]["proto_ver"], 4);
    assert_eq!(data[0]["keepalive"], 45);
    assert_eq!(data[0]["ip_address"], "127.0.0.1");
    assert_eq!(data[0]["node"], 1);
    assert_eq!(data[1]["clientid"], "op-v5");
    assert_eq!(data[1]["proto_ver"], 5);
    assert_eq!(data[1]["keepalive"], 20);
    assert_eq!(data[1]["subscriptions_cnt"], 2);
    assert!(
        data[1]["connected_at"].as_str().unwrap().len() >= 19,
        "{listed}"
    );

    // Paging and filters as the spec's lists.
    let page = get(&node, "/api/v1/clients?_page=2&_limit=1").await;
    assert_eq!(page["data"][0]["clientid"], "op-v5");
    assert_eq!(page["meta"]["count"], 2);
    let one = get(&node, "/api/v1/clients?clientid=op-v3").await;
    assert_eq!(one["meta"]["count"], 1);
    let detail = get(&node, "/api/v1/clients/op-v5").await;
    assert_eq!(detail["data"]["clientid"], "op-v5");
    let (status, body) = node.api("GET", "/api/v1/clients/nobody", None).await;
    assert_eq!(status, 404, "{body}");
    assert_ne!(body["code"], 0);

    let subs = get(&node, "/api/v1/subscriptions?clientid=op-v5").await;
    let mut got: Vec<(String, u64)> = subs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["topic"].as_str().unwrap().into(),
                s["qos"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("alarms/#".to_string(), 2),
            ("sensors/1/temp".to_string(), 0)
        ]
    );
    let all = get(&node, "/api/v1/subscriptions").await;
    assert_eq!(all["meta"]["count"], 3);

    // The filters a message on sensors/1/temp reaches, once each.
    let routes = get(&node, "/api/v1/routes?topic=sensors/1/temp").await;
    let topics: Vec<&str> = routes["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["sensors/+/temp", "sensors/1/temp"]);
    let stats = get(&node, "/api/v1/stats").await;
    assert_eq!(stats["data"][0]["node"], 1);
    assert_eq!(stats["data"][0]["connections"], 2);
    assert_eq!(stats["data"][0]["subscriptions"], 3);
    // The counters as JSON, for the console.
    let metrics = get(&node, "/api/v1/metrics").await;
    assert_eq!(metrics["data"][0]["node"], 1);
    assert_eq!(metrics["data"][0]["connections"], 2);
    assert!(metrics["data"][0]["connects_total"].as_u64().unwrap() >= 2);
    assert!(
        metrics["data"][0]["messages_received_qos1"].is_u64(),
        "{metrics}"
    );

    // A viewer may look but not kick; an administrator kicks (5.0 hears why).
    let viewer = json!({"username": "vic", "password": "secret1", "role": "viewer"});
    let (status, body) = node.api("POST", "/api/v1/users", Some(viewer)).await;
    assert_eq!(status, 200, "{body}");
    let res = reqwest::Client::new()
        .delete(format!("http://{}/api/v1/clients/op-v5", node.api))
        .basic_auth("vic", Some("secret1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 403);
    let (status, body) = node.api("DELETE", "/api/v1/clients/op-v5", None).await;
    assert_eq!(status, 200, "{body}");
    let reason = tokio::time::timeout(WAIT, c5.expect_disconnect())
        .await
        .expect("the kicked client is closed");
    assert_eq!(
        reason,
        Some(v5::codec::DisconnectReasonCode::AdministrativeAction)
    );
    let (status, _) = node.api("DELETE", "/api/v1/clients/op-v5", None).await;
    assert_eq!(status, 404, "no longer connected");
    let left = get(&node, "/api/v1/clients").await;
    assert_eq!(left["meta"]["count"], 1);
}
