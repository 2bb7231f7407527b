//! Subscribers on other nodes: the cluster route table and the `Peering` seam.
//!
//! Every node tells its peers which filters it has local subscribers for (announced when a
//! filter's local count goes 0 -> 1, withdrawn at 1 -> 0, and sent whole when a link
//! (re)connects); the table of what the peers announced lives here, next to the local trie,
//! outside raft. A PUBLISH is routed locally as before and handed, once per peer with a matching
//! route, to `Peering::forward`, which only queues it: the publisher's worker never waits for
//! the network. A message forwarded by a peer is delivered to local subscribers only.
//!
//! Shared subscriptions (`$share/...`) are not announced yet: a group picks a member among the
//! subscribers of the node the message was published on.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::auth::TopicGuard;
use crate::message::{Message, SubOptions};
use crate::routing::topic::FilterSpec;
use crate::routing::topic_tree::Hit;
use crate::session::SessionCell;

use super::Broker;

/// What the broker needs from the cluster to reach other nodes' subscribers. Implemented by
/// `cluster/` over its peer links; no call may block.
pub trait Peering: Send + Sync + 'static {
    /// A local filter gained its first subscriber (`added`) or lost its last. Called under the
    /// lock of the local filter counts, so changes reach every link in order.
    fn route_changed(&self, filter: &str, added: bool);
    /// Queues `msg` for the subscribers of each of `peers`.
    fn forward(&self, msg: &Arc<Message>, peers: &[u64]);
    /// Resolves once the connected peers know every route change made so far (bounded);
    /// `None` when they already do.
    fn settled(&self) -> Option<realmq_raft_store::client::BoxFuture<'static, ()>>;
}

impl Broker {
    /// Connects the broker to the cluster's peer links (once, at start-up).
    pub fn set_peering(&self, peering: Arc<dyn Peering>) {
        let _ = self.peering.set(peering);
    }

    /// Adds or replaces a local subscription, announcing a filter's first subscriber.
    pub(super) fn add_subscription(
        &self,
        session: &Arc<SessionCell>,
        spec: FilterSpec<'_>,
        opts: SubOptions,
        guard: Option<Arc<TopicGuard>>,
    ) -> bool {
        let replaced = self.router.subscribe(session, spec, opts, guard);
        if !replaced && spec.group.is_none() {
            let mut counts = self.local_filters.lock();
            let n = counts.entry(spec.filter.into()).or_insert(0);
            *n += 1;
            if *n == 1
                && let Some(p) = self.peering.get()
            {
                p.route_changed(spec.filter, true);
            }
        }
        replaced
    }

    /// Removes a local subscription, withdrawing a filter's route with its last subscriber.
    pub(super) fn remove_subscription(&self, session_id: u64, spec: FilterSpec<'_>) -> bool {
        let existed = self.router.unsubscribe(session_id, spec);
        if existed && spec.group.is_none() {
            let mut counts = self.local_filters.lock();
            if let Some(n) = counts.get_mut(spec.filter) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(spec.filter);
                    if let Some(p) = self.peering.get() {
                        p.route_changed(spec.filter, false);
                    }
                }
            }
        }
        existed
    }

    /// Calls `f` with every filter that has local subscribers, holding the lock that orders
    /// route changes: what `f` sends goes out before any later change.
    pub fn with_local_filters<T>(&self, f: impl FnOnce(Vec<String>) -> T) -> T {
        let counts = self.local_filters.lock();
        f(counts.keys().map(|k| k.to_string()).collect())
    }

    /// Replaces everything known of `peer`'s routes (a link from it (re)connected).
    pub fn set_peer_routes(&self, peer: u64, filters: Vec<String>) {
        let mut remote = self.remote.write();
        remote.drop_peer(peer);
        for f in filters {
            remote.add(peer, &f);
        }
        self.has_remote.store(!remote.is_empty(), Ordering::Release);
    }

    pub fn peer_route_changed(&self, peer: u64, filter: &str, added: bool) {
        let mut remote = self.remote.write();
        if added {
            remote.add(peer, filter);
        } else {
            remote.remove(peer, filter);
        }
        self.has_remote.store(!remote.is_empty(), Ordering::Release);
    }

    /// Forgets a peer that left the cluster.
    pub fn drop_peer(&self, peer: u64) {
        let mut remote = self.remote.write();
        remote.drop_peer(peer);
        self.has_remote.store(!remote.is_empty(), Ordering::Release);
    }

    /// Hands `msg` to every peer with a matching route; returns how many.
    pub(super) fn forward(&self, msg: &Arc<Message>) -> usize {
        if !self.has_remote.load(Ordering::Acquire) {
            return 0;
        }
        let peers = self.remote.read().peers_for(&msg.topic);
        if let (false, Some(p)) = (peers.is_empty(), self.peering.get()) {
            p.forward(msg, &peers);
        }
        peers.len()
    }

    /// Awaited before SUBACK: a message published anywhere after the client got its SUBACK
    /// reaches the new subscription. `None` (nothing to wait for) on a single node.
    pub fn routes_settled(&self) -> Option<realmq_raft_store::client::BoxFuture<'static, ()>> {
        self.peering.get()?.settled()
    }

    /// Delivers a message a peer forwarded to this node's subscribers (and only them).
    pub fn deliver_forwarded(&self, msg: Message) -> usize {
        self.route(&Arc::new(msg))
    }
}

/// The routes peers announced: filter -> the peers that have subscribers for it.
#[derive(Default)]
pub struct RemoteRoutes {
    tree: crate::routing::topic_tree::TopicTree<u64, ()>,
    /// Per peer, its filters, to drop them all at once.
    by_peer: HashMap<u64, BTreeSet<String>>,
}

impl RemoteRoutes {
    fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    fn add(&mut self, peer: u64, filter: &str) {
        if self
            .by_peer
            .entry(peer)
            .or_default()
            .insert(filter.to_string())
        {
            self.tree.insert(filter, None, peer, ());
        }
    }

    fn remove(&mut self, peer: u64, filter: &str) {
        if self
            .by_peer
            .get_mut(&peer)
            .is_some_and(|f| f.remove(filter))
        {
            self.tree.remove(filter, None, &peer);
        }
    }

    fn drop_peer(&mut self, peer: u64) {
        for f in self.by_peer.remove(&peer).unwrap_or_default() {
            self.tree.remove(&f, None, &peer);
        }
    }

    /// Each peer with a route matching `topic`, once.
    fn peers_for(&self, topic: &str) -> Vec<u64> {
        let mut peers = Vec::new();
        self.tree.matches(topic, |hit| {
            if let Hit::Subscriber(peer, ()) = hit
                && !peers.contains(peer)
            {
                peers.push(*peer);
            }
        });
        peers
    }
}

#[cfg(test)]
mod tests {
    use super::RemoteRoutes;

    #[test]
    fn each_matching_peer_once_and_a_dropped_peer_not_at_all() {
        let mut r = RemoteRoutes::default();
        r.add(2, "a/+");
        r.add(2, "a/#");
        r.add(3, "a/b");
        r.add(3, "x");
        let mut peers = r.peers_for("a/b");
        peers.sort();
        assert_eq!(peers, [2, 3]);
        assert!(r.peers_for("$SYS/a").is_empty());
        r.remove(3, "a/b");
        assert_eq!(r.peers_for("a/b"), [2]);
        r.drop_peer(2);
        assert!(r.peers_for("a/b").is_empty());
        assert_eq!(r.peers_for("x"), [3]);
        r.drop_peer(3);
        assert!(r.is_empty());
    }
}
