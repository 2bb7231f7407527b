//! The server side of the cluster port: raft RPCs into the local `Raft`, forwarded writes into
//! the local `Writer`, read indexes, status, join and leave.

use std::sync::Arc;

use futures::StreamExt;
use openraft::ServerState;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use realmq_proto as pb;
use realmq_raft_store::client::ForwardError;
use realmq_raft_store::typ::{NodeId, Raft, Snapshot, SnapshotMeta, Vote};
use realmq_raft_store::{Command, Member, NodeAddr, Registry, TypeConfig, WriteError};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::membership;
use super::network::Peers;
use super::wire;

/// Everything the handlers need; shared by both services.
#[derive(Clone)]
pub struct Shared {
    pub raft: Raft,
    pub writer: realmq_raft_store::client::Writer,
    pub registry: Registry,
    pub peers: Peers,
    pub me: NodeAddr,
    /// Voters the cluster keeps (`--voters`).
    pub voters: u64,
    /// Counts live MQTT connections on this node, set once the broker exists.
    pub connections: Arc<std::sync::OnceLock<Arc<dyn Fn() -> u64 + Send + Sync>>>,
    /// Set while this node rejoins without its data: it must not vote until it caught up, or
    /// its empty log could elect a leader that lacks committed entries.
    pub rejoining: Arc<std::sync::atomic::AtomicBool>,
}

impl Shared {
    /// The membership as this node last applied or appended it.
    pub fn membership(&self) -> realmq_raft_store::typ::Membership {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone()
    }

    pub fn new(member: &Member, peers: Peers, me: NodeAddr, voters: u64) -> Shared {
        Shared {
            raft: member.raft.clone(),
            writer: member.writer.clone(),
            registry: member.registry.clone(),
            peers,
            me,
            voters,
            connections: Arc::default(),
            rejoining: Arc::default(),
        }
    }
}

pub struct RaftService(pub Shared);
pub struct ClusterService(pub Shared);

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable request: {e}"))
}

/// The reply to a raft RPC: the encoded response, or the raft error as the caller decodes it.
fn raft_reply<T: serde::Serialize, E: serde::Serialize>(
    r: Result<T, E>,
) -> Result<Response<pb::RaftReply>, Status> {
    let result = match r {
        Ok(v) => pb::raft_reply::Result::Ok(wire::encode(&v).map_err(internal)?),
        Err(e) => pb::raft_reply::Result::Error(
            serde_json::to_vec(&e)
                .map_err(|e| Status::internal(e.to_string()))?
                .into(),
        ),
    };
    Ok(Response::new(pb::RaftReply {
        result: Some(result),
    }))
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            wire::decode(&req.into_inner().payload).map_err(bad_request)?;
        raft_reply(self.0.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<pb::VoteRequest>) -> Result<Response<pb::RaftReply>, Status> {
        if self.0.rejoining.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Status::unavailable(
                "rejoining without its data; not voting until caught up",
            ));
        }
        let rpc: VoteRequest<NodeId> =
            wire::decode(&req.into_inner().payload).map_err(bad_request)?;
        raft_reply(self.0.raft.vote(rpc).await)
    }

    /// Receives a whole snapshot into a file from the state machine, then installs it.
    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        let mut stream = req.into_inner();
        let head = match stream.next().await {
            Some(Ok(pb::SnapshotChunk {
                part: Some(pb::snapshot_chunk::Part::Head(h)),
            })) => h,
            Some(Err(s)) => return Err(s),
            _ => return Err(Status::invalid_argument("a snapshot starts with its head")),
        };
        let (vote, meta): (Vote, SnapshotMeta) = wire::decode(&head).map_err(bad_request)?;
        let mut file = self
            .0
            .raft
            .begin_receiving_snapshot()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk?.part {
                Some(pb::snapshot_chunk::Part::Data(d)) => {
                    bytes += d.len() as u64;
                    file.write_all(&d)
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                _ => return Err(Status::invalid_argument("a snapshot has one head")),
            }
        }
        file.flush()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(
            snapshot = %meta.snapshot_id,
            last_log = ?meta.last_log_id,
            bytes,
            "received a snapshot from the leader; installing"
        );
        let snapshot = Snapshot {
            meta,
            snapshot: file,
        };
        match self.0.raft.install_full_snapshot(vote, snapshot).await {
            Ok(resp) => raft_reply::<_, ()>(Ok(resp)),
            Err(e) => Ok(Response::new(pb::RaftReply {
                result: Some(pb::raft_reply::Result::Error(
                    e.to_string().into_bytes().into(),
                )),
            })),
        }
    }

    /// A follower's batch: proposed through this node's writer, so it is group-committed with
    /// everything else the leader writes.
    async fn forward(
        &self,
        req: Request<pb::ForwardRequest>,
    ) -> Result<Response<pb::ForwardReply>, Status> {
        let cmd: Command = wire::decode(&req.into_inner().command).map_err(bad_request)?;
        let result = match self.0.writer.write(cmd).await {
            Ok(result) => {
                // The follower answers its client only once it has applied the entry, and it
                // learns the new commit index from the next append: send that now rather than
                // at the next heartbeat tick.
                let _ = self.0.raft.trigger().heartbeat().await;
                // Applied here, so the applied index is at or past the entry: a follower that
                // waits for it sees the write.
                let index = self
                    .0
                    .raft
                    .metrics()
                    .borrow()
                    .last_applied
                    .map_or(0, |l| l.index);
                pb::forward_reply::Result::Applied(pb::Applied {
                    result: wire::encode(&result).map_err(internal)?,
                    index,
                })
            }
            Err(WriteError::NoQuorum(m) | WriteError::Unavailable(m) | WriteError::Internal(m)) => {
                pb::forward_reply::Result::Error(wire::forward_error_bytes(&ForwardError::Unknown(
                    m,
                )))
            }
        };
        Ok(Response::new(pb::ForwardReply {
            result: Some(result),
        }))
    }

    /// The commit index after this node confirmed with a quorum that it still leads.
    async fn read_index(
        &self,
        _req: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexReply>, Status> {
        let result = match self.0.raft.ensure_linearizable().await {
            Ok(read) => pb::read_index_reply::Result::Index(read.map_or(0, |l| l.index)),
            Err(e) => pb::read_index_reply::Result::Error(e.to_string().into_bytes().into()),
        };
        Ok(Response::new(pb::ReadIndexReply {
            result: Some(result),
        }))
    }
}

pub fn role(state: ServerState) -> &'static str {
    match state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        super::local_status(&self.0, req.into_inner().digest)
            .await
            .map(Response::new)
            .map_err(Status::internal)
    }

    async fn join(&self, req: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let req = req.into_inner();
        let addr: NodeAddr = wire::decode(&req.addr).map_err(bad_request)?;
        let result = match membership::admit(&self.0, req.id, addr).await {
            Ok(()) => pb::join_reply::Result::Ok(true),
            Err(e) => pb::join_reply::Result::Error(e),
        };
        Ok(Response::new(pb::JoinReply {
            result: Some(result),
        }))
    }

    async fn leave(
        &self,
        req: Request<pb::LeaveRequest>,
    ) -> Result<Response<pb::LeaveReply>, Status> {
        let result = match membership::remove(&self.0, req.into_inner().id).await {
            Ok(()) => pb::leave_reply::Result::Ok(true),
            Err(e) => pb::leave_reply::Result::Error(format!("{e:?}")),
        };
        Ok(Response::new(pb::LeaveReply {
            result: Some(result),
        }))
    }
}
