//! QoS 0/1/2 in both directions, packet ids, in-flight windows and redelivery.

use std::num::NonZeroU16;
use std::time::Duration;

use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5::codec as c5;
use ntex_mqtt::{v3, v5};

use crate::common::{Node, Raw3, Raw5, connect3, connect5, sub_opts};

fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).unwrap()
}

fn ack2(n: u16) -> c5::PublishAck2 {
    c5::PublishAck2 {
        packet_id: pid(n),
        reason_code: c5::PublishAck2Reason::Success,
        properties: Vec::new(),
        reason_string: None,
    }
}

fn ack(n: u16) -> c5::PublishAck {
    c5::PublishAck {
        packet_id: pid(n),
        reason_code: c5::PublishAckReason::Success,
        properties: Vec::new(),
        reason_string: None,
    }
}

#[tokio::test]
async fn v5_publisher_side_qos1_and_qos2_flows() {
    let node = Node::start("");
    let (mut sub, _) = Raw5::connect(node.mqtt, connect5("sub")).await;
    sub.subscribe(1, None, &[("t/#", sub_opts(v5::QoS::ExactlyOnce))])
        .await;
    let (mut p, _) = Raw5::connect(node.mqtt, connect5("pub")).await;

    p.publish("t/1", b"one", v5::QoS::AtLeastOnce, 10, Default::default())
        .await;
    match p.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishAck(a), _)) => {
            assert_eq!(a.packet_id, pid(10));
            assert_eq!(a.reason_code, c5::PublishAckReason::Success);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    p.publish(
        "nobody/listens",
        b"x",
        v5::QoS::AtLeastOnce,
        11,
        Default::default(),
    )
    .await;
    match p.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishAck(a), _)) => {
            assert_eq!(a.reason_code, c5::PublishAckReason::NoMatchingSubscribers)
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    p.publish("t/2", b"two", v5::QoS::ExactlyOnce, 12, Default::default())
        .await;
    match p.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishReceived(a), _)) => {
            assert_eq!(a.packet_id, pid(12))
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    p.send(c5::Packet::PublishRelease(ack2(12))).await;
    match p.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishComplete(a), _)) => {
            assert_eq!(a.packet_id, pid(12));
            assert_eq!(a.reason_code, c5::PublishAck2Reason::Success);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // A PUBREL for an id never seen is answered with 0x92.
    p.send(c5::Packet::PublishRelease(ack2(99))).await;
    match p.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishComplete(a), _)) => {
            assert_eq!(a.reason_code, c5::PublishAck2Reason::PacketIdNotFound)
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }

    let (m1, body1) = sub.expect_publish().await;
    assert_eq!(
        (m1.topic.as_str(), m1.qos, &body1[..]),
        ("t/1", v5::QoS::AtLeastOnce, &b"one"[..])
    );
    sub.send(c5::Packet::PublishAck(ack(m1.packet_id.unwrap().get())))
        .await;
    let (m2, body2) = sub.expect_publish().await;
    assert_eq!(
        (m2.topic.as_str(), m2.qos, &body2[..]),
        ("t/2", v5::QoS::ExactlyOnce, &b"two"[..])
    );
    // Subscriber side of QoS 2: PUBREC -> PUBREL -> PUBCOMP.
    let id = m2.packet_id.unwrap();
    sub.send(c5::Packet::PublishReceived(ack(id.get()))).await;
    match sub.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishRelease(r), _)) => assert_eq!(r.packet_id, id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    sub.send(c5::Packet::PublishComplete(ack2(id.get()))).await;
    assert!(
        sub.recv_within(Duration::from_millis(300)).await.is_none(),
        "exactly once"
    );
}

#[tokio::test]
async fn v311_publisher_and_subscriber_qos_flows() {
    let node = Node::start("");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("sub3", true)).await;
    let codes = sub.subscribe(1, &[("t/#", v3::QoS::ExactlyOnce)]).await;
    assert_eq!(
        codes,
        vec![c3::SubscribeReturnCode::Success(v3::QoS::ExactlyOnce)]
    );
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("pub3", true)).await;

    p.publish("t/1", b"one", v3::QoS::AtLeastOnce, 5, false)
        .await;
    assert!(
        matches!(p.recv().await, Some(c3::Decoded::Packet(c3::Packet::PublishAck { packet_id }, _)) if packet_id == pid(5))
    );
    p.publish("t/2", b"two", v3::QoS::ExactlyOnce, 6, false)
        .await;
    assert!(
        matches!(p.recv().await, Some(c3::Decoded::Packet(c3::Packet::PublishReceived { packet_id }, _)) if packet_id == pid(6))
    );
    p.send(c3::Packet::PublishRelease { packet_id: pid(6) })
        .await;
    assert!(
        matches!(p.recv().await, Some(c3::Decoded::Packet(c3::Packet::PublishComplete { packet_id }, _)) if packet_id == pid(6))
    );

    let (m1, _) = sub.expect_publish().await;
    assert_eq!((m1.topic.as_str(), m1.qos), ("t/1", v3::QoS::AtLeastOnce));
    sub.send(c3::Packet::PublishAck {
        packet_id: m1.packet_id.unwrap(),
    })
    .await;
    let (m2, _) = sub.expect_publish().await;
    assert_eq!((m2.topic.as_str(), m2.qos), ("t/2", v3::QoS::ExactlyOnce));
    let id = m2.packet_id.unwrap();
    sub.send(c3::Packet::PublishReceived { packet_id: id })
        .await;
    assert!(
        matches!(sub.recv().await, Some(c3::Decoded::Packet(c3::Packet::PublishRelease { packet_id }, _)) if packet_id == id)
    );
    sub.send(c3::Packet::PublishComplete { packet_id: id })
        .await;
    p.publish("t/0", b"zero", v3::QoS::AtMostOnce, 0, false)
        .await;
    let (m0, _) = sub.expect_publish().await;
    assert_eq!(
        (m0.topic.as_str(), m0.qos, m0.packet_id),
        ("t/0", v3::QoS::AtMostOnce, None)
    );
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_published_and_granted() {
    let node = Node::start("");
    let (mut sub, _) = Raw5::connect(node.mqtt, connect5("down")).await;
    sub.subscribe(
        1,
        None,
        &[
            ("d/0", sub_opts(v5::QoS::AtMostOnce)),
            ("d/1", sub_opts(v5::QoS::AtLeastOnce)),
        ],
    )
    .await;
    let (mut p, _) = Raw5::connect(node.mqtt, connect5("pub")).await;
    p.publish("d/0", b"x", v5::QoS::ExactlyOnce, 1, Default::default())
        .await;
    p.publish("d/1", b"x", v5::QoS::ExactlyOnce, 2, Default::default())
        .await;
    let (a, _) = sub.expect_publish().await;
    let (b, _) = sub.expect_publish().await;
    assert_eq!((a.topic.as_str(), a.qos), ("d/0", v5::QoS::AtMostOnce));
    assert_eq!((b.topic.as_str(), b.qos), ("d/1", v5::QoS::AtLeastOnce));
}

#[tokio::test]
async fn outbound_window_follows_client_receive_maximum() {
    let node = Node::start("");
    let (mut sub, _) = Raw5::connect(node.mqtt, connect5("slow").receive_max(2)).await;
    sub.subscribe(1, None, &[("w", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let (mut p, _) = Raw5::connect(node.mqtt, connect5("pub")).await;
    for i in 1..=5u16 {
        p.publish(
            "w",
            format!("{i}").as_bytes(),
            v5::QoS::AtLeastOnce,
            i,
            Default::default(),
        )
        .await;
    }
    let (a, _) = sub.expect_publish().await;
    let (_b, _) = sub.expect_publish().await;
    assert!(
        sub.recv_within(Duration::from_millis(400)).await.is_none(),
        "a third message would exceed the client's Receive Maximum"
    );
    sub.send(c5::Packet::PublishAck(ack(a.packet_id.unwrap().get())))
        .await;
    let (c, body) = sub.expect_publish().await;
    assert_eq!(&body[..], b"3", "order is kept");
    assert!(c.packet_id.is_some());
}

#[tokio::test]
async fn v311_outbound_window_is_max_inflight() {
    let node = Node::start("max_inflight = 1");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("slow3", true)).await;
    sub.subscribe(1, &[("w", v3::QoS::AtLeastOnce)]).await;
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("pub3", true)).await;
    for i in 1..=3u16 {
        p.publish(
            "w",
            format!("{i}").as_bytes(),
            v3::QoS::AtLeastOnce,
            i,
            false,
        )
        .await;
    }
    let (a, body) = sub.expect_publish().await;
    assert_eq!(&body[..], b"1");
    assert!(sub.recv_within(Duration::from_millis(400)).await.is_none());
    sub.send(c3::Packet::PublishAck {
        packet_id: a.packet_id.unwrap(),
    })
    .await;
    let (_, body) = sub.expect_publish().await;
    assert_eq!(&body[..], b"2");
}

fn persistent5(id: &str) -> c5::Connect {
    c5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 300,
        ..connect5(id)
    }
}

#[tokio::test]
async fn v5_resume_redelivers_unacked_with_dup_and_resends_pubrel() {
    let node = Node::start("");
    let (mut sub, ack0) = Raw5::connect(node.mqtt, persistent5("resume5")).await;
    assert!(!ack0.session_present);
    sub.subscribe(1, None, &[("r/#", sub_opts(v5::QoS::ExactlyOnce))])
        .await;
    let (mut p, _) = Raw5::connect(node.mqtt, connect5("pub")).await;
    p.publish("r/1", b"q1", v5::QoS::AtLeastOnce, 1, Default::default())
        .await;
    p.publish("r/2", b"q2", v5::QoS::ExactlyOnce, 2, Default::default())
        .await;
    let (m1, _) = sub.expect_publish().await;
    let (m2, _) = sub.expect_publish().await;
    // Acknowledge the QoS 2 message's first half only, then lose the connection.
    sub.send(c5::Packet::PublishReceived(ack(m2
        .packet_id
        .unwrap()
        .get())))
        .await;
    assert!(matches!(
        sub.recv().await,
        Some(c5::Decoded::Packet(c5::Packet::PublishRelease(_), _))
    ));
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut sub, ack1) = Raw5::connect(node.mqtt, persistent5("resume5")).await;
    assert!(ack1.session_present);
    let (again, body) = sub.expect_publish().await;
    assert!(again.dup, "re-sent PUBLISH carries DUP");
    assert_eq!((again.packet_id, &body[..]), (m1.packet_id, &b"q1"[..]));
    match sub.recv().await {
        Some(c5::Decoded::Packet(c5::Packet::PublishRelease(r), _)) => {
            assert_eq!(Some(r.packet_id), m2.packet_id)
        }
        other => panic!("expected PUBREL to be re-sent, got {other:?}"),
    }
}

#[tokio::test]
async fn v311_resume_redelivers_unacked_with_dup() {
    let node = Node::start("");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("resume3", false)).await;
    sub.subscribe(1, &[("r", v3::QoS::AtLeastOnce)]).await;
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("pub3", true)).await;
    p.publish("r", b"x", v3::QoS::AtLeastOnce, 1, false).await;
    let (m, _) = sub.expect_publish().await;
    assert!(!m.dup);
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut sub, ack) = Raw3::connect(node.mqtt, connect3("resume3", false)).await;
    assert!(ack.session_present);
    let (again, _) = sub.expect_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, m.packet_id);
}

/// A publisher that lost its connection between PUBREC and PUBREL re-sends the PUBLISH (DUP) and
/// then the PUBREL on a new connection: subscribers get the message exactly once.
#[tokio::test]
async fn inbound_qos2_is_exactly_once_across_reconnects() {
    let node = Node::start("");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("once-sub", true)).await;
    sub.subscribe(1, &[("once", v3::QoS::AtMostOnce)]).await;
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("once-pub", false)).await;
    p.publish("once", b"x", v3::QoS::ExactlyOnce, 7, false)
        .await;
    assert!(matches!(
        p.recv().await,
        Some(c3::Decoded::Packet(c3::Packet::PublishReceived { .. }, _))
    ));
    drop(p);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut p, ack) = Raw3::connect(node.mqtt, connect3("once-pub", false)).await;
    assert!(ack.session_present);
    let dup = c3::Publish {
        dup: true,
        retain: false,
        qos: v3::QoS::ExactlyOnce,
        topic: "once".into(),
        packet_id: Some(pid(7)),
        payload_size: 1,
    };
    p.send_encoded(c3::Encoded::Publish(
        dup,
        Some(ntex_bytes::Bytes::from_static(b"x")),
    ))
    .await;
    assert!(
        matches!(p.recv().await, Some(c3::Decoded::Packet(c3::Packet::PublishReceived { packet_id }, _)) if packet_id == pid(7))
    );
    p.send(c3::Packet::PublishRelease { packet_id: pid(7) })
        .await;
    assert!(
        matches!(p.recv().await, Some(c3::Decoded::Packet(c3::Packet::PublishComplete { packet_id }, _)) if packet_id == pid(7))
    );
    sub.expect_publish().await;
    assert!(
        sub.recv_within(Duration::from_millis(300)).await.is_none(),
        "routed once"
    );
}

#[tokio::test]
async fn exceeding_receive_maximum_disconnects_with_0x93() {
    let node = Node::start("receive_maximum = 2");
    let (mut p, ack) = Raw5::connect(node.mqtt, connect5("greedy")).await;
    assert_eq!(ack.receive_max.get(), 2, "advertised in CONNACK");
    for i in 1..=3u16 {
        p.publish("rm", b"x", v5::QoS::ExactlyOnce, i, Default::default())
            .await;
    }
    assert_eq!(
        p.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ReceiveMaximumExceeded)
    );
}
