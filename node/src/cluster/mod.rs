//! The node's place in the cluster: the raft member, the gRPC cluster port, and membership.
//!
//! - `network.rs`: the client side (openraft's `RaftNetwork`, the `Remote` a follower's writer
//!   uses to reach the leader, status calls), one channel per peer
//! - `server.rs`: the server side (raft RPCs, forwarded writes, read index, status, join, leave)
//! - `membership.rs`: forming the cluster once, joining and promotion, removal, the member list
//! - `dead.rs`: the leader marks clients of nodes unreachable past a grace period disconnected
//! - `links.rs`: MQTT between nodes: route announcements and forwarded publishes, one link per peer
//! - `link_state.rs`: a link's queue for its peer and what the peer acknowledged
//! - `peer.rs`: the receiving side of the links (the `Peer` service)
//! - `sessions.rs`: requests to the node holding a session: proxy subscriptions, handover
//! - `topology.rs`: who the peers are, from `--peers` or Kubernetes StatefulSet names
//! - `wire.rs`: how raft payloads fill the proto envelopes
//!
//! This module is the only one that names tonic or proto types, as `mqtt/` is for ntex.

mod dead;
mod link_state;
mod links;
mod membership;
mod network;
mod peer;
mod server;
mod sessions;
pub mod topology;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use realmq_api::{BoxFuture, NodeInfo, OpError};
use realmq_proto as pb;
use realmq_raft_store::{Member, NodeAddr, RaftSettings};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
pub use links::LinkStats;
pub use network::MAX_MESSAGE;
use network::Peers;
use server::{ClusterService, RaftService, Shared};
pub use topology::Topology;

/// The running cluster side of a node.
#[derive(Clone)]
pub struct Cluster {
    shared: Shared,
    links: Arc<links::Links>,
}

/// The addresses this node's listeners are bound to.
pub struct Bound {
    pub cluster: tokio::net::TcpListener,
    pub mqtt: SocketAddr,
    pub api: SocketAddr,
}

/// Starts raft on the data directory, serves the cluster port, and joins or forms the cluster
/// as `topology` says. Returns once this node is a member that knows a leader.
pub async fn start(
    config: &Config,
    topology: &Topology,
    bound: Bound,
    stop: CancellationToken,
) -> anyhow::Result<(Member, Cluster)> {
    let cluster_local = bound.cluster.local_addr()?;
    let me = NodeAddr {
        cluster_addr: topology
            .advertise
            .clone()
            .unwrap_or_else(|| advertised(None, cluster_local)),
        mqtt_addr: advertised(topology.advertise.as_deref(), bound.mqtt),
        api_addr: advertised(topology.advertise.as_deref(), bound.api),
    };
    let peers = Peers::new(topology.id, topology.routes.clone());
    let c = &config.cluster;
    let settings = RaftSettings {
        heartbeat_interval_ms: c.heartbeat_interval_ms,
        election_timeout_min_ms: c.election_timeout_min_ms,
        election_timeout_max_ms: c.election_timeout_max_ms,
        snapshot_logs: c.snapshot_logs,
        write_timeout_ms: c.write_timeout_ms,
    };
    let member = realmq_raft_store::start(
        &config.data_dir,
        topology.id,
        settings,
        peers.clone(),
        Arc::new(peers.clone()),
    )
    .await
    .with_context(|| {
        format!(
            "failed to start the metadata store in {}",
            config.data_dir.display()
        )
    })?;
    // Decided before the cluster port serves anything: a leader's append could otherwise make a
    // wiped node look initialized before it had a chance to rejoin properly.
    let fresh = !member.raft.is_initialized().await?;
    let shared = Shared::new(&member, peers, me.clone(), config.voters);
    shared
        .rejoining
        .store(fresh && !topology.voters.is_empty(), Ordering::Release);

    let raft_svc = pb::raft_server::RaftServer::new(RaftService(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let cluster_svc = pb::cluster_server::ClusterServer::new(ClusterService(shared.clone()));
    let links = links::Links::new(
        topology.id,
        shared.peers.clone(),
        std::time::Duration::from_millis(c.peer_ack_timeout_ms),
    );
    let peer_svc = pb::peer_server::PeerServer::new(peer::PeerService(links.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    // Without nodelay, small replies wait for the peer's delayed ACK (about 40 ms each); the
    // builder's tcp_nodelay applies only to listeners tonic binds itself.
    let incoming = futures::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(bound.cluster),
        |conn| {
            conn.inspect(|s| {
                let _ = s.set_nodelay(true);
            })
        },
    );
    tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(raft_svc)
            .add_service(cluster_svc)
            .add_service(peer_svc)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "the cluster port stopped serving");
        }
    });
    tracing::info!(node_id = topology.id, cluster = %cluster_local, advertise = %me.cluster_addr, "cluster port listening");

    membership::form(&shared, &topology.voters, fresh).await?;
    tokio::spawn(dead::watch(
        shared.clone(),
        std::time::Duration::from_secs(c.dead_node_grace),
    ));
    Ok((member, Cluster { shared, links }))
}

/// The address peers and clients should use for a listener bound to `bound`: the advertised
/// host (else this machine's host name) with the bound port when bound to every interface, else
/// the bound address itself.
fn advertised(advertise: Option<&str>, bound: SocketAddr) -> String {
    if !bound.ip().is_unspecified() {
        return bound.to_string();
    }
    let host = match advertise.and_then(|a| a.rsplit_once(':')) {
        Some((host, _)) => host.to_string(),
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| bound.ip().to_string()),
    };
    format!("{host}:{}", bound.port())
}

/// This node's own status, as a peer would get it over the cluster port.
async fn local_status(s: &Shared, digest: bool) -> Result<pb::StatusReply, String> {
    let m = s.raft.metrics().borrow().clone();
    let with_digest = digest;
    let (digest_index, digest) = if with_digest {
        let registry = s.registry.clone();
        tokio::task::spawn_blocking(move || registry.digest())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    } else {
        (0, String::new())
    };
    Ok(pb::StatusReply {
        id: m.id,
        initialized: m
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some(),
        role: server::role(m.state).into(),
        leader: m.current_leader.unwrap_or(0),
        term: m.current_term,
        // With a digest, the index it was taken at, so the two always match.
        last_applied: if with_digest {
            digest_index
        } else {
            m.last_applied.map_or(0, |l| l.index)
        },
        addr: wire::encode(&s.me).map_err(|e| e.to_string())?,
        connections: s.connections.get().map_or(0, |count| count()),
        digest,
        digest_index,
    })
}

impl Cluster {
    /// Connects the broker to the other nodes: routes announced both ways, publishes forwarded.
    pub fn link_broker(&self, broker: Arc<crate::broker::Broker>) {
        broker.set_takeover(Arc::new(sessions::Handovers(self.shared.clone())));
        self.links.start(broker, self.shared.raft.clone());
    }

    /// The links to the peers, for the metrics.
    pub fn link_stats(&self) -> Vec<links::LinkStats> {
        self.links.stats()
    }

    /// See `Links::peer_routes`.
    pub async fn peer_routes(&self, bound: std::time::Duration) -> Result<(), Vec<u64>> {
        self.links.peer_routes(bound).await
    }

    /// Where `GET /nodes` gets each member's MQTT connection count on this node.
    pub fn count_connections(&self, f: Arc<dyn Fn() -> u64 + Send + Sync>) {
        let _ = self.shared.connections.set(f);
    }

    /// Applies a proxy subscribe / unsubscribe on the node holding `client_id`'s session.
    pub fn proxy(
        &self,
        client_id: &str,
        op: crate::broker::ProxyOp,
    ) -> BoxFuture<'static, Result<(), crate::broker::ProxyError>> {
        let shared = self.shared.clone();
        let broker = self.links.broker.get().cloned();
        let client_id = client_id.to_string();
        Box::pin(async move {
            let broker = broker.ok_or_else(|| {
                crate::broker::ProxyError::Unavailable("this node is still starting".into())
            })?;
            sessions::proxy(&shared, &broker, &client_id, op).await
        })
    }

    /// `query`'s rows from every member that answers (see `sessions::inspect`).
    pub fn inspect(
        &self,
        query: realmq_api::Inspect,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>, OpError>> {
        let shared = self.shared.clone();
        let broker = self.links.broker.get().cloned();
        Box::pin(async move {
            let broker =
                broker.ok_or_else(|| OpError::Unavailable("this node is still starting".into()))?;
            sessions::inspect(&shared, &broker, &query)
                .await
                .map_err(OpError::Unavailable)
        })
    }

    /// See `membership::leave_if_learner`.
    pub async fn leave_if_learner(&self) {
        membership::leave_if_learner(&self.shared).await
    }

    pub fn nodes(&self, digest: bool) -> BoxFuture<'static, Vec<NodeInfo>> {
        let s = self.shared.clone();
        Box::pin(async move { membership::nodes(&s, digest).await })
    }

    pub fn remove_node(&self, id: u64) -> BoxFuture<'static, Result<(), OpError>> {
        let s = self.shared.clone();
        Box::pin(async move {
            membership::remove(&s, id).await.map_err(|e| match e {
                membership::RemoveError::NotMember => {
                    OpError::NotFound(format!("node {id} is not a member"))
                }
                membership::RemoveError::LastVoter => {
                    OpError::Invalid("the last voter cannot be removed".into())
                }
                membership::RemoveError::Unavailable(m) => OpError::Unavailable(m),
            })
        })
    }
}
