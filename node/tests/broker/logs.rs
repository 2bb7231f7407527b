//! What an operator reads in the log: one INFO line per client connect, refusal and
//! disconnect, the REST access log when asked for, and no per-event chatter from openraft, ntex
//! or rustls at INFO. The harness runs nodes with `[log] format = "json"`, so every line parsed
//! here is also proof the JSON format covers it.

use serde_json::Value;

use crate::common::{Node, eventually};

/// The node's JSON log lines with `target`.
fn lines(node: &Node, target: &str) -> Vec<Value> {
    node.log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == target)
        .collect()
}

#[tokio::test]
async fn clients_coming_and_going_are_logged_once_each() {
    let node = Node::start_with(&[], "[mqtt]\nsys_interval = 0\n");
    // Refused: no such device, no anonymous access.
    let mut opts = rumqttc::MqttOptions::new("who-am-i", "127.0.0.1", node.port());
    opts.set_credentials("ghost", "nope");
    let (_c, mut events) = rumqttc::AsyncClient::new(opts, 4);
    assert!(events.poll().await.is_err());
    eventually("the refusal is logged", || {
        lines(&node, "realmq::clients")
            .iter()
            .any(|l| l["message"] == "client refused")
    })
    .await;
    let refused = lines(&node, "realmq::clients");
    let r = refused
        .iter()
        .find(|l| l["message"] == "client refused")
        .unwrap();
    assert_eq!(r["client_id"], "who-am-i", "{r}");
    assert_eq!(r["username"], "ghost");
    assert_eq!(r["ip"], "127.0.0.1");
    assert_eq!(r["level"], "INFO");
    assert!(
        r["reason"].as_str().unwrap().contains("NotAuthorized"),
        "{r}"
    );

    let anon = Node::start("");
    let (client, mut events) = rumqttc::AsyncClient::new(
        rumqttc::MqttOptions::new("comes-and-goes", "127.0.0.1", anon.port()),
        4,
    );
    events.poll().await.unwrap();
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}
    eventually("connect and disconnect are logged", || {
        lines(&anon, "realmq::clients")
            .iter()
            .any(|l| l["message"] == "client disconnected")
    })
    .await;
    let seen: Vec<(String, String)> = lines(&anon, "realmq::clients")
        .iter()
        .map(|l| {
            (
                l["message"].as_str().unwrap().to_string(),
                l["client_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("client connected".to_string(), "comes-and-goes".to_string()),
            (
                "client disconnected".to_string(),
                "comes-and-goes".to_string()
            )
        ]
    );
    // Dependencies say nothing at INFO: no election steps, no per-connection lines.
    let chatter: Vec<String> = anon
        .log
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["level"] == "INFO"
                && ["openraft", "ntex", "rustls", "tonic", "hyper"]
                    .iter()
                    .any(|t| v["target"].as_str().unwrap_or("").starts_with(t))
        })
        .map(|v| v.to_string())
        .collect();
    assert!(chatter.is_empty(), "{chatter:#?}");
}

#[tokio::test]
async fn the_access_log_is_off_unless_asked_for() {
    let quiet = Node::start("");
    let (status, _) = quiet.api("GET", "/api/v1/products", None).await;
    assert_eq!(status, 200);
    let loud = Node::start("[log]\naccess = true\n");
    let (status, _) = loud.api("GET", "/api/v1/products?_limit=5", None).await;
    assert_eq!(status, 200);
    eventually("the request is logged", || {
        !lines(&loud, "realmq::access").is_empty()
    })
    .await;
    let line = &lines(&loud, "realmq::access")[0];
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["path"], "/api/v1/products");
    assert_eq!(line["status"], 200);
    assert_eq!(line["user"], "root");
    assert!(line["ms"].as_f64().unwrap() >= 0.0);
    assert!(
        !line.to_string().contains("123456"),
        "the password is not logged"
    );
    assert!(lines(&quiet, "realmq::access").is_empty());
}
