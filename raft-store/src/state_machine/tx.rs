//! `Tx`: the write set of one `apply` call. Writes go to a RocksDB `WriteBatch` (committed once,
//! durably, with the applied log id) and to an overlay that later commands of the same call read
//! through, so a batch of commands behaves exactly like the same commands applied one by one.

use std::collections::HashMap;

use rocksdb::{DB, WriteBatch};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::applied::Applied;
use crate::keys;
use crate::typ::StorageIOError;

pub(crate) type IoResult<T> = Result<T, StorageIOError>;

pub(crate) struct Tx<'a> {
    db: &'a DB,
    pub(crate) batch: WriteBatch,
    overlay: HashMap<(&'static str, Vec<u8>), Option<Vec<u8>>>,
    /// Published once the write set is durable (`applied.rs`).
    pub(crate) effects: Vec<Applied>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageIOError {
    StorageIOError::read_state_machine(&e)
}

impl<'a> Tx<'a> {
    pub(crate) fn new(db: &'a DB) -> Self {
        Tx {
            db,
            batch: WriteBatch::default(),
            overlay: HashMap::new(),
            effects: Vec::new(),
        }
    }

    pub(crate) fn get(&self, cf: &'static str, key: &[u8]) -> IoResult<Option<Vec<u8>>> {
        if let Some(v) = self.overlay.get(&(cf, key.to_vec())) {
            return Ok(v.clone());
        }
        let handle = self
            .db
            .cf_handle(cf)
            .expect("column family opened in open()");
        self.db.get_cf(handle, key).map_err(read_err)
    }

    pub(crate) fn get_value<T: DeserializeOwned>(
        &self,
        cf: &'static str,
        key: &[u8],
    ) -> IoResult<Option<T>> {
        match self.get(cf, key)? {
            Some(v) => crate::codec::decode(&v).map(Some).map_err(read_err),
            None => Ok(None),
        }
    }

    /// Every record of `cf` as this write set sees it (the store with the overlay on top): for
    /// invariants over a small column family (the users).
    pub(crate) fn values<T: DeserializeOwned>(&self, cf: &'static str) -> IoResult<Vec<T>> {
        let handle = self
            .db
            .cf_handle(cf)
            .expect("column family opened in open()");
        let mut merged = std::collections::BTreeMap::new();
        for item in self.db.iterator_cf(handle, rocksdb::IteratorMode::Start) {
            let (k, v) = item.map_err(read_err)?;
            merged.insert(k.to_vec(), v.to_vec());
        }
        for ((c, k), v) in &self.overlay {
            if *c == cf {
                match v {
                    Some(v) => merged.insert(k.clone(), v.clone()),
                    None => merged.remove(k),
                };
            }
        }
        merged
            .values()
            .map(|v| crate::codec::decode(v).map_err(read_err))
            .collect()
    }

    pub(crate) fn effect(&mut self, e: Applied) {
        self.effects.push(e);
    }

    pub(crate) fn exists(&self, cf: &'static str, key: &[u8]) -> IoResult<bool> {
        Ok(self.get(cf, key)?.is_some())
    }

    pub(crate) fn put(&mut self, cf: &'static str, key: &[u8], value: Vec<u8>) {
        let handle = self
            .db
            .cf_handle(cf)
            .expect("column family opened in open()");
        self.batch.put_cf(handle, key, &value);
        self.overlay.insert((cf, key.to_vec()), Some(value));
    }

    pub(crate) fn put_value<T: Serialize>(&mut self, cf: &'static str, key: &[u8], value: &T) {
        let bytes = crate::codec::encode(value).expect("records always encode");
        self.put(cf, key, bytes);
    }

    pub(crate) fn delete(&mut self, cf: &'static str, key: &[u8]) {
        let handle = self
            .db
            .cf_handle(cf)
            .expect("column family opened in open()");
        self.batch.delete_cf(handle, key);
        self.overlay.insert((cf, key.to_vec()), None);
    }

    pub(crate) fn counter(&self, key: &[u8]) -> IoResult<u64> {
        Ok(self
            .get(keys::SM_META, key)?
            .and_then(|v| keys::parse_id(&v))
            .unwrap_or(0))
    }

    pub(crate) fn add_counter(&mut self, key: &[u8], delta: i64) -> IoResult<()> {
        let v = self.counter(key)?.saturating_add_signed(delta);
        self.put(keys::SM_META, key, v.to_be_bytes().to_vec());
        Ok(())
    }

    /// Takes the next value of an id sequence (ids start at 1).
    pub(crate) fn next_id(&mut self, key: &[u8]) -> IoResult<u64> {
        let id = self.counter(key)?.max(1);
        self.put(keys::SM_META, key, (id + 1).to_be_bytes().to_vec());
        Ok(id)
    }
}
