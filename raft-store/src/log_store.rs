//! `LogStore`: openraft's `RaftLogStorage` on the `logs` and `raft_meta` column families.
//!
//! Appends are one `WriteBatch` per call, written with `sync`, and openraft is told the entries
//! are flushed only after that write returns. (openraft 0.9 awaits that before proposing the
//! next entry, which is why `client::Writer` batches commands.) Blocking RocksDB calls run on
//! tokio's blocking pool.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::RaftLogStorage;
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;
use crate::keys;
use crate::typ::{Entry, LogFlushed, LogId, LogState, StorageError, StorageIOError, Vote};

#[derive(Debug, Clone)]
pub struct LogStore {
    db: Arc<DB>,
}

/// Writes `batch` durably on the blocking pool.
pub(crate) async fn write_sync(db: &Arc<DB>, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    write(db, batch, true).await
}

/// Writes `batch` to the write-ahead log without waiting for the disk. The log and the state
/// machine share one RocksDB (one WAL), so the next synced write (an append, a vote, a purge)
/// makes it durable too; until then a crash loses at most state that the durable raft log
/// re-applies on restart.
pub(crate) async fn write_buffered(db: &Arc<DB>, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    write(db, batch, false).await
}

async fn write(db: &Arc<DB>, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
    let db = db.clone();
    tokio::task::spawn_blocking(move || {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        db.write_opt(batch, &opts)
    })
    .await
    .expect("rocksdb write task panicked")
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>) -> Self {
        LogStore { db }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family opened in open()")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageIOError> {
        let raw = self
            .db
            .get_cf(self.cf(keys::RAFT_META), key)
            .map_err(|e| StorageIOError::read(&e))?;
        raw.map(|v| crate::codec::decode(&v).map_err(|e| StorageIOError::read(&e)))
            .transpose()
    }

    async fn put_meta<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), StorageIOError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(
            self.cf(keys::RAFT_META),
            key,
            crate::codec::encode(value).map_err(|e| StorageIOError::write(&e))?,
        );
        write_sync(&self.db, batch)
            .await
            .map_err(|e| StorageIOError::write(&e))
    }
}

fn decode(raw: &[u8]) -> Result<Entry, StorageIOError> {
    crate::codec::decode(raw).map_err(|e| StorageIOError::read_logs(&e))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x + 1,
            Bound::Unbounded => 0,
        };
        let from = keys::id(start);
        let mut out = Vec::new();
        for item in self.db.iterator_cf(
            self.cf(keys::LOGS),
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (k, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
            let index = keys::parse_id(&k).ok_or_else(|| StorageIOError::read_logs(&BadKey))?;
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed log key")]
struct BadKey;

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last = match self
            .db
            .iterator_cf(self.cf(keys::LOGS), IteratorMode::End)
            .next()
        {
            Some(item) => {
                let (_, v) = item.map_err(|e| StorageIOError::read_logs(&e))?;
                Some(decode(&v)?.log_id)
            }
            None => None,
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(keys::LAST_PURGED)?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        Ok(self.put_meta(keys::VOTE, vote).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.get_meta(keys::VOTE)?)
    }

    /// Written without `sync`, as it is on raft's critical path: the state machine records its
    /// applied id durably itself, and a committed id lost in a crash is re-established from the
    /// recovered log when the leader commits again.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let raw = crate::codec::encode(&committed).map_err(|e| StorageIOError::write(&e))?;
        self.db
            .put_cf(self.cf(keys::RAFT_META), keys::COMMITTED, raw)
            .map_err(|e| StorageIOError::write(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(keys::COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            let raw = crate::codec::encode(&entry).map_err(|e| StorageIOError::write_logs(&e))?;
            batch.put_cf(self.cf(keys::LOGS), keys::id(entry.log_id.index), raw);
        }
        let res = write_sync(&self.db, batch).await;
        let io = res
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        res.map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            self.cf(keys::LOGS),
            keys::id(log_id.index),
            keys::id(u64::MAX),
        );
        batch.delete_cf(self.cf(keys::LOGS), keys::id(u64::MAX));
        write_sync(&self.db, batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash in between leaves extra entries, never a gap.
        self.put_meta(keys::LAST_PURGED, &log_id).await?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(keys::LOGS), keys::id(0), keys::id(log_id.index + 1));
        write_sync(&self.db, batch)
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
