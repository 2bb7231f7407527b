//! Snapshots through openraft's state-machine traits on real RocksDB stores: built on one
//! store, streamed as a file, installed on another; and an install killed halfway.

use openraft::storage::RaftStateMachine;
use openraft::{Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::test_support::create_viewer;
use crate::{Command, TypeConfig};

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

/// A store with `n` users applied at indexes 1..=n, and its snapshot's bytes.
async fn source(
    dir: &std::path::Path,
    n: u64,
) -> (crate::Store, crate::typ::SnapshotMeta, Vec<u8>) {
    let mut store = crate::open(dir).unwrap();
    let entries: Vec<_> = (1..=n)
        .map(|i| entry(i, create_viewer(&format!("u{i}"))))
        .collect();
    store.state_machine.apply(entries).await.unwrap();
    let mut snap = store
        .state_machine
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();
    let mut bytes = Vec::new();
    snap.snapshot.read_to_end(&mut bytes).await.unwrap();
    (store, snap.meta, bytes)
}

#[tokio::test]
async fn a_snapshot_installs_elsewhere_with_its_meta_inside() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut src, meta, bytes) = source(a.path(), 50).await;
    let mut dst = crate::open(b.path()).unwrap();
    // Something the snapshot does not have: must be gone after the install.
    dst.state_machine
        .apply(vec![entry(1, create_viewer("stale"))])
        .await
        .unwrap();
    let mut file = dst.state_machine.begin_receiving_snapshot().await.unwrap();
    file.write_all(&bytes).await.unwrap();
    dst.state_machine
        .install_snapshot(&meta, file)
        .await
        .unwrap();

    assert_eq!(
        dst.registry.digest().unwrap(),
        src.registry.digest().unwrap()
    );
    assert_eq!(dst.registry.user("stale").unwrap(), None);
    let (applied, _) = dst.state_machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(50));
    // The installed snapshot is the receiver's current one, meta read from the file itself.
    let current = dst
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.meta, meta);
    let again = src
        .state_machine
        .get_current_snapshot()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.meta, meta);

    // A file that does not hold the announced snapshot is refused, and changes nothing.
    let mut other = meta.clone();
    other.snapshot_id = "something-else".into();
    let mut file = dst.state_machine.begin_receiving_snapshot().await.unwrap();
    file.write_all(&bytes).await.unwrap();
    assert!(
        dst.state_machine
            .install_snapshot(&other, file)
            .await
            .is_err()
    );
    assert_eq!(
        dst.registry.digest().unwrap(),
        src.registry.digest().unwrap()
    );
}

#[tokio::test]
async fn an_install_killed_halfway_is_finished_on_the_next_start() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (src, meta, bytes) = source(a.path(), 30).await;
    let want = src.registry.digest().unwrap();
    {
        let mut dst = crate::open(b.path()).unwrap();
        dst.state_machine
            .apply(vec![entry(1, create_viewer("stale"))])
            .await
            .unwrap();
        // The state a kill leaves after staging and marking, with the data half replaced: the
        // marker set, the staged file durable, the old data partly deleted.
        std::fs::write(b.path().join("snapshots/staged.snap"), &bytes).unwrap();
        let db = dst.registry.db();
        db.put_cf(
            db.cf_handle(crate::keys::RAFT_META).unwrap(),
            crate::keys::INSTALLING,
            meta.snapshot_id.as_bytes(),
        )
        .unwrap();
        db.delete_cf(
            db.cf_handle(crate::keys::SM_META).unwrap(),
            crate::keys::LAST_APPLIED,
        )
        .unwrap();
    }
    let mut dst = crate::open(b.path()).unwrap();
    assert_eq!(
        dst.registry.digest().unwrap(),
        want,
        "the install was redone"
    );
    assert_eq!(dst.registry.user("stale").unwrap(), None);
    let (applied, _) = dst.state_machine.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(30));
    assert_eq!(
        dst.state_machine
            .get_current_snapshot()
            .await
            .unwrap()
            .unwrap()
            .meta,
        meta
    );
}
