//! openraft's storage conformance suite against RealMQ's RocksDB log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use realmq_raft_store::typ::StorageError;
use realmq_raft_store::{LogStore, StateMachineStore, TypeConfig};

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = realmq_raft_store::open(dir.path()).expect("open store");
        Ok((dir, store.log, store.state_machine))
    }
}

#[test]
fn openraft_storage_suite_on_rocksdb() {
    Suite::test_all(RocksBuilder).expect("storage suite");
}
