//! How every value in RocksDB is encoded: raft log entries, the vote and committed marks,
//! records, indexes' targets and snapshot metadata.
//!
//! postcard, a compact binary serde format: each CONNECT writes its session record twice (in the
//! raft entry and in the state machine), so the encoding's size is paid per connection, in the
//! memtable and on disk. postcard does not describe itself; records are only ever read back by
//! this crate, with the types that wrote them.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub type Error = postcard::Error;

pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(value)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes)
}

/// Encoded size without encoding into memory (batches are capped by bytes).
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::serialize_with_flavor::<T, _, usize>(value, postcard::ser_flavors::Size::default())
        .unwrap_or(0)
}
