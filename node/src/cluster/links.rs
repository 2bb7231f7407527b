//! MQTT between nodes: the `Peer` service and one outbound link per peer.
//!
//! A node's link to a peer is one long-lived client stream of `PeerFrame`s carrying this node's
//! route announcements and the publishes it forwards to that peer's subscribers, batched: each
//! frame takes everything queued since the last one. On every (re)connect the link first sends
//! the whole route set, taken under the same lock that orders route changes, so the peer's view
//! is exact from then on; a link that fails is reconnected with backoff. Links follow the raft
//! membership: a member gets one, a node that leaves loses it and its routes.
//!
//! A peer whose process restarted has an empty route table until this node's link reconnects
//! and sends its dump, and the link may be in its backoff, or stuck on the dead process's
//! half-open connection; a peer back from a partition misses every route announced meanwhile.
//! So when a peer's link arrives with a new process epoch, or anything arrives from a peer while
//! this node's link to it is down, that link is restarted at once on a fresh channel: the peer
//! learns this node's routes within a round trip of its own link coming up.
//!
//! Route changes are numbered; the peer acknowledges them as it applies them, and `settle`
//! lets a SUBACK wait until every connected peer knows every route announced before it (within
//! `SETTLE_BOUND`; a peer without a live link gets the route in its next dump).
//!
//! Publishes are numbered per link (with an epoch chosen per process); the peer acknowledges
//! them once they are in its sessions. A QoS 1/2 publish stays queued until acknowledged and is
//! resent after a reconnect (the peer skips numbers it already delivered), and its publisher's
//! acknowledgement waits for the confirmation, or until the peer has been without a link for
//! `peer_ack_timeout_ms` (counted as unconfirmed); a link over which nothing was acknowledged
//! for that long counts as down (a peer that died without closing its sockets) and is
//! restarted on a fresh connection. QoS 0 is sent once. A peer's queue holds at
//! most `MAX_QUEUED` publishes; beyond that new ones are dropped and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use realmq_proto as pb;
use realmq_raft_store::typ::{NodeId, Raft};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::link_state::{Acked, Pending, Queued, confirmed};
use super::network::{Peers, describe};
use super::wire;
use crate::broker::{Broker, Confirm, PeerTarget, Peering, Want};
use crate::message::{Message, QoS};
use crate::metrics::inc;
use realmq_raft_store::client::BoxFuture;

/// Publishes queued (or sent and not yet acknowledged) per peer at most.
const MAX_QUEUED: usize = 100_000;
/// Publishes per frame at most.
const MAX_FRAME: usize = 1024;
/// Reconnect backoff: doubling from the first pause up to the last.
const RECONNECT_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// How long a SUBACK waits at most for the peers to acknowledge a route.
const SETTLE_BOUND: Duration = Duration::from_secs(2);

struct Link {
    pending: Mutex<Pending>,
    notify: Notify,
    /// Reconnect now, on a fresh channel: the peer restarted (see the module doc).
    kick: Notify,
    /// When `kick` was last notified.
    kicked: Mutex<Option<Instant>>,
    stop: CancellationToken,
    acked: watch::Sender<Acked>,
    /// Connections to the peer that failed or ended, for the metrics.
    failures: AtomicU64,
}

impl Link {
    /// Makes the link reconnect now on a fresh channel; unless `always`, at most once per
    /// `RECONNECT_PAUSE.1`, so that a stream of reasons does not become a reconnect loop.
    fn kick_now(&self, always: bool) {
        let mut last = self.kicked.lock();
        if always || last.is_none_or(|t| t.elapsed() >= RECONNECT_PAUSE.1) {
            *last = Some(Instant::now());
            self.kick.notify_one();
        }
    }
}

/// One link as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct LinkStats {
    pub peer: NodeId,
    pub up: bool,
    /// Publishes queued or sent and not yet acknowledged.
    pub queued: usize,
    pub failures: u64,
}

/// The node's links to its peers; the broker's `Peering`.
pub struct Links {
    me: NodeId,
    /// Makes this process's publish sequence numbers unique, so a peer never mistakes a
    /// restarted node's publishes for ones it already delivered.
    epoch: u64,
    peers: Peers,
    ack_timeout: Duration,
    pub(super) broker: OnceLock<Arc<Broker>>,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
    /// The last route change's sequence number (changes are numbered under the broker's lock
    /// that orders them).
    route_seq: AtomicU64,
    /// Receiving side (`peer.rs`): per sending peer, its epoch and the last publish delivered
    /// from it.
    pub(super) delivered: Mutex<HashMap<NodeId, (u64, u64)>>,
    /// Peers whose route set arrived over their link to this node since this process started,
    /// with the epoch of the process that sent it.
    pub(super) dumps: Mutex<HashMap<NodeId, u64>>,
    /// Per peer, its links into this node that are open now: a peer heard from is alive and
    /// serving, even while this node's own link to it is down.
    inbound: Mutex<HashMap<NodeId, usize>>,
}

/// One open link from a peer into this node, counted in `Links::inbound` while it lasts.
pub(super) struct Inbound {
    links: Arc<Links>,
    peer: NodeId,
}

impl Drop for Inbound {
    fn drop(&mut self) {
        let mut inbound = self.links.inbound.lock();
        if let Some(n) = inbound.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Links {
    pub fn new(me: NodeId, peers: Peers, ack_timeout: Duration) -> Arc<Links> {
        Arc::new(Links {
            me,
            epoch: rand::random::<u64>() | 1,
            peers,
            ack_timeout,
            broker: OnceLock::new(),
            links: Mutex::new(HashMap::new()),
            route_seq: AtomicU64::new(0),
            delivered: Mutex::new(HashMap::new()),
            dumps: Mutex::new(HashMap::new()),
            inbound: Mutex::new(HashMap::new()),
        })
    }

    /// Every link's state, by peer.
    pub fn stats(&self) -> Vec<LinkStats> {
        let mut out: Vec<LinkStats> = self
            .links
            .lock()
            .iter()
            .map(|(peer, link)| LinkStats {
                peer: *peer,
                up: link.acked.borrow().down_since.is_none(),
                queued: link.pending.lock().len(),
                failures: link.failures.load(Ordering::Relaxed),
            })
            .collect();
        out.sort_by_key(|l| l.peer);
        out
    }

    /// Attaches the broker and starts following the membership.
    pub fn start(self: &Arc<Self>, broker: Arc<Broker>, raft: Raft) {
        let _ = self.broker.set(broker.clone());
        broker.set_peering(self.clone());
        // The links to the current members exist once this returns (`peer_routes` counts on it).
        let rx = raft.metrics();
        self.reconcile(&self.members(&rx));
        tokio::spawn(self.clone().follow_membership(rx));
    }

    fn members(
        &self,
        rx: &watch::Receiver<realmq_raft_store::typ::RaftMetrics>,
    ) -> HashMap<NodeId, realmq_raft_store::NodeAddr> {
        rx.borrow()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.me)
            .map(|(id, n)| (*id, n.clone()))
            .collect()
    }

    async fn follow_membership(
        self: Arc<Self>,
        mut rx: watch::Receiver<realmq_raft_store::typ::RaftMetrics>,
    ) {
        while rx.changed().await.is_ok() {
            let members = self.members(&rx);
            self.reconcile(&members);
        }
    }

    /// Waits, at most `bound`, until every member that this node's own link reaches has sent its
    /// route set over its link to this node. A node serving clients before that would deliver
    /// their publishes to local subscribers only (and acknowledge them), missing every
    /// subscriber on the other nodes. A member that cannot be reached is not waited for (it
    /// sends its routes when it is back). `Err`: the members still not heard from.
    pub async fn peer_routes(&self, bound: Duration) -> Result<(), Vec<NodeId>> {
        let deadline = Instant::now() + bound;
        loop {
            let waiting: Vec<NodeId> = {
                let links = self.links.lock();
                let dumps = self.dumps.lock();
                links
                    .iter()
                    .filter(|(id, link)| {
                        let a = link.acked.borrow();
                        !dumps.contains_key(id) && (!a.tried || a.down_since.is_none())
                    })
                    .map(|(id, _)| *id)
                    .collect()
            };
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(waiting);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One link per member: new members get one, departed ones lose theirs and their routes.
    fn reconcile(self: &Arc<Self>, members: &HashMap<NodeId, realmq_raft_store::NodeAddr>) {
        let mut links = self.links.lock();
        for (id, node) in members {
            if !links.contains_key(id) {
                let link = Arc::new(Link {
                    pending: Mutex::new(Pending::default()),
                    notify: Notify::new(),
                    kick: Notify::new(),
                    kicked: Mutex::new(None),
                    stop: CancellationToken::new(),
                    acked: watch::Sender::new(Acked {
                        routes: 0,
                        publishes: 0,
                        down_since: Some(Instant::now()),
                        tried: false,
                    }),
                    failures: AtomicU64::new(0),
                });
                links.insert(*id, link.clone());
                tokio::spawn(self.clone().run(*id, node.clone(), link));
            }
        }
        let gone: Vec<NodeId> = links
            .keys()
            .filter(|id| !members.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(link) = links.remove(&id) {
                link.stop.cancel();
            }
            if let Some(b) = self.broker.get() {
                b.drop_peer(id);
            }
        }
    }

    /// Keeps the link to `peer` connected until it is stopped.
    async fn run(
        self: Arc<Self>,
        peer: NodeId,
        node: realmq_raft_store::NodeAddr,
        link: Arc<Link>,
    ) {
        let mut warned = false;
        let mut pause = RECONNECT_PAUSE.0;
        while !link.stop.is_cancelled() {
            // `None`: abandoned because the peer restarted.
            let result = tokio::select! {
                r = self.connect_once(peer, &node, &link) => Some(r),
                () = link.kick.notified() => None,
            };
            let was_up = link.acked.borrow().down_since.is_none();
            if was_up {
                // A new outage: its first failure is worth a warning again.
                warned = false;
            }
            // Down since the first failure: a peer that keeps failing to come back must not
            // look freshly down on every attempt.
            link.acked.send_modify(|a| {
                a.down_since.get_or_insert_with(Instant::now);
                a.tried = true;
            });
            link.failures.fetch_add(1, Ordering::Relaxed);
            match result {
                None => {
                    tracing::info!(peer, "peer restarted or back; reconnecting the link to it");
                    self.fresh_channel(peer, &node);
                    pause = RECONNECT_PAUSE.0;
                    continue;
                }
                Some(Ok(up)) => {
                    warned = false;
                    if up {
                        pause = RECONNECT_PAUSE.0;
                    }
                }
                Some(Err(e)) if !warned => {
                    tracing::warn!(peer, error = %e, "link to peer down; reconnecting");
                    warned = true;
                }
                Some(Err(_)) => {}
            }
            tokio::select! {
                () = link.stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = link.kick.notified() => {
                    self.fresh_channel(peer, &node);
                    pause = RECONNECT_PAUSE.0;
                    continue;
                }
            }
            pause = (pause * 2).min(RECONNECT_PAUSE.1);
        }
        // Whoever still waits for this peer stops waiting: it left the cluster.
        link.pending.lock().counts.clear();
    }

    fn fresh_channel(&self, peer: NodeId, node: &realmq_raft_store::NodeAddr) {
        if let Some(addr) = self.peers.address(peer, Some(node)) {
            self.peers.forget(&addr);
        }
    }

    /// A link from `peer` into this node opened; counted until the returned guard drops.
    pub(super) fn inbound(self: &Arc<Self>, peer: NodeId) -> Inbound {
        *self.inbound.lock().entry(peer).or_default() += 1;
        Inbound {
            links: self.clone(),
            peer,
        }
    }

    /// A frame arrived from `peer` over its link into this node (`dump`: its route set, which
    /// opens every connection of a link). This node's link to it reconnects now, on a fresh
    /// channel, if the peer is a new process, or if that link is down: the peer is evidently
    /// alive and reachable, and the link may be waiting out its backoff or a dead connection
    /// (at most once per `RECONNECT_PAUSE.1`, however many frames arrive).
    pub(super) fn heard_from(&self, peer: NodeId, epoch: u64, dump: bool) {
        let restarted = dump && {
            let before = self.dumps.lock().insert(peer, epoch);
            before.is_some_and(|e| e != epoch)
        };
        let Some(link) = self.links.lock().get(&peer).cloned() else {
            return;
        };
        let down = link.acked.borrow().down_since.is_some();
        if restarted || down {
            link.kick_now(restarted);
        }
    }

    /// One connection of the link; `Ok(true)` if it was up and ended cleanly.
    async fn connect_once(
        &self,
        peer: NodeId,
        node: &realmq_raft_store::NodeAddr,
        link: &Link,
    ) -> Result<bool, String> {
        let broker = self.broker.get().ok_or("no broker yet")?;
        let addr = self
            .peers
            .address(peer, Some(node))
            .ok_or("no address for the peer")?;
        let mut client = self.peers.peer_client(&addr)?;
        let (tx, rx) = mpsc::channel::<pb::PeerFrame>(4);
        // The whole route set first, and no change queued before it is sent after it.
        let dump = broker.with_local_routes(|filters| {
            let mut p = link.pending.lock();
            p.changes.clear();
            p.requeue();
            pb::PeerFrame {
                from: self.me,
                epoch: self.epoch,
                dump: Some(pb::RouteDump { filters }),
                route_seq: self.route_seq.load(Ordering::Acquire),
                ..Default::default()
            }
        });
        tx.send(dump).await.map_err(|e| e.to_string())?;
        let mut acks = client
            .link(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| describe(&s))?
            .into_inner();
        // Up from now, with no route change of this connection acknowledged yet: a SUBACK
        // waits for this peer's acknowledgement of the dump or of its own change.
        link.acked.send_modify(|a| {
            a.routes = 0;
            a.down_since = None;
            a.tried = true;
        });
        loop {
            // Sending and reading acknowledgements go together: waiting for room to send while
            // the peer waits for room to acknowledge would deadlock.
            let (pending, stalled_since) = {
                let p = link.pending.lock();
                let pending = !p.changes.is_empty() || !p.publishes.is_empty();
                (pending, p.unacked.front().and_then(|q| q.sent))
            };
            // A peer that acknowledges nothing for `ack_timeout` is as good as gone: the link
            // is restarted, and counts as down since the oldest unacknowledged frame left.
            let stall = tokio::time::Instant::from_std(
                stalled_since.map_or_else(Instant::now, |t| t + self.ack_timeout),
            );
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(a)) => {
                        if a.publishes > 0 {
                            link.pending.lock().acknowledged(a.publishes, a.counts);
                        }
                        link.acked.send_modify(|v| {
                            v.routes = v.routes.max(a.routes);
                            v.publishes = v.publishes.max(a.publishes);
                        });
                    }
                    Ok(None) => return Err("the peer closed the link".into()),
                    Err(s) => return Err(describe(&s)),
                },
                permit = tx.reserve(), if pending => {
                    let permit = permit.map_err(|_| "the link closed".to_string())?;
                    if let Some(frame) = self.next_frame(link) {
                        permit.send(frame);
                    }
                }
                () = link.notify.notified(), if !pending => {}
                () = tokio::time::sleep_until(stall), if stalled_since.is_some() => {
                    link.acked.send_modify(|a| a.down_since = stalled_since);
                    // The connection itself may be the dead part (half-open): dial afresh.
                    self.fresh_channel(peer, node);
                    return Err(format!(
                        "the peer acknowledged nothing for {:?}",
                        self.ack_timeout
                    ));
                }
                () = link.stop.cancelled() => return Ok(true),
            }
        }
    }

    /// The next frame of queued route changes and publishes, if anything is queued; what must
    /// be acknowledged moves to `unacked`.
    fn next_frame(&self, link: &Link) -> Option<pb::PeerFrame> {
        let mut p = link.pending.lock();
        if p.changes.is_empty() && p.publishes.is_empty() {
            return None;
        }
        let n = p.publishes.len().min(MAX_FRAME);
        let changes = std::mem::take(&mut p.changes);
        let route_seq = if changes.is_empty() { 0 } else { p.route_seq };
        let mut publishes = Vec::with_capacity(n);
        let now = Instant::now();
        for mut q in p.publishes.drain(..n).collect::<Vec<_>>() {
            publishes.push(pb::Forwarded {
                seq: q.seq,
                message: q.message.clone(),
                groups: q.groups.clone(),
                count: q.count,
            });
            if q.resend || q.count {
                q.sent = Some(now);
                p.unacked.push_back(q);
            }
        }
        Some(pb::PeerFrame {
            from: self.me,
            epoch: self.epoch,
            dump: None,
            route_seq,
            changes,
            publishes,
        })
    }

    /// Resolves once every peer acknowledged every route change made so far, or after
    /// `SETTLE_BOUND`; `None` when there is nothing to wait for. A peer whose link has been down
    /// longer than the bound is not waited for (it gets the routes in its next dump), so a dead
    /// node delays no SUBACK; one that is (re)connecting right now is, and so is one whose own
    /// link into this node is open: it is alive, serving publishers that would miss the new
    /// route, and this node's link to it is reconnecting at once (`heard_from`).
    fn settle(&self) -> Option<BoxFuture<'static, ()>> {
        let target = self.route_seq.load(Ordering::Acquire);
        let heard: Vec<NodeId> = self
            .inbound
            .lock()
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(peer, _)| *peer)
            .collect();
        let waiting: Vec<_> = self
            .links
            .lock()
            .iter()
            .filter_map(|(peer, l)| {
                let rx = l.acked.subscribe();
                let a = *rx.borrow();
                if a.routes >= target {
                    return None;
                }
                let alive = heard.contains(peer);
                if alive && a.down_since.is_some() {
                    l.kick_now(false);
                }
                (alive || a.down_since.is_none_or(|t| t.elapsed() < SETTLE_BOUND)).then_some(rx)
            })
            .collect();
        if waiting.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            let all = futures::future::join_all(waiting.into_iter().map(|mut rx| async move {
                let _ = rx.wait_for(|a| a.routes >= target).await;
            }));
            let _ = tokio::time::timeout(SETTLE_BOUND, all).await;
        }))
    }
}

impl Peering for Links {
    fn route_changed(&self, route: &str, added: bool) {
        let seq = self.route_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for link in self.links.lock().values() {
            let mut p = link.pending.lock();
            p.changes.push(pb::RouteChange {
                filter: route.to_string(),
                added,
            });
            p.route_seq = seq;
            drop(p);
            link.notify.notify_one();
        }
    }

    fn settled(&self) -> Option<BoxFuture<'static, ()>> {
        self.settle()
    }

    fn forward(&self, msg: &Arc<Message>, targets: &[PeerTarget], want: Want) -> Option<Confirm> {
        let broker = self.broker.get()?;
        let encoded = match wire::encode_message(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "a message could not be encoded for a peer");
                return None;
            }
        };
        let mut waits = Vec::new();
        let links = self.links.lock();
        for t in targets {
            let Some(link) = links.get(&t.peer) else {
                continue;
            };
            let mut p = link.pending.lock();
            if p.len() >= MAX_QUEUED {
                inc(&broker.metrics.forward_dropped, 1);
                continue;
            }
            p.publish_seq += 1;
            let seq = p.publish_seq;
            let count = (want == Want::Count).then(|| {
                let (tx, rx) = oneshot::channel();
                p.counts.insert(seq, tx);
                rx
            });
            p.publishes.push_back(Queued {
                seq,
                message: encoded.clone(),
                groups: t.groups.clone(),
                resend: msg.qos != QoS::AtMostOnce,
                count: count.is_some(),
                sent: None,
            });
            drop(p);
            link.notify.notify_one();
            if want != Want::Nothing {
                waits.push((link.acked.subscribe(), seq, count));
            }
        }
        drop(links);
        if waits.is_empty() {
            return None;
        }
        let bound = self.ack_timeout;
        let broker = broker.clone();
        Some(Box::pin(async move {
            let mut matched = 0;
            for (acked, seq, count) in waits {
                match confirmed(acked, seq, count, bound).await {
                    Some(n) => matched += n,
                    None => inc(&broker.metrics.forward_unconfirmed, 1),
                }
            }
            matched
        }))
    }
}
