//! `GET /metrics`: scraped as Prometheus does, parsed with a Prometheus text parser
//! (prometheus-parse), and checked to move with what clients do.

use std::collections::HashMap;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::json;

use crate::common::{Node, WAIT};

/// One scrape: every sample by name and labels (`name{k="v",...}`, labels sorted).
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn get(&self, key: &str) -> f64 {
        *self
            .0
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key}; have {:?}", self.keys()))
    }

    fn keys(&self) -> Vec<&String> {
        let mut k: Vec<_> = self.0.keys().collect();
        k.sort();
        k
    }
}

async fn scrape(node: &Node, auth: Option<(&str, &str)>) -> (u16, String, String) {
    let mut req = reqwest::Client::new().get(format!("http://{}/metrics", node.api));
    if let Some((u, p)) = auth {
        req = req.basic_auth(u, Some(p));
    }
    let res = req.send().await.expect("scrape");
    let status = res.status().as_u16();
    let ctype = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, res.text().await.unwrap())
}

async fn parsed(node: &Node) -> Scrape {
    let (status, ctype, body) = scrape(node, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    assert!(
        body.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("a valid exposition");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    Scrape(out)
}

async fn until_acked(events: &mut rumqttc::EventLoop, acks: usize) {
    let mut seen = 0;
    tokio::time::timeout(WAIT, async {
        while seen < acks {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("connection") {
                seen += 1;
            }
        }
    })
    .await
    .expect("PUBACKs");
}

#[tokio::test]
async fn counters_move_with_traffic_and_requests() {
    let node = Node::start_with(&[], "[mqtt]\nsys_interval = 0\n");
    let before = parsed(&node).await;
    for key in [
        "realmq_connections",
        "realmq_raft_term",
        "realmq_raft_is_leader",
        "realmq_cluster_voters",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "realmq_messages_dropped_total{reason=\"queue_full\"}",
    ] {
        before.get(key);
    }
    assert_eq!(
        before.get("realmq_raft_is_leader"),
        1.0,
        "a single node leads"
    );
    assert!(before.get("process_resident_memory_bytes") > 1e6);

    // A device, created over REST: a counted request and a raft commit.
    let (s, b) = node
        .api("POST", "/api/v1/products", Some(json!({"name": "metered"})))
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["data"]["product_key"].as_str().unwrap().to_string();
    let device = json!({"name": "m1", "product_key": key, "username": "m1", "password": "pw",
        "mqtt_client_id": "m1"});
    let (s, b) = node.api("POST", "/api/v1/devices", Some(device)).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = node.api("GET", "/api/v1/devices/999999", None).await;
    assert_eq!(s, 404);

    // A wrong password, then the device publishing 3 QoS 1 and 2 QoS 0 messages.
    let mut bad = MqttOptions::new("m1", "127.0.0.1", node.port());
    bad.set_credentials("m1", "wrong");
    let (_c, mut bad_events) = AsyncClient::new(bad, 4);
    let refused = tokio::time::timeout(WAIT, bad_events.poll())
        .await
        .expect("CONNACK");
    assert!(refused.is_err(), "a wrong password was accepted");
    let mut opts = MqttOptions::new("m1", "127.0.0.1", node.port());
    opts.set_credentials("m1", "pw");
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 16);
    for i in 0..3 {
        client
            .publish(format!("m/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    for i in 0..2 {
        client
            .publish(format!("m/{i}"), QoS::AtMostOnce, false, "y")
            .await
            .unwrap();
    }
    until_acked(&mut events, 3).await;
    // The QoS 0 ones went out with (before) the last PUBACK came back; let them be routed.
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;

    let after = parsed(&node).await;
    let moved = |k: &str| after.get(k) - before.0.get(k).copied().unwrap_or(0.0);
    assert_eq!(moved("realmq_messages_received_total{qos=\"1\"}"), 3.0);
    assert_eq!(moved("realmq_messages_received_total{qos=\"0\"}"), 2.0);
    assert_eq!(moved("realmq_auth_failures_total"), 1.0);
    assert_eq!(after.get("realmq_connections"), 1.0);
    assert!(moved("realmq_bytes_received_total") > 0.0);
    assert_eq!(
        moved(
            "realmq_http_requests_total{method=\"POST\",route=\"/api/v1/devices\",status=\"200\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            "realmq_http_requests_total{method=\"GET\",route=\"/api/v1/devices/:id\",status=\"404\"}"
        ),
        1.0
    );
    assert!(
        after.get(
            "realmq_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/products\"}"
        ) >= 1.0
    );
    assert!(
        moved("realmq_raft_commit_seconds_count") >= 2.0,
        "the product, the device and the session were committed"
    );
    assert!(moved("realmq_raft_applied_index") >= 2.0);
    assert!(
        moved("realmq_http_requests_total{method=\"GET\",route=\"/metrics\",status=\"200\"}")
            >= 1.0
    );
}

#[tokio::test]
async fn scraping_can_require_credentials() {
    let node = Node::start("[api]\nmetrics_auth = true\n");
    let (status, _, body) = scrape(&node, None).await;
    assert_eq!(status, 401, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("the error envelope");
    assert_ne!(v["code"], 0);
    let (status, _, body) = scrape(&node, Some(("root", "123456"))).await;
    assert_eq!(status, 200);
    assert!(body.contains("realmq_connections"), "{body}");
}

/// The Grafana dashboard under `docs/` charts only metrics the node exports.
#[tokio::test]
async fn the_dashboard_charts_exported_metrics() {
    let node = Node::start("");
    // Request families appear with their first request.
    let (status, _) = node.api("GET", "/api/v1/products", None).await;
    assert_eq!(status, 200);
    let (_, _, body) = scrape(&node, None).await;
    let dashboard = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana-realmq.json"),
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
    let mut names = Vec::new();
    for panel in v["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("realmq_") || word.starts_with("process_") {
                    names.push(word.to_string());
                }
            }
        }
    }
    assert!(names.len() > 20, "{names:?}");
    // A single node has no peers: their families are declared (HELP/TYPE) without samples.
    for name in names {
        let family = name
            .trim_end_matches("_bucket")
            .trim_end_matches("_total")
            .to_string();
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "the dashboard charts {name}, which the node does not export"
        );
    }
}
