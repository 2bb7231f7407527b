use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::message::{Bytes, Message, MessageProperties};

fn delivery(topic: &'static str, qos: QoS, expires_at: Option<Instant>) -> Delivery {
    Delivery {
        msg: Arc::new(Message {
            topic: ByteString::from_static(topic),
            payload: Bytes::from_static(b"p"),
            qos,
            retain: false,
            properties: MessageProperties::default(),
            expires_at,
            publisher: None,
        }),
        qos,
        retain: false,
        subscription_ids: Vec::new(),
    }
}

fn topics(out: &[Outgoing]) -> Vec<String> {
    out.iter()
        .map(|o| match o {
            Outgoing::Publish {
                packet_id,
                dup,
                delivery,
                ..
            } => format!(
                "{}:{}{}",
                delivery.msg.topic,
                packet_id.map_or("-".to_string(), |p| p.to_string()),
                if *dup { ":dup" } else { "" }
            ),
            Outgoing::PubRel { packet_id } => format!("rel:{packet_id}"),
        })
        .collect()
}

fn online(window: usize) -> SessionState {
    let mut s = SessionState::new(100, DropPolicy::DropOldest);
    s.set_window(window);
    s
}

#[test]
fn qos_flows_table() {
    // (qos, acks applied after transmit, in flight afterwards)
    let cases: &[(QoS, &[&str], usize)] = &[
        (QoS::AtMostOnce, &[], 0),
        (QoS::AtLeastOnce, &[], 1),
        (QoS::AtLeastOnce, &["puback"], 0),
        (QoS::AtLeastOnce, &["pubrec"], 1), // wrong ack type leaves it in flight
        (QoS::ExactlyOnce, &[], 1),
        (QoS::ExactlyOnce, &["pubrec"], 1),
        (QoS::ExactlyOnce, &["pubrec", "pubcomp"], 0),
        (QoS::ExactlyOnce, &["pubcomp"], 1), // PUBCOMP before PUBREC is ignored
        (QoS::ExactlyOnce, &["puback"], 1),
        (QoS::ExactlyOnce, &["pubrec-fail"], 0),
    ];
    for (qos, acks, left) in cases {
        let mut s = online(10);
        s.push(delivery("t", *qos, None), true);
        let mut out = Vec::new();
        s.transmit(Instant::now(), &mut out, usize::MAX);
        assert_eq!(out.len(), 1);
        let id = match &out[0] {
            Outgoing::Publish { packet_id, .. } => packet_id.unwrap_or(0),
            Outgoing::PubRel { .. } => panic!("unexpected PUBREL"),
        };
        for ack in *acks {
            match *ack {
                "puback" => {
                    s.on_puback(id);
                }
                "pubrec" => {
                    let rel = s.on_pubrec(id, true);
                    if *qos == QoS::ExactlyOnce {
                        assert!(
                            matches!(rel, Some(Outgoing::PubRel { packet_id }) if packet_id == id)
                        );
                    }
                }
                "pubrec-fail" => assert!(s.on_pubrec(id, false).is_none()),
                "pubcomp" => {
                    s.on_pubcomp(id);
                }
                _ => unreachable!(),
            }
        }
        assert_eq!(s.inflight(), *left, "qos {qos:?} acks {acks:?}");
    }
}

#[test]
fn window_limits_inflight_and_holds_order() {
    let mut s = online(2);
    for t in ["a", "b", "c"] {
        s.push(delivery(t, QoS::AtLeastOnce, None), true);
    }
    s.push(delivery("d", QoS::AtMostOnce, None), true);
    let mut out = Vec::new();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert_eq!(topics(&out), vec!["a:1", "b:2"]);
    assert_eq!(s.queued(), 2, "c and the QoS 0 behind it wait for window");
    assert!(s.on_puback(1));
    out.clear();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert_eq!(topics(&out), vec!["c:3", "d:-"]);
}

#[test]
fn packet_ids_skip_ids_in_flight_and_wrap() {
    let mut s = online(3);
    s.next_packet_id = u16::MAX - 1;
    for t in ["a", "b", "c"] {
        s.push(delivery(t, QoS::AtLeastOnce, None), true);
    }
    let mut out = Vec::new();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert_eq!(topics(&out), vec!["a:65535", "b:1", "c:2"]);
    assert!(s.on_puback(1));
    s.next_packet_id = 0;
    s.push(delivery("d", QoS::AtLeastOnce, None), true);
    out.clear();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert_eq!(
        topics(&out),
        vec!["d:1"],
        "1 was freed, 2 is still in flight"
    );
}

#[test]
fn queue_bounds_and_drop_policies() {
    for (policy, want) in [
        (DropPolicy::DropOldest, vec!["b:1", "c:2"]),
        (DropPolicy::DropNewest, vec!["a:1", "b:2"]),
    ] {
        let mut s = SessionState::new(2, policy);
        assert_eq!(
            s.push(delivery("a", QoS::AtLeastOnce, None), false),
            Pushed::Queued
        );
        assert_eq!(
            s.push(delivery("b", QoS::AtLeastOnce, None), false),
            Pushed::Queued
        );
        assert_eq!(
            s.push(delivery("c", QoS::AtLeastOnce, None), false),
            Pushed::DroppedFull
        );
        s.set_window(10);
        let mut out = Vec::new();
        s.transmit(Instant::now(), &mut out, usize::MAX);
        assert_eq!(topics(&out), want, "{policy:?}");
    }
}

/// `max_queued_bytes` bounds the queue by topics and payloads (each test delivery is a 2-byte
/// topic and a 1-byte payload: 3 bytes), whatever the message count allows.
#[test]
fn queue_bytes_bound_and_drop_policies() {
    for (policy, want) in [
        (DropPolicy::DropOldest, vec!["bb:1", "cc:2"]),
        (DropPolicy::DropNewest, vec!["aa:1", "bb:2"]),
    ] {
        let mut s = SessionState::new(100, policy).with_max_queued_bytes(7);
        for (topic, pushed) in [
            ("aa", Pushed::Queued),
            ("bb", Pushed::Queued),
            ("cc", Pushed::DroppedFull),
        ] {
            assert_eq!(
                s.push(delivery(topic, QoS::AtLeastOnce, None), false),
                pushed
            );
        }
        assert_eq!(s.queued_bytes(), 6, "{policy:?}");
        s.set_window(10);
        let mut out = Vec::new();
        s.transmit(Instant::now(), &mut out, usize::MAX);
        assert_eq!(topics(&out), want, "{policy:?}");
        assert_eq!(s.queued_bytes(), 0, "the sent messages left the queue");
    }
    // A message larger than the whole budget is dropped and drops nothing else.
    let mut s = SessionState::new(100, DropPolicy::DropOldest).with_max_queued_bytes(2);
    assert_eq!(
        s.push(delivery("aa", QoS::AtLeastOnce, None), false),
        Pushed::DroppedFull
    );
    assert_eq!((s.queued(), s.queued_bytes()), (0, 0));
}

#[test]
fn offline_sessions_keep_qos1_and_qos2_only() {
    let mut s = SessionState::new(10, DropPolicy::DropOldest);
    assert_eq!(
        s.push(delivery("q0", QoS::AtMostOnce, None), false),
        Pushed::DroppedOffline
    );
    s.push(delivery("q1", QoS::AtLeastOnce, None), false);
    s.push(delivery("q2", QoS::ExactlyOnce, None), false);
    let mut out = Vec::new();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert!(out.is_empty(), "no window while offline");
    s.set_window(10);
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert_eq!(topics(&out), vec!["q1:1", "q2:2"]);
}

#[test]
fn detach_drops_queued_qos0() {
    let mut s = online(0);
    s.push(delivery("q0", QoS::AtMostOnce, None), true);
    s.push(delivery("q1", QoS::AtLeastOnce, None), true);
    s.detach();
    assert_eq!(s.queued(), 1);
}

#[test]
fn resume_resends_inflight_with_dup_then_pubrel() {
    let mut s = online(10);
    s.push(delivery("a", QoS::AtLeastOnce, None), true);
    s.push(delivery("b", QoS::ExactlyOnce, None), true);
    s.push(delivery("c", QoS::ExactlyOnce, None), true);
    let mut out = Vec::new();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    s.on_pubrec(3, true);
    s.detach();
    out.clear();
    s.resume(Instant::now(), &mut out);
    assert_eq!(topics(&out), vec!["a:1:dup", "b:2:dup", "rel:3"]);
}

#[test]
fn expired_messages_are_dropped_and_remaining_interval_forwarded() {
    let now = Instant::now();
    let mut s = online(10);
    s.push(delivery("gone", QoS::AtLeastOnce, Some(now)), true);
    s.push(
        delivery(
            "kept",
            QoS::AtLeastOnce,
            Some(now + Duration::from_millis(2500)),
        ),
        true,
    );
    let mut out = Vec::new();
    let dropped = s.transmit(now, &mut out, usize::MAX);
    assert_eq!(dropped.expired, 1);
    assert_eq!(topics(&out), vec!["kept:1"]);
    assert!(matches!(
        out[0],
        Outgoing::Publish {
            expiry: Some(3),
            ..
        }
    ));
}

#[test]
fn inbound_qos2_is_deduplicated_until_pubrel() {
    let mut s = online(10);
    assert!(s.begin_inbound_qos2(7));
    assert!(
        !s.begin_inbound_qos2(7),
        "re-sent PUBLISH is not routed twice"
    );
    assert!(s.release_inbound_qos2(7));
    assert!(!s.release_inbound_qos2(7));
    assert!(s.begin_inbound_qos2(7), "id is reusable after PUBREL");
}

#[test]
fn transmit_respects_batch_limit() {
    let mut s = online(10);
    for t in ["a", "b", "c"] {
        s.push(delivery(t, QoS::AtMostOnce, None), true);
    }
    let mut out = Vec::new();
    s.transmit(Instant::now(), &mut out, 2);
    assert_eq!(topics(&out), vec!["a:-", "b:-"]);
    out.clear();
    s.transmit(Instant::now(), &mut out, 2);
    assert_eq!(topics(&out), vec!["c:-"]);
}

#[test]
fn forget_frees_window() {
    let mut s = online(1);
    s.push(delivery("big", QoS::AtLeastOnce, None), true);
    s.push(delivery("next", QoS::AtLeastOnce, None), true);
    let mut out = Vec::new();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    s.forget(1);
    out.clear();
    s.transmit(Instant::now(), &mut out, usize::MAX);
    assert_eq!(topics(&out), vec!["next:2"]);
}

#[test]
fn undelivered_messages_move_with_their_packet_ids_and_phases() {
    let mut old = online(2);
    for t in ["a", "b", "c", "d"] {
        old.push(delivery(t, QoS::ExactlyOnce, None), true);
    }
    let mut out = Vec::new();
    old.transmit(Instant::now(), &mut out, 10);
    assert_eq!(topics(&out), ["a:1", "b:2"], "window of two");
    // "a" got its PUBREC (PUBREL sent); "b" is unacknowledged; "c" and "d" are queued.
    assert!(old.on_pubrec(1, true).is_some());
    old.begin_inbound_qos2(7);
    let moved = old.take_undelivered();
    assert_eq!(
        (old.inflight(), old.queued()),
        (0, 0),
        "nothing left behind"
    );

    let mut new = online(0);
    new.push(delivery("e", QoS::AtLeastOnce, None), false);
    new.restore_undelivered(moved);
    new.set_window(10);
    let mut out = Vec::new();
    new.resume(Instant::now(), &mut out);
    new.transmit(Instant::now(), &mut out, 10);
    assert_eq!(
        topics(&out),
        ["rel:1", "b:2:dup", "c:3", "d:4", "e:5"],
        "flows resume exactly, then the moved queue, then what came since"
    );
    assert!(
        new.has_inbound_qos2(7),
        "an inbound QoS 2 flow still awaits PUBREL"
    );
}
