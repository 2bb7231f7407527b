//! Subscribers on other nodes: the cluster route table and the `Peering` seam.
//!
//! Every node tells its peers which filters it has local subscribers for (announced when a
//! filter's local count goes 0 -> 1, withdrawn at 1 -> 0, and sent whole when a link
//! (re)connects); shared subscriptions are announced the same way, per group, by their MQTT
//! name `$share/{group}/{filter}`. The table of what the peers announced lives here, next to
//! the local trie, outside raft. A PUBLISH is routed locally as before and handed, once per
//! peer with a matching route, to `Peering::forward`, which only queues it: the publisher's
//! worker never waits for the network. What it gets back for a QoS 1/2 message is a future
//! that resolves once those peers have the message in their sessions; the connection's task
//! holds the PUBACK / PUBREC until then.
//!
//! A shared group gets exactly one copy cluster-wide: a local member if there is one, else the
//! configured strategy picks one of the peers with members, and the message tells that peer
//! which groups it serves. A message forwarded by a peer is delivered to local subscribers
//! only, and to no group the sender did not choose this node for.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::auth::TopicGuard;
use crate::message::{Message, QoS, SubOptions};
use crate::routing::topic::{FilterSpec, parse_filter};
use crate::routing::topic_tree::{Hit, TopicTree};
use crate::routing::{Groups, ShareStrategy, pick_start, route_key};
use crate::session::SessionCell;
use realmq_raft_store::client::BoxFuture;

use super::Broker;

/// What the broker needs from the cluster to reach other nodes' subscribers. Implemented by
/// `cluster/` over its peer links; no call may block.
pub trait Peering: Send + Sync + 'static {
    /// A local route (a plain filter, or `$share/{group}/{filter}`) gained its first
    /// subscriber (`added`) or lost its last. Called under the lock of the local route counts,
    /// so changes reach every link in order.
    fn route_changed(&self, route: &str, added: bool);
    /// Queues `msg` for each target peer; with `want` other than `Nothing`, returns what
    /// resolves once they have it in their sessions (see `Confirm`).
    fn forward(&self, msg: &Arc<Message>, targets: &[PeerTarget], want: Want) -> Option<Confirm>;
    /// Resolves once the connected peers know every route change made so far (bounded);
    /// `None` when they already do.
    fn settled(&self) -> Option<BoxFuture<'static, ()>>;
}

/// A peer a message goes to, and the shared groups (by route key) it was chosen to serve.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerTarget {
    pub peer: u64,
    pub groups: Vec<String>,
}

/// What a publisher waits for from the peers a message was forwarded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// QoS 0: nothing (and it is never resent).
    Nothing,
    /// QoS 1/2: that every peer has it in its sessions.
    Confirm,
    /// The REST API: that, and how many sessions it reached there.
    Count,
}

/// Resolves once every target peer confirmed (or has had no link for longer than the
/// configured bound: what it missed is counted), to the sessions the peers reported reaching
/// (0 unless `Want::Count`).
pub type Confirm = BoxFuture<'static, usize>;

/// A routed publish: the sessions it reached here, the peers it went to, and what to wait for.
pub struct Published {
    pub local: usize,
    pub peers: usize,
    pub confirm: Option<Confirm>,
    /// A local subscriber's connection whose queue this message congested: the publisher
    /// pauses reading until it drains (`ConnLink::until_drained`).
    pub congested: Option<Arc<crate::session::ConnLink>>,
}

impl Broker {
    /// Connects the broker to the cluster's peer links (once, at start-up).
    pub fn set_peering(&self, peering: Arc<dyn Peering>) {
        let _ = self.peering.set(peering);
    }

    /// Adds or replaces a local subscription, announcing a route's first subscriber.
    pub(super) fn add_subscription(
        &self,
        session: &Arc<SessionCell>,
        spec: FilterSpec<'_>,
        opts: SubOptions,
        guard: Option<Arc<TopicGuard>>,
    ) -> bool {
        let replaced = self.router.subscribe(session, spec, opts, guard);
        if !replaced {
            let key = route_key(spec);
            let mut counts = self.local_routes.lock();
            let n = counts.entry(key.as_ref().into()).or_insert(0);
            *n += 1;
            if *n == 1
                && let Some(p) = self.peering.get()
            {
                p.route_changed(&key, true);
            }
        }
        replaced
    }

    /// Removes a local subscription, withdrawing a route with its last subscriber.
    pub(super) fn remove_subscription(&self, session_id: u64, spec: FilterSpec<'_>) -> bool {
        let existed = self.router.unsubscribe(session_id, spec);
        if existed {
            let key = route_key(spec);
            let mut counts = self.local_routes.lock();
            if let Some(n) = counts.get_mut(key.as_ref()) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(key.as_ref());
                    if let Some(p) = self.peering.get() {
                        p.route_changed(&key, false);
                    }
                }
            }
        }
        existed
    }

    /// Calls `f` with every route that has local subscribers, holding the lock that orders
    /// route changes: what `f` sends goes out before any later change.
    pub fn with_local_routes<T>(&self, f: impl FnOnce(Vec<String>) -> T) -> T {
        let counts = self.local_routes.lock();
        f(counts.keys().map(|k| k.to_string()).collect())
    }

    /// Replaces everything known of `peer`'s routes (a link from it (re)connected).
    pub fn set_peer_routes(&self, peer: u64, routes: Vec<String>) {
        let mut remote = self.remote.write();
        remote.drop_peer(peer);
        for r in routes {
            remote.add(peer, &r);
        }
        self.has_remote.store(!remote.is_empty(), Ordering::Release);
    }

    pub fn peer_route_changed(&self, peer: u64, route: &str, added: bool) {
        let mut remote = self.remote.write();
        if added {
            remote.add(peer, route);
        } else {
            remote.remove(peer, route);
        }
        self.has_remote.store(!remote.is_empty(), Ordering::Release);
    }

    /// Forgets a peer that left the cluster.
    pub fn drop_peer(&self, peer: u64) {
        let mut remote = self.remote.write();
        remote.drop_peer(peer);
        self.has_remote.store(!remote.is_empty(), Ordering::Release);
    }

    /// Hands `msg` to every peer with a matching route; returns how many, and what to wait for.
    pub(super) fn forward(&self, msg: &Arc<Message>, want: Want) -> (usize, Option<Confirm>) {
        if !self.has_remote.load(Ordering::Acquire) {
            return (0, None);
        }
        let targets = self
            .remote
            .read()
            .targets(msg, self.router.strategy(), |key| {
                self.local_routes.lock().contains_key(key)
            });
        match (targets.is_empty(), self.peering.get()) {
            (false, Some(p)) => (targets.len(), p.forward(msg, &targets, want)),
            _ => (0, None),
        }
    }

    /// Awaited before SUBACK: a message published anywhere after the client got its SUBACK
    /// reaches the new subscription. `None` (nothing to wait for) on a single node.
    pub fn routes_settled(&self) -> Option<BoxFuture<'static, ()>> {
        self.peering.get()?.settled()
    }

    /// Delivers a message a peer forwarded to this node's subscribers (and only them), serving
    /// only the shared `groups` the peer chose this node for; returns the sessions reached.
    pub fn deliver_forwarded(&self, msg: Message, groups: &[String]) -> usize {
        // Messages from peers are not paused: the cluster link carries many publishers' traffic.
        self.route(&Arc::new(msg), Groups::Only(groups)).0
    }
}

/// What a publish of `qos` waits for from the peers.
pub(super) fn want_for(qos: QoS) -> Want {
    if qos == QoS::AtMostOnce {
        Want::Nothing
    } else {
        Want::Confirm
    }
}

/// The routes peers announced: filter (and shared group) -> the peers that have subscribers.
#[derive(Default)]
pub struct RemoteRoutes {
    tree: TopicTree<u64, ()>,
    /// Per peer, its routes, to drop them all at once.
    by_peer: HashMap<u64, BTreeSet<String>>,
}

impl RemoteRoutes {
    fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn add(&mut self, peer: u64, route: &str) {
        let Ok(spec) = parse_filter(route) else {
            tracing::warn!(peer, route, "a peer announced an invalid route; ignored");
            return;
        };
        if self
            .by_peer
            .entry(peer)
            .or_default()
            .insert(route.to_string())
        {
            self.tree.insert(spec.filter, spec.group, peer, ());
        }
    }

    fn remove(&mut self, peer: u64, route: &str) {
        if self.by_peer.get_mut(&peer).is_some_and(|f| f.remove(route))
            && let Ok(spec) = parse_filter(route)
        {
            self.tree.remove(spec.filter, spec.group, &peer);
        }
    }

    fn drop_peer(&mut self, peer: u64) {
        for r in self.by_peer.remove(&peer).unwrap_or_default() {
            if let Ok(spec) = parse_filter(&r) {
                self.tree.remove(spec.filter, spec.group, &peer);
            }
        }
    }

    /// Each peer with a plain route matching `msg`'s topic, once; and for each matching shared
    /// group with no local member (`local` says which have one), one peer picked by `strategy`.
    fn targets(
        &self,
        msg: &Message,
        strategy: ShareStrategy,
        local: impl Fn(&str) -> bool,
    ) -> Vec<PeerTarget> {
        fn slot(out: &mut Vec<PeerTarget>, peer: u64) -> usize {
            out.iter().position(|t| t.peer == peer).unwrap_or_else(|| {
                out.push(PeerTarget {
                    peer,
                    groups: Vec::new(),
                });
                out.len() - 1
            })
        }
        let mut out: Vec<PeerTarget> = Vec::new();
        let mut shared = Vec::new();
        self.tree.matches(&msg.topic, |hit| match hit {
            Hit::Subscriber(peer, ()) => {
                slot(&mut out, *peer);
            }
            Hit::Group(g) if !g.members.is_empty() => shared.push(g),
            Hit::Group(_) => {}
        });
        for g in shared {
            let key = route_key(FilterSpec {
                filter: &g.filter,
                group: Some(&g.name),
            });
            if local(&key) {
                continue;
            }
            let start = pick_start(strategy, &g.cursor, g.members.len(), msg);
            let i = slot(&mut out, g.members[start].0);
            out[i].groups.push(key.into_owned());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::{PeerTarget, RemoteRoutes};
    use crate::message::{ByteString, Bytes, Message, MessageProperties, QoS};
    use crate::routing::ShareStrategy;

    fn msg(topic: &str) -> Message {
        Message {
            topic: ByteString::from(topic.to_string()),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: MessageProperties::default(),
            expires_at: None,
            publisher: None,
        }
    }

    fn peers(r: &RemoteRoutes, topic: &str) -> Vec<u64> {
        let mut p: Vec<u64> = r
            .targets(&msg(topic), ShareStrategy::RoundRobin, |_| false)
            .iter()
            .map(|t| t.peer)
            .collect();
        p.sort();
        p
    }

    #[test]
    fn each_matching_peer_once_and_a_dropped_peer_not_at_all() {
        let mut r = RemoteRoutes::default();
        r.add(2, "a/+");
        r.add(2, "a/#");
        r.add(3, "a/b");
        r.add(3, "x");
        assert_eq!(peers(&r, "a/b"), [2, 3]);
        assert!(peers(&r, "$SYS/a").is_empty());
        r.remove(3, "a/b");
        assert_eq!(peers(&r, "a/b"), [2]);
        r.drop_peer(2);
        assert!(peers(&r, "a/b").is_empty());
        assert_eq!(peers(&r, "x"), [3]);
        r.drop_peer(3);
        assert!(r.is_empty());
    }

    #[test]
    fn a_shared_group_goes_to_one_peer_in_turn_and_not_at_all_with_a_local_member() {
        let mut r = RemoteRoutes::default();
        r.add(2, "$share/g/s/+");
        r.add(3, "$share/g/s/+");
        r.add(3, "s/#");
        let key = "$share/g/s/+".to_string();
        let mut chosen = Vec::new();
        for _ in 0..4 {
            let t = r.targets(&msg("s/1"), ShareStrategy::RoundRobin, |_| false);
            let with_group: Vec<&PeerTarget> = t.iter().filter(|t| !t.groups.is_empty()).collect();
            assert_eq!(
                with_group.len(),
                1,
                "exactly one peer serves the group: {t:?}"
            );
            assert_eq!(with_group[0].groups, std::slice::from_ref(&key));
            assert!(t.iter().any(|t| t.peer == 3), "peer 3's plain route");
            chosen.push(with_group[0].peer);
        }
        chosen.sort();
        assert_eq!(
            chosen,
            [2, 2, 3, 3],
            "round robin over the peers with members"
        );
        let t = r.targets(&msg("s/1"), ShareStrategy::RoundRobin, |k| k == key);
        assert_eq!(
            t,
            [PeerTarget {
                peer: 3,
                groups: vec![]
            }]
        );
        r.remove(2, "$share/g/s/+");
        r.remove(3, "$share/g/s/+");
        r.remove(3, "s/#");
        assert!(r.is_empty());
    }
}
