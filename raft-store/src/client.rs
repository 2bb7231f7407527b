//! `write`: the single call site of `Raft::client_write`. Every metadata write of the node, from
//! the REST API or the MQTT side, goes through here.

use crate::command::{Command, CommandResult};
use crate::error::WriteError;
use crate::typ::{ClientWriteError, Raft, RaftError};

/// Proposes `cmd` and waits until it is committed and applied; returns what `apply` answered.
pub async fn write(raft: &Raft, cmd: Command) -> Result<CommandResult, WriteError> {
    match raft.client_write(cmd).await {
        Ok(resp) => Ok(resp.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(WriteError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            })
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(WriteError::Unavailable(e.to_string()))
        }
        Err(RaftError::Fatal(e)) => Err(WriteError::Unavailable(e.to_string())),
    }
}
