//! The edges: authentication and ACL, bad input of every kind, `$SYS` topics, shutdown.

use std::time::Duration;

use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5::codec as c5;
use ntex_mqtt::{v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Node, Raw3, Raw5, Wire, connect3, connect5, sub_opts};

#[tokio::test]
async fn anonymous_clients_are_refused_unless_allowed() {
    let node = Node::start_with(&[], "[mqtt]\nsys_interval = 0\n");
    let (_, ack) = Raw3::connect(node.mqtt, connect3("anon3", true)).await;
    assert_eq!(ack.return_code, c3::ConnectAckReason::NotAuthorized);
    let (_, ack) = Raw5::connect(node.mqtt, connect5("anon5")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::NotAuthorized);
}

const ACL: &str = r#"
[[acl]]
permission = "deny"
action = "subscribe"
topic = "secret/#"

[[acl]]
permission = "deny"
action = "publish"
topic = "readonly/#"
"#;

#[tokio::test]
async fn acl_denies_subscribe_and_publish() {
    let node = Node::start(ACL);
    let (mut s5, _) = Raw5::connect(node.mqtt, connect5("acl5")).await;
    let ack = s5
        .subscribe(
            1,
            None,
            &[
                ("secret/x", sub_opts(v5::QoS::AtMostOnce)),
                ("#", sub_opts(v5::QoS::AtMostOnce)),
                ("open/x", sub_opts(v5::QoS::AtMostOnce)),
            ],
        )
        .await;
    assert_eq!(
        ack.status,
        vec![
            c5::SubscribeAckReason::NotAuthorized,
            c5::SubscribeAckReason::GrantedQos0,
            c5::SubscribeAckReason::GrantedQos0
        ],
        "'#' only overlaps secret/#, so it is granted"
    );
    let (mut s3, _) = Raw3::connect(node.mqtt, connect3("acl3", true)).await;
    let codes = s3
        .subscribe(
            1,
            &[
                ("secret/#", v3::QoS::AtMostOnce),
                ("readonly/#", v3::QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        vec![
            c3::SubscribeReturnCode::Failure,
            c3::SubscribeReturnCode::Success(v3::QoS::AtMostOnce)
        ]
    );

    s5.publish(
        "readonly/x",
        b"no",
        v5::QoS::AtLeastOnce,
        3,
        Default::default(),
    )
    .await;
    match s5.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishAck(a), _)) => {
            assert_eq!(a.reason_code, c5::PublishAckReason::NotAuthorized)
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    // v3.1.1 cannot refuse: the PUBLISH is acknowledged and dropped.
    let (mut p3, _) = Raw3::connect(node.mqtt, connect3("p3", true)).await;
    p3.publish("readonly/x", b"no", v3::QoS::AtLeastOnce, 1, false)
        .await;
    assert!(matches!(
        p3.recv().await,
        Some(c3::Decoded::Packet(c3::Packet::PublishAck { .. }, _))
    ));
    assert!(
        s3.recv_within(Duration::from_millis(300)).await.is_none(),
        "denied publishes are not routed"
    );
    // Through the granted '#', secret/... is never delivered; everything else is.
    let mut p5 = Raw5::connect(node.mqtt, connect5("p5")).await.0;
    for topic in ["secret/x", "open/y"] {
        p5.publish(topic, b"m", v5::QoS::AtMostOnce, 0, Default::default())
            .await;
    }
    let (m, _) = s5.expect_publish().await;
    assert_eq!(m.topic.as_str(), "open/y");
    assert!(s5.recv_within(Duration::from_millis(300)).await.is_none());
}

/// The conformance suites' set-up: one deny rule for a single topic. Watching the whole tree with
/// `mosquitto_sub -t '#'` works, and neither live nor retained messages on the denied topic reach
/// it; subscribing to the denied topic itself is refused with 0x80 (3.1.1) and 0x87 (5.0).
#[tokio::test]
async fn a_deny_rule_hides_its_topic_from_wildcard_subscribers() {
    let node = Node::start(
        "[[acl]]\npermission = \"deny\"\naction = \"subscribe\"\ntopic = \"test/nosubscribe\"\n",
    );
    let pub3 = |topic: &str, msg: &str, retain: bool| {
        let mut cmd = std::process::Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &node.port().to_string()])
            .args(["-q", "1", "-t", topic, "-m", msg]);
        if retain {
            cmd.arg("-r");
        }
        assert!(cmd.status().expect("mosquitto_pub").success());
    };
    pub3("test/nosubscribe", "hidden-retained", true);
    pub3("test/visible", "shown-retained", true);

    // (The exact SUBACK codes, 0x80 and 0x87, are checked packet by packet above.)
    for version in ["mqttv311", "mqttv5"] {
        let out = std::process::Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &node.port().to_string(), "-W", "5"])
            .args(["-V", version, "-t", "test/nosubscribe"])
            .output()
            .expect("mosquitto_sub");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("All subscription requests were denied"),
            "{version}: {err}"
        );
    }

    let mut watch = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &node.port().to_string()])
        .args(["-t", "#", "-v", "-q", "1", "-C", "3", "-W", "10"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub");
    // The retained "shown-retained" arrives first; then two live messages, one of them hidden.
    tokio::time::sleep(Duration::from_millis(500)).await;
    pub3("test/nosubscribe", "hidden-live", false);
    pub3("test/visible", "shown-live", false);
    pub3("other", "shown-too", false);
    let mut out = String::new();
    watch
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .await
        .unwrap();
    let status = watch.wait().await.unwrap();
    assert!(
        status.success(),
        "mosquitto_sub -t '#' was refused or timed out: {out}"
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "test/visible shown-retained",
            "test/visible shown-live",
            "other shown-too"
        ]
    );
}

#[tokio::test]
async fn invalid_filters_get_suback_failures() {
    let node = Node::start("");
    let (mut s5, _) = Raw5::connect(node.mqtt, connect5("bad5")).await;
    let ack = s5
        .subscribe(
            1,
            None,
            &[
                ("a/#/b", sub_opts(v5::QoS::AtMostOnce)),
                ("$share/g", sub_opts(v5::QoS::AtMostOnce)),
                ("ok/+", sub_opts(v5::QoS::AtLeastOnce)),
            ],
        )
        .await;
    assert_eq!(
        ack.status,
        vec![
            c5::SubscribeAckReason::TopicFilterInvalid,
            c5::SubscribeAckReason::TopicFilterInvalid,
            c5::SubscribeAckReason::GrantedQos1
        ]
    );
    let (mut s3, _) = Raw3::connect(node.mqtt, connect3("bad3", true)).await;
    let codes = s3
        .subscribe(
            1,
            &[("a+", v3::QoS::AtMostOnce), ("ok", v3::QoS::ExactlyOnce)],
        )
        .await;
    assert_eq!(
        codes,
        vec![
            c3::SubscribeReturnCode::Failure,
            c3::SubscribeReturnCode::Success(v3::QoS::ExactlyOnce)
        ]
    );
    // The connection is still usable.
    s3.send(c3::Packet::PingRequest).await;
    assert!(matches!(
        s3.recv().await,
        Some(c3::Decoded::Packet(c3::Packet::PingResponse, _))
    ));
}

#[tokio::test]
async fn wildcard_in_a_publish_topic_disconnects() {
    let node = Node::start("");
    let (mut p5, _) = Raw5::connect(node.mqtt, connect5("wild5")).await;
    p5.publish("a/+", b"x", v5::QoS::AtMostOnce, 0, Default::default())
        .await;
    assert_eq!(
        p5.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::TopicNameInvalid)
    );
    let (mut p3, _) = Raw3::connect(node.mqtt, connect3("wild3", true)).await;
    p3.publish("a/#", b"x", v3::QoS::AtMostOnce, 0, false).await;
    p3.expect_closed().await;
}

#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let node = Node::start("");
    let (mut c, _) = Raw5::connect(node.mqtt, connect5("nlshare")).await;
    let o = c5::SubscriptionOptions {
        no_local: true,
        ..sub_opts(v5::QoS::AtMostOnce)
    };
    c.send(c5::Packet::Subscribe(c5::Subscribe {
        packet_id: std::num::NonZeroU16::new(1).unwrap(),
        id: None,
        user_properties: Vec::new(),
        topic_filters: vec![("$share/g/t".into(), o)],
    }))
    .await;
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ProtocolError)
    );
}

/// Garbage, truncated and out-of-order packets close only the offending connection.
#[tokio::test]
async fn malformed_input_closes_the_connection_and_harms_no_one_else() {
    let node = Node::start("");
    let (mut bystander, _) = Raw5::connect(node.mqtt, connect5("bystander")).await;
    bystander
        .subscribe(1, None, &[("still/here", sub_opts(v5::QoS::AtMostOnce))])
        .await;

    let cases: &[(&str, &[u8])] = &[
        ("not mqtt at all", b"GET / HTTP/1.1\r\n\r\n"),
        (
            "unknown protocol name",
            b"\x10\x0c\x00\x04MQXX\x04\x02\x00\x3c\x00\x00",
        ),
        ("reserved packet type 0", b"\x00\x00"),
        ("remaining length over 4 bytes", b"\x10\xff\xff\xff\xff\x7f"),
        ("publish before connect", b"\x30\x03\x00\x01a"),
    ];
    for (what, bytes) in cases {
        let mut w = Wire::open(node.mqtt).await;
        w.write_raw(bytes).await;
        assert_closed(&mut w, what).await;
    }

    // After CONNECT: a second CONNECT, and a malformed SUBSCRIBE (no filters).
    let (mut c, _) = Raw5::connect(node.mqtt, connect5("twice")).await;
    c.send(c5::Packet::Connect(Box::new(connect5("twice"))))
        .await;
    assert!(matches!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ProtocolError | c5::DisconnectReasonCode::MalformedPacket)
    ));
    let (mut c, _) = Raw3::connect(node.mqtt, connect3("nosubs", true)).await;
    c.wire.write_raw(b"\x82\x02\x00\x01").await;
    c.expect_closed().await;
    // 3.1.1 after CONNECT: a second CONNECT, a reserved packet type, a server-only packet.
    let (mut c, _) = Raw3::connect(node.mqtt, connect3("twice3", true)).await;
    c.send(c3::Packet::Connect(Box::new(connect3("twice3", true))))
        .await;
    c.expect_closed().await;
    for (what, bytes) in [
        ("reserved type 0", &b"\x00\x00"[..]),
        ("CONNACK from a client", &b"\x20\x02\x00\x00"[..]),
    ] {
        let (mut c, _) = Raw3::connect(node.mqtt, connect3("odd3", true)).await;
        c.wire.write_raw(bytes).await;
        assert_closed(&mut c.wire, what).await;
    }

    let (mut p, _) = Raw5::connect(node.mqtt, connect5("p")).await;
    p.publish(
        "still/here",
        b"ok",
        v5::QoS::AtMostOnce,
        0,
        Default::default(),
    )
    .await;
    let (_, body) = bystander.expect_publish().await;
    assert_eq!(&body[..], b"ok");
}

async fn assert_closed(w: &mut Wire, what: &str) {
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w.stream_mut().read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: connection was not closed");
}

#[tokio::test]
async fn sys_topics_report_broker_statistics() {
    let node = Node::start_with(&["--allow-anonymous"], "[mqtt]\nsys_interval = 1\n");
    let (mut s, _) = Raw5::connect(node.mqtt, connect5("sys")).await;
    s.subscribe(
        1,
        None,
        &[("$SYS/brokers/1/#", sub_opts(v5::QoS::AtMostOnce))],
    )
    .await;
    // The first round may predate this client; within two intervals it counts itself. (The
    // retained first round arrives in no particular order.)
    let mut seen = std::collections::HashMap::new();
    while seen.len() < 19
        || seen
            .get("$SYS/brokers/1/clients/connected")
            .map(String::as_str)
            != Some("1")
    {
        let (m, body) = s.expect_publish().await;
        seen.insert(
            m.topic.to_string(),
            String::from_utf8_lossy(&body).to_string(),
        );
    }
    assert_eq!(seen["$SYS/brokers/1/version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(seen["$SYS/brokers/1/clients/connected"], "1");
    for key in [
        "uptime",
        "messages/received",
        "messages/sent",
        "messages/dropped",
        "bytes/received",
        "bytes/sent",
        "cluster/forward/dropped",
        "cluster/forward/unconfirmed",
        "retained/bytes",
        "limits/retained_refused",
        "limits/subscriptions_refused",
        "limits/connections_refused",
        "limits/api_refused",
    ] {
        let v = &seen[&format!("$SYS/brokers/1/{key}")];
        assert!(v.parse::<u64>().is_ok(), "{key} = {v:?}");
    }
}

#[tokio::test]
async fn sigterm_disconnects_clients_with_0x8b_and_exits_zero() {
    let mut node = Node::start("");
    let (mut c, _) = Raw5::connect(node.mqtt, connect5("leaving")).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = node.terminate();
        (s, node)
    });
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ServerShuttingDown)
    );
    let (status, _node) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
}

/// The SIGTERM handler is in place by the time the node reports that it started: a SIGTERM at
/// once (a pod deleted as it comes up) drains and exits 0 instead of killing the process.
#[test]
fn sigterm_right_after_the_start_is_a_clean_stop() {
    for _ in 0..3 {
        let mut node = Node::start("");
        let status = node.terminate();
        assert!(status.success(), "exit status {status}");
    }
}

/// A node shutting down closes its listener first: a client reconnecting meanwhile (as every
/// client of a restarting pod does) is refused and tries another node, instead of being
/// accepted, holding the node's exit for the drain grace, and being closed again.
#[tokio::test]
async fn a_draining_node_refuses_new_connections() {
    let mut node = Node::start_with(
        &["--allow-anonymous"],
        "shutdown_grace = 30\n[mqtt]\nsys_interval = 0\n",
    );
    let addr = node.mqtt;
    let (mut c, _) = Raw5::connect(addr, connect5("leaving")).await;
    let status = tokio::task::spawn_blocking(move || {
        let s = node.terminate();
        (s, node)
    });
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ServerShuttingDown)
    );
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
        let _ = s
            .write_all(b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x")
            .await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
        assert!(
            got.is_empty(),
            "a draining node answered a new CONNECT: {got:?}"
        );
    }
    let (status, _node) = status
        .await
        .expect("the node exits well before its 30 s drain grace");
    assert!(status.success(), "exit status {status}");
}

/// 3.1.1 connections run as tasks of their own, outside ntex-server's bookkeeping: shutdown must
/// still close them itself rather than sit out the grace period.
#[tokio::test]
async fn sigterm_closes_v311_clients_without_waiting_out_the_grace() {
    let mut node = Node::start_with(
        &["--allow-anonymous"],
        "shutdown_grace = 30\n[mqtt]\nsys_interval = 0\n",
    );
    let (mut c, ack) = Raw3::connect(node.mqtt, connect3("leaving-3", true)).await;
    assert_eq!(ack.return_code, c3::ConnectAckReason::ConnectionAccepted);
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || {
        let s = node.terminate();
        (s, node)
    });
    tokio::time::timeout(Duration::from_secs(10), c.expect_closed())
        .await
        .expect("the 3.1.1 connection was not closed on shutdown");
    let (status, _node) = status.await.unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unsupported_protocol_levels_get_connack_0x01() {
    let node = Node::start("");
    for (what, bytes) in [
        (
            "MQTT 3.1",
            &b"\x10\x12\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x04abcd"[..],
        ),
        (
            "level 6",
            &b"\x10\x10\x00\x04MQTT\x06\x02\x00\x3c\x00\x04abcd"[..],
        ),
    ] {
        let mut w = Wire::open(node.mqtt).await;
        w.write_raw(bytes).await;
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), w.stream_mut().read_to_end(&mut got))
            .await;
        assert_eq!(
            got,
            vec![0x20, 0x02, 0x00, 0x01],
            "{what}: CONNACK 0x01 then close"
        );
    }
}

#[tokio::test]
async fn idle_sockets_that_never_send_connect_are_closed() {
    let node = Node::start("connect_timeout = 1");
    let started = std::time::Instant::now();
    let mut w = Wire::open(node.mqtt).await;
    assert_closed(&mut w, "silent socket").await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Half a CONNECT is no better.
    let mut w = Wire::open(node.mqtt).await;
    w.write_raw(b"\x10\x10\x00\x04MQ").await;
    assert_closed(&mut w, "partial connect").await;
}
