//! The MQTT side's metadata writes: session registration on CONNECT (awaited, so the cluster
//! knows who owns a client id before CONNACK), and the rest (disconnects, subscriptions,
//! retained messages) through one ordered queue that a task drains in batches, so the MQTT hot
//! path never waits for consensus. This is the only MQTT-side caller of
//! `realmq_raft_store::client::write`.

use realmq_raft_store::typ::Raft;
use realmq_raft_store::{Command, WriteError, client};
use tokio::sync::mpsc;

/// Commands written per raft entry at most when the queue has a backlog.
const MAX_BATCH: usize = 512;

#[derive(Clone)]
pub struct Ownership {
    raft: Raft,
    queue: mpsc::UnboundedSender<Command>,
}

impl Ownership {
    /// Starts the queue's writer task on `rt`.
    pub fn start(raft: Raft, rt: &tokio::runtime::Handle) -> Ownership {
        let (queue, rx) = mpsc::unbounded_channel();
        rt.spawn(drain(raft.clone(), rx));
        Ownership { raft, queue }
    }

    /// Writes `cmd` and waits until it is applied.
    pub async fn write_now(&self, cmd: Command) -> Result<(), WriteError> {
        client::write(&self.raft, cmd).await.map(|_| ())
    }

    /// Queues `cmd` behind every command queued before it.
    pub fn record(&self, cmd: Command) {
        if self.queue.send(cmd).is_err() {
            tracing::warn!("metadata writer stopped; a session change was not persisted");
        }
    }
}

async fn drain(raft: Raft, mut rx: mpsc::UnboundedReceiver<Command>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let n = batch.len();
        let cmd = if n == 1 {
            batch.remove(0)
        } else {
            Command::Batch(batch)
        };
        if let Err(e) = client::write(&raft, cmd).await {
            tracing::warn!(error = %e, commands = n, "failed to persist session changes");
        }
    }
}
