//! Sessions: persistence while offline, expiry, clean start, queue bounds, takeover, client ids,
//! keep-alive negotiation.

use std::time::Duration;

use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5::codec as c5;
use ntex_mqtt::{v3, v5};

use crate::common::{Node, Raw3, Raw5, connect3, connect5, sub_opts};

fn persistent5(id: &str, expiry: u32) -> c5::Connect {
    c5::Connect {
        clean_start: false,
        session_expiry_interval_secs: expiry,
        ..connect5(id)
    }
}

async fn disconnect5(c: &mut Raw5) {
    c.send(c5::Packet::Disconnect(c5::Disconnect::new(
        c5::DisconnectReasonCode::NormalDisconnection,
    )))
    .await;
    c.expect_disconnect().await;
}

async fn publish_all(node: &Node, topic: &str, n: u16, qos: v3::QoS) {
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("publisher", true)).await;
    for i in 1..=n {
        let id = if qos == v3::QoS::AtMostOnce { 0 } else { i };
        p.publish(topic, i.to_string().as_bytes(), qos, id, false)
            .await;
        if qos != v3::QoS::AtMostOnce {
            p.recv().await;
        }
    }
}

#[tokio::test]
async fn v311_persistent_session_keeps_subscriptions_and_queues_qos1_in_order() {
    let node = Node::start("");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("keeper", false)).await;
    sub.subscribe(1, &[("q", v3::QoS::AtLeastOnce)]).await;
    sub.send(c3::Packet::Disconnect).await;
    sub.expect_closed().await;

    publish_all(&node, "q", 3, v3::QoS::AtLeastOnce).await;
    // QoS 0 is not stored for an offline session.
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("p0", true)).await;
    p.publish("q", b"qos0", v3::QoS::AtMostOnce, 0, false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (mut sub, ack) = Raw3::connect(node.mqtt, connect3("keeper", false)).await;
    assert!(ack.session_present);
    for want in ["1", "2", "3"] {
        let (m, body) = sub.expect_publish().await;
        assert_eq!(&body[..], want.as_bytes());
        sub.send(c3::Packet::PublishAck {
            packet_id: m.packet_id.unwrap(),
        })
        .await;
    }
    assert!(sub.recv_within(Duration::from_millis(300)).await.is_none());
    // Subscriptions survived too: a new message still arrives.
    p.publish("q", b"live", v3::QoS::AtMostOnce, 0, false).await;
    let (_, body) = sub.expect_publish().await;
    assert_eq!(&body[..], b"live");
}

#[tokio::test]
async fn v311_clean_session_discards_everything() {
    let node = Node::start("");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("c", false)).await;
    sub.subscribe(1, &[("q", v3::QoS::AtLeastOnce)]).await;
    drop(sub);
    publish_all(&node, "q", 2, v3::QoS::AtLeastOnce).await;
    let (mut sub, ack) = Raw3::connect(node.mqtt, connect3("c", true)).await;
    assert!(!ack.session_present);
    assert!(sub.recv_within(Duration::from_millis(300)).await.is_none());
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The clean session ended with its connection, so nothing was kept for a later resume.
    let (_, ack) = Raw3::connect(node.mqtt, connect3("c", false)).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn v5_session_expiry_interval_ends_the_session() {
    let node = Node::start("");
    let (mut a, _) = Raw5::connect(node.mqtt, persistent5("exp", 1)).await;
    a.subscribe(1, None, &[("e", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    disconnect5(&mut a).await;
    let (_, ack) = Raw5::connect(node.mqtt, persistent5("exp", 1)).await;
    assert!(
        ack.session_present,
        "within the interval the session is resumed"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, ack) = Raw5::connect(node.mqtt, persistent5("exp", 1)).await;
    assert!(!ack.session_present, "after the interval it is gone");

    // Expiry 0 ends the session with the connection.
    let (mut b, _) = Raw5::connect(node.mqtt, persistent5("zero", 0)).await;
    disconnect5(&mut b).await;
    let (_, ack) = Raw5::connect(node.mqtt, persistent5("zero", 0)).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn v5_disconnect_may_shorten_session_expiry() {
    let node = Node::start("");
    let (mut a, _) = Raw5::connect(node.mqtt, persistent5("shorten", 300)).await;
    a.send(c5::Packet::Disconnect(c5::Disconnect {
        session_expiry_interval_secs: Some(0),
        ..c5::Disconnect::new(c5::DisconnectReasonCode::NormalDisconnection)
    }))
    .await;
    a.expect_disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, ack) = Raw5::connect(node.mqtt, persistent5("shorten", 300)).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn v5_clean_start_discards_a_stored_session() {
    let node = Node::start("");
    let (mut a, _) = Raw5::connect(node.mqtt, persistent5("cs", 300)).await;
    a.subscribe(1, None, &[("cs", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    disconnect5(&mut a).await;
    publish_all(&node, "cs", 1, v3::QoS::AtLeastOnce).await;
    let (mut a, ack) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            session_expiry_interval_secs: 300,
            ..connect5("cs")
        },
    )
    .await;
    assert!(!ack.session_present);
    assert!(a.recv_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn queue_bound_drops_oldest_or_newest() {
    for (policy, want) in [
        ("drop_oldest", ["3", "4", "5"]),
        ("drop_newest", ["1", "2", "3"]),
    ] {
        let node = Node::start(&format!(
            "max_queued_messages = 3\nqueue_drop_policy = \"{policy}\""
        ));
        let (mut sub, _) = Raw3::connect(node.mqtt, connect3("bounded", false)).await;
        sub.subscribe(1, &[("b", v3::QoS::AtLeastOnce)]).await;
        drop(sub);
        tokio::time::sleep(Duration::from_millis(100)).await;
        publish_all(&node, "b", 5, v3::QoS::AtLeastOnce).await;
        let (mut sub, _) = Raw3::connect(node.mqtt, connect3("bounded", false)).await;
        for w in want {
            let (m, body) = sub.expect_publish().await;
            assert_eq!(&body[..], w.as_bytes(), "{policy}");
            sub.send(c3::Packet::PublishAck {
                packet_id: m.packet_id.unwrap(),
            })
            .await;
        }
        assert!(
            sub.recv_within(Duration::from_millis(300)).await.is_none(),
            "{policy}"
        );
    }
}

#[tokio::test]
async fn v5_takeover_disconnects_the_first_connection_with_0x8e() {
    let node = Node::start("");
    let (mut first, _) = Raw5::connect(node.mqtt, persistent5("twin", 300)).await;
    first
        .subscribe(1, None, &[("tw", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let (mut second, ack) = Raw5::connect(node.mqtt, persistent5("twin", 300)).await;
    assert!(
        ack.session_present,
        "the second connection takes the session over"
    );
    assert_eq!(
        first.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::SessionTakenOver)
    );
    publish_all(&node, "tw", 1, v3::QoS::AtLeastOnce).await;
    let (_, body) = second.expect_publish().await;
    assert_eq!(&body[..], b"1");
}

#[tokio::test]
async fn v311_takeover_closes_the_first_connection() {
    let node = Node::start("");
    let (mut first, _) = Raw3::connect(node.mqtt, connect3("twin3", false)).await;
    first.subscribe(1, &[("tw", v3::QoS::AtMostOnce)]).await;
    let (mut second, ack) = Raw3::connect(node.mqtt, connect3("twin3", false)).await;
    assert!(ack.session_present);
    first.expect_closed().await;
    publish_all(&node, "tw", 1, v3::QoS::AtMostOnce).await;
    second.expect_publish().await;
}

#[tokio::test]
async fn empty_client_ids() {
    let node = Node::start("");
    let (_, ack) = Raw5::connect(node.mqtt, connect5("")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    let assigned = ack
        .assigned_client_id
        .expect("v5 gets an Assigned Client Identifier");
    assert!(assigned.starts_with("realmq-"));
    let (_, ack) = Raw3::connect(node.mqtt, connect3("", true)).await;
    assert_eq!(ack.return_code, c3::ConnectAckReason::ConnectionAccepted);
    let (_, ack) = Raw3::connect(node.mqtt, connect3("", false)).await;
    assert_eq!(ack.return_code, c3::ConnectAckReason::IdentifierRejected);
}

/// Client ids and user names end up in ACL rules (`%c`, `%u`): one carrying an MQTT wildcard
/// would widen every rule written for the client's own topics, so CONNECT refuses it.
#[tokio::test]
async fn wildcards_in_client_ids_and_user_names_are_refused() {
    let node = Node::start("");
    for id in ["#", "a/+", "dev#1"] {
        let (_, ack) = Raw5::connect(node.mqtt, connect5(id)).await;
        assert_eq!(
            ack.reason_code,
            c5::ConnectAckReason::ClientIdentifierNotValid,
            "v5 client id {id:?}"
        );
        let (_, ack) = Raw3::connect(node.mqtt, connect3(id, true)).await;
        assert_eq!(
            ack.return_code,
            c3::ConnectAckReason::IdentifierRejected,
            "v3.1.1 client id {id:?}"
        );
    }
    let with_user = c5::Connect {
        username: Some("+".into()),
        ..connect5("fine")
    };
    let (_, ack) = Raw5::connect(node.mqtt, with_user).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::BadUserNameOrPassword);
    let (_, ack) = Raw5::connect(node.mqtt, connect5("a/b")).await;
    assert_eq!(
        ack.reason_code,
        c5::ConnectAckReason::Success,
        "'/' is allowed"
    );
}

#[tokio::test]
async fn server_keep_alive_caps_what_v5_clients_ask_for() {
    let node = Node::start("max_keepalive = 5");
    let (_, ack) = Raw5::connect(node.mqtt, connect5("ka")).await;
    assert_eq!(ack.server_keepalive_sec, Some(5));
    let (_, ack) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            keep_alive: 3,
            ..connect5("ka2")
        },
    )
    .await;
    assert_eq!(
        ack.server_keepalive_sec, None,
        "a smaller keep-alive is kept as asked"
    );
}

#[tokio::test]
async fn silent_clients_are_dropped_after_one_and_a_half_keep_alives() {
    let node = Node::start("");
    let started = std::time::Instant::now();
    let (mut c, _) = Raw3::connect(
        node.mqtt,
        c3::Connect {
            keep_alive: 1,
            ..connect3("quiet", true)
        },
    )
    .await;
    c.expect_closed().await;
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(1400),
        "closed too early: {after:?}"
    );
    assert!(after < Duration::from_secs(4), "closed too late: {after:?}");

    // A client that pings stays, in either version.
    let (mut c, _) = Raw3::connect(
        node.mqtt,
        c3::Connect {
            keep_alive: 1,
            ..connect3("pinger3", true)
        },
    )
    .await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(c3::Packet::PingRequest).await;
        assert!(matches!(
            c.recv().await,
            Some(c3::Decoded::Packet(c3::Packet::PingResponse, _))
        ));
    }
    let (mut c, _) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            keep_alive: 1,
            ..connect5("pinger")
        },
    )
    .await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        c.send(c5::Packet::PingRequest).await;
        assert!(matches!(
            c.recv().await,
            Some(c5::Decoded::Packet(c5::Packet::PingResponse, _))
        ));
    }
}

/// Offline sessions keep their messages on disk: in flight (re-sent with DUP and the same
/// packet id) and queued while offline, across a restart of the node.
#[tokio::test]
async fn queued_and_in_flight_messages_survive_a_restart() {
    let node = Node::start("");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("durable", false)).await;
    sub.subscribe(1, &[("d", v3::QoS::AtLeastOnce)]).await;
    publish_all(&node, "d", 1, v3::QoS::AtLeastOnce).await;
    let (first, body) = sub.expect_publish().await;
    assert_eq!(&body[..], b"1");
    // Gone without acknowledging it.
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("publisher2", true)).await;
    for (i, m) in ["2", "3", "4"].iter().enumerate() {
        let id = i as u16 + 1;
        p.publish("d", m.as_bytes(), v3::QoS::AtLeastOnce, id, false)
            .await;
        p.recv().await;
    }
    drop(p);

    let node = node.restart();
    assert!(
        node.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("\"queued\":4")),
        "the start-up line reports the four messages restored"
    );
    let (mut sub, ack) = Raw3::connect(node.mqtt, connect3("durable", false)).await;
    assert!(ack.session_present);
    let (again, body) = sub.expect_publish().await;
    assert_eq!(
        (&body[..], again.dup, again.packet_id),
        (&b"1"[..], true, first.packet_id),
        "the unacknowledged message again, as a re-send"
    );
    for want in ["2", "3", "4"] {
        let (m, body) = sub.expect_publish().await;
        assert_eq!(&body[..], want.as_bytes(), "then the queue, in order");
        sub.send(c3::Packet::PublishAck {
            packet_id: m.packet_id.unwrap(),
        })
        .await;
    }
    // Delivered now: a second restart brings nothing back.
    sub.send(c3::Packet::PublishAck {
        packet_id: again.packet_id.unwrap(),
    })
    .await;
    sub.send(c3::Packet::Disconnect).await;
    sub.expect_closed().await;
    let node = node.restart();
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("durable", false)).await;
    assert!(
        sub.recv_within(Duration::from_millis(500)).await.is_none(),
        "nothing is delivered twice"
    );
}
