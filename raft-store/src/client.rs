//! `Writer`: how every metadata write of the node, from the REST API or the MQTT side, reaches
//! raft, and `Writer::barrier`, how a read is made linearizable. Its proposer task holds the
//! single call site of `Raft::client_write`.
//!
//! openraft 0.9 waits for each log append to be flushed before it proposes the next entry, so
//! entries go to disk one fsync at a time however many clients write at once. The proposer
//! therefore group-commits above raft: while one entry is in flight, every command submitted
//! meanwhile queues, and the next entry carries all of them as one `Command::Batch` (one append,
//! one fsync, one state-machine write). Each command still gets its own result, and the queue
//! keeps submission order, so a command never overtakes one submitted before it.
//!
//! On a follower the same batch goes to the leader through `Remote::forward` (one batch in
//! flight, so order holds across the hop), and the answer is released only once this node has
//! applied the entry too, so the caller's next read here sees its write. Every attempt is bounded
//! by `write_timeout`: without a leader, or with a leader that cannot reach a majority, callers get
//! `WriteError::NoQuorum` instead of hanging. Commands submitted with `record` (the MQTT side's,
//! naturally idempotent) are retried until they commit or the writer stops.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::NodeAddr;
use crate::command::{Answer, Command, CommandResult, Rejection};
use crate::error::WriteError;
use crate::typ::{ClientWriteError, NodeId, Raft, RaftError};

/// Commands carried by one raft entry at most, and their encoded size at most (a single
/// command may be larger).
const MAX_BATCH: usize = 512;
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Entries per replication message: with `MAX_BATCH_BYTES` entries, an append stays within
/// `MAX_PAYLOAD_ENTRIES * MAX_BATCH_BYTES`, the size a transport must accept.
pub const MAX_PAYLOAD_ENTRIES: u64 = 64;
/// Awaited writes queued at most; further writers wait for room (backpressure).
const MAX_QUEUED: usize = 4096;
/// Pause between attempts while no leader is known or the leader just changed.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a node needs from the leader when it is not the leader itself. Implemented by the node's
/// `cluster/` module over gRPC; this crate stays free of networking.
pub trait Remote: Send + Sync + 'static {
    /// Has the leader propose `cmd`; answers its result and the log index it was applied at.
    fn forward<'a>(
        &'a self,
        leader: NodeId,
        addr: &'a NodeAddr,
        cmd: &'a Command,
    ) -> BoxFuture<'a, Result<(CommandResult, u64), ForwardError>>;

    /// The leader's commit index, once it confirmed it still leads.
    fn read_index<'a>(
        &'a self,
        leader: NodeId,
        addr: &'a NodeAddr,
    ) -> BoxFuture<'a, Result<u64, ForwardError>>;
}

/// Why a forwarded request failed, and whether it may have taken effect.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// The request never reached a leader (refused connection, the peer is not the leader any
    /// more): safe to try again.
    #[error("{0}")]
    NotDelivered(String),
    /// The request may have been applied (a timeout or a reset after sending).
    #[error("{0}")]
    Unknown(String),
}

/// Timings of the writer, from the node's config.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Bound on one write, and on one read barrier: about twice the election timeout, so a new
    /// leader has time to be elected before callers are told there is no quorum.
    pub write_timeout: Duration,
}

type Reply = oneshot::Sender<Result<CommandResult, WriteError>>;

/// A submitted command and who waits for its result (nobody, for `record`).
struct Pending {
    cmd: Command,
    reply: Option<Reply>,
}

/// Submits commands to raft; cheap to clone.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
    queue: mpsc::UnboundedSender<Pending>,
    barriers: mpsc::UnboundedSender<oneshot::Sender<Result<(), WriteError>>>,
}

struct Inner {
    raft: Raft,
    remote: Arc<dyn Remote>,
    config: WriterConfig,
    room: Semaphore,
    /// This writer's identity in `Command::Tagged`: the node, this start of it, and the
    /// sequence of its entries.
    origin: NodeId,
    epoch: u64,
    seq: std::sync::atomic::AtomicU64,
    /// Seconds from proposing an entry (a batch of writes) to its commit and application on
    /// this node, forwarding to the leader included; exported by the node's metrics.
    commit_seconds: Histogram,
}

impl Writer {
    /// Starts the proposer and barrier tasks; call from within the runtime that runs `raft`.
    pub fn start(raft: Raft, remote: Arc<dyn Remote>, config: WriterConfig) -> Writer {
        let origin = raft.metrics().borrow().id;
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let inner = Arc::new(Inner {
            raft,
            remote,
            config,
            room: Semaphore::new(MAX_QUEUED),
            origin,
            epoch,
            seq: std::sync::atomic::AtomicU64::new(0),
            // 0.5 ms to about 8 s.
            commit_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 15)),
        });
        let (queue, rx) = mpsc::unbounded_channel();
        let (barriers, brx) = mpsc::unbounded_channel();
        tokio::spawn(propose(inner.clone(), rx));
        tokio::spawn(serve_barriers(inner.clone(), brx));
        Writer {
            inner,
            queue,
            barriers,
        }
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The commit latency histogram (a handle: it reads the live values).
    pub fn commit_seconds(&self) -> Histogram {
        self.inner.commit_seconds.clone()
    }

    /// Proposes `cmd` and waits until it is committed and applied on this node; returns what
    /// `apply` answered.
    pub async fn write(&self, cmd: Command) -> Result<CommandResult, WriteError> {
        let _room = self.inner.room.acquire().await.map_err(|_| stopped())?;
        let (tx, rx) = oneshot::channel();
        self.queue
            .send(Pending {
                cmd,
                reply: Some(tx),
            })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// `write`, with the answer typed as the caller expects it (`command::Answer`): the outer
    /// error is the write's, the inner one what `apply` refused.
    pub async fn submit<T: Answer>(
        &self,
        cmd: Command,
    ) -> Result<Result<T, Rejection>, WriteError> {
        T::from_result(self.write(cmd).await?).map_err(|other| {
            WriteError::Internal(format!(
                "answered {other:?}, not a {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// Proposes `cmd` behind everything submitted before it without waiting, retrying until it
    /// commits. Only for commands that may be applied twice without harm.
    pub fn record(&self, cmd: Command) {
        if self.queue.send(Pending { cmd, reply: None }).is_err() {
            tracing::warn!("metadata writer stopped; a change was not persisted");
        }
    }

    /// `record`, resolving once the command is committed and applied on this node (or the
    /// write failed): queued now, in order with every other record, for callers that must not
    /// wait in line yet want to know when it is durable.
    pub fn record_confirmed(&self, cmd: Command) -> BoxFuture<'static, Result<(), WriteError>> {
        let (tx, rx) = oneshot::channel();
        let queued = self.queue.send(Pending {
            cmd,
            reply: Some(tx),
        });
        Box::pin(async move {
            queued.map_err(|_| stopped())?;
            rx.await.map_err(|_| stopped())?.map(|_| ())
        })
    }

    /// Returns once this node has applied every write acknowledged anywhere before the call:
    /// reads after it are linearizable. Concurrent callers share one round trip to the leader.
    pub async fn barrier(&self) -> Result<(), WriteError> {
        let (tx, rx) = oneshot::channel();
        self.barriers.send(tx).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

fn stopped() -> WriteError {
    WriteError::Unavailable("the metadata writer stopped".into())
}

async fn propose(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut queued = Vec::new();
    // `record`ed commands whose entry failed: they go first in the next batch.
    let mut retry: Vec<Pending> = Vec::new();
    loop {
        if queued.is_empty() && retry.is_empty() {
            if rx.recv_many(&mut queued, MAX_BATCH).await == 0 {
                return;
            }
        } else {
            if !retry.is_empty() {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            while queued.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(p) => queued.push(p),
                    Err(_) => break,
                }
            }
        }
        let mut batch: Vec<Pending> = std::mem::take(&mut retry);
        batch.append(&mut queued);
        let mut bytes = 0;
        if let Some(cut) = batch.iter().position(|p| {
            bytes += crate::codec::encoded_len(&p.cmd);
            bytes > MAX_BATCH_BYTES
        }) {
            // At least one command per entry, however large.
            queued = batch.split_off(cut.max(1));
        }
        let (cmds, replies): (Vec<Command>, Vec<Option<Reply>>) =
            batch.into_iter().map(|p| (p.cmd, p.reply)).unzip();
        let n = cmds.len();
        let cmd = match <[Command; 1]>::try_from(cmds) {
            Ok([cmd]) => cmd,
            Err(cmds) => Command::Batch(cmds),
        };
        let (written, cmd) = inner.write(cmd).await;
        let results = match written {
            Ok(result) if n == 1 => Ok(vec![result]),
            Ok(CommandResult::Batch(results)) if results.len() == n => Ok(results),
            Ok(other) => Err(WriteError::Internal(format!(
                "a batch of {n} commands was answered with {other:?}"
            ))),
            Err(e) => Err(e),
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
                let cmds = match cmd {
                    Command::Batch(cmds) => cmds,
                    cmd => vec![cmd],
                };
                let mut recorded = 0;
                for (cmd, reply) in cmds.into_iter().zip(replies) {
                    match reply {
                        Some(reply) => {
                            let _ = reply.send(Err(e.clone()));
                        }
                        // Only a missing quorum passes; a stopped raft never takes it.
                        None if matches!(e, WriteError::NoQuorum(_)) => {
                            recorded += 1;
                            retry.push(Pending { cmd, reply: None });
                        }
                        None => tracing::warn!(error = %e, "a metadata change was not persisted"),
                    }
                }
                if recorded > 0 {
                    tracing::warn!(error = %e, commands = recorded, "metadata changes not committed yet; retrying");
                }
            }
        }
    }
}

impl Inner {
    /// One entry, to the leader wherever it is, within `write_timeout`. Tagged, so every
    /// attempt after the first (a leader lost mid-write, a forward that timed out) is applied at
    /// most once: retrying is always safe.
    /// Gives `cmd` back with the outcome, for the caller to retry what failed.
    async fn write(&self, cmd: Command) -> (Result<CommandResult, WriteError>, Command) {
        let tagged = Command::Tagged {
            origin: self.origin,
            epoch: self.epoch,
            seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            cmd: Box::new(cmd),
        };
        let started = Instant::now();
        let result = self.attempts(&tagged).await;
        if result.is_ok() {
            self.commit_seconds.observe(started.elapsed().as_secs_f64());
        }
        let cmd = match tagged {
            Command::Tagged { cmd, .. } => *cmd,
            other => other,
        };
        (result, cmd)
    }

    async fn attempts(&self, cmd: &Command) -> Result<CommandResult, WriteError> {
        let deadline = Instant::now() + self.config.write_timeout;
        let mut why = String::from("no leader elected");
        loop {
            match tokio::time::timeout_at(deadline, self.raft.client_write(cmd.clone())).await {
                Err(_) => return Err(no_quorum(&why)),
                Ok(Ok(resp)) => return Ok(resp.data),
                Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                    match f.leader_id.zip(f.leader_node) {
                        Some((leader, addr)) => {
                            match self.forward(deadline, leader, &addr, cmd).await {
                                Ok(result) => return Ok(result),
                                Err(ForwardError::NotDelivered(e) | ForwardError::Unknown(e)) => {
                                    why = format!("leader {leader} did not take the write: {e}");
                                }
                            }
                        }
                        None => why = "no leader elected".into(),
                    }
                }
                Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
                    return Err(WriteError::Unavailable(e.to_string()));
                }
                Ok(Err(RaftError::Fatal(e))) => return Err(WriteError::Unavailable(e.to_string())),
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(no_quorum(&why));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    async fn forward(
        &self,
        deadline: Instant,
        leader: NodeId,
        addr: &NodeAddr,
        cmd: &Command,
    ) -> Result<CommandResult, ForwardError> {
        let (result, index) = match self
            .while_leader(
                leader,
                tokio::time::timeout_at(deadline, self.remote.forward(leader, addr, cmd)),
            )
            .await
        {
            Some(Ok(r)) => r?,
            Some(Err(_)) => return Err(ForwardError::Unknown("timed out".into())),
            None => {
                return Err(ForwardError::Unknown(format!(
                    "leader {leader} was replaced while the write was in flight"
                )));
            }
        };
        self.applied(deadline, index)
            .await
            .map_err(|e| ForwardError::Unknown(e.to_string()))?;
        Ok(result)
    }

    /// `request` to `leader`, given up (`None`) once this node no longer sees `leader` as the
    /// leader: a leader that died without closing its connections (a killed pod, a lost
    /// machine) would otherwise hold every forwarded write and read for the whole
    /// `write_timeout`, long after the others elected a new one. Retrying is safe (`write`).
    async fn while_leader<T>(&self, leader: NodeId, request: impl Future<Output = T>) -> Option<T> {
        let mut rx = self.raft.metrics();
        let replaced = async move {
            loop {
                if rx.borrow_and_update().current_leader != Some(leader) {
                    return;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            r = request => Some(r),
            () = replaced => None,
        }
    }

    /// Waits until this node's state machine has applied `index`.
    async fn applied(&self, deadline: Instant, index: u64) -> Result<(), WriteError> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.raft
            .wait(Some(left))
            .applied_index_at_least(Some(index), "catch up with the leader")
            .await
            .map(|_| ())
            .map_err(|e| no_quorum(&format!("this node did not catch up with the leader: {e}")))
    }

    /// One linearizable read point: the leader's confirmed commit index, applied here.
    async fn barrier(&self) -> Result<(), WriteError> {
        let deadline = Instant::now() + self.config.write_timeout;
        let mut why = String::from("no leader elected");
        loop {
            let metrics = self.raft.metrics().borrow().clone();
            let me = metrics.id;
            let leader = metrics.current_leader.and_then(|l| {
                let node = metrics.membership_config.membership().get_node(&l)?;
                Some((l, node.clone()))
            });
            match leader {
                Some((leader, _)) if leader == me => {
                    match tokio::time::timeout_at(deadline, self.raft.ensure_linearizable()).await {
                        Err(_) => return Err(no_quorum("the leader did not confirm its term")),
                        Ok(Ok(_)) => return Ok(()),
                        Ok(Err(e)) => why = e.to_string(),
                    }
                }
                Some((leader, addr)) => {
                    let ask =
                        tokio::time::timeout_at(deadline, self.remote.read_index(leader, &addr));
                    match self.while_leader(leader, ask).await {
                        Some(Err(_)) => {
                            return Err(no_quorum(&format!("leader {leader} did not answer")));
                        }
                        Some(Ok(Ok(index))) => return self.applied(deadline, index).await,
                        Some(Ok(Err(e))) => why = format!("leader {leader}: {e}"),
                        None => why = format!("leader {leader} was replaced"),
                    }
                }
                None => {}
            }
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(no_quorum(&why));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

fn no_quorum(why: &str) -> WriteError {
    WriteError::NoQuorum(why.to_string())
}

/// Answers barrier requests in rounds: every request waiting when a round starts shares it; a
/// request that arrives during a round waits for the next one, which starts after it arrived.
async fn serve_barriers(
    inner: Arc<Inner>,
    mut rx: mpsc::UnboundedReceiver<oneshot::Sender<Result<(), WriteError>>>,
) {
    let mut waiting = Vec::new();
    while rx.recv_many(&mut waiting, usize::MAX).await > 0 {
        let result = inner.barrier().await;
        for w in waiting.drain(..) {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::create_viewer;

    fn last_index(raft: &Raft) -> u64 {
        raft.metrics().borrow().last_log_index.unwrap_or(0)
    }

    /// Concurrent writes share raft entries, yet each gets its own result, in submission order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_group_committed_with_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let member = crate::start_offline(dir.path(), 1).await.unwrap();
        let before = last_index(&member.raft);
        // 64 writes, the last 8 repeating names used earlier: those must be refused alone.
        let names: Vec<String> = (0..64).map(|i| format!("u{}", i % 56)).collect();
        let tasks: Vec<_> = names
            .iter()
            .map(|n| {
                let (w, cmd) = (member.writer.clone(), create_viewer(n));
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
        member.writer.record(create_viewer("recorded"));
        let deleted = member
            .writer
            .write(Command::DeleteUser {
                username: "recorded".into(),
            })
            .await
            .unwrap();
        assert!(matches!(deleted, CommandResult::Ok), "{deleted:?}");
        member.writer.barrier().await.unwrap();
        member.raft.shutdown().await.unwrap();
    }
}
