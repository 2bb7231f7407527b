//! Topic matching and the MQTT 5 routing features: wildcards and `$` topics, overlapping
//! subscriptions, shared subscriptions, No Local, topic aliases, properties, message expiry and
//! Maximum Packet Size.

use std::collections::HashMap;
use std::num::{NonZeroU16, NonZeroU32};
use std::time::Duration;

use ntex_mqtt::v5;
use ntex_mqtt::v5::codec as c5;

use crate::common::{Node, Raw5, connect5, sub_opts};

async fn publisher(node: &Node) -> Raw5 {
    Raw5::connect(node.mqtt, connect5("publisher")).await.0
}

#[tokio::test]
async fn wildcards_match_and_dollar_topics_need_explicit_filters() {
    let node = Node::start("");
    let (mut s, _) = Raw5::connect(node.mqtt, connect5("wild")).await;
    s.subscribe(
        1,
        None,
        &[
            ("#", sub_opts(v5::QoS::AtMostOnce)),
            ("$SYS/x", sub_opts(v5::QoS::AtMostOnce)),
        ],
    )
    .await;
    let (mut plus, _) = Raw5::connect(node.mqtt, connect5("plus")).await;
    plus.subscribe(1, None, &[("a/+/c", sub_opts(v5::QoS::AtMostOnce))])
        .await;
    let mut p = publisher(&node).await;
    for t in ["a/b/c", "a/b/d", "$SYS/x", "$other"] {
        p.publish(t, b"x", v5::QoS::AtMostOnce, 0, Default::default())
            .await;
    }
    let mut got = Vec::new();
    while let Some(c5::Decoded::Publish(m, ..)) = s.recv_within(Duration::from_millis(400)).await {
        got.push(m.topic.to_string());
    }
    assert_eq!(
        got,
        vec!["a/b/c", "a/b/d", "$SYS/x"],
        "'#' does not match $other"
    );
    let (m, _) = plus.expect_publish().await;
    assert_eq!(m.topic.as_str(), "a/b/c");
    assert!(plus.recv_within(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_one_copy_with_every_subscription_id() {
    let node = Node::start("");
    let (mut s, _) = Raw5::connect(node.mqtt, connect5("overlap")).await;
    s.subscribe(1, Some(7), &[("o/#", sub_opts(v5::QoS::AtMostOnce))])
        .await;
    s.subscribe(2, Some(9), &[("o/+", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let mut p = publisher(&node).await;
    p.publish("o/x", b"x", v5::QoS::ExactlyOnce, 1, Default::default())
        .await;
    let (m, _) = s.expect_publish().await;
    assert_eq!(m.qos, v5::QoS::AtLeastOnce, "the highest granted QoS");
    let mut ids: Vec<u32> = m
        .properties
        .subscription_ids
        .iter()
        .map(|i| i.get())
        .collect();
    ids.sort();
    assert_eq!(ids, vec![7, 9]);
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_none(),
        "one copy only"
    );
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_one_member() {
    let node = Node::start("");
    let mut members = Vec::new();
    for i in 0..2 {
        let (mut m, _) = Raw5::connect(node.mqtt, connect5(&format!("member{i}"))).await;
        m.subscribe(
            1,
            None,
            &[("$share/workers/jobs/#", sub_opts(v5::QoS::AtMostOnce))],
        )
        .await;
        members.push(m);
    }
    let mut p = publisher(&node).await;
    for i in 0..10 {
        p.publish(
            &format!("jobs/{i}"),
            b"x",
            v5::QoS::AtMostOnce,
            0,
            Default::default(),
        )
        .await;
    }
    let mut counts = HashMap::new();
    let mut topics = Vec::new();
    for (i, m) in members.iter_mut().enumerate() {
        while let Some(c5::Decoded::Publish(p, ..)) =
            m.recv_within(Duration::from_millis(400)).await
        {
            *counts.entry(i).or_insert(0) += 1;
            topics.push(p.topic.to_string());
        }
    }
    topics.sort();
    assert_eq!(topics.len(), 10, "every message reached exactly one member");
    topics.dedup();
    assert_eq!(topics.len(), 10);
    assert_eq!(counts.get(&0), Some(&5), "round robin: {counts:?}");
}

#[tokio::test]
async fn no_local_keeps_a_clients_own_messages_from_it() {
    let node = Node::start("");
    let (mut c, _) = Raw5::connect(node.mqtt, connect5("echo")).await;
    let nl = c5::SubscriptionOptions {
        no_local: true,
        ..sub_opts(v5::QoS::AtMostOnce)
    };
    c.subscribe(1, None, &[("nl", nl)]).await;
    c.publish("nl", b"mine", v5::QoS::AtMostOnce, 0, Default::default())
        .await;
    assert!(c.recv_within(Duration::from_millis(300)).await.is_none());
    let mut p = publisher(&node).await;
    p.publish("nl", b"theirs", v5::QoS::AtMostOnce, 0, Default::default())
        .await;
    let (_, body) = c.expect_publish().await;
    assert_eq!(&body[..], b"theirs");
}

#[tokio::test]
async fn topic_aliases_in_both_directions() {
    let node = Node::start("");
    let (mut s, _) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            topic_alias_max: 4,
            ..connect5("alias-sub")
        },
    )
    .await;
    s.subscribe(1, None, &[("long/#", sub_opts(v5::QoS::AtMostOnce))])
        .await;
    let (mut p, ack) = Raw5::connect(node.mqtt, connect5("alias-pub")).await;
    assert!(ack.topic_alias_max > 0);
    let alias = c5::PublishProperties {
        topic_alias: NonZeroU16::new(1),
        ..Default::default()
    };
    p.publish(
        "long/topic/name",
        b"1",
        v5::QoS::AtMostOnce,
        0,
        alias.clone(),
    )
    .await;
    p.publish("", b"2", v5::QoS::AtMostOnce, 0, alias).await;

    // Server to client: the first message defines the alias, the second uses it.
    let (m1, _) = s.expect_publish().await;
    let (m2, body2) = s.expect_publish().await;
    assert_eq!(m1.topic.as_str(), "long/topic/name");
    let a = m1.properties.topic_alias.expect("server assigns an alias");
    assert_eq!(
        (m2.topic.as_str(), m2.properties.topic_alias, &body2[..]),
        ("", Some(a), &b"2"[..])
    );

    // An alias the client never defined is a protocol error.
    let unknown = c5::PublishProperties {
        topic_alias: NonZeroU16::new(3),
        ..Default::default()
    };
    p.publish("", b"?", v5::QoS::AtMostOnce, 0, unknown).await;
    assert_eq!(
        p.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ProtocolError)
    );
}

/// A client that accepts 65,535 aliases gets no more than `max_outbound_topic_aliases`; topics
/// beyond it arrive by name, and no alias is ever handed out twice.
#[tokio::test]
async fn outbound_aliases_are_capped_by_the_server() {
    let node = Node::start("max_outbound_topic_aliases = 3");
    let (mut s, _) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            topic_alias_max: u16::MAX,
            ..connect5("alias-cap")
        },
    )
    .await;
    s.subscribe(1, None, &[("cap/#", sub_opts(v5::QoS::AtMostOnce))])
        .await;
    let mut p = publisher(&node).await;
    for i in 0..6 {
        p.publish(
            &format!("cap/{i}"),
            b"x",
            v5::QoS::AtMostOnce,
            0,
            Default::default(),
        )
        .await;
    }
    let mut aliases = Vec::new();
    for i in 0..6 {
        let (m, _) = s.expect_publish().await;
        assert_eq!(m.topic.as_str(), format!("cap/{i}"), "sent by name");
        aliases.push(m.properties.topic_alias.map(NonZeroU16::get));
    }
    assert_eq!(aliases, [Some(1), Some(2), Some(3), None, None, None]);
}

#[tokio::test]
async fn properties_pass_through_unchanged() {
    let node = Node::start("");
    let (mut s, _) = Raw5::connect(node.mqtt, connect5("props")).await;
    s.subscribe(1, None, &[("p", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let mut p = publisher(&node).await;
    let props = c5::PublishProperties {
        correlation_data: Some(ntex_bytes::Bytes::from_static(b"corr")),
        content_type: Some("application/json".into()),
        user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        is_utf8_payload: true,
        response_topic: Some("reply/here".into()),
        ..Default::default()
    };
    p.publish("p", b"{}", v5::QoS::AtLeastOnce, 1, props.clone())
        .await;
    let (m, _) = s.expect_publish().await;
    assert_eq!(m.properties.correlation_data, props.correlation_data);
    assert_eq!(m.properties.content_type, props.content_type);
    assert_eq!(
        m.properties.user_properties, props.user_properties,
        "order and duplicates kept"
    );
    assert!(m.properties.is_utf8_payload);
    assert_eq!(m.properties.response_topic, props.response_topic);
}

#[tokio::test]
async fn message_expiry_drops_stale_queued_messages_and_counts_down() {
    let node = Node::start("");
    let persistent = c5::Connect {
        clean_start: false,
        session_expiry_interval_secs: 300,
        ..connect5("late")
    };
    let (mut s, _) = Raw5::connect(node.mqtt, persistent.clone()).await;
    s.subscribe(1, None, &[("x/#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut p = publisher(&node).await;
    let expiring = |secs| c5::PublishProperties {
        message_expiry_interval: NonZeroU32::new(secs),
        ..Default::default()
    };
    p.publish("x/short", b"s", v5::QoS::AtLeastOnce, 1, expiring(1))
        .await;
    p.publish("x/long", b"l", v5::QoS::AtLeastOnce, 2, expiring(60))
        .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut s, _) = Raw5::connect(node.mqtt, persistent).await;
    let (m, _) = s.expect_publish().await;
    assert_eq!(
        m.topic.as_str(),
        "x/long",
        "the expired message was dropped"
    );
    let left = m.properties.message_expiry_interval.unwrap().get();
    assert!(
        (57..=59).contains(&left),
        "remaining interval forwarded, got {left}"
    );
}

#[tokio::test]
async fn maximum_packet_size_both_ways() {
    let node = Node::start("max_packet_size = 1024");
    // Client to server: an oversized packet gets DISCONNECT 0x95.
    let (mut big, ack) = Raw5::connect(node.mqtt, connect5("big")).await;
    assert_eq!(ack.max_packet_size, Some(1024));
    big.publish(
        "t",
        &[0u8; 2000],
        v5::QoS::AtMostOnce,
        0,
        Default::default(),
    )
    .await;
    assert_eq!(
        big.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::PacketTooLarge)
    );
    let (mut big3, _) =
        crate::common::Raw3::connect(node.mqtt, crate::common::connect3("big3", true)).await;
    big3.publish("t", &[0u8; 2000], ntex_mqtt::v3::QoS::AtMostOnce, 0, false)
        .await;
    big3.expect_closed().await;

    // Server to client: a message over the client's maximum is skipped, later ones still arrive.
    let (mut small, _) = Raw5::connect(
        node.mqtt,
        c5::Connect {
            max_packet_size: NonZeroU32::new(100),
            ..connect5("small")
        },
    )
    .await;
    small
        .subscribe(1, None, &[("m", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let mut p = publisher(&node).await;
    p.publish(
        "m",
        &[1u8; 500],
        v5::QoS::AtLeastOnce,
        1,
        Default::default(),
    )
    .await;
    p.publish("m", b"fits", v5::QoS::AtLeastOnce, 2, Default::default())
        .await;
    let (_, body) = small.expect_publish().await;
    assert_eq!(&body[..], b"fits");
}

#[tokio::test]
async fn v311_wildcards_shared_groups_and_overlaps() {
    use crate::common::{Raw3, connect3};
    use ntex_mqtt::v3;
    use ntex_mqtt::v3::codec as c3;
    let node = Node::start("");
    let (mut s, _) = Raw3::connect(node.mqtt, connect3("v3-overlap", true)).await;
    s.subscribe(
        1,
        &[
            ("a/+", v3::QoS::AtMostOnce),
            ("a/#", v3::QoS::AtLeastOnce),
            ("+/x", v3::QoS::AtMostOnce),
        ],
    )
    .await;
    let mut group = Vec::new();
    for i in 0..2 {
        let (mut m, _) = Raw3::connect(node.mqtt, connect3(&format!("v3-member{i}"), true)).await;
        m.subscribe(1, &[("$share/g/a/#", v3::QoS::AtMostOnce)])
            .await;
        group.push(m);
    }
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("v3-pub", true)).await;
    for t in ["a/x", "a/y", "$SYS/x"] {
        p.publish(t, b"m", v3::QoS::AtLeastOnce, 1, false).await;
        p.recv().await;
    }
    // One copy per message for the overlapping subscriptions, at the highest granted QoS.
    for want in ["a/x", "a/y"] {
        let (m, _) = s.expect_publish().await;
        assert_eq!((m.topic.as_str(), m.qos), (want, v3::QoS::AtLeastOnce));
        s.send(c3::Packet::PublishAck {
            packet_id: m.packet_id.unwrap(),
        })
        .await;
    }
    assert!(
        s.recv_within(Duration::from_millis(300)).await.is_none(),
        "no duplicates, no $SYS/x"
    );
    let mut shared = 0;
    for m in &mut group {
        while m.recv_within(Duration::from_millis(300)).await.is_some() {
            shared += 1;
        }
    }
    assert_eq!(shared, 2, "each message reaches one group member");
}

#[tokio::test]
async fn subscription_identifiers_from_a_client_are_a_protocol_error() {
    let node = Node::start("");
    let mut p = publisher(&node).await;
    let props = c5::PublishProperties {
        subscription_ids: vec![NonZeroU32::new(1).unwrap()],
        ..Default::default()
    };
    p.publish("t", b"x", v5::QoS::AtMostOnce, 0, props).await;
    assert_eq!(
        p.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ProtocolError)
    );
}

/// A PUBLISH whose bytes straddle TCP reads (a big payload, a slow link) is routed whole, in
/// order with the packets around it, for both protocol versions.
#[tokio::test]
async fn publishes_split_across_reads_arrive_whole() {
    use crate::common::{Raw3, connect3};
    use ntex_mqtt::v3;
    use ntex_mqtt::v3::codec as c3;
    let node = Node::start("");
    let (mut s, _) = Raw5::connect(node.mqtt, connect5("split-sub")).await;
    s.subscribe(1, None, &[("split/#", sub_opts(v5::QoS::AtLeastOnce))])
        .await;
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();

    let (mut p5, _) = Raw5::connect(node.mqtt, connect5("split-pub5")).await;
    let mut bytes = Vec::new();
    for (topic, id) in [("split/v5/a", 1), ("split/v5/b", 2)] {
        let pkt = c5::Publish {
            topic: topic.into(),
            qos: v5::QoS::AtLeastOnce,
            packet_id: NonZeroU16::new(id),
            payload_size: payload.len() as u32,
            ..Default::default()
        };
        let item = c5::Encoded::Publish(pkt, Some(payload.clone().into()));
        bytes.extend_from_slice(&p5.encode(item));
    }
    let (mut p3, _) = Raw3::connect(node.mqtt, connect3("split-pub3", true)).await;
    let pkt = c3::Publish {
        dup: false,
        retain: false,
        qos: v3::QoS::AtLeastOnce,
        topic: "split/v3".into(),
        packet_id: NonZeroU16::new(1),
        payload_size: payload.len() as u32,
    };
    let bytes3 = p3.encode(c3::Encoded::Publish(pkt, Some(payload.clone().into())));

    // Cut inside the first fixed header, inside a topic, and several times inside payloads.
    let cuts5 = [1, 9, 300, 20_000, 50_020, 70_000, bytes.len()];
    let cuts3 = [4, 10_000, 30_000, bytes3.len()];
    for (w, bytes, cuts) in [
        (&mut p5.wire, &bytes[..], &cuts5[..]),
        (&mut p3.wire, &bytes3, &cuts3),
    ] {
        w.stream_mut().set_nodelay(true).unwrap();
        let mut at = 0;
        for &cut in cuts {
            w.write_raw(&bytes[at..cut]).await;
            at = cut;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    for want in ["split/v5/a", "split/v5/b"] {
        match p5.recv().await {
            Some(c5::Decoded::Packet(c5::Packet::PublishAck(a), _)) => {
                assert_eq!(a.reason_code, c5::PublishAckReason::Success, "{want}")
            }
            other => panic!("expected PUBACK for {want}, got {other:?}"),
        }
    }
    assert!(matches!(
        p3.recv().await,
        Some(c3::Decoded::Packet(c3::Packet::PublishAck { .. }, _))
    ));
    for want in ["split/v5/a", "split/v5/b", "split/v3"] {
        let (m, body) = s.expect_publish().await;
        assert_eq!(m.topic.as_str(), want);
        assert!(
            body[..] == payload[..],
            "{want}: payload of {} bytes",
            body.len()
        );
        s.send(c5::Packet::PublishAck(c5::PublishAck {
            packet_id: m.packet_id.unwrap(),
            ..Default::default()
        }))
        .await;
    }
}

/// Payloads and Correlation Data over 4 KiB behind a short header reach v3 and v5 subscribers
/// byte for byte (ntex-net 4.0 garbles such headers unless the broker copies; see `conn.rs`).
#[tokio::test]
async fn large_payloads_and_correlation_data_arrive_intact() {
    use crate::common::{Raw3, connect3};
    use ntex_mqtt::v3;
    let node = Node::start("");
    let (mut s5, _) = Raw5::connect(node.mqtt, connect5("big-sub5")).await;
    s5.subscribe(1, None, &[("b", sub_opts(v5::QoS::AtMostOnce))])
        .await;
    let (mut s3, _) = Raw3::connect(node.mqtt, connect3("big-sub3", true)).await;
    s3.subscribe(1, &[("b", v3::QoS::AtMostOnce)]).await;
    let mut p = publisher(&node).await;
    let bytes = |n: usize| -> Vec<u8> { (0..n).map(|i| (i * 7 % 256) as u8).collect() };
    let corr = ntex_bytes::Bytes::from(bytes(10_000));
    let cases = [
        (bytes(5_000), None),
        (bytes(200_000), None),
        (bytes(10), Some(corr.clone())),
    ];
    for (id, (payload, correlation_data)) in (1..).zip(cases) {
        let props = c5::PublishProperties {
            correlation_data: correlation_data.clone(),
            ..Default::default()
        };
        // One at a time, so each delivery starts on an empty write buffer.
        p.publish("b", &payload, v5::QoS::AtMostOnce, 0, props)
            .await;
        let (m, body) = s5.expect_publish().await;
        assert!(
            body[..] == payload[..],
            "v5: {} of {} bytes",
            body.len(),
            payload.len()
        );
        assert_eq!(
            m.properties.correlation_data, correlation_data,
            "publish {id}"
        );
        let (_, body) = s3.expect_publish().await;
        assert!(
            body[..] == payload[..],
            "v3: {} of {} bytes",
            body.len(),
            payload.len()
        );
    }
}
