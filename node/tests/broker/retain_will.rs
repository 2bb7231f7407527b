//! Retained messages and will messages.

use std::time::{Duration, Instant};

use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5::codec as c5;
use ntex_mqtt::{v3, v5};

use crate::common::{Node, Raw3, Raw5, connect3, connect5, sub_opts};

async fn retain5(node: &Node, topic: &str, payload: &[u8]) {
    let (mut p, _) = Raw5::connect(node.mqtt, connect5("retainer")).await;
    let pkt = c5::Publish {
        dup: false,
        retain: true,
        qos: v5::QoS::AtLeastOnce,
        packet_id: std::num::NonZeroU16::new(1),
        topic: topic.to_string().into(),
        payload_size: payload.len() as u32,
        properties: Default::default(),
    };
    p.send_encoded(c5::Encoded::Publish(
        pkt,
        Some(ntex_bytes::Bytes::copy_from_slice(payload)),
    ))
    .await;
    p.recv().await;
}

#[tokio::test]
async fn v311_retained_set_replace_clear() {
    let node = Node::start("");
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("rp", true)).await;
    p.publish("r/a", b"first", v3::QoS::AtMostOnce, 0, true)
        .await;
    p.publish("r/a", b"second", v3::QoS::AtMostOnce, 0, true)
        .await;
    p.publish("r/b", b"gone", v3::QoS::AtMostOnce, 0, true)
        .await;
    p.publish("r/b", b"", v3::QoS::AtMostOnce, 0, true).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut s, _) = Raw3::connect(node.mqtt, connect3("rs", true)).await;
    s.subscribe(1, &[("r/#", v3::QoS::AtLeastOnce)]).await;
    let (m, body) = s.expect_publish().await;
    assert_eq!(
        (m.topic.as_str(), &body[..], m.retain),
        ("r/a", &b"second"[..], true)
    );
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_none(),
        "cleared topic has no retained message"
    );

    // A live message to a subscriber arrives with RETAIN 0 even if published retained [MQTT-3.3.1-9].
    p.publish("r/a", b"third", v3::QoS::AtMostOnce, 0, true)
        .await;
    let (m, _) = s.expect_publish().await;
    assert!(!m.retain);
}

#[tokio::test]
async fn v5_retain_handling_and_retain_as_published() {
    let node = Node::start("");
    retain5(&node, "h/x", b"kept").await;
    let (mut s, _) = Raw5::connect(node.mqtt, connect5("rh")).await;

    let opts = |rh, rap| c5::SubscriptionOptions {
        retain_handling: rh,
        retain_as_published: rap,
        ..sub_opts(v5::QoS::AtLeastOnce)
    };
    // 2: never at subscribe.
    s.subscribe(
        1,
        None,
        &[("h/#", opts(c5::RetainHandling::NoAtSubscribe, false))],
    )
    .await;
    assert!(s.recv_within(Duration::from_millis(300)).await.is_none());
    // 1: only for a new subscription; h/# exists now, so nothing.
    s.subscribe(
        2,
        None,
        &[("h/#", opts(c5::RetainHandling::AtSubscribeNew, false))],
    )
    .await;
    assert!(s.recv_within(Duration::from_millis(300)).await.is_none());
    s.subscribe(
        3,
        None,
        &[("h/+", opts(c5::RetainHandling::AtSubscribeNew, false))],
    )
    .await;
    let (m, _) = s.expect_publish().await;
    assert!(m.retain);
    // 0: every time.
    s.subscribe(
        4,
        None,
        &[("h/+", opts(c5::RetainHandling::AtSubscribe, true))],
    )
    .await;
    let (m, _) = s.expect_publish().await;
    assert!(m.retain);

    // Retain As Published keeps the flag on live deliveries; without it the flag is cleared.
    let (mut live, _) = Raw5::connect(node.mqtt, connect5("live")).await;
    live.subscribe(
        1,
        None,
        &[
            ("h/x", opts(c5::RetainHandling::NoAtSubscribe, true)),
            ("h/#", opts(c5::RetainHandling::NoAtSubscribe, false)),
        ],
    )
    .await;
    retain5(&node, "h/x", b"again").await;
    let (m, _) = live.expect_publish().await;
    assert!(
        m.retain,
        "one matching subscription asks for Retain As Published"
    );
    let (mut plain, _) = Raw5::connect(node.mqtt, connect5("plain")).await;
    plain
        .subscribe(
            1,
            None,
            &[("h/#", opts(c5::RetainHandling::NoAtSubscribe, false))],
        )
        .await;
    retain5(&node, "h/x", b"more").await;
    let (m, _) = plain.expect_publish().await;
    assert!(!m.retain);
}

async fn watcher(node: &Node) -> Raw5 {
    let (mut w, _) = Raw5::connect(node.mqtt, connect5("watcher")).await;
    w.subscribe(1, None, &[("will/#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    w
}

fn with_will5(id: &str, delay: Option<u32>) -> c5::Connect {
    c5::Connect {
        last_will: Some(c5::LastWill {
            qos: v5::QoS::AtLeastOnce,
            retain: false,
            topic: format!("will/{id}").into(),
            message: ntex_bytes::Bytes::from_static(b"gone"),
            will_delay_interval_sec: delay,
            correlation_data: None,
            message_expiry_interval: None,
            content_type: None,
            user_properties: vec![("k".into(), "v".into())],
            is_utf8_payload: None,
            response_topic: None,
        }),
        ..connect5(id)
    }
}

fn with_will3(id: &str) -> c3::Connect {
    c3::Connect {
        last_will: Some(c3::LastWill {
            qos: v3::QoS::AtLeastOnce,
            retain: false,
            topic: format!("will/{id}").into(),
            message: ntex_bytes::Bytes::from_static(b"gone"),
        }),
        ..connect3(id, true)
    }
}

#[tokio::test]
async fn will_is_published_on_socket_loss_v311_and_v5() {
    let node = Node::start("");
    let mut w = watcher(&node).await;
    let (c3conn, _) = Raw3::connect(node.mqtt, with_will3("w3")).await;
    drop(c3conn);
    let (m, body) = w.expect_publish().await;
    assert_eq!((m.topic.as_str(), &body[..]), ("will/w3", &b"gone"[..]));
    let (c5conn, _) = Raw5::connect(node.mqtt, with_will5("w5", None)).await;
    drop(c5conn);
    let (m, _) = w.expect_publish().await;
    assert_eq!(m.topic.as_str(), "will/w5");
    assert_eq!(
        m.properties.user_properties,
        vec![("k".into(), "v".into())],
        "will properties travel"
    );
}

#[tokio::test]
async fn will_is_not_published_on_normal_disconnect_but_is_on_0x04() {
    let node = Node::start("");
    let mut w = watcher(&node).await;
    let (mut c, _) = Raw3::connect(node.mqtt, with_will3("polite3")).await;
    c.send(c3::Packet::Disconnect).await;
    c.expect_closed().await;
    let (mut c, _) = Raw5::connect(node.mqtt, with_will5("polite5", None)).await;
    c.send(c5::Packet::Disconnect(c5::Disconnect::new(
        c5::DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    c.expect_disconnect().await;
    assert!(w.recv_within(Duration::from_millis(400)).await.is_none());

    let (mut c, _) = Raw5::connect(node.mqtt, with_will5("asks", None)).await;
    c.send(c5::Packet::Disconnect(c5::Disconnect::new(
        c5::DisconnectReasonCode::DisconnectWithWillMessage,
    )))
    .await;
    let (m, _) = w.expect_publish().await;
    assert_eq!(m.topic.as_str(), "will/asks");
}

#[tokio::test]
async fn will_is_published_on_keepalive_timeout() {
    let node = Node::start("");
    let mut w = watcher(&node).await;
    let (_silent, _) = Raw3::connect(
        node.mqtt,
        c3::Connect {
            keep_alive: 1,
            ..with_will3("silent")
        },
    )
    .await;
    let (m, _) = w.expect_publish().await;
    assert_eq!(m.topic.as_str(), "will/silent");
}

#[tokio::test]
async fn will_delay_elapses_unless_the_client_resumes() {
    let node = Node::start("");
    let mut w = watcher(&node).await;
    let persistent = |id| c5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 300,
        ..with_will5(id, Some(1))
    };

    // Comes back within the delay with clean start 0: the will is cancelled.
    let (c, _) = Raw5::connect(node.mqtt, persistent("back")).await;
    drop(c);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_c, ack) = Raw5::connect(node.mqtt, persistent("back")).await;
    assert!(ack.session_present);

    // Stays away: published after the delay, not before.
    let gone = Instant::now();
    let (c, _) = Raw5::connect(node.mqtt, persistent("away")).await;
    drop(c);
    let (m, _) = w.expect_publish().await;
    assert_eq!(
        m.topic.as_str(),
        "will/away",
        "the resumed client's will must not appear"
    );
    assert!(
        gone.elapsed() >= Duration::from_millis(900),
        "published before its delay"
    );
}

#[tokio::test]
async fn will_goes_out_when_the_session_ends_before_the_delay() {
    let node = Node::start("");
    let mut w = watcher(&node).await;
    let (c, _) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            clean_start: false,
            session_expiry_interval_secs: 1,
            ..with_will5("short", Some(60))
        },
    )
    .await;
    let gone = Instant::now();
    drop(c);
    let (m, _) = w.expect_publish().await;
    assert_eq!(m.topic.as_str(), "will/short");
    assert!(
        gone.elapsed() < Duration::from_secs(5),
        "sent at session end, not after 60 s"
    );
}
