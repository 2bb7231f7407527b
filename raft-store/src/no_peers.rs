//! `NoPeers`: the raft network of a one-member cluster, for tests and offline tools.
//!
//! openraft never sends such a member an RPC, because there is nobody to replicate to or ask for
//! votes. Should it try (a membership naming other nodes without a transport to them), every call
//! fails as unreachable rather than pretending. It opens no socket.

use crate::typ::NodeId;
use crate::{NodeAddr, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};

#[derive(Debug, thiserror::Error)]
#[error("node {0} is not reachable: this node has no transport to peers")]
struct NoTransport(NodeId);

fn unreachable<E: std::error::Error>(
    target: NodeId,
) -> RPCError<NodeId, NodeAddr, RaftError<NodeId, E>> {
    RPCError::Unreachable(Unreachable::new(&NoTransport(target)))
}

#[derive(Debug, Clone, Default)]
pub struct NoPeers;

pub struct NoConnection {
    target: NodeId,
}

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoConnection;

    async fn new_client(&mut self, target: NodeId, _node: &NodeAddr) -> NoConnection {
        NoConnection { target }
    }
}

impl RaftNetwork<TypeConfig> for NoConnection {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        Err(unreachable(self.target))
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeAddr, RaftError<NodeId, InstallSnapshotError>>,
    > {
        Err(RPCError::Network(NetworkError::new(&NoTransport(
            self.target,
        ))))
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<NodeId>,
        _option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeAddr, RaftError<NodeId>>> {
        Err(unreachable(self.target))
    }
}

impl crate::client::Remote for NoPeers {
    fn forward<'a>(
        &'a self,
        leader: NodeId,
        _addr: &'a NodeAddr,
        _cmd: &'a crate::Command,
    ) -> crate::client::BoxFuture<
        'a,
        Result<(crate::CommandResult, u64), crate::client::ForwardError>,
    > {
        Box::pin(async move {
            Err(crate::client::ForwardError::NotDelivered(
                NoTransport(leader).to_string(),
            ))
        })
    }

    fn read_index<'a>(
        &'a self,
        leader: NodeId,
        _addr: &'a NodeAddr,
    ) -> crate::client::BoxFuture<'a, Result<u64, crate::client::ForwardError>> {
        Box::pin(async move {
            Err(crate::client::ForwardError::NotDelivered(
                NoTransport(leader).to_string(),
            ))
        })
    }
}
