//! `Writer`: how every metadata write of the node, from the REST API or the MQTT side, reaches
//! raft. Its proposer task holds the single call site of `Raft::client_write`.
//!
//! openraft 0.9 waits for each log append to be flushed before it proposes the next entry, so
//! entries go to disk one fsync at a time however many clients write at once. The proposer
//! therefore group-commits above raft: while one entry is in flight, every command submitted
//! meanwhile queues, and the next entry carries all of them as one `Command::Batch` (one append,
//! one fsync, one state-machine write). Each command still gets its own result, and the queue
//! keeps submission order, so a command never overtakes one submitted before it.

use tokio::sync::{mpsc, oneshot};

use crate::command::{Command, CommandResult};
use crate::error::WriteError;
use crate::typ::{ClientWriteError, Raft, RaftError};

/// Commands carried by one raft entry at most.
const MAX_BATCH: usize = 512;

type Reply = oneshot::Sender<Result<CommandResult, WriteError>>;

/// A submitted command and who waits for its result (nobody, for `record`).
struct Pending {
    cmd: Command,
    reply: Option<Reply>,
}

/// Submits commands to raft; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    raft: Raft,
    queue: mpsc::UnboundedSender<Pending>,
}

impl Writer {
    /// Starts the proposer task; call from within the tokio runtime that runs `raft`.
    pub fn start(raft: Raft) -> Writer {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(propose(raft.clone(), rx));
        Writer { raft, queue }
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Proposes `cmd` and waits until it is committed and applied; returns what `apply`
    /// answered.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        let (tx, rx) = oneshot::channel();
        self.submit(cmd, Some(tx))?;
        rx.await.map_err(|_| stopped())?
    }

    /// Proposes `cmd` behind everything submitted before it without waiting; a failure is
    /// logged.
    pub fn record(&self, cmd: Command) {
        if self.submit(cmd, None).is_err() {
            tracing::warn!("metadata writer stopped; a change was not persisted");
        }
    }

    fn submit(&self, cmd: Command, reply: Option<Reply>) -> Result<(), WriteError> {
        self.queue
            .send(Pending { cmd, reply })
            .map_err(|_| stopped())
    }
}

fn stopped() -> WriteError {
    WriteError::Unavailable("the metadata writer stopped".into())
}

async fn propose(raft: Raft, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (cmds, replies): (Vec<Command>, Vec<Option<Reply>>) =
            batch.drain(..).map(|p| (p.cmd, p.reply)).unzip();
        let n = cmds.len();
        let results = match <[Command; 1]>::try_from(cmds) {
            Ok([cmd]) => client_write(&raft, cmd).await.map(|r| vec![r]),
            Err(cmds) => match client_write(&raft, Command::Batch(cmds)).await {
                Ok(CommandResult::Batch(results)) if results.len() == n => Ok(results),
                Ok(other) => Err(WriteError::Unavailable(format!(
                    "a batch of {n} commands was answered with {other:?}"
                ))),
                Err(e) => Err(e),
            },
        };
        match results {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(result));
                    }
                }
            }
            Err(e) => {
                if replies.iter().any(Option::is_none) {
                    tracing::warn!(error = %e, commands = n, "failed to persist metadata changes");
                }
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

async fn client_write(raft: &Raft, cmd: Command) -> Result<CommandResult, WriteError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Role, User};
    use crate::{NoPeers, NodeAddr};

    fn user(name: &str) -> Command {
        Command::CreateUser {
            user: User {
                username: name.into(),
                password_hash: "h".into(),
                role: Role::Viewer,
                created_at: 1,
            },
        }
    }

    fn last_index(raft: &Raft) -> u64 {
        raft.metrics().borrow().last_log_index.unwrap_or(0)
    }

    /// Concurrent writes share raft entries, yet each gets its own result, in submission order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_group_committed_with_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let member = crate::start_single(dir.path(), 1, NodeAddr::default(), NoPeers)
            .await
            .unwrap();
        let before = last_index(&member.raft);
        // 64 writes, the last 8 repeating names used earlier: those must be refused alone.
        let names: Vec<String> = (0..64).map(|i| format!("u{}", i % 56)).collect();
        let tasks: Vec<_> = names
            .iter()
            .map(|n| {
                let (w, cmd) = (member.writer.clone(), user(n));
                tokio::spawn(async move { w.write(cmd).await })
            })
            .collect();
        let mut created = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap().unwrap() {
                CommandResult::Ok => created += 1,
                CommandResult::Rejected(_) => refused += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((created, refused), (56, 8));
        assert_eq!(member.registry.users().unwrap().len(), 56);
        let entries = last_index(&member.raft) - before;
        assert!(
            entries < 16,
            "64 concurrent writes took {entries} raft entries"
        );

        // `record` does not wait, but nothing overtakes it.
        member.writer.record(user("recorded"));
        let deleted = member
            .writer
            .write(Command::DeleteUser {
                username: "recorded".into(),
            })
            .await
            .unwrap();
        assert!(matches!(deleted, CommandResult::Ok), "{deleted:?}");
        member.raft.shutdown().await.unwrap();
    }
}
