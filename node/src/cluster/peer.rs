//! The receiving side of the peer links: the `Peer` service. A peer's link stream applies its
//! route announcements to the route table and delivers its forwarded publishes to local
//! sessions, acknowledging both; proxy and handover requests go to `sessions.rs`.

use std::sync::Arc;

use futures::StreamExt;
use realmq_proto as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::links::Links;
use super::wire;
use crate::broker::Broker;

/// The receiving side: a peer's link into this node's broker.
pub struct PeerService(pub Arc<Links>);

impl PeerService {
    fn broker(&self) -> Result<&Arc<Broker>, Status> {
        self.0
            .broker
            .get()
            .ok_or_else(|| Status::unavailable("this node is still starting"))
    }
}

type AckStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::PeerAck, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    type LinkStream = AckStream;

    async fn link(
        &self,
        req: Request<Streaming<pb::PeerFrame>>,
    ) -> Result<Response<AckStream>, Status> {
        let links = self.0.clone();
        let broker = self.broker()?.clone();
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            // Counts the link as open from its first frame, which names the peer, to its end.
            let mut open = None;
            while let Some(frame) = stream.next().await {
                let Ok(frame) = frame else { return };
                if open.is_none() {
                    open = Some(links.inbound(frame.from));
                }
                let ack = links.apply(&broker, frame);
                if (ack.routes > 0 || ack.publishes > 0) && tx.send(Ok(ack)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn proxy(
        &self,
        req: Request<pb::ProxyRequest>,
    ) -> Result<Response<pb::ProxyReply>, Status> {
        super::sessions::serve_proxy(self.broker()?, req.into_inner()).await
    }

    async fn handover(
        &self,
        req: Request<pb::HandoverRequest>,
    ) -> Result<Response<pb::HandoverReply>, Status> {
        super::sessions::serve_handover(self.broker()?, req.into_inner())
    }

    async fn inspect(
        &self,
        req: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectReply>, Status> {
        super::sessions::serve_inspect(self.broker()?, req.into_inner())
    }
}

impl Links {
    /// Applies one frame from a peer: its routes into the table, its publishes into the
    /// sessions (each once, however often it is resent); returns the acknowledgement.
    fn apply(&self, broker: &Broker, frame: pb::PeerFrame) -> pb::PeerAck {
        let from = frame.from;
        let dump = frame.dump.is_some();
        if let Some(dump) = frame.dump {
            broker.set_peer_routes(from, dump.filters);
        }
        self.heard_from(from, frame.epoch, dump);
        for c in frame.changes {
            broker.peer_route_changed(from, &c.filter, c.added);
        }
        let mut ack = pb::PeerAck {
            routes: frame.route_seq,
            ..Default::default()
        };
        let Some(last) = frame.publishes.last().map(|f| f.seq) else {
            return ack;
        };
        // Only this peer's stream delivers from it, so the lock is not held while delivering.
        let mut through = match self.delivered.lock().get(&from) {
            Some(&(epoch, seq)) if epoch == frame.epoch => seq,
            _ => 0,
        };
        for f in frame.publishes {
            if f.seq <= through {
                continue;
            }
            through = f.seq;
            let matched = match wire::decode_message(&f.message) {
                Ok(msg) => broker.deliver_forwarded(msg, &f.groups),
                Err(e) => {
                    tracing::warn!(peer = from, error = %e, "undecodable forwarded message");
                    0
                }
            };
            if f.count {
                ack.counts.push(pb::Count {
                    seq: f.seq,
                    matched: matched as u32,
                });
            }
        }
        let mut delivered = self.delivered.lock();
        let seen = delivered.entry(from).or_insert((frame.epoch, 0));
        if seen.0 != frame.epoch {
            *seen = (frame.epoch, 0);
        }
        seen.1 = seen.1.max(through);
        ack.publishes = last;
        ack
    }
}
