//! Snapshots as files, built from a RocksDB snapshot and streamed, so a state machine with a
//! million devices never has to fit in memory.
//!
//! Format: `MAGIC`, the snapshot's meta (`[len: u32 BE][postcard]`), then records
//! `[cf tag: u8][key len: u32 BE][key][value len: u32 BE][value]` where the tag is the column
//! family's index in `keys::SM_DATA`, then the tag `END`. The meta travels inside the file, so a
//! snapshot's data and its meta can never come from two different snapshots. The current
//! snapshot is `<dir>/current.snap`.
//!
//! Installing is crash-safe: the received file is made durable as `<dir>/staged.snap`, then an
//! `INSTALLING` marker is written (synced) to the raft column family, then the data is replaced
//! and the marker removed. A process killed in between finds the marker on the next start and
//! redoes the install from the staged file before raft starts, so the store never claims an
//! applied index whose data it does not hold.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};

use crate::keys;
use crate::typ::{LogId, Snapshot, SnapshotMeta, StorageError, StorageIOError, StoredMembership};

const MAGIC: &[u8; 8] = b"RMQSNAP2";
const END: u8 = 0xff;
/// Records per write batch while installing.
const INSTALL_BATCH: usize = 10_000;

fn current_path(dir: &Path) -> PathBuf {
    dir.join("current.snap")
}

fn staged_path(dir: &Path) -> PathBuf {
    dir.join("staged.snap")
}

fn io_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name).expect("column family opened in open()")
}

fn synced() -> WriteOptions {
    let mut opts = WriteOptions::default();
    opts.set_sync(true);
    opts
}

pub struct SnapshotBuilder {
    db: Arc<DB>,
    dir: PathBuf,
}

impl SnapshotBuilder {
    pub(super) fn new(db: Arc<DB>, dir: PathBuf) -> Self {
        SnapshotBuilder { db, dir }
    }

    /// Writes a snapshot of the state machine as of now and makes it the current one.
    pub(super) async fn build(&self) -> Result<Snapshot, StorageError> {
        let (db, dir) = (self.db.clone(), self.dir.clone());
        let meta = tokio::task::spawn_blocking(move || write_snapshot(&db, &dir))
            .await
            .map_err(io_err)??;
        let file = tokio::fs::File::open(current_path(&self.dir))
            .await
            .map_err(io_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

fn write_snapshot(db: &DB, dir: &Path) -> Result<SnapshotMeta, StorageError> {
    // One RocksDB snapshot: data, applied log id and membership are mutually consistent.
    let snap = db.snapshot();
    let read = |key: &[u8]| -> Result<Option<Vec<u8>>, StorageError> {
        snap.get_cf(cf(db, keys::SM_META), key).map_err(io_err)
    };
    let last_log_id: Option<LogId> = match read(keys::LAST_APPLIED)? {
        Some(v) => crate::codec::decode(&v).map_err(io_err)?,
        None => None,
    };
    let last_membership: StoredMembership = match read(keys::LAST_MEMBERSHIP)? {
        Some(v) => crate::codec::decode(&v).map_err(io_err)?,
        None => StoredMembership::default(),
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let snapshot_id = match last_log_id {
        Some(l) => format!("{}-{}-{stamp}", l.leader_id, l.index),
        None => format!("--{stamp}"),
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };

    let tmp = dir.join(format!("{}.tmp", meta.snapshot_id));
    let mut out = BufWriter::new(File::create(&tmp).map_err(io_err)?);
    out.write_all(MAGIC).map_err(io_err)?;
    write_part(&mut out, &crate::codec::encode(&meta).map_err(io_err)?)?;
    for (tag, name) in keys::SM_DATA.iter().enumerate() {
        for item in snap.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
            out.write_all(&[tag as u8]).map_err(io_err)?;
            write_part(&mut out, &k)?;
            write_part(&mut out, &v)?;
        }
    }
    out.write_all(&[END]).map_err(io_err)?;
    let file = out.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, current_path(dir)).map_err(io_err)?;
    Ok(meta)
}

fn write_part(out: &mut impl Write, part: &[u8]) -> Result<(), StorageError> {
    out.write_all(&(part.len() as u32).to_be_bytes())
        .map_err(io_err)?;
    out.write_all(part).map_err(io_err)
}

fn read_part(input: &mut impl Read) -> Result<Vec<u8>, StorageError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(io_err)?;
    let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
    input.read_exact(&mut buf).map_err(io_err)?;
    Ok(buf)
}

/// Reads a snapshot file's header: checks the format, returns the meta inside it.
fn read_header(input: &mut impl Read) -> Result<SnapshotMeta, StorageError> {
    let mut magic = [0u8; 8];
    input.read_exact(&mut magic).map_err(io_err)?;
    if &magic != MAGIC {
        return Err(io_err(std::io::Error::other("not a realmq snapshot")));
    }
    crate::codec::decode(&read_part(input)?).map_err(io_err)
}

/// A fresh, already unlinked file for openraft to write a snapshot being received into: it
/// vanishes with its last handle, so an abandoned transfer leaves nothing behind.
pub(super) async fn receiving_file(dir: &Path) -> Result<tokio::fs::File, StorageError> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let path = dir.join(format!("receiving-{stamp}.snap"));
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .await
        .map_err(io_err)?;
    tokio::fs::remove_file(&path).await.map_err(io_err)?;
    Ok(file)
}

/// Replaces the state machine's data with the snapshot in `file` and makes it current.
pub(super) async fn install(
    db: &Arc<DB>,
    dir: &Path,
    meta: &SnapshotMeta,
    file: tokio::fs::File,
) -> Result<(), StorageError> {
    let (db, dir, meta) = (db.clone(), dir.to_path_buf(), meta.clone());
    let file = file.into_std().await;
    tokio::task::spawn_blocking(move || {
        stage(&dir, &meta, file)?;
        db.put_cf_opt(
            cf(&db, keys::RAFT_META),
            keys::INSTALLING,
            meta.snapshot_id.as_bytes(),
            &synced(),
        )
        .map_err(io_err)?;
        finish_install(&db, &dir)
    })
    .await
    .map_err(io_err)?
}

/// Copies the received snapshot to `staged.snap`, durably, after checking that it is one and
/// that its meta is the one openraft announced.
fn stage(dir: &Path, meta: &SnapshotMeta, mut file: File) -> Result<(), StorageError> {
    file.flush().map_err(io_err)?;
    file.seek(std::io::SeekFrom::Start(0)).map_err(io_err)?;
    let inside = read_header(&mut BufReader::new(&mut file))?;
    if inside.snapshot_id != meta.snapshot_id || inside.last_log_id != meta.last_log_id {
        return Err(io_err(std::io::Error::other(format!(
            "snapshot file holds {} but {} was announced",
            inside.snapshot_id, meta.snapshot_id
        ))));
    }
    file.seek(std::io::SeekFrom::Start(0)).map_err(io_err)?;
    let tmp = dir.join("staged.tmp");
    let mut copy = File::create(&tmp).map_err(io_err)?;
    std::io::copy(&mut file, &mut copy).map_err(io_err)?;
    copy.sync_all().map_err(io_err)?;
    std::fs::rename(&tmp, staged_path(dir)).map_err(io_err)?;
    Ok(())
}

/// Whether an install was interrupted (the `INSTALLING` marker is set).
pub(super) fn interrupted(db: &DB) -> Result<bool, StorageError> {
    Ok(db
        .get_cf(cf(db, keys::RAFT_META), keys::INSTALLING)
        .map_err(io_err)?
        .is_some())
}

/// Replaces the data with the staged snapshot (or, if it was already moved into place, the
/// current one), makes it current and clears the marker. Idempotent: safe to redo after a crash
/// at any point.
pub(super) fn finish_install(db: &DB, dir: &Path) -> Result<(), StorageError> {
    let staged = staged_path(dir);
    let source = if staged.exists() {
        staged.clone()
    } else {
        current_path(dir)
    };
    let file = File::open(&source).map_err(io_err)?;
    let mut input = BufReader::new(file);
    let meta = read_header(&mut input)?;
    let opts = WriteOptions::default();
    // Clear every data column family; nothing of it is trusted until the marker is gone.
    for name in keys::SM_DATA {
        let mut batch = WriteBatch::default();
        for item in db.iterator_cf(cf(db, name), IteratorMode::Start) {
            let (k, _) = item.map_err(io_err)?;
            batch.delete_cf(cf(db, name), k);
            if batch.len() >= INSTALL_BATCH {
                db.write_opt(std::mem::take(&mut batch), &opts)
                    .map_err(io_err)?;
            }
        }
        db.write_opt(batch, &opts).map_err(io_err)?;
    }
    let mut batch = WriteBatch::default();
    loop {
        let mut tag = [0u8; 1];
        input.read_exact(&mut tag).map_err(io_err)?;
        if tag[0] == END {
            break;
        }
        let name = keys::SM_DATA
            .get(usize::from(tag[0]))
            .ok_or_else(|| io_err(std::io::Error::other("unknown column family tag")))?;
        let k = read_part(&mut input)?;
        let v = read_part(&mut input)?;
        batch.put_cf(cf(db, name), k, v);
        if batch.len() >= INSTALL_BATCH {
            db.write_opt(std::mem::take(&mut batch), &opts)
                .map_err(io_err)?;
        }
    }
    // The applied log id and membership come from the meta, whatever the data said.
    batch.put_cf(
        cf(db, keys::SM_META),
        keys::LAST_APPLIED,
        crate::codec::encode(&meta.last_log_id).map_err(io_err)?,
    );
    batch.put_cf(
        cf(db, keys::SM_META),
        keys::LAST_MEMBERSHIP,
        crate::codec::encode(&meta.last_membership).map_err(io_err)?,
    );
    db.write_opt(batch, &synced()).map_err(io_err)?;
    if source == staged {
        std::fs::rename(&staged, current_path(dir)).map_err(io_err)?;
    }
    db.delete_cf_opt(cf(db, keys::RAFT_META), keys::INSTALLING, &synced())
        .map_err(io_err)
}

/// The current snapshot, if one was built or installed; its meta is read from the file itself.
pub(super) async fn current(dir: &Path) -> Result<Option<Snapshot>, StorageError> {
    let mut file = match tokio::fs::File::open(current_path(dir)).await {
        Ok(file) => file.into_std().await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
    };
    let meta = tokio::task::spawn_blocking(move || {
        let meta = read_header(&mut BufReader::new(&mut file))?;
        file.seek(std::io::SeekFrom::Start(0)).map_err(io_err)?;
        Ok::<_, StorageError>((meta, file))
    })
    .await
    .map_err(|e| StorageIOError::read_snapshot(None, &e))??;
    let (meta, file) = meta;
    Ok(Some(Snapshot {
        meta,
        snapshot: Box::new(tokio::fs::File::from_std(file)),
    }))
}
