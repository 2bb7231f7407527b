//! Offline queues on disk: what waits in this node's offline persistent sessions survives a
//! restart of the node (`realmq_raft_store::queues`, a column family outside raft).
//!
//! Only offline sessions are written, so an online client costs nothing here: when a persistent
//! session loses its connection, its in-flight flows and queue are written whole (`replace`);
//! each message queued for it while offline is appended; when a connection takes the session
//! again (here or, by handover, on another node) or the session ends, its entries are cleared.
//! The broker only sends these changes down a channel; one task on the tokio runtime batches
//! them into RocksDB writes, numbers the entries, and keeps each session within
//! `max_queued_messages` (plus the in-flight window) by dropping its oldest, as the memory
//! queue does. At start-up the entries come back into the restored sessions.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use realmq_raft_store::model::RetainedRecord;
use realmq_raft_store::queues::{QueueOp, QueuedEntry, Queues};
use tokio::sync::mpsc;

use super::Broker;
use super::persist::{retained_message, retained_record};
use crate::message::{Delivery, QoS};
use crate::session::{InflightFlow, SessionCell, Undelivered};

/// Changes written per RocksDB batch at most.
const BATCH: usize = 1024;

enum Op {
    Append(Arc<str>, Vec<u8>),
    Replace(Arc<str>, Vec<Vec<u8>>),
    Clear(Arc<str>),
    /// Answered once everything sent before is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The broker's end of the channel to the writer task.
pub(super) struct Spool(mpsc::UnboundedSender<Op>);

/// One entry as stored: the message (wall-clock expiry), this session's copy of it, and for an
/// in-flight flow its packet id and whether PUBREL was sent.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    record: RetainedRecord,
    retain: bool,
    publisher: Option<String>,
    qos: u8,
    delivery_retain: bool,
    subscription_ids: Vec<u32>,
    flow: Option<(u16, bool)>,
}

fn encode(d: &Delivery, flow: Option<(u16, bool)>) -> Vec<u8> {
    let stored = Stored {
        record: retained_record(&d.msg),
        retain: d.msg.retain,
        publisher: d.msg.publisher.as_deref().map(str::to_string),
        qos: d.qos as u8,
        delivery_retain: d.retain,
        subscription_ids: d.subscription_ids.clone(),
        flow,
    };
    postcard::to_allocvec(&stored).unwrap_or_default()
}

fn decode(bytes: &[u8]) -> Option<(Delivery, Option<(u16, bool)>)> {
    let s: Stored = postcard::from_bytes(bytes).ok()?;
    let mut msg = retained_message(s.record);
    msg.retain = s.retain;
    msg.publisher = s.publisher.map(|p| Arc::from(p.as_str()));
    let delivery = Delivery {
        msg: Arc::new(msg),
        qos: QoS::from_u8(s.qos)?,
        retain: s.delivery_retain,
        subscription_ids: s.subscription_ids,
    };
    Some((delivery, s.flow))
}

/// Entries read back, as a session's undelivered state.
fn undelivered(entries: &[Vec<u8>]) -> Undelivered {
    let mut u = Undelivered::default();
    for (delivery, flow) in entries.iter().filter_map(|e| decode(e)) {
        match flow {
            Some((packet_id, released)) => u.inflight.push(InflightFlow {
                packet_id,
                released,
                delivery,
            }),
            None => u.queue.push(delivery),
        }
    }
    u
}

impl Spool {
    fn send(&self, op: Op) {
        // The writer only stops with the runtime, at shutdown.
        let _ = self.0.send(op);
    }
}

impl Broker {
    /// Starts writing offline queues to `queues`; returns what is stored, grouped by client id,
    /// for `restore`. Call once, before `restore`.
    pub fn start_spool(&self, queues: Queues) -> anyhow::Result<HashMap<String, Vec<Vec<u8>>>> {
        let entries = queues.load()?;
        let limit = self.limits.max_queued_messages + usize::from(self.limits.max_inflight);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut stored: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        let mut seqs: HashMap<Arc<str>, VecDeque<u64>> = HashMap::new();
        let mut next = 0;
        for QueuedEntry {
            client_id,
            seq,
            value,
        } in entries
        {
            next = next.max(seq);
            seqs.entry(Arc::from(client_id.as_str()))
                .or_default()
                .push_back(seq);
            stored.entry(client_id).or_default().push(value);
        }
        self.runtime
            .spawn(write(queues, rx, Writer { seqs, next, limit }));
        let _ = self.spool.set(Spool(tx));
        Ok(stored)
    }

    /// `cell` just lost its connection and stays: writes what it holds.
    pub(super) fn spool_offline(&self, cell: &SessionCell) {
        let Some(spool) = self.spool.get() else {
            return;
        };
        // Under the session's lock, so a message queued right after is appended after this.
        let inner = cell.lock();
        if inner.ended || inner.conn.is_some() {
            return;
        }
        let u = inner.state.undelivered();
        let mut entries: Vec<Vec<u8>> = u
            .inflight
            .iter()
            .map(|f| encode(&f.delivery, Some((f.packet_id, f.released))))
            .collect();
        entries.extend(u.queue.iter().map(|d| encode(d, None)));
        spool.send(Op::Replace(cell.client_id.clone(), entries));
    }

    /// A delivery was queued for an offline session.
    pub(super) fn spool_queued(&self, cell: &SessionCell, entry: Vec<u8>) {
        if let Some(spool) = self.spool.get() {
            spool.send(Op::Append(cell.client_id.clone(), entry));
        }
    }

    /// `client_id`'s stored entries are no longer needed (a connection took the session, or it
    /// ended or moved away).
    pub(super) fn spool_clear(&self, client_id: &Arc<str>) {
        if let Some(spool) = self.spool.get() {
            spool.send(Op::Clear(client_id.clone()));
        }
    }

    /// Waits until every change sent so far is written (at shutdown, after the connections
    /// closed and their sessions were written).
    pub async fn flush_spool(&self) {
        if let Some(spool) = self.spool.get() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            spool.send(Op::Flush(tx));
            let _ = rx.await;
        }
    }

    /// What the restored session `cell` had stored.
    pub(super) fn restore_spooled(&self, cell: &SessionCell, entries: &[Vec<u8>]) {
        cell.lock().state.restore_undelivered(undelivered(entries));
    }
}

/// The copy of `d` an offline session stores, made before the delivery moves into the session.
pub(super) fn entry(d: &Delivery) -> Vec<u8> {
    encode(d, None)
}

/// The writer task's bookkeeping: each client's stored sequence numbers, in order.
struct Writer {
    seqs: HashMap<Arc<str>, VecDeque<u64>>,
    next: u64,
    limit: usize,
}

impl Writer {
    fn put(&mut self, client_id: &Arc<str>, value: Vec<u8>, out: &mut Vec<QueueOp>) {
        self.next += 1;
        let q = self.seqs.entry(client_id.clone()).or_default();
        q.push_back(self.next);
        out.push(QueueOp::Put {
            client_id: client_id.to_string(),
            seq: self.next,
            value,
        });
        if q.len() > self.limit
            && let Some(seq) = q.pop_front()
        {
            out.push(QueueOp::Delete {
                client_id: client_id.to_string(),
                seq,
            });
        }
    }

    /// Applies `op` to the batch; a flush request is returned to answer once it is written.
    fn apply(
        &mut self,
        op: Op,
        out: &mut Vec<QueueOp>,
    ) -> Option<tokio::sync::oneshot::Sender<()>> {
        match op {
            Op::Append(c, value) => self.put(&c, value, out),
            Op::Replace(c, values) => {
                self.clear(&c, out);
                for v in values {
                    self.put(&c, v, out);
                }
            }
            Op::Clear(c) => self.clear(&c, out),
            Op::Flush(done) => return Some(done),
        }
        None
    }

    /// Only clients with stored entries cost a write (every CONNECT clears).
    fn clear(&mut self, c: &Arc<str>, out: &mut Vec<QueueOp>) {
        if self.seqs.remove(c).is_some() {
            out.push(QueueOp::Clear {
                client_id: c.to_string(),
            });
        }
    }
}

async fn write(queues: Queues, mut rx: mpsc::UnboundedReceiver<Op>, mut w: Writer) {
    let mut batch = Vec::new();
    let mut flushed = Vec::new();
    while let Some(op) = rx.recv().await {
        flushed.extend(w.apply(op, &mut batch));
        while batch.len() < BATCH
            && let Ok(op) = rx.try_recv()
        {
            flushed.extend(w.apply(op, &mut batch));
        }
        if !batch.is_empty() {
            let ops = std::mem::take(&mut batch);
            let q = queues.clone();
            match tokio::task::spawn_blocking(move || q.apply(&ops)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "failed to write offline queues"),
                Err(e) => tracing::error!(error = %e, "the offline queue writer failed"),
            }
        }
        for done in flushed.drain(..) {
            let _ = done.send(());
        }
    }
}
