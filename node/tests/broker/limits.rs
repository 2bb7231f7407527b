//! The configured limits on what clients may make the broker hold: subscriptions per session,
//! connections per node, retained messages by count and bytes. Past each, the client gets the
//! quota reason code (3.1.1 its nearest equivalent), nothing else changes, and
//! `$SYS/brokers/{node}/limits/...` counts the refusals.

use std::collections::HashMap;
use std::time::Duration;

use ntex_bytes::{ByteString, Bytes};
use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5::codec as c5;
use ntex_mqtt::{v3, v5};

use crate::common::{Node, Raw3, Raw5, connect3, connect5, sub_opts};

const LIMITS: &str = "[mqtt]\nsys_interval = 1\nmax_subscriptions = 2\nmax_connections = 3\n\
                      max_retained = 2\nmax_retained_bytes = 64\n";

/// A QoS 1 retained PUBLISH; returns the PUBACK's reason.
async fn retain(c: &mut Raw5, id: u16, topic: &str, payload: &[u8]) -> c5::PublishAckReason {
    let pkt = c5::Publish {
        dup: false,
        retain: true,
        qos: v5::QoS::AtLeastOnce,
        packet_id: std::num::NonZeroU16::new(id),
        topic: ByteString::from(topic.to_string()),
        payload_size: payload.len() as u32,
        properties: Default::default(),
    };
    c.send_encoded(c5::Encoded::Publish(
        pkt,
        Some(Bytes::copy_from_slice(payload)),
    ))
    .await;
    match c.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishAck(a), _)) => a.reason_code,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn past_each_limit_clients_get_quota_exceeded_and_it_is_counted() {
    let node = Node::start_with(&["--allow-anonymous"], LIMITS);
    let q1 = sub_opts(v5::QoS::AtLeastOnce);

    // Subscriptions: two per session; subscribing again to one it holds is not a new one.
    let (mut c, _) = Raw5::connect(node.mqtt, connect5("lim5")).await;
    let ack = c
        .subscribe(1, None, &[("a", q1), ("b", q1), ("c", q1), ("a", q1)])
        .await;
    use c5::SubscribeAckReason::{GrantedQos1, QuotaExceeded};
    assert_eq!(
        ack.status,
        [GrantedQos1, GrantedQos1, QuotaExceeded, GrantedQos1]
    );
    let (mut c3, _) = Raw3::connect(node.mqtt, connect3("lim3", true)).await;
    let codes = c3
        .subscribe(
            1,
            &[
                ("x", v3::QoS::AtMostOnce),
                ("y", v3::QoS::AtMostOnce),
                ("z", v3::QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        [
            c3::SubscribeReturnCode::Success(v3::QoS::AtMostOnce),
            c3::SubscribeReturnCode::Success(v3::QoS::AtMostOnce),
            c3::SubscribeReturnCode::Failure
        ]
    );

    // Retained: two topics, 64 bytes of topics and payloads.
    use c5::PublishAckReason::{NoMatchingSubscribers, QuotaExceeded as Over};
    assert_eq!(
        retain(&mut c, 10, "r/1", b"one").await,
        NoMatchingSubscribers
    );
    assert_eq!(
        retain(&mut c, 11, "r/2", b"two").await,
        NoMatchingSubscribers
    );
    assert_eq!(
        retain(&mut c, 12, "r/3", b"three").await,
        Over,
        "a third topic"
    );
    assert_eq!(
        retain(&mut c, 13, "r/1", b"uno").await,
        NoMatchingSubscribers,
        "a replacement"
    );
    assert_eq!(
        retain(&mut c, 14, "r/2", &[b'x'; 80]).await,
        Over,
        "past the bytes"
    );
    assert_eq!(
        retain(&mut c, 15, "r/2", b"").await,
        NoMatchingSubscribers,
        "a clear"
    );
    assert_eq!(
        retain(&mut c, 16, "r/3", b"three").await,
        NoMatchingSubscribers,
        "room again"
    );

    // Connections: three at once (lim5, lim3, this one); a fourth is refused.
    let (mut watcher, ack) = Raw5::connect(node.mqtt, connect5("watcher")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    let (_, ack) = Raw5::connect(node.mqtt, connect5("fourth")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::QuotaExceeded);
    let (_, ack) = Raw3::connect(node.mqtt, connect3("fourth3", true)).await;
    assert_eq!(ack.return_code, c3::ConnectAckReason::ServiceUnavailable);

    // $SYS counts each refusal (the retained first round may predate the last refusal).
    watcher
        .subscribe(
            1,
            None,
            &[("$SYS/brokers/1/limits/#", sub_opts(v5::QoS::AtMostOnce))],
        )
        .await;
    let want = [
        ("limits/subscriptions_refused", "2"),
        ("limits/retained_refused", "2"),
        ("limits/connections_refused", "2"),
    ];
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !want
        .iter()
        .all(|(k, v)| seen.get(&format!("$SYS/brokers/1/{k}")).map(String::as_str) == Some(*v))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "$SYS shows {seen:?}"
        );
        let (m, body) = watcher.expect_publish().await;
        seen.insert(
            m.topic.to_string(),
            String::from_utf8_lossy(&body).to_string(),
        );
    }
}

/// `max_queued_bytes` bounds an offline session's queue by bytes too: with room for two
/// 100-byte messages, a subscriber that comes back gets the last two of five (drop_oldest), and
/// `$SYS/.../messages/dropped` counts the other three.
#[tokio::test]
async fn an_offline_queue_is_bounded_by_bytes() {
    let node = Node::start_with(
        &["--allow-anonymous"],
        "[mqtt]\nsys_interval = 1\nmax_queued_bytes = 250\n",
    );
    let persistent = || c5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 300,
        ..connect5("queued")
    };
    let (mut sub, _) = Raw5::connect(node.mqtt, persistent()).await;
    sub.subscribe(1, None, &[("q", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    sub.send(c5::Packet::Disconnect(c5::Disconnect::new(
        c5::DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    sub.expect_disconnect().await;

    let (mut p, _) = Raw3::connect(node.mqtt, connect3("filler", true)).await;
    for i in 1..=5u16 {
        let payload = format!("{i:0>99}");
        p.publish("q", payload.as_bytes(), v3::QoS::AtLeastOnce, i, false)
            .await;
        p.recv().await;
    }
    let (mut sub, ack) = Raw5::connect(node.mqtt, persistent()).await;
    assert!(ack.session_present);
    let mut got = Vec::new();
    while let Some(c5::Decoded::Publish(p, body, _)) =
        sub.recv_within(Duration::from_millis(500)).await
    {
        got.push(
            String::from_utf8_lossy(&body)
                .trim_start_matches('0')
                .to_string(),
        );
        if let Some(id) = p.packet_id {
            sub.send(c5::Packet::PublishAck(c5::PublishAck {
                packet_id: id,
                ..Default::default()
            }))
            .await;
        }
    }
    assert_eq!(got, ["4", "5"]);

    let (mut watcher, _) = Raw5::connect(node.mqtt, connect5("watcher")).await;
    watcher
        .subscribe(
            1,
            None,
            &[(
                "$SYS/brokers/1/messages/dropped",
                sub_opts(v5::QoS::AtMostOnce),
            )],
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = watcher.expect_publish().await;
        if &body[..] == b"3" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "dropped = {body:?}");
    }
}
