//! The rule engine over the REST API, with real MQTT clients: a threshold rule republishes only
//! above its threshold; a webhook rule posts to a local HTTP server and retries; event rules
//! fire on connect, disconnect and device status; a republish loop is cut; disabling and
//! deleting a rule stop it; a rule write is in force for the very next message; bad SQL is
//! refused with its position; `POST /rules/test`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warp::Filter;

use crate::common::{Node, WAIT};

/// A client subscribed to `filter`, its SUBACK received.
async fn subscriber(node: &Node, id: &str, filter: &str) -> (AsyncClient, EventLoop) {
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", node.port()), 64);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("SUBACK");
    (client, events)
}

/// The next PUBLISH within `wait`: topic and payload.
async fn next_publish(events: &mut EventLoop, wait: Duration) -> Option<(String, String)> {
    tokio::time::timeout(wait, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.unwrap() {
                return (p.topic, String::from_utf8_lossy(&p.payload).into_owned());
            }
        }
    })
    .await
    .ok()
}

/// Publishes each (topic, payload) at QoS 1 and waits for the PUBACKs.
async fn publish_all(node: &Node, id: &str, messages: &[(&str, &str)]) {
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", node.port()), 64);
    for (topic, payload) in messages {
        client
            .publish(*topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
    }
    let mut acked = 0;
    tokio::time::timeout(WAIT, async {
        while acked < messages.len() {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    })
    .await
    .expect("PUBACKs");
    client.disconnect().await.unwrap();
    while events.poll().await.is_ok() {}
}

async fn create_rule(node: &Node, rule: Value) -> u64 {
    let (s, b) = node.api("POST", "/api/v1/rules", Some(rule)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["code"], 0, "{b}");
    b["data"]["id"].as_u64().expect("rule id")
}

async fn rule_metrics(node: &Node, id: u64) -> Value {
    let (s, b) = node.api("GET", &format!("/api/v1/rules/{id}"), None).await;
    assert_eq!(s, 200, "{b}");
    b["data"]["metrics"].clone()
}

/// Polls the rule's summed counters until `done` holds.
async fn metrics_until(node: &Node, id: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = rule_metrics(node, id).await;
        if done(&m) {
            return m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "metrics stuck at {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_threshold_rule_republishes_only_above_its_threshold() {
    let node = Node::start("");
    let id = create_rule(
        &node,
        json!({
            "name": "overheat",
            "sql": "SELECT payload.temp AS t, clientid, nth(2, split(topic, '/')) AS room \
                    FROM \"sensors/+/temp\" WHERE payload.temp > 30",
            "actions": [{"type": "republish", "topic": "alarm/${clientid}",
                         "payload": "{\"t\":${t},\"room\":\"${room}\"}", "qos": 1}],
        }),
    )
    .await;
    let (_sub, mut events) = subscriber(&node, "watcher", "alarm/#").await;
    publish_all(
        &node,
        "thermo-7",
        &[
            ("sensors/kitchen/temp", r#"{"temp": 21.5}"#),
            ("sensors/attic/temp", r#"{"temp": 35}"#),
            ("sensors/attic/humidity", r#"{"temp": 99}"#),
            ("sensors/cellar/temp", "not json"),
        ],
    )
    .await;
    let (topic, payload) = next_publish(&mut events, WAIT).await.expect("an alarm");
    assert_eq!(topic, "alarm/thermo-7");
    assert_eq!(
        serde_json::from_str::<Value>(&payload).unwrap(),
        json!({"t": 35, "room": "attic"})
    );
    assert_eq!(
        next_publish(&mut events, Duration::from_millis(500)).await,
        None
    );
    let m = metrics_until(&node, id, |m| m["matched"] == 3).await;
    assert_eq!(
        m,
        json!({"matched": 3, "passed": 1, "failed": 0, "actions_success": 1, "actions_failed": 0})
    );
    let (_, detail) = node.api("GET", &format!("/api/v1/rules/{id}"), None).await;
    assert_eq!(detail["data"]["node_metrics"][0]["node"], 1, "{detail}");
    assert_eq!(detail["data"]["name"], "overheat");
    assert_eq!(detail["data"]["enable"], true);
}

/// Receives POSTs: `/ok` answers 200, `/flaky` 503 to its first request.
async fn receiver() -> (
    u16,
    mpsc::UnboundedReceiver<(String, String)>,
    Arc<AtomicUsize>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let flaky = Arc::new(AtomicUsize::new(0));
    let calls = flaky.clone();
    let route = warp::post()
        .and(warp::path::param::<String>())
        .and(warp::body::bytes())
        .map(move |path: String, body: bytes::Bytes| {
            if path == "flaky" && calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return warp::http::StatusCode::SERVICE_UNAVAILABLE;
            }
            let _ = tx.send((path, String::from_utf8_lossy(&body).into_owned()));
            warp::http::StatusCode::OK
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(warp::serve(route).incoming(listener).run());
    (port, rx, flaky)
}

#[tokio::test]
async fn a_webhook_rule_posts_the_output_and_retries() {
    let (port, mut rx, flaky) = receiver().await;
    let node = Node::start("");
    let id = create_rule(
        &node,
        json!({
            "name": "to-backend",
            "sql": "SELECT clientid, topic, payload.v AS v FROM \"data/#\"",
            "actions": [
                {"type": "webhook", "url": format!("http://127.0.0.1:{port}/flaky"),
                 "headers": {"x-token": "s3cret"}},
                {"type": "webhook", "url": format!("http://127.0.0.1:{port}/ok"),
                 "body": "${clientid} sent ${v}"},
            ],
        }),
    )
    .await;
    publish_all(&node, "dev-1", &[("data/1", r#"{"v": [1, 2]}"#)]).await;
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, async {
        while got.len() < 2 {
            got.push(rx.recv().await.unwrap());
        }
    })
    .await
    .expect("two posts");
    got.sort();
    assert_eq!(got[0].0, "flaky");
    assert_eq!(
        serde_json::from_str::<Value>(&got[0].1).unwrap(),
        json!({"clientid": "dev-1", "topic": "data/1", "v": [1, 2]})
    );
    assert_eq!(got[1], ("ok".into(), "dev-1 sent [1,2]".into()));
    assert_eq!(flaky.load(Ordering::SeqCst), 2, "one failure, one retry");
    metrics_until(&node, id, |m| m["actions_success"] == 2).await;
}

#[tokio::test]
async fn event_rules_fire_on_connect_disconnect_and_device_status() {
    let node = Node::start("");
    let (s, b) = node
        .api("POST", "/api/v1/products", Some(json!({"name": "meters"})))
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["data"]["product_key"].as_str().unwrap().to_string();
    let device = json!({"name": "meter-9", "product_key": key, "username": "meter-9",
        "password": "pw", "mqtt_client_id": "meter-9"});
    let (s, b) = node.api("POST", "/api/v1/devices", Some(device)).await;
    assert_eq!(s, 200, "{b}");
    // Subscribed before the rules exist, so its own connection fires none of them.
    let (_sub, mut events) = subscriber(&node, "ops", "+/#").await;
    create_rule(
        &node,
        json!({"name": "presence",
               "sql": "SELECT clientid, proto_ver, reason FROM \"$events/client_connected\", \"$events/client_disconnected\"",
               "actions": [{"type": "republish", "topic": "presence/${clientid}", "payload": "${proto_ver}|${reason}"}]}),
    )
    .await;
    create_rule(
        &node,
        json!({"name": "offline-alert",
               "sql": "SELECT device_name, product_key, status FROM \"$events/device_status\" WHERE status = 'offline'",
               "actions": [{"type": "republish", "topic": "alerts/${product_key}/${device_name}", "payload": "${status}"}]}),
    )
    .await;
    let mut opts = MqttOptions::new("meter-9", "127.0.0.1", node.port());
    opts.set_credentials("meter-9", "pw");
    let (device, mut device_events) = AsyncClient::new(opts, 8);
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::ConnAck(_)) = device_events.poll().await.unwrap() {
                return;
            }
        }
    })
    .await
    .expect("CONNACK");
    device.disconnect().await.unwrap();
    while device_events.poll().await.is_ok() {}

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match next_publish(&mut events, WAIT).await {
            Some(p) => seen.push(p),
            None => panic!("saw only {seen:?}"),
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (format!("alerts/{key}/meter-9"), "offline".to_string()),
            ("presence/meter-9".to_string(), "4|".to_string()),
            (
                "presence/meter-9".to_string(),
                "|closed by the client or the network".to_string()
            ),
        ]
    );
}

#[tokio::test]
async fn a_republish_loop_is_cut_and_disabled_or_deleted_rules_stop() {
    let node = Node::start("");
    // Republishes into its own FROM: the copy must not trigger it again.
    let id = create_rule(
        &node,
        json!({"name": "echo", "sql": "SELECT payload FROM \"loop/#\"",
               "actions": [{"type": "republish", "topic": "loop/again", "payload": "again:${payload}"}]}),
    )
    .await;
    let (_sub, mut events) = subscriber(&node, "loop-watch", "loop/again").await;
    publish_all(&node, "looper", &[("loop/start", "x")]).await;
    assert_eq!(
        next_publish(&mut events, WAIT).await,
        Some(("loop/again".into(), "again:x".into()))
    );
    assert_eq!(
        next_publish(&mut events, Duration::from_millis(500)).await,
        None
    );
    assert_eq!(rule_metrics(&node, id).await["matched"], 1);

    let (s, b) = node
        .api(
            "PUT",
            &format!("/api/v1/rules/{id}"),
            Some(json!({"enable": false})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    publish_all(&node, "looper", &[("loop/start", "y")]).await;
    assert_eq!(
        next_publish(&mut events, Duration::from_millis(500)).await,
        None
    );

    let (s, b) = node
        .api(
            "PUT",
            &format!("/api/v1/rules/{id}"),
            Some(json!({"enable": true})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    publish_all(&node, "looper", &[("loop/start", "z")]).await;
    assert_eq!(
        next_publish(&mut events, WAIT).await,
        Some(("loop/again".into(), "again:z".into()))
    );

    let (s, b) = node
        .api("DELETE", &format!("/api/v1/rules/{id}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    publish_all(&node, "looper", &[("loop/start", "w")]).await;
    assert_eq!(
        next_publish(&mut events, Duration::from_millis(500)).await,
        None
    );
    let (s, b) = node.api("GET", &format!("/api/v1/rules/{id}"), None).await;
    assert_eq!(s, 404, "{b}");
}

/// A publisher that stays connected: `send` publishes at QoS 1 and returns once it is acked.
struct Publisher {
    client: AsyncClient,
    acks: mpsc::UnboundedReceiver<()>,
}

impl Publisher {
    async fn connect(node: &Node, id: &str) -> Publisher {
        let (client, mut events) =
            AsyncClient::new(MqttOptions::new(id, "127.0.0.1", node.port()), 64);
        let (tx, acks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(e) = events.poll().await {
                if let Event::Incoming(Packet::PubAck(_)) = e {
                    let _ = tx.send(());
                }
            }
        });
        Publisher { client, acks }
    }

    async fn send(&mut self, topic: &str, payload: &str) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.to_string())
            .await
            .unwrap();
        tokio::time::timeout(WAIT, self.acks.recv())
            .await
            .expect("PUBACK")
            .expect("connection up");
    }
}

/// A rule write is in force when its answer arrives: a message published right after the
/// create, enable, disable, SQL change or delete meets the rule as written, round after round
/// (the engine must not lag behind the REST answer).
#[tokio::test]
async fn a_rule_write_is_in_force_for_the_very_next_message() {
    let node = Node::start("");
    let (_sub, mut out) = subscriber(&node, "watcher", "out/#").await;
    let mut src = Publisher::connect(&node, "src").await;
    let echo = |filter: &str| {
        json!({"name": "echo", "sql": format!("SELECT payload FROM \"{filter}\""),
               "actions": [{"type": "republish", "topic": "out/${payload}", "payload": "${payload}"}]})
    };
    let put = |id: u64, body: Value| {
        let node = &node;
        async move {
            let (s, b) = node
                .api("PUT", &format!("/api/v1/rules/{id}"), Some(body))
                .await;
            assert_eq!(s, 200, "{b}");
        }
    };
    let id = create_rule(&node, echo("in/#")).await;
    let mut expected = Vec::new();
    for round in 0..15 {
        if round > 0 {
            put(id, json!({"enable": true})).await;
        }
        src.send("in/a", &format!("on-{round}")).await;
        expected.push(format!("on-{round}"));
        put(id, json!({"enable": false})).await;
        src.send("in/a", &format!("off-{round}")).await;
    }
    // Enabled again, but reading other topics: `in/` no longer matches, `other/` does.
    put(
        id,
        json!({"enable": true, "sql": "SELECT payload FROM \"other/#\""}),
    )
    .await;
    src.send("in/a", "old-filter").await;
    src.send("other/a", "new-filter").await;
    expected.push("new-filter".into());
    let (s, b) = node
        .api("DELETE", &format!("/api/v1/rules/{id}"), None)
        .await;
    assert_eq!(s, 200, "{b}");
    src.send("other/a", "deleted").await;
    // A new rule, created after everything above was acked, marks the end of the stream.
    create_rule(&node, echo("end/#")).await;
    src.send("end/a", "end").await;
    expected.push("end".into());

    let mut got = Vec::new();
    while got.last().is_none_or(|p| p != "end") {
        let (topic, payload) = next_publish(&mut out, WAIT)
            .await
            .unwrap_or_else(|| panic!("stuck after {got:?}"));
        assert_eq!(topic, format!("out/{payload}"));
        got.push(payload);
    }
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
}

#[tokio::test]
async fn bad_rules_are_refused_with_their_position_and_rules_can_be_tried() {
    let node = Node::start("");
    let cases = [
        (
            json!({"name": "x", "sql": "SELECT tmp FROM \"t/#\"", "actions": [{"type": "log"}]}),
            "unknown field 'tmp' at line 1, column 8",
        ),
        (
            json!({"name": "x", "sql": "SELECT nope(1) FROM \"t/#\"", "actions": [{"type": "log"}]}),
            "line 1, column 8",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t/#\" WHERE", "actions": [{"type": "log"}]}),
            "line 1",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t/#/x\"", "actions": [{"type": "log"}]}),
            "line 1",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t\"", "actions": []}),
            "at least one action",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t\"", "actions": [{"type": "republish", "topic": "a/${b"}]}),
            "actions[0].topic",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t\"", "actions": [{"type": "republish", "topic": "a/#"}]}),
            "not a valid topic name",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t\"", "actions": [{"type": "webhook", "url": "ftp://h/x"}]}),
            "http:// or https://",
        ),
        (
            json!({"name": "x", "sql": "SELECT * FROM \"t\"", "actions": [{"type": "mail"}]}),
            "actions",
        ),
        (
            json!({"name": "", "sql": "SELECT * FROM \"t\"", "actions": [{"type": "log"}]}),
            "name",
        ),
    ];
    for (body, want) in cases {
        let (s, b) = node.api("POST", "/api/v1/rules", Some(body.clone())).await;
        assert_eq!(s, 400, "{body} -> {b}");
        assert_ne!(b["code"], 0, "{b}");
        let msg = b["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{body}: {msg:?} lacks {want:?}");
    }
    let (_, list) = node.api("GET", "/api/v1/rules", None).await;
    assert_eq!(list["meta"]["count"], 0, "nothing was stored: {list}");

    let (s, b) = node
        .api(
            "POST",
            "/api/v1/rules/test",
            Some(
                json!({"sql": "SELECT upper(payload.name) AS n FROM \"t/#\" WHERE qos = 1",
                        "context": {"topic": "t/1", "qos": 1, "payload": "{\"name\":\"ada\"}"}}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"], json!({"matched": true, "output": {"n": "ADA"}}));
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/rules/test",
            Some(json!({"sql": "SELECT * FROM \"t/#\" WHERE qos = 2", "context": {"qos": 1}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["data"]["matched"], false, "{b}");
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/rules/test",
            Some(json!({"sql": "SELEC 1"})),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let msg = b["message"].as_str().unwrap();
    assert!(
        msg.starts_with("sql: ") && msg.contains("line 1, column 1"),
        "{msg}"
    );

    // The list pages and filters by name.
    for name in ["alpha", "beta", "alphabet"] {
        create_rule(
            &node,
            json!({"name": name, "sql": "SELECT * FROM \"t/#\"", "actions": [{"type": "log"}]}),
        )
        .await;
    }
    let (_, list) = node
        .api("GET", "/api/v1/rules?name=alpha&_page=1&_limit=1", None)
        .await;
    assert_eq!(list["meta"]["count"], 2, "{list}");
    assert_eq!(list["meta"]["hasnext"], true, "{list}");
    assert_eq!(list["data"][0]["name"], "alpha", "{list}");
    assert_eq!(
        list["data"][0]["actions"],
        json!([{"type": "log"}]),
        "{list}"
    );
}
