//! The client side of the cluster port: openraft's `RaftNetwork` over tonic, and `Remote` (what a
//! follower asks of the leader: forward a batch, a read index).
//!
//! One lazily connected channel per peer address, shared by raft replication, forwarding and
//! status calls. A peer listed in `--peers` is dialled at the address given there (this node's
//! route to it, which may differ from what the peer advertises); any other member at the cluster
//! address in its membership record. Transport failures map to `Unreachable`, so openraft backs
//! off instead of retrying in a tight loop; errors raised by the remote raft travel back intact.

// openraft's RPC errors are large by design and are what its `RaftNetwork` returns.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use realmq_proto as pb;
use realmq_raft_store::client::{BoxFuture, ForwardError, Remote};
use realmq_raft_store::typ::{NodeId, Snapshot, Vote};
use realmq_raft_store::{Command, CommandResult, NodeAddr, TypeConfig};
use tokio::io::AsyncReadExt;
use tonic::transport::{Channel, Endpoint};

use super::wire;

/// Largest message either side accepts: an append of `MAX_PAYLOAD_ENTRIES` full group-committed
/// entries, with room for their envelope.
pub const MAX_MESSAGE: usize = realmq_raft_store::client::MAX_PAYLOAD_ENTRIES as usize
    * realmq_raft_store::client::MAX_BATCH_BYTES
    + (1 << 20);
/// Snapshot file bytes per streamed chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a peer connection's keep-alive ping may go unanswered.
const KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Bound on status calls (start-up, `GET /nodes`).
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// Channels to peers, by address; cheap to clone.
#[derive(Clone)]
pub struct Peers {
    me: NodeId,
    /// How this node dials the nodes named in `--peers`.
    routes: Arc<BTreeMap<NodeId, String>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Peers {
    pub fn new(me: NodeId, routes: BTreeMap<NodeId, String>) -> Peers {
        Peers {
            me,
            routes: Arc::new(routes),
            channels: Arc::default(),
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// The address to dial `id` at: its route from `--peers`, else its advertised address.
    pub fn address(&self, id: NodeId, node: Option<&NodeAddr>) -> Option<String> {
        self.routes
            .get(&id)
            .cloned()
            .or_else(|| node.map(|n| n.cluster_addr.clone()))
    }

    /// A channel to `addr`, connected on first use and reconnected by tonic after failures.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        // A peer whose host vanished without a reset leaves this connection half-open, and every
        // raft RPC, link and handover on it hangs until the keep-alive gives up: pinged every
        // second, idle or not, it is dropped at most 1 s + KEEP_ALIVE after the peer's death
        // (5 s + 5 s before, long enough for a restarted node to start serving without its
        // peers' routes), and the next call dials afresh.
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// Drops the cached channel to `addr`: the next call dials afresh. For a peer that restarted,
    /// whose old connection may linger half-open (its host gone without a reset) until the
    /// HTTP/2 keep-alive gives up on it, every stream opened on it hanging meanwhile.
    pub fn forget(&self, addr: &str) {
        self.channels.lock().remove(addr);
    }

    pub fn raft_client(&self, addr: &str) -> Result<pb::raft_client::RaftClient<Channel>, String> {
        let channel = self.channel(addr).map_err(|e| e.to_string())?;
        Ok(pb::raft_client::RaftClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    /// The `Peer` service of `addr`: route links, forwarded publishes, proxy requests, handover.
    pub fn peer_client(&self, addr: &str) -> Result<pb::peer_client::PeerClient<Channel>, String> {
        let channel = self.channel(addr).map_err(|e| e.to_string())?;
        Ok(pb::peer_client::PeerClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE))
    }

    pub fn cluster_client(
        &self,
        addr: &str,
    ) -> Result<pb::cluster_client::ClusterClient<Channel>, String> {
        let channel = self.channel(addr).map_err(|e| e.to_string())?;
        Ok(pb::cluster_client::ClusterClient::new(channel))
    }

    /// A peer's status, bounded by `STATUS_TIMEOUT`.
    pub async fn status(&self, addr: &str, digest: bool) -> Result<pb::StatusReply, String> {
        let mut client = self.cluster_client(addr)?;
        let mut req = tonic::Request::new(pb::StatusRequest { digest });
        req.set_timeout(STATUS_TIMEOUT);
        match tokio::time::timeout(STATUS_TIMEOUT, client.status(req)).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(describe(&s)),
            Err(_) => Err("timed out".into()),
        }
    }
}

/// A status as a short reason for logs and errors.
pub fn describe(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    }
}

/// Whether a failed call can have reached the peer's handler at all.
fn never_delivered(s: &tonic::Status) -> bool {
    // tonic reports connect failures as Unavailable before anything was sent.
    s.code() == tonic::Code::Unavailable
}

impl RaftNetworkFactory<TypeConfig> for Peers {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &NodeAddr) -> Connection {
        Connection {
            target,
            peers: self.clone(),
            addr: self
                .address(target, Some(node))
                .ok_or_else(|| format!("no address for node {target}")),
        }
    }
}

/// The raft network to one peer.
pub struct Connection {
    target: NodeId,
    /// Looked up per call: a channel `forget` dropped (the peer restarted) is replaced from the
    /// next call on.
    peers: Peers,
    addr: Result<String, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("node {target}: {reason}")]
struct Failure {
    target: NodeId,
    reason: String,
}

impl Connection {
    fn failure(&self, reason: impl Into<String>) -> Failure {
        Failure {
            target: self.target,
            reason: reason.into(),
        }
    }

    fn client(&self) -> Result<pb::raft_client::RaftClient<Channel>, Failure> {
        self.addr
            .clone()
            .and_then(|addr| self.peers.raft_client(&addr))
            .map_err(|e| self.failure(e))
    }

    /// Maps a transport failure: unreachable peers make openraft back off.
    fn transport<E: std::error::Error>(
        &self,
        s: &tonic::Status,
    ) -> RPCError<NodeId, NodeAddr, RaftError<NodeId, E>> {
        let f = self.failure(describe(s));
        if matches!(
            s.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ) {
            RPCError::Unreachable(Unreachable::new(&f))
        } else {
            RPCError::Network(NetworkError::new(&f))
        }
    }

    /// Decodes a `RaftReply`: the response, or the remote raft error intact.
    fn reply<T, E>(
        &self,
        reply: pb::RaftReply,
    ) -> Result<T, RPCError<NodeId, NodeAddr, RaftError<NodeId, E>>>
    where
        T: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
    {
        match reply.result {
            Some(pb::raft_reply::Result::Ok(b)) => wire::decode(&b)
                .map_err(|e| RPCError::Network(NetworkError::new(&self.failure(e.to_string())))),
            Some(pb::raft_reply::Result::Error(b)) => {
                match serde_json::from_slice::<RaftError<NodeId, E>>(&b) {
                    Ok(e) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
                    Err(e) => Err(RPCError::Network(NetworkError::new(
                        &self.failure(format!("undecodable remote error: {e}")),
                    ))),
                }
            }
            None => Err(RPCError::Network(NetworkError::new(
                &self.failure("empty reply"),
            ))),
        }
    }
}

type RaftClient = pb::raft_client::RaftClient<Channel>;

impl Connection {
    /// One raft RPC: `rpc` encoded into its envelope, sent by `send`, the reply decoded.
    async fn unary<Req, Resp, F, Fut>(
        &self,
        rpc: &Req,
        send: F,
    ) -> Result<Resp, RPCError<NodeId, NodeAddr, RaftError<NodeId>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        F: FnOnce(RaftClient, bytes::Bytes) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::RaftReply>, tonic::Status>>,
    {
        let client = self
            .client()
            .map_err(|f| RPCError::Unreachable(Unreachable::new(&f)))?;
        let payload = wire::encode(rpc)
            .map_err(|e| RPCError::Network(NetworkError::new(&self.failure(e.to_string()))))?;
        let reply = send(client, payload)
            .await
            .map_err(|s| self.transport(&s))?;
        self.reply(reply.into_inner())
    }
}

fn request<T>(msg: T, option: &RPCOption) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.unary(&rpc, |mut c, payload| async move {
            c.append_entries(request(pb::AppendEntriesRequest { payload }, &option))
                .await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        self.unary(&rpc, |mut c, payload| async move {
            c.vote(request(pb::VoteRequest { payload }, &option)).await
        })
        .await
    }

    /// Not used: snapshots go whole through `full_snapshot`.
    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(&self.failure(
            "chunked snapshot install is not supported; snapshots stream whole",
        ))))
    }

    /// Streams the snapshot file: its head (vote and metadata) first, then the file in chunks.
    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let unreachable = |f: Failure| StreamingError::Unreachable(Unreachable::new(&f));
        let mut client = self.client().map_err(unreachable)?;
        let head = wire::encode(&(vote, snapshot.meta.clone()))
            .map_err(|e| unreachable(self.failure(e.to_string())))?;
        let target = self.target;
        let chunks = snapshot_stream(head, snapshot.snapshot);
        let mut req = tonic::Request::new(chunks);
        req.set_timeout(option.hard_ttl());
        let call = client.install_snapshot(req);
        let reply = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = call => r.map_err(|s| {
                let f = Failure { target, reason: describe(&s) };
                StreamingError::Unreachable(Unreachable::new(&f))
            })?,
        };
        match reply.into_inner().result {
            Some(pb::raft_reply::Result::Ok(b)) => wire::decode(&b)
                .map_err(|e| unreachable(self.failure(format!("bad snapshot reply: {e}")))),
            Some(pb::raft_reply::Result::Error(b)) => {
                let reason = String::from_utf8_lossy(&b).into_owned();
                Err(StreamingError::Network(NetworkError::new(
                    &self.failure(format!("snapshot refused: {reason}")),
                )))
            }
            None => Err(unreachable(self.failure("empty snapshot reply"))),
        }
    }

    fn backoff(&self) -> openraft::network::Backoff {
        // Unreachable peers are retried every 200 ms rather than openraft's 500 ms, so a healed
        // node catches up promptly; each attempt costs one failed connect.
        openraft::network::Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}

/// The snapshot stream: `head`, then the file in chunks.
fn snapshot_stream(
    head: bytes::Bytes,
    file: Box<tokio::fs::File>,
) -> impl tokio_stream::Stream<Item = pb::SnapshotChunk> + Send + 'static {
    let first = pb::SnapshotChunk {
        part: Some(pb::snapshot_chunk::Part::Head(head)),
    };
    let rest = futures::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; SNAPSHOT_CHUNK];
        let mut n = 0;
        while n < buf.len() {
            match file.read(&mut buf[n..]).await {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => {
                    // Ending early makes the receiver reject a short file (it checks the format).
                    tracing::warn!(error = %e, "failed to read the snapshot file while sending it");
                    return None;
                }
            }
        }
        if n == 0 {
            return None;
        }
        buf.truncate(n);
        Some((
            pb::SnapshotChunk {
                part: Some(pb::snapshot_chunk::Part::Data(buf.into())),
            },
            Some(file),
        ))
    });
    futures::StreamExt::chain(futures::stream::iter([first]), rest)
}

impl Peers {
    fn leader_client(&self, leader: NodeId, addr: &NodeAddr) -> Result<RaftClient, ForwardError> {
        let addr = self
            .address(leader, Some(addr))
            .ok_or_else(|| ForwardError::NotDelivered(format!("no address for node {leader}")))?;
        self.raft_client(&addr).map_err(ForwardError::NotDelivered)
    }
}

/// `Remote` over gRPC: what a follower's writer asks of the leader.
impl Remote for Peers {
    fn forward<'a>(
        &'a self,
        leader: NodeId,
        addr: &'a NodeAddr,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<(CommandResult, u64), ForwardError>> {
        Box::pin(async move {
            let mut client = self.leader_client(leader, addr)?;
            let command =
                wire::encode(cmd).map_err(|e| ForwardError::NotDelivered(e.to_string()))?;
            let reply = client
                .forward(pb::ForwardRequest { command })
                .await
                .map_err(|s| {
                    if never_delivered(&s) {
                        ForwardError::NotDelivered(describe(&s))
                    } else {
                        ForwardError::Unknown(describe(&s))
                    }
                })?;
            match reply.into_inner().result {
                Some(pb::forward_reply::Result::Applied(a)) => {
                    let result = wire::decode(&a.result)
                        .map_err(|e| ForwardError::Unknown(e.to_string()))?;
                    Ok((result, a.index))
                }
                Some(pb::forward_reply::Result::Error(e)) => Err(wire::forward_error(&e)),
                None => Err(ForwardError::Unknown("empty reply".into())),
            }
        })
    }

    fn read_index<'a>(
        &'a self,
        leader: NodeId,
        addr: &'a NodeAddr,
    ) -> BoxFuture<'a, Result<u64, ForwardError>> {
        Box::pin(async move {
            let mut client = self.leader_client(leader, addr)?;
            let reply = client
                .read_index(pb::ReadIndexRequest {})
                .await
                .map_err(|s| ForwardError::NotDelivered(describe(&s)))?;
            match reply.into_inner().result {
                Some(pb::read_index_reply::Result::Index(i)) => Ok(i),
                Some(pb::read_index_reply::Result::Error(e)) => Err(ForwardError::NotDelivered(
                    String::from_utf8_lossy(&e).into(),
                )),
                None => Err(ForwardError::NotDelivered("empty reply".into())),
            }
        })
    }
}
