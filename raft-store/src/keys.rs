//! Column families and key encoding, in one place.
//!
//! Numeric ids are big-endian so that RocksDB's bytewise order is numeric order: iterating
//! `devices` yields devices by id, and a `device_by_product` prefix scan yields one product's
//! devices by id. Values are encoded by `codec.rs`.

/// The raft log: `u64` index -> entry.
pub const LOGS: &str = "logs";
/// Raft's own state: vote, committed and last purged log id.
pub const RAFT_META: &str = "raft_meta";
/// State machine bookkeeping: last applied log id, membership, id counters, device counters,
/// the token secret, the current snapshot's meta.
pub const SM_META: &str = "sm_meta";
pub const USERS: &str = "users";
pub const PRODUCTS: &str = "products";
pub const PRODUCT_BY_NAME: &str = "product_by_name";
pub const PRODUCT_BY_KEY: &str = "product_by_key";
pub const DEVICES: &str = "devices";
pub const DEVICE_BY_NAME: &str = "device_by_name";
pub const DEVICE_BY_USERNAME: &str = "device_by_username";
pub const DEVICE_BY_CLIENT_ID: &str = "device_by_client_id";
/// `product id ++ device id` -> empty: a product's devices in id order.
pub const DEVICE_BY_PRODUCT: &str = "device_by_product";
/// `status byte ++ device id` -> empty: devices by API status (0 disabled .. 3 online).
pub const DEVICE_BY_STATUS: &str = "device_by_status";
pub const SESSIONS: &str = "sessions";
pub const RETAINED: &str = "retained";
/// Rule engine rules by id.
pub const RULES: &str = "rules";

/// Column families that hold state-machine data, in snapshot order. The snapshot writes each
/// CF's index in this list as its tag, so the order must never change (append only).
pub const SM_DATA: &[&str] = &[
    SM_META,
    USERS,
    PRODUCTS,
    PRODUCT_BY_NAME,
    PRODUCT_BY_KEY,
    DEVICES,
    DEVICE_BY_NAME,
    DEVICE_BY_USERNAME,
    DEVICE_BY_CLIENT_ID,
    DEVICE_BY_PRODUCT,
    DEVICE_BY_STATUS,
    SESSIONS,
    RETAINED,
    RULES,
];

/// Node-local, outside raft and snapshots: messages queued in offline sessions (`queues.rs`).
pub const QUEUES: &str = "queues";

/// Every column family the database opens.
pub fn all() -> impl Iterator<Item = &'static str> {
    [LOGS, RAFT_META, QUEUES]
        .into_iter()
        .chain(SM_DATA.iter().copied())
}

// Keys in RAFT_META.
pub const VOTE: &[u8] = b"vote";
pub const COMMITTED: &[u8] = b"committed";
pub const LAST_PURGED: &[u8] = b"last_purged";
/// Set while a received snapshot replaces the state machine (`state_machine/snapshot.rs`).
pub const INSTALLING: &[u8] = b"installing";

// Keys in SM_META.
pub const LAST_APPLIED: &[u8] = b"last_applied";
pub const LAST_MEMBERSHIP: &[u8] = b"last_membership";
pub const NEXT_PRODUCT_ID: &[u8] = b"next_product_id";
pub const NEXT_DEVICE_ID: &[u8] = b"next_device_id";
pub const NEXT_RULE_ID: &[u8] = b"next_rule_id";
pub const TOKEN_SECRET: &[u8] = b"token_secret";

/// Device counters in SM_META: `counter:` ++ product id (0 = all products) ++ status byte
/// (0..=3) -> u64. Kept by `apply` so list totals never scan.
pub fn counter(product_id: u64, status: u8) -> Vec<u8> {
    let mut k = b"counter:".to_vec();
    k.extend_from_slice(&product_id.to_be_bytes());
    k.push(status);
    k
}

/// The last entry applied from a writer, in SM_META: `writer:` ++ origin node id ->
/// (epoch, seq, result), so a retried entry is answered instead of applied twice.
pub fn writer(origin: u64) -> Vec<u8> {
    let mut k = b"writer:".to_vec();
    k.extend_from_slice(&origin.to_be_bytes());
    k
}

pub fn id(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

/// Decodes a big-endian id; `None` if the slice is not 8 bytes.
pub fn parse_id(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

/// The smallest key greater than every key starting with `prefix`; `None` when there is none
/// (an empty or all-0xff prefix).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|b| *b != 0xff)?;
    let mut end = prefix[..=last].to_vec();
    end[last] += 1;
    Some(end)
}

pub fn pair(a: u64, b: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&a.to_be_bytes());
    k[8..].copy_from_slice(&b.to_be_bytes());
    k
}

pub fn status_key(status: u8, device: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = status;
    k[1..].copy_from_slice(&device.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_endian_ids_sort_numerically() {
        let mut keys: Vec<[u8; 8]> = [256u64, 1, 65_536, 2].iter().map(|i| id(*i)).collect();
        keys.sort();
        let ids: Vec<u64> = keys.iter().map(|k| parse_id(k).unwrap()).collect();
        assert_eq!(ids, vec![1, 2, 256, 65_536]);
        assert!(pair(1, u64::MAX) < pair(2, 0), "product prefix sorts first");
        assert_eq!(parse_id(b"short"), None);
    }
}
