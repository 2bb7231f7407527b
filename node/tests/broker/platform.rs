//! The device platform end to end: products and devices over REST, devices connecting with
//! their credentials, publishing over HTTP, proxy subscriptions, kicking a disabled device, and
//! everything surviving a restart.

use std::process::{Command, Stdio};
use std::time::Duration;

use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5;
use ntex_mqtt::v5::codec as c5;
use serde_json::{Value, json};

use crate::common::{Node, Raw3, Raw5, connect3, connect5, sub_opts};

/// A node with device authentication only (no anonymous clients).
fn secured() -> Node {
    Node::start_with(&[], "[mqtt]\nsys_interval = 0\n")
}

async fn make_device(node: &Node, name: &str) -> (String, Value) {
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/products",
            Some(json!({"name": format!("p-{name}")})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["data"]["product_key"].as_str().unwrap().to_string();
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/devices",
            Some(json!({"name": name, "product_key": key, "username": format!("u-{name}"), "mqtt_client_id": format!("c-{name}"), "password": "pw-secret"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    (key, b["data"].clone())
}

fn device5(name: &str, password: &str) -> c5::Connect {
    c5::Connect {
        username: Some(format!("u-{name}").into()),
        password: Some(ntex_bytes::Bytes::copy_from_slice(password.as_bytes())),
        ..connect5(&format!("c-{name}"))
    }
}

async fn device_status(node: &Node, id: u64) -> Value {
    node.api("GET", &format!("/api/v1/devices/{id}"), None)
        .await
        .1["data"][0]
        .clone()
}

#[tokio::test]
async fn devices_authenticate_with_their_credentials() {
    let node = secured();
    let (_, dev) = make_device(&node, "d1").await;
    let id = dev["id"].as_u64().unwrap();

    let (_, ack) = Raw5::connect(node.mqtt, device5("d1", "wrong")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::NotAuthorized);
    let wrong_id = c5::Connect {
        client_id: "someone-else".into(),
        ..device5("d1", "pw-secret")
    };
    let (_, ack) = Raw5::connect(node.mqtt, wrong_id).await;
    assert_eq!(
        ack.reason_code,
        c5::ConnectAckReason::NotAuthorized,
        "the client id must be the device's"
    );
    let (_, ack) = Raw5::connect(node.mqtt, connect5("anonymous")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::NotAuthorized);
    let (_, ack) = Raw3::connect(
        node.mqtt,
        c3::Connect {
            username: Some("u-d1".into()),
            password: Some("nope".into()),
            ..connect3("c-d1", true)
        },
    )
    .await;
    assert_eq!(ack.return_code, c3::ConnectAckReason::NotAuthorized);
    assert_eq!(
        device_status(&node, id).await["status"],
        1,
        "still inactive"
    );

    let (mut c, ack) = Raw5::connect(node.mqtt, device5("d1", "pw-secret")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    let d = device_status(&node, id).await;
    assert_eq!(
        (d["status"].clone(), d["ip"].clone()),
        (json!(3), json!("127.0.0.1"))
    );
    assert_eq!(d["connected_at"].as_str().unwrap().len(), 19);
    c.send(c5::Packet::Disconnect(c5::Disconnect::new(
        c5::DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    c.expect_disconnect().await;
    let mut d = Value::Null;
    for _ in 0..100 {
        d = device_status(&node, id).await;
        if d["status"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d["status"], 2, "offline after disconnect: {d}");
    assert_eq!(d["disconnected_at"].as_str().unwrap().len(), 19);
    let (_, b) = node.api("GET", "/api/v1/products/1", None).await;
    assert_eq!(
        (
            b["data"][0]["online_count"].clone(),
            b["data"][0]["offline_count"].clone()
        ),
        (json!(0), json!(1))
    );
}

/// With anonymous access on, a client without credentials still cannot use a device's client
/// id: it would take over the device's session and mark the device online from its own address.
#[tokio::test]
async fn anonymous_clients_cannot_claim_a_devices_client_id() {
    let node = Node::start("");
    let (_, dev) = make_device(&node, "owned").await;
    let id = dev["id"].as_u64().unwrap();
    let (mut device, ack) = Raw5::connect(node.mqtt, device5("owned", "pw-secret")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    device
        .subscribe(1, None, &[("cmd/#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;

    for who in [None, Some("stranger")] {
        let (_, ack) = Raw5::connect(
            node.mqtt,
            c5::Connect {
                username: who.map(Into::into),
                ..connect5("c-owned")
            },
        )
        .await;
        assert_eq!(
            ack.reason_code,
            c5::ConnectAckReason::NotAuthorized,
            "{who:?}"
        );
        let (_, ack) = Raw3::connect(
            node.mqtt,
            c3::Connect {
                username: who.map(Into::into),
                ..connect3("c-owned", false)
            },
        )
        .await;
        assert_eq!(
            ack.return_code,
            c3::ConnectAckReason::NotAuthorized,
            "{who:?}"
        );
    }
    // The device kept its connection and its subscription.
    http_publish(&node, "cmd/reboot", "now", false).await;
    let (m, body) = device.expect_publish().await;
    assert_eq!((m.topic.as_str(), &body[..]), ("cmd/reboot", &b"now"[..]));
    assert_eq!(device_status(&node, id).await["status"], 3);
    // Client ids no device owns stay open to anonymous clients.
    let (_, ack) = Raw5::connect(node.mqtt, connect5("free-id")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
}

#[tokio::test]
async fn mosquitto_sub_as_a_device_receives_an_http_publish() {
    let node = secured();
    make_device(&node, "cli").await;
    let port = node.port().to_string();
    let sub = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-u",
            "u-cli",
            "-P",
            "pw-secret",
            "-i",
            "c-cli",
            "-t",
            "factory/#",
            "-v",
            "-C",
            "1",
            "-W",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // Publish until the subscription is live; mosquitto_sub exits after the first message.
    let mut live = false;
    for _ in 0..100 {
        let (s, b) = node
            .api(
                "POST",
                "/api/v1/mqtt/publish",
                Some(json!({"topic": "factory/line1", "payload": "Hello World", "qos": 1})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        if b["data"]["matched"] == 1 {
            live = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sub = sub;
    let out = tokio::task::spawn_blocking(move || {
        if !live {
            let _ = sub.kill();
        }
        String::from_utf8(sub.wait_with_output().unwrap().stdout).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.trim(), "factory/line1 Hello World");
}

#[tokio::test]
async fn disabling_a_device_kicks_it_and_refuses_it() {
    let node = secured();
    let (_, dev) = make_device(&node, "kick").await;
    let id = dev["id"].as_u64().unwrap();
    let (mut c, _) = Raw5::connect(node.mqtt, device5("kick", "pw-secret")).await;
    let (s, _) = node
        .api(
            "PUT",
            &format!("/api/v1/devices/{id}"),
            Some(json!({"enable": false})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::NotAuthorized)
    );
    let (_, ack) = Raw5::connect(node.mqtt, device5("kick", "pw-secret")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::NotAuthorized);
    assert_eq!(device_status(&node, id).await["status"], 0, "disabled");
    node.api(
        "PUT",
        &format!("/api/v1/devices/{id}"),
        Some(json!({"enable": true})),
    )
    .await;
    let (_, ack) = Raw5::connect(node.mqtt, device5("kick", "pw-secret")).await;
    assert_eq!(
        ack.reason_code,
        c5::ConnectAckReason::Success,
        "enabled again"
    );
    // Deleting a connected device disconnects it too.
    let (mut c, _) = Raw5::connect(node.mqtt, device5("kick", "pw-secret")).await;
    node.api("DELETE", &format!("/api/v1/devices/{id}"), None)
        .await;
    c.expect_disconnect().await;
}

fn persistent(name: &str) -> c5::Connect {
    c5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 3600,
        ..device5(name, "pw-secret")
    }
}

async fn http_publish(node: &Node, topic: &str, payload: &str, retain: bool) -> u64 {
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/mqtt/publish",
            Some(json!({"topic": topic, "payload": payload, "qos": 1, "retain": retain})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    b["data"]["matched"].as_u64().unwrap()
}

/// The whole flow, including a restart of the process.
#[tokio::test]
async fn proxy_subscriptions_and_state_survive_reconnects_and_restarts() {
    let node = secured();
    let (key, _) = make_device(&node, "dev").await;
    let (s, _) = node
        .api(
            "POST",
            "/api/v1/users",
            Some(json!({"username": "ops", "password": "opspass", "role": "viewer"})),
        )
        .await;
    assert_eq!(s, 200);

    let (s, b) = node
        .api(
            "POST",
            "/api/v1/mqtt/subscribe",
            Some(json!({"topic": "cmd/x", "clientid": "c-dev"})),
        )
        .await;
    assert_eq!(s, 404, "no session yet: {b}");

    let (mut c, _) = Raw5::connect(node.mqtt, persistent("dev")).await;
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/mqtt/subscribe",
            Some(json!({"topics": "cmd/x,cmd/y", "qos": 1, "clientid": "c-dev"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(http_publish(&node, "cmd/x", "one", false).await, 1);
    let (m, body) = c.expect_publish().await;
    assert_eq!((m.topic.as_str(), &body[..]), ("cmd/x", &b"one"[..]));
    c.send(c5::Packet::PublishAck(c5::PublishAck {
        packet_id: m.packet_id.unwrap(),
        reason_code: c5::PublishAckReason::Success,
        properties: Vec::new(),
        reason_string: None,
    }))
    .await;

    // The proxied subscription belongs to the session: it survives a reconnect.
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut c, ack) = Raw5::connect(node.mqtt, persistent("dev")).await;
    assert!(ack.session_present);
    http_publish(&node, "cmd/y", "two", false).await;
    let (m, _) = c.expect_publish().await;
    assert_eq!(m.topic.as_str(), "cmd/y");
    c.send(c5::Packet::PublishAck(c5::PublishAck {
        packet_id: m.packet_id.unwrap(),
        reason_code: c5::PublishAckReason::Success,
        properties: Vec::new(),
        reason_string: None,
    }))
    .await;
    c.subscribe(9, None, &[("own/#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    http_publish(&node, "state/lamp", "on", true).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let node = node.restart();
    // Metadata is back: users, products, devices.
    let (s, b) = node
        .api("GET", &format!("/api/v1/devices?product_key={key}"), None)
        .await;
    assert_eq!((s, b["meta"]["count"].clone()), (200, json!(1)), "{b}");
    assert_eq!(
        b["data"][0]["status"], 2,
        "the device is offline after the restart"
    );
    let (_, b) = node.api("GET", "/api/v1/users", None).await;
    assert_eq!(b["data"].as_array().unwrap().len(), 2);
    // The persistent session and its subscriptions (proxied and own) are back.
    let matched = http_publish(&node, "cmd/x", "after-restart", false).await;
    assert_eq!(matched, 1, "the offline session is subscribed again");
    let (mut c, ack) = Raw5::connect(node.mqtt, persistent("dev")).await;
    assert!(ack.session_present, "session survived the restart");
    let (m, body) = c.expect_publish().await;
    assert_eq!(
        (m.topic.as_str(), &body[..]),
        ("cmd/x", &b"after-restart"[..]),
        "queued while offline"
    );
    http_publish(&node, "own/z", "mine", false).await;
    let (m, _) = c.expect_publish().await;
    assert_eq!(m.topic.as_str(), "own/z");
    // Retained messages too.
    c.subscribe(10, None, &[("state/#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let mut got = None;
    while let Some(c5::Decoded::Publish(m, body, _)) = c.recv_within(Duration::from_secs(2)).await {
        if m.topic == "state/lamp" {
            got = Some((m.retain, body));
            break;
        }
    }
    let (retain, body) = got.expect("the retained message survived the restart");
    assert!(retain);
    assert_eq!(&body[..], b"on");
}

/// Sends `n` Basic-auth requests for `root` with wrong (all different) passwords, `concurrency`
/// at a time, from loopback addresses 127.0.0.2..; returns how many got each status.
async fn password_flood(
    node: &Node,
    n: usize,
    concurrency: usize,
) -> std::collections::BTreeMap<u16, usize> {
    use futures::StreamExt;
    let url = format!("http://{}/api/v1/products", node.api);
    let clients: Vec<reqwest::Client> = (0..concurrency)
        .map(|i| {
            reqwest::Client::builder()
                .local_address(std::net::IpAddr::from([127, 0, 0, 2 + i as u8]))
                .build()
                .unwrap()
        })
        .collect();
    let statuses: Vec<u16> = futures::stream::iter(0..n)
        .map(|i| {
            let req = clients[i % concurrency]
                .get(&url)
                .basic_auth("root", Some(format!("guess-{i}")));
            async move { req.send().await.expect("request").status().as_u16() }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut counts = std::collections::BTreeMap::new();
    for s in statuses {
        *counts.entry(s).or_insert(0) += 1;
    }
    counts
}

/// A flood of wrong passwords cannot exhaust the node. With the limit out of the way, 240
/// attempts from 24 concurrent clients are all checked, one argon2 (19 MiB) per core at a time,
/// and peak memory grows by well under the 24 x 19 MiB that unbounded checks would hold at once
/// (before the bound, 600 attempts took a node from 82 MB to 4.2 GB). With the default limit the
/// same flood is answered 429 after the tenth failure.
#[tokio::test]
async fn a_password_flood_is_bounded_and_then_refused() {
    let open = Node::start_with(
        &["--allow-anonymous"],
        "[mqtt]\nsys_interval = 0\n[api]\nfailed_login_limit = 100000\n",
    );
    let before = open.memory("VmRSS");
    let counts = password_flood(&open, 240, 24).await;
    assert_eq!(counts.get(&401), Some(&240), "{counts:?}");
    let grew = open.memory("VmHWM").saturating_sub(before);
    assert!(
        grew < 200 << 20,
        "peak memory grew by {} MB during the flood",
        grew >> 20
    );

    let limited = Node::start("");
    let counts = password_flood(&limited, 240, 24).await;
    assert_eq!(counts.get(&401), Some(&10), "{counts:?}");
    assert_eq!(counts.get(&429), Some(&230), "{counts:?}");
    let (status, body) = limited.api("GET", "/api/v1/products", None).await;
    assert_eq!(status, 429, "root is locked out for the minute: {body}");
}

/// A deployment sets the root password once, from a secret, when the cluster is created:
/// `[api] root_password` (here as `REALMQ_API__ROOT_PASSWORD`); the default one is refused.
#[tokio::test]
async fn the_root_password_comes_from_the_configuration_on_first_start() {
    for var in ["REALMQ_API__ROOT_PASSWORD", "REALMQ_ROOT_PASSWORD"] {
        let node = Node::start_env(&[(var, "from-a-secret")]);
        let get = |password: &'static str| {
            let url = format!("http://{}/api/v1/users", node.api);
            async move {
                reqwest::Client::new()
                    .get(url)
                    .basic_auth("root", Some(password))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(get("from-a-secret").await, 200, "{var}");
        assert_eq!(
            get("123456").await,
            401,
            "{var}: the default password is not set"
        );
        let log = node.log.lock().unwrap();
        assert!(
            !log.iter().any(|l| l.contains("from-a-secret")),
            "the password is never logged"
        );
        assert!(
            !log.iter().any(|l| l.contains("default password")),
            "no warning without the default password"
        );
    }
}

/// While root's password is the seed's `123456`, every start warns and `/api/v1/ready` says so;
/// once it is changed, neither does.
#[tokio::test]
async fn the_default_root_password_is_reported_until_it_is_changed() {
    let node = Node::start("");
    let http = reqwest::Client::new();
    let ready = async |node: &Node| -> serde_json::Value {
        let r = http
            .get(format!("http://{}/api/v1/ready", node.api))
            .send()
            .await
            .unwrap();
        r.json::<serde_json::Value>().await.unwrap()
    };
    assert!(node.logged("still has the default password"));
    assert_eq!(ready(&node).await["data"]["default_root_password"], true);
    let status = http
        .put(format!("http://{}/api/v1/users/root", node.api))
        .basic_auth("root", Some("123456"))
        .json(&serde_json::json!({"password": "n3w-and-long"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    assert_eq!(ready(&node).await["data"]["default_root_password"], false);
    let node = node.restart();
    assert!(!node.logged("still has the default password"));
    assert_eq!(ready(&node).await["data"]["default_root_password"], false);
}

/// `[mqtt] device_isolation`: a device publishes and subscribes only under
/// `{product_key}/{device_name}/#`, may also subscribe to `broadcast/{product_key}/#`, and gets
/// nothing else (`#`, `$SYS`, another device's topics are refused); with it off, the same
/// device may do all of that.
#[tokio::test]
async fn device_isolation_confines_each_device_to_its_own_topics() {
    let node = Node::start_with(&[], "[mqtt]\nsys_interval = 1\ndevice_isolation = true\n");
    let (key, _) = make_device(&node, "iso1").await;
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "iso2", "product_key": key, "username": "u-iso2", "mqtt_client_id": "c-iso2", "password": "pw-secret"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    let (mut d1, ack) = Raw5::connect(node.mqtt, device5("iso1", "pw-secret")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    let own = format!("{key}/iso1/cmd");
    let broadcast = format!("broadcast/{key}/#");
    let other = format!("{key}/iso2/#");
    let ack = d1
        .subscribe(
            1,
            None,
            &[
                (own.as_str(), sub_opts(v5::QoS::AtLeastOnce)),
                (broadcast.as_str(), sub_opts(v5::QoS::AtLeastOnce)),
                ("#", sub_opts(v5::QoS::AtLeastOnce)),
                ("$SYS/#", sub_opts(v5::QoS::AtLeastOnce)),
                (other.as_str(), sub_opts(v5::QoS::AtLeastOnce)),
            ],
        )
        .await;
    assert_eq!(
        ack.status,
        vec![
            c5::SubscribeAckReason::GrantedQos1,
            c5::SubscribeAckReason::GrantedQos1,
            c5::SubscribeAckReason::NotAuthorized,
            c5::SubscribeAckReason::NotAuthorized,
            c5::SubscribeAckReason::NotAuthorized,
        ]
    );
    for (id, topic, want) in [
        // Allowed; nobody subscribes to it.
        (
            2,
            format!("{key}/iso1/up"),
            c5::PublishAckReason::NoMatchingSubscribers,
        ),
        (
            3,
            format!("{key}/iso2/cmd"),
            c5::PublishAckReason::NotAuthorized,
        ),
        (
            4,
            format!("broadcast/{key}/x"),
            c5::PublishAckReason::NotAuthorized,
        ),
    ] {
        d1.publish(&topic, b"x", v5::QoS::AtLeastOnce, id, Default::default())
            .await;
        match d1.recv().await {
            Some(c5::Decoded::Packet(c5::Packet::PublishAck(a), _)) => {
                assert_eq!(a.reason_code, want, "publish to {topic}")
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    // What the operator sends to the product's broadcast topic and to the device reaches it;
    // $SYS (published every second here) never does.
    for topic in [format!("broadcast/{key}/fw"), own.clone()] {
        let (s, b) = node
            .api(
                "POST",
                "/api/v1/mqtt/publish",
                Some(json!({"topic": topic, "payload": "hi", "qos": 1})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (p, _) = d1.expect_publish().await;
        assert_eq!(p.topic, topic);
    }
    assert!(
        d1.recv_within(Duration::from_millis(1500)).await.is_none(),
        "nothing else is delivered"
    );

    // A name with '/' would put its space inside another device's: refused under isolation.
    let (s, b) = node
        .api(
            "POST",
            "/api/v1/devices",
            Some(json!({"name": "iso1/sub", "product_key": key, "username": "u-iso1/sub", "mqtt_client_id": "c-iso1/sub", "password": "pw-secret"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (_, ack) = Raw5::connect(node.mqtt, device5("iso1/sub", "pw-secret")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::NotAuthorized);

    // Without isolation the same device reads everything.
    let open = Node::start_with(&[], "[mqtt]\nsys_interval = 0\n");
    make_device(&open, "iso1").await;
    let (mut d, _) = Raw5::connect(open.mqtt, device5("iso1", "pw-secret")).await;
    let ack = d
        .subscribe(1, None, &[("#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    assert_eq!(ack.status, vec![c5::SubscribeAckReason::GrantedQos1]);
}
