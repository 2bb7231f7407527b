//! The MQTT side's metadata writes: session registration on CONNECT (awaited, so the cluster
//! knows who owns a client id before CONNACK), and the rest (disconnects, subscriptions,
//! retained messages) recorded without waiting, so the MQTT hot path never waits for consensus.
//! Both go through the node's `Writer`, whose queue keeps them in order and batches them with
//! every other write in flight.

use realmq_raft_store::client::Writer;
use realmq_raft_store::{Command, WriteError};

#[derive(Clone)]
pub struct Ownership {
    writer: Writer,
}

impl Ownership {
    pub fn new(writer: Writer) -> Ownership {
        Ownership { writer }
    }

    /// Writes `cmd` and waits until it is applied.
    pub async fn write_now(&self, cmd: Command) -> Result<(), WriteError> {
        self.writer.write(cmd).await.map(|_| ())
    }

    /// Queues `cmd` behind every command submitted before it.
    pub fn record(&self, cmd: Command) {
        self.writer.record(cmd);
    }
}
