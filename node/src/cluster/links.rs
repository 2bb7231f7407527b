//! MQTT between nodes: the `Peer` service and one outbound link per peer.
//!
//! A node's link to a peer is one long-lived client stream of `PeerFrame`s carrying this node's
//! route announcements and the publishes it forwards to that peer's subscribers, batched: each
//! frame takes everything queued since the last one. On every (re)connect the link first sends
//! the whole route set, taken under the same lock that orders route changes, so the peer's view
//! is exact from then on; a link that fails is reconnected after a pause. Links follow the raft
//! membership: a member gets one, a node that leaves loses it and its routes.
//!
//! Not yet: acknowledgements (a QoS 1/2 publisher is answered after local delivery and queueing
//! for the peers), and a bound that blocks rather than drops (a peer's queue keeps at most
//! `MAX_QUEUED` publishes; beyond that new ones are dropped and counted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

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

/// Publishes queued per peer at most.
const MAX_QUEUED: usize = 100_000;
/// Publishes per frame at most.
const MAX_FRAME: usize = 1024;
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// What is waiting to go to one peer.
#[derive(Default)]
struct Pending {
    changes: Vec<pb::RouteChange>,
    publishes: VecDeque<bytes::Bytes>,
}

struct Link {
    pending: Mutex<Pending>,
    notify: Notify,
    stop: CancellationToken,
}

/// The node's links to its peers; the broker's `Peering`.
pub struct Links {
    me: NodeId,
    peers: Peers,
    broker: OnceLock<Arc<Broker>>,
    links: Mutex<HashMap<NodeId, Arc<Link>>>,
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
            match self.connect_once(peer, &node, &link).await {
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
                ..Default::default()
            }
        });
        tx.send(dump).await.map_err(|e| e.to_string())?;
        let call = client.link(tokio_stream::wrappers::ReceiverStream::new(rx));
        tokio::pin!(call);
        loop {
            // Everything queued (also while the link was down), then wait for more.
            loop {
                let frame = {
                    let mut p = link.pending.lock();
                    if p.changes.is_empty() && p.publishes.is_empty() {
                        break;
                    }
                    let n = p.publishes.len().min(MAX_FRAME);
                    pb::PeerFrame {
                        from: self.me,
                        dump: None,
                        changes: std::mem::take(&mut p.changes),
                        publishes: p.publishes.drain(..n).collect(),
                    }
                };
                tokio::select! {
                    sent = tx.send(frame) => if sent.is_err() { break },
                    r = &mut call => return closed(r),
                }
            }
            tokio::select! {
                r = &mut call => return closed(r),
                () = link.notify.notified() => {}
                () = link.stop.cancelled() => return Ok(()),
            }
        }
    }
}

fn closed(r: Result<Response<pb::LinkClosed>, Status>) -> Result<(), String> {
    match r {
        Ok(_) => Err("the peer closed the link".into()),
        Err(s) => Err(describe(&s)),
    }
}

impl Peering for Links {
    fn route_changed(&self, filter: &str, added: bool) {
        for link in self.links.lock().values() {
            link.pending.lock().changes.push(pb::RouteChange {
                filter: filter.to_string(),
                added,
            });
            link.notify.notify_one();
        }
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

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn link(
        &self,
        req: Request<Streaming<pb::PeerFrame>>,
    ) -> Result<Response<pb::LinkClosed>, Status> {
        let broker = self
            .0
            .broker
            .get()
            .cloned()
            .ok_or_else(|| Status::unavailable("this node is still starting"))?;
        let mut stream = req.into_inner();
        while let Some(frame) = stream.next().await {
            let frame = frame?;
            let from = frame.from;
            if let Some(dump) = frame.dump {
                broker.set_peer_routes(from, dump.filters);
            }
            for c in frame.changes {
                broker.peer_route_changed(from, &c.filter, c.added);
            }
            for p in frame.publishes {
                match wire::decode_message(&p) {
                    Ok(msg) => {
                        broker.deliver_forwarded(msg);
                    }
                    Err(e) => {
                        tracing::warn!(peer = from, error = %e, "undecodable forwarded message")
                    }
                }
            }
        }
        Ok(Response::new(pb::LinkClosed {}))
    }
}
