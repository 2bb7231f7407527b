//! MQTT between nodes: the `Peer` service and one outbound link per peer.
//!
//! A node's link to a peer is one long-lived client stream of `PeerFrame`s carrying this node's
//! route announcements and the publishes it forwards to that peer's subscribers, batched: each
//! frame takes everything queued since the last one. On every (re)connect the link first sends
//! the whole route set, taken under the same lock that orders route changes, so the peer's view
//! is exact from then on; a link that fails is reconnected after a pause. Links follow the raft
//! membership: a member gets one, a node that leaves loses it and its routes.
//!
//! Route changes are numbered; the peer acknowledges them as it applies them, and `settled`
//! lets a SUBACK wait until every connected peer knows every route announced before it (within
//! `SETTLE_BOUND`; a peer without a live link gets the route in its next dump).
//!
//! Not yet: acknowledgements of publishes (a QoS 1/2 publisher is answered after local delivery
//! and queueing for the peers), and a bound that blocks rather than drops (a peer's queue keeps
//! at most `MAX_QUEUED` publishes; beyond that new ones are dropped and counted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::Mutex;
use realmq_proto as pb;
use realmq_raft_store::typ::{NodeId, Raft};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::network::{Peers, describe};
use super::wire;
use crate::broker::{Broker, Peering};
use crate::message::Message;
use realmq_raft_store::client::BoxFuture;

/// Publishes queued per peer at most.
const MAX_QUEUED: usize = 100_000;
/// Publishes per frame at most.
const MAX_FRAME: usize = 1024;
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// How long a SUBACK waits at most for the peers to acknowledge a route.
const SETTLE_BOUND: Duration = Duration::from_secs(2);

/// What is waiting to go to one peer.
#[derive(Default)]
struct Pending {
    changes: Vec<pb::RouteChange>,
    /// The sequence number of the last change in `changes`.
    route_seq: u64,
    publishes: VecDeque<bytes::Bytes>,
}

struct Link {
    pending: Mutex<Pending>,
    notify: Notify,
    stop: CancellationToken,
    /// Route changes the peer acknowledged on this connection, through this sequence number;
    /// and since when the link is down (`None`: up).
    acked: tokio::sync::watch::Sender<(u64, Option<Instant>)>,
}

/// The node's links to its peers; the broker's `Peering`.
pub struct Links {
    me: NodeId,
    peers: Peers,
    broker: OnceLock<Arc<Broker>>,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
    /// The last route change's sequence number (changes are numbered under the broker's lock
    /// that orders them).
    route_seq: AtomicU64,
    /// Publishes dropped because a peer's queue was full.
    pub dropped: AtomicU64,
}

impl Links {
    pub fn new(me: NodeId, peers: Peers) -> Arc<Links> {
        Arc::new(Links {
            me,
            peers,
            broker: OnceLock::new(),
            links: Mutex::new(HashMap::new()),
            route_seq: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Attaches the broker and starts following the membership.
    pub fn start(self: &Arc<Self>, broker: Arc<Broker>, raft: Raft) {
        let _ = self.broker.set(broker.clone());
        broker.set_peering(self.clone());
        tokio::spawn(self.clone().follow_membership(raft));
    }

    async fn follow_membership(self: Arc<Self>, raft: Raft) {
        let mut rx = raft.metrics();
        loop {
            let members: HashMap<NodeId, realmq_raft_store::NodeAddr> = rx
                .borrow()
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.me)
                .map(|(id, n)| (*id, n.clone()))
                .collect();
            self.reconcile(&members);
            if rx.changed().await.is_err() {
                return;
            }
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
                    stop: CancellationToken::new(),
                    acked: tokio::sync::watch::Sender::new((0, Some(Instant::now()))),
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
        while !link.stop.is_cancelled() {
            let result = self.connect_once(peer, &node, &link).await;
            link.acked.send_modify(|a| a.1 = Some(Instant::now()));
            match result {
                Ok(()) => warned = false,
                Err(e) if !warned => {
                    tracing::warn!(peer, error = %e, "link to peer down; reconnecting");
                    warned = true;
                }
                Err(_) => {}
            }
            tokio::select! {
                () = link.stop.cancelled() => return,
                () = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    }

    async fn connect_once(
        &self,
        peer: NodeId,
        node: &realmq_raft_store::NodeAddr,
        link: &Link,
    ) -> Result<(), String> {
        let broker = self.broker.get().ok_or("no broker yet")?;
        let addr = self
            .peers
            .address(peer, Some(node))
            .ok_or("no address for the peer")?;
        let channel = self.peers.channel(&addr).map_err(|e| e.to_string())?;
        let mut client = pb::peer_client::PeerClient::new(channel)
            .max_encoding_message_size(super::MAX_MESSAGE)
            .max_decoding_message_size(super::MAX_MESSAGE);
        let (tx, rx) = mpsc::channel::<pb::PeerFrame>(4);
        // The whole route set first, and no change queued before it is sent after it.
        let dump = broker.with_local_filters(|filters| {
            link.pending.lock().changes.clear();
            pb::PeerFrame {
                from: self.me,
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
        // Up from now, with nothing of this connection acknowledged yet: a SUBACK waits for this
        // peer's acknowledgement of the dump or of its own change.
        link.acked.send_replace((0, None));
        loop {
            // Everything queued (also while the link was down), then wait for more.
            loop {
                let frame = {
                    let mut p = link.pending.lock();
                    if p.changes.is_empty() && p.publishes.is_empty() {
                        break;
                    }
                    let n = p.publishes.len().min(MAX_FRAME);
                    let changes = std::mem::take(&mut p.changes);
                    pb::PeerFrame {
                        from: self.me,
                        dump: None,
                        route_seq: if changes.is_empty() { 0 } else { p.route_seq },
                        changes,
                        publishes: p.publishes.drain(..n).collect(),
                    }
                };
                if tx.send(frame).await.is_err() {
                    return Err("the link closed".into());
                }
            }
            tokio::select! {
                ack = acks.message() => match ack {
                    Ok(Some(a)) => link.acked.send_modify(|v| v.0 = v.0.max(a.routes)),
                    Ok(None) => return Err("the peer closed the link".into()),
                    Err(s) => return Err(describe(&s)),
                },
                () = link.notify.notified() => {}
                () = link.stop.cancelled() => return Ok(()),
            }
        }
    }

    /// Resolves once every peer acknowledged every route change made so far, or after
    /// `SETTLE_BOUND`; `None` when there is nothing to wait for. A peer whose link has been down
    /// longer than the bound is not waited for (it gets the routes in its next dump), so a dead
    /// node delays no SUBACK; one that is (re)connecting right now is.
    fn settle(&self) -> Option<BoxFuture<'static, ()>> {
        let target = self.route_seq.load(Ordering::Acquire);
        let waiting: Vec<_> = self
            .links
            .lock()
            .values()
            .map(|l| l.acked.subscribe())
            .filter(|rx| {
                let (acked, down) = *rx.borrow();
                acked < target && down.is_none_or(|t| t.elapsed() < SETTLE_BOUND)
            })
            .collect();
        if waiting.is_empty() {
            return None;
        }
        Some(Box::pin(async move {
            let all = futures::future::join_all(waiting.into_iter().map(|mut rx| async move {
                let _ = rx.wait_for(|(acked, _)| *acked >= target).await;
            }));
            let _ = tokio::time::timeout(SETTLE_BOUND, all).await;
        }))
    }
}

impl Peering for Links {
    fn route_changed(&self, filter: &str, added: bool) {
        let seq = self.route_seq.fetch_add(1, Ordering::AcqRel) + 1;
        for link in self.links.lock().values() {
            let mut p = link.pending.lock();
            p.changes.push(pb::RouteChange {
                filter: filter.to_string(),
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

    fn forward(&self, msg: &Arc<Message>, peers: &[u64]) {
        let encoded = match wire::encode_message(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "a message could not be encoded for a peer");
                return;
            }
        };
        let links = self.links.lock();
        for peer in peers {
            let Some(link) = links.get(peer) else {
                continue;
            };
            let mut p = link.pending.lock();
            if p.publishes.len() >= MAX_QUEUED {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            p.publishes.push_back(encoded.clone());
            drop(p);
            link.notify.notify_one();
        }
    }
}

/// The receiving side: a peer's link into this node's broker.
pub struct PeerService(pub Arc<Links>);

type AckStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PeerAck, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type LinkStream = AckStream;

    async fn link(
        &self,
        req: Request<Streaming<pb::PeerFrame>>,
    ) -> Result<Response<AckStream>, Status> {
        let broker = self
            .0
            .broker
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("this node is still starting"))?;
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(frame) = stream.next().await {
                let Ok(frame) = frame else { return };
                apply(&broker, frame, &tx).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Applies one frame from a peer, acknowledging its route changes once they are in the table.
async fn apply(
    broker: &Broker,
    frame: pb::PeerFrame,
    acks: &mpsc::Sender<Result<pb::PeerAck, Status>>,
) {
    let from = frame.from;
    if let Some(dump) = frame.dump {
        broker.set_peer_routes(from, dump.filters);
    }
    for c in frame.changes {
        broker.peer_route_changed(from, &c.filter, c.added);
    }
    if frame.route_seq > 0 {
        let _ = acks
            .send(Ok(pb::PeerAck {
                routes: frame.route_seq,
            }))
            .await;
    }
    for p in frame.publishes {
        match wire::decode_message(&p) {
            Ok(msg) => {
                broker.deliver_forwarded(msg);
            }
            Err(e) => tracing::warn!(peer = from, error = %e, "undecodable forwarded message"),
        }
    }
}
