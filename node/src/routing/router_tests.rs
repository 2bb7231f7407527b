use std::collections::HashMap;
use std::sync::Arc;

use super::*;
use crate::message::{ByteString, Bytes, MessageProperties, QoS, SubOptions};
use crate::routing::topic::parse_filter;
use crate::session::{ConnLink, DropPolicy, Sessions};

fn session(sessions: &Sessions, id: &str) -> Arc<SessionCell> {
    sessions.open(id.into(), true, ConnLink::new(1), 10, 0).cell
}

fn msg(topic: &str, qos: QoS, retain: bool, publisher: Option<&str>) -> Arc<Message> {
    Arc::new(Message {
        topic: ByteString::from(topic.to_string()),
        payload: Bytes::from_static(b"x"),
        qos,
        retain,
        properties: MessageProperties::default(),
        expires_at: None,
        publisher: publisher.map(Into::into),
    })
}

fn sub(router: &Router, s: &Arc<SessionCell>, filter: &str, opts: SubOptions) {
    router.subscribe(s, parse_filter(filter).unwrap(), opts, None);
}

fn route(router: &Router, m: &Arc<Message>) -> Vec<(String, QoS, bool, Vec<u32>)> {
    let mut out = Vec::new();
    router.route(m, super::Groups::All, &mut out);
    let mut v: Vec<_> = out
        .into_iter()
        .map(|t| {
            let mut ids = t.delivery.subscription_ids;
            ids.sort();
            (
                t.session.client_id.to_string(),
                t.delivery.qos,
                t.delivery.retain,
                ids,
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn opts(qos: QoS) -> SubOptions {
    SubOptions {
        qos,
        ..SubOptions::default()
    }
}

#[test]
fn overlapping_subscriptions_give_one_copy_at_highest_qos_with_all_ids() {
    let sessions = Sessions::new(10, DropPolicy::DropOldest);
    let router = Router::new(ShareStrategy::RoundRobin);
    let a = session(&sessions, "a");
    sub(
        &router,
        &a,
        "t/+",
        SubOptions {
            subscription_id: Some(1),
            ..opts(QoS::AtMostOnce)
        },
    );
    sub(
        &router,
        &a,
        "t/#",
        SubOptions {
            subscription_id: Some(2),
            ..opts(QoS::ExactlyOnce)
        },
    );
    sub(&router, &a, "t/x", opts(QoS::AtLeastOnce));
    assert_eq!(
        route(&router, &msg("t/x", QoS::ExactlyOnce, false, None)),
        vec![("a".into(), QoS::ExactlyOnce, false, vec![1, 2])]
    );
    // Granted QoS caps the delivered QoS.
    assert_eq!(
        route(&router, &msg("t/y", QoS::AtLeastOnce, false, None)),
        vec![("a".into(), QoS::AtLeastOnce, false, vec![1, 2])]
    );
}

#[test]
fn qos_downgrade_no_local_and_retain_as_published_table() {
    // (sub opts, message qos, retain, publisher) -> delivered (qos, retain) or nothing
    type Case<'a> = (SubOptions, QoS, bool, Option<&'a str>, Option<(QoS, bool)>);
    let cases: &[Case<'_>] = &[
        (
            opts(QoS::AtMostOnce),
            QoS::ExactlyOnce,
            false,
            None,
            Some((QoS::AtMostOnce, false)),
        ),
        (
            opts(QoS::ExactlyOnce),
            QoS::AtLeastOnce,
            false,
            None,
            Some((QoS::AtLeastOnce, false)),
        ),
        (
            opts(QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            true,
            None,
            Some((QoS::AtLeastOnce, false)),
        ),
        (
            SubOptions {
                retain_as_published: true,
                ..opts(QoS::AtLeastOnce)
            },
            QoS::AtLeastOnce,
            true,
            None,
            Some((QoS::AtLeastOnce, true)),
        ),
        (
            SubOptions {
                no_local: true,
                ..opts(QoS::AtLeastOnce)
            },
            QoS::AtLeastOnce,
            false,
            Some("me"),
            None,
        ),
        (
            SubOptions {
                no_local: true,
                ..opts(QoS::AtLeastOnce)
            },
            QoS::AtLeastOnce,
            false,
            Some("other"),
            Some((QoS::AtLeastOnce, false)),
        ),
        (
            opts(QoS::AtLeastOnce),
            QoS::AtLeastOnce,
            false,
            Some("me"),
            Some((QoS::AtLeastOnce, false)),
        ),
    ];
    for (o, qos, retain, publisher, want) in cases {
        let sessions = Sessions::new(10, DropPolicy::DropOldest);
        let router = Router::new(ShareStrategy::RoundRobin);
        let me = session(&sessions, "me");
        sub(&router, &me, "t", *o);
        let got = route(&router, &msg("t", *qos, *retain, *publisher));
        let want: Vec<_> = want
            .iter()
            .map(|(q, r)| ("me".to_string(), *q, *r, vec![]))
            .collect();
        assert_eq!(
            got, want,
            "{o:?} {qos:?} retain={retain} publisher={publisher:?}"
        );
    }
}

fn share_counts(
    strategy: ShareStrategy,
    publishers: &[&str],
    online: &[bool],
) -> HashMap<String, usize> {
    let sessions = Sessions::new(10, DropPolicy::DropOldest);
    let router = Router::new(strategy);
    let mut members = Vec::new();
    for (i, up) in online.iter().enumerate() {
        let s = session(&sessions, &format!("m{i}"));
        if !up {
            sessions.detach(&s, 1);
        }
        sub(&router, &s, "$share/g/t/#", opts(QoS::AtLeastOnce));
        members.push(s);
    }
    let plain = session(&sessions, "plain");
    sub(&router, &plain, "t/#", opts(QoS::AtLeastOnce));
    let mut counts = HashMap::new();
    for p in publishers {
        for (who, ..) in route(&router, &msg("t/x", QoS::AtLeastOnce, false, Some(p))) {
            *counts.entry(who).or_insert(0) += 1;
        }
    }
    counts
}

#[test]
fn shared_group_gets_one_copy_per_message() {
    let pubs = vec!["p"; 90];
    let rr = share_counts(ShareStrategy::RoundRobin, &pubs, &[true, true, true]);
    assert_eq!(rr["plain"], 90, "plain subscribers still get every message");
    for i in 0..3 {
        assert_eq!(rr[&format!("m{i}")], 30, "round robin is even: {rr:?}");
    }
    let random = share_counts(ShareStrategy::Random, &pubs, &[true, true, true]);
    assert_eq!(
        (0..3)
            .map(|i| random.get(&format!("m{i}")).copied().unwrap_or(0))
            .sum::<usize>(),
        90
    );
    let hashed = share_counts(ShareStrategy::HashClientid, &pubs, &[true, true, true]);
    assert_eq!(
        hashed.len(),
        2,
        "one publisher sticks to one member: {hashed:?}"
    );
}

#[test]
fn shared_group_prefers_connected_members() {
    let pubs = vec!["p"; 10];
    let counts = share_counts(ShareStrategy::RoundRobin, &pubs, &[false, true, false]);
    assert_eq!(counts.get("m1"), Some(&10), "{counts:?}");
    let all_offline = share_counts(ShareStrategy::RoundRobin, &pubs, &[false, false]);
    assert_eq!(
        all_offline.get("m0").unwrap_or(&0) + all_offline.get("m1").unwrap_or(&0),
        10,
        "with nobody connected a member still gets it (its queue holds it)"
    );
}

#[test]
fn unsubscribe_stops_routing() {
    let sessions = Sessions::new(10, DropPolicy::DropOldest);
    let router = Router::new(ShareStrategy::RoundRobin);
    let a = session(&sessions, "a");
    sub(&router, &a, "t", opts(QoS::AtMostOnce));
    assert!(router.unsubscribe(a.id, parse_filter("t").unwrap()));
    assert!(!router.unsubscribe(a.id, parse_filter("t").unwrap()));
    assert!(route(&router, &msg("t", QoS::AtMostOnce, false, None)).is_empty());
    assert!(router.is_empty());
}

/// A subscription whose filter overlaps an ACL deny rule gets only the messages its guard admits;
/// in a shared group, a member whose guard refuses a topic is passed over for it.
#[test]
fn acl_guards_filter_deliveries_per_subscription() {
    use crate::auth::{Acl, AclAction, AclRule, ClientInfo, Permission};
    let acl = Acl::new(vec![AclRule {
        permission: Permission::Deny,
        action: AclAction::Subscribe,
        topic: "secret/#".into(),
        username: Some("guest".into()),
        client_id: None,
    }]);
    let guard = |user: &str, filter: &str| {
        let who = ClientInfo {
            client_id: user.into(),
            username: Some(user.into()),
            scope: None,
        };
        acl.subscribe(&who, filter).guard
    };
    let sessions = Sessions::new(10, DropPolicy::DropOldest);
    let router = Router::new(ShareStrategy::RoundRobin);
    let (guest, admin) = (session(&sessions, "guest"), session(&sessions, "admin"));
    let q0 = opts(QoS::AtMostOnce);
    router.subscribe(&guest, parse_filter("#").unwrap(), q0, guard("guest", "#"));
    router.subscribe(&admin, parse_filter("#").unwrap(), q0, guard("admin", "#"));
    let names = |m: &Arc<Message>| {
        route(&router, m)
            .into_iter()
            .map(|t| t.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(&msg("secret/x", QoS::AtMostOnce, false, None)),
        ["admin"]
    );
    assert_eq!(
        names(&msg("public/x", QoS::AtMostOnce, false, None)),
        ["admin", "guest"]
    );

    let shared = Router::new(ShareStrategy::RoundRobin);
    for who in [&guest, &admin] {
        let g = guard(&who.client_id, "+/x");
        shared.subscribe(who, parse_filter("$share/g/+/x").unwrap(), q0, g);
    }
    for _ in 0..4 {
        let mut out = Vec::new();
        shared.route(
            &msg("secret/x", QoS::AtMostOnce, false, None),
            super::Groups::All,
            &mut out,
        );
        let got: Vec<_> = out
            .iter()
            .map(|t| t.session.client_id.to_string())
            .collect();
        assert_eq!(got, ["admin"], "only the member allowed to see it");
    }
}

#[test]
fn a_forwarded_message_serves_only_the_groups_chosen_for_this_node() {
    let sessions = Sessions::new(10, DropPolicy::DropOldest);
    let router = Router::new(ShareStrategy::RoundRobin);
    let (a, b, c) = (
        session(&sessions, "a"),
        session(&sessions, "b"),
        session(&sessions, "c"),
    );
    sub(&router, &a, "$share/g1/t/+", SubOptions::default());
    sub(&router, &b, "$share/g2/t/+", SubOptions::default());
    sub(&router, &c, "t/#", SubOptions::default());
    let names = |groups: Groups<'_>| {
        let mut out = Vec::new();
        router.route(&msg("t/1", QoS::AtMostOnce, false, None), groups, &mut out);
        let mut v: Vec<String> = out
            .iter()
            .map(|t| t.session.client_id.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(Groups::All), ["a", "b", "c"]);
    assert_eq!(
        names(Groups::Only(&[])),
        ["c"],
        "plain subscriptions always"
    );
    assert_eq!(
        names(Groups::Only(&["$share/g2/t/+".to_string()])),
        ["b", "c"]
    );
    assert!(super::is_route_of("$share/g1/t/+", "g1", "t/+"));
    assert!(!super::is_route_of("$share/g1/t/+", "g", "1/t/+"));
}
