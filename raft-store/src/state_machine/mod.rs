//! `StateMachineStore`: openraft's `RaftStateMachine` on RocksDB.
//!
//! All entries of one `apply` call go into one `WriteBatch` together with the last applied log id
//! and membership, so data and applied index never disagree. The batch goes to RocksDB's
//! write-ahead log without its own fsync: an entry is applied only after it was appended durably
//! on a majority, and the log shares this WAL, so the next synced log write persists it; a crash
//! before that loses only state the log re-applies on restart. The data lives only in RocksDB:
//! `Registry` reads the same column families.

mod apply;
mod rules;
mod snapshot;
mod tx;

#[cfg(test)]
mod snapshot_tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use openraft::storage::RaftStateMachine;
use openraft::{OptionalSend, RaftSnapshotBuilder};
use rocksdb::DB;

use crate::TypeConfig;
use crate::command::CommandResult;
use crate::keys;
use crate::log_store::write_buffered;
use crate::typ::{
    Entry, EntryPayload, LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use tx::Tx;

pub use snapshot::SnapshotBuilder;

#[derive(Debug)]
pub struct StateMachineStore {
    db: Arc<DB>,
    /// Shared with `Registry`: set while a snapshot install replaces the data.
    installing: Arc<AtomicBool>,
    applied: crate::applied::Sender,
    snapshot_dir: PathBuf,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

impl StateMachineStore {
    pub(crate) fn new(
        db: Arc<DB>,
        snapshot_dir: PathBuf,
        applied: crate::applied::Sender,
        installing: Arc<AtomicBool>,
    ) -> Result<Self, StorageError> {
        if snapshot::interrupted(&db)? {
            tracing::warn!("a snapshot install was interrupted; finishing it before starting");
            snapshot::finish_install(&db, &snapshot_dir)?;
        }
        let tx = Tx::new(&db);
        let last_applied = tx.get_value(keys::SM_META, keys::LAST_APPLIED)?.flatten();
        let last_membership = tx
            .get_value(keys::SM_META, keys::LAST_MEMBERSHIP)?
            .unwrap_or_default();
        drop(tx);
        Ok(StateMachineStore {
            db,
            installing,
            applied,
            snapshot_dir,
            last_applied,
            last_membership,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<CommandResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut tx = Tx::new(&self.db);
        let mut results = Vec::new();
        let mut last_applied = self.last_applied;
        let mut membership = self.last_membership.clone();
        for entry in entries {
            last_applied = Some(entry.log_id);
            results.push(match entry.payload {
                EntryPayload::Blank => CommandResult::Ok,
                EntryPayload::Normal(cmd) => apply::apply_command(&mut tx, cmd)?,
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m);
                    CommandResult::Ok
                }
            });
        }
        tx.put_value(keys::SM_META, keys::LAST_APPLIED, &last_applied);
        tx.put_value(keys::SM_META, keys::LAST_MEMBERSHIP, &membership);
        let batch = std::mem::take(&mut tx.batch);
        let effects = std::mem::take(&mut tx.effects);
        drop(tx);
        write_buffered(&self.db, batch)
            .await
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        self.last_applied = last_applied;
        self.last_membership = membership;
        for e in effects {
            // No receiver (a tool, or before the node subscribed) is fine: nothing to update.
            let _ = self.applied.send(e);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder::new(self.db.clone(), self.snapshot_dir.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        Ok(Box::new(
            snapshot::receiving_file(&self.snapshot_dir).await?,
        ))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        file: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        self.installing.store(true, Ordering::Release);
        let installed = snapshot::install(&self.db, &self.snapshot_dir, meta, *file).await;
        self.installing.store(false, Ordering::Release);
        installed?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        let _ = self.applied.send(crate::applied::Applied::Reset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        snapshot::current(&self.snapshot_dir).await
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        self.build().await
    }
}
