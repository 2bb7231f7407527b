//! Node-local storage outside raft: messages waiting in this node's offline persistent sessions.
//!
//! They are not replicated (a message is queued on the node that holds its session, and moves
//! with the session over the network), but they survive a restart of that node. One column
//! family, `queues`, in the same RocksDB: key `client id ++ 0x00 ++ u64 BE sequence number`
//! (MQTT client ids cannot contain U+0000, so a client's entries are one contiguous range in
//! sequence order), value opaque to this crate. Writes go to the WAL without an fsync: they
//! survive the process dying, and are batched by the caller off the MQTT hot path.

use std::sync::Arc;

use rocksdb::{DB, WriteBatch};

use crate::keys;

/// One change to the stored queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueOp {
    Put {
        client_id: String,
        seq: u64,
        value: Vec<u8>,
    },
    Delete {
        client_id: String,
        seq: u64,
    },
    /// Every entry of the client.
    Clear {
        client_id: String,
    },
}

/// One stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEntry {
    pub client_id: String,
    pub seq: u64,
    pub value: Vec<u8>,
}

#[derive(Clone)]
pub struct Queues {
    db: Arc<DB>,
}

fn key(client_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(client_id.len() + 9);
    k.extend_from_slice(client_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// The bounds of `client_id`'s range: `[id ++ 0x00, id ++ 0x01)`.
fn range(client_id: &str) -> (Vec<u8>, Vec<u8>) {
    let mut from = client_id.as_bytes().to_vec();
    let mut to = from.clone();
    from.push(0);
    to.push(1);
    (from, to)
}

impl Queues {
    pub(crate) fn new(db: Arc<DB>) -> Queues {
        Queues { db }
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(keys::QUEUES)
            .expect("the queues column family is opened with the database")
    }

    /// Applies `ops` in order, atomically.
    pub fn apply(&self, ops: &[QueueOp]) -> Result<(), rocksdb::Error> {
        let cf = self.cf();
        let mut batch = WriteBatch::default();
        for op in ops {
            match op {
                QueueOp::Put {
                    client_id,
                    seq,
                    value,
                } => batch.put_cf(cf, key(client_id, *seq), value),
                QueueOp::Delete { client_id, seq } => batch.delete_cf(cf, key(client_id, *seq)),
                QueueOp::Clear { client_id } => {
                    let (from, to) = range(client_id);
                    batch.delete_range_cf(cf, from, to);
                }
            }
        }
        self.db.write(batch)
    }

    /// Every stored entry, by client id, each client's in sequence order.
    pub fn load(&self) -> Result<Vec<QueuedEntry>, rocksdb::Error> {
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(), rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            let Some(split) = k.len().checked_sub(9).filter(|&i| k[i] == 0) else {
                continue;
            };
            let (Ok(client_id), Ok(seq)) = (
                std::str::from_utf8(&k[..split]),
                <[u8; 8]>::try_from(&k[split + 1..]),
            ) else {
                continue;
            };
            out.push(QueuedEntry {
                client_id: client_id.to_string(),
                seq: u64::from_be_bytes(seq),
                value: v.to_vec(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopening_in_order_and_clear_takes_one_client() {
        let dir = tempfile::tempdir().unwrap();
        let put = |c: &str, seq, v: &str| QueueOp::Put {
            client_id: c.into(),
            seq,
            value: v.as_bytes().to_vec(),
        };
        {
            let q = crate::open(dir.path()).unwrap().queues;
            q.apply(&[
                put("a", 2, "a2"),
                put("a", 1, "a1"),
                put("ab", 3, "ab3"),
                put("b", 4, "b4"),
            ])
            .unwrap();
            q.apply(&[
                QueueOp::Delete {
                    client_id: "a".into(),
                    seq: 2,
                },
                QueueOp::Clear {
                    client_id: "b".into(),
                },
            ])
            .unwrap();
        }
        let q = crate::open(dir.path()).unwrap().queues;
        let got: Vec<(String, u64, Vec<u8>)> = q
            .load()
            .unwrap()
            .into_iter()
            .map(|e| (e.client_id, e.seq, e.value))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_string(), 1, b"a1".to_vec()),
                ("ab".to_string(), 3, b"ab3".to_vec())
            ],
            "a's entries in order, ab untouched by a's range, b cleared"
        );
    }
}
