//! `Registry`: every read of the replicated state, straight from this node's RocksDB.
//!
//! Lookups go through the secondary-index column families (product by name or key; device by
//! name, user name, client id, product and status) and totals come from counters that `apply`
//! keeps, so a page of a product's devices reads `limit` records whatever the fleet size. Only a
//! fuzzy (substring) name filter has to walk the name index.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rocksdb::{DB, Direction, IteratorMode};
use serde::de::DeserializeOwned;

use crate::keys;
use crate::model::{Device, Product, RetainedRecord, Rule, SessionRecord, User};
use crate::typ::LogId;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("rocksdb read failed: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored record is malformed: {0}")]
    Decode(#[from] crate::codec::Error),
}

type Result<T> = std::result::Result<T, ReadError>;

/// One page of a listing and the total number of matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[derive(Debug, Clone, Default)]
pub struct ProductQuery {
    pub offset: usize,
    pub limit: usize,
    /// Substring of the product name.
    pub name_like: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeviceQuery {
    pub offset: usize,
    pub limit: usize,
    pub product_id: Option<u64>,
    /// API status: 0 disabled, 1 inactive, 2 offline, 3 online.
    pub status: Option<u8>,
    /// Substring of the device name.
    pub name_like: Option<String>,
}

/// Devices by API status, for one product or all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounts {
    pub by_status: [u64; 4],
}

impl DeviceCounts {
    pub fn total(&self) -> u64 {
        self.by_status.iter().sum()
    }
    pub fn online(&self) -> u64 {
        self.by_status[3]
    }
    pub fn offline(&self) -> u64 {
        self.by_status[2]
    }
}

#[derive(Clone)]
pub struct Registry {
    db: Arc<DB>,
    installing: Arc<AtomicBool>,
}

impl Registry {
    pub(crate) fn new(db: Arc<DB>, installing: Arc<AtomicBool>) -> Self {
        Registry { db, installing }
    }

    /// Whether a snapshot is replacing the state right now (reads would see a partial state;
    /// the node reports not ready meanwhile).
    pub fn installing(&self) -> bool {
        self.installing.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(crate) fn db(&self) -> &Arc<DB> {
        &self.db
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("column family opened in open()")
    }

    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(self.cf(cf), key)?)
    }

    fn get_value<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        Ok(match self.get(cf, key)? {
            Some(v) => Some(crate::codec::decode(&v)?),
            None => None,
        })
    }

    /// Follows an index entry (`key` -> big-endian id) to the record in `records`.
    /// Every record of `cf`, in key order.
    fn all<T: DeserializeOwned>(&self, cf: &str) -> Result<Vec<T>> {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::Start)
            .map(|r| Ok(crate::codec::decode(&r?.1)?))
            .collect()
    }

    fn by_index<T: DeserializeOwned>(
        &self,
        index: &str,
        key: &[u8],
        records: &str,
    ) -> Result<Option<T>> {
        match self.get(index, key)? {
            Some(id) => self.get_value(records, &id),
            None => Ok(None),
        }
    }

    /// Keys of `cf` that start with `prefix`, in order.
    fn prefixed(&self, cf: &str, prefix: Vec<u8>) -> impl Iterator<Item = Result<Box<[u8]>>> + '_ {
        self.db
            .iterator_cf(self.cf(cf), IteratorMode::From(&prefix, Direction::Forward))
            .map(|r| r.map(|(k, _)| k).map_err(ReadError::from))
            .take_while(move |r| r.as_ref().map_or(true, |k| k.starts_with(&prefix)))
    }

    pub fn last_applied(&self) -> Result<Option<LogId>> {
        Ok(self
            .get_value::<Option<LogId>>(keys::SM_META, keys::LAST_APPLIED)?
            .flatten())
    }

    /// A digest of the replicated state and the index it was taken at, from one consistent
    /// RocksDB snapshot: replicas at the same index must have the same digest. A full scan, for
    /// tests and diagnostics. Node-local bookkeeping (applied index, membership, snapshot
    /// metadata) is left out.
    pub fn digest(&self) -> Result<(u64, String)> {
        use sha2::Digest;
        let snap = self.db.snapshot();
        let applied = match snap.get_cf(self.cf(keys::SM_META), keys::LAST_APPLIED)? {
            Some(v) => crate::codec::decode::<Option<LogId>>(&v)?.map_or(0, |l| l.index),
            None => 0,
        };
        let local = [keys::LAST_APPLIED, keys::LAST_MEMBERSHIP];
        let mut h = sha2::Sha256::new();
        for name in keys::SM_DATA {
            h.update(name.as_bytes());
            for kv in snap.iterator_cf(self.cf(name), IteratorMode::Start) {
                let (k, v) = kv?;
                if *name == keys::SM_META && local.contains(&&*k) {
                    continue;
                }
                h.update((k.len() as u64).to_be_bytes());
                h.update(&k);
                h.update((v.len() as u64).to_be_bytes());
                h.update(&v);
            }
        }
        Ok((applied, hex::encode(h.finalize())))
    }

    pub fn token_secret(&self) -> Result<Option<Vec<u8>>> {
        self.get(keys::SM_META, keys::TOKEN_SECRET)
    }

    pub fn user(&self, username: &str) -> Result<Option<User>> {
        self.get_value(keys::USERS, username.as_bytes())
    }

    pub fn users(&self) -> Result<Vec<User>> {
        self.all(keys::USERS)
    }

    pub fn product(&self, id: u64) -> Result<Option<Product>> {
        self.get_value(keys::PRODUCTS, &keys::id(id))
    }

    pub fn product_by_key(&self, product_key: &str) -> Result<Option<Product>> {
        self.by_index(keys::PRODUCT_BY_KEY, product_key.as_bytes(), keys::PRODUCTS)
    }

    pub fn product_by_name(&self, name: &str) -> Result<Option<Product>> {
        self.by_index(keys::PRODUCT_BY_NAME, name.as_bytes(), keys::PRODUCTS)
    }

    /// Products in id order, optionally filtered by a name substring.
    pub fn products(&self, q: &ProductQuery) -> Result<Page<Product>> {
        let mut items = Vec::new();
        let mut total = 0u64;
        for r in self
            .db
            .iterator_cf(self.cf(keys::PRODUCTS), IteratorMode::Start)
        {
            let p: Product = crate::codec::decode(&r?.1)?;
            if q.name_like.as_deref().is_some_and(|n| !p.name.contains(n)) {
                continue;
            }
            if total as usize >= q.offset && items.len() < q.limit {
                items.push(p);
            }
            total += 1;
        }
        Ok(Page { items, total })
    }

    pub fn rule(&self, id: u64) -> Result<Option<Rule>> {
        self.get_value(keys::RULES, &keys::id(id))
    }

    /// Every rule, in id order (a node compiles them all at start and after a snapshot).
    pub fn rules(&self) -> Result<Vec<Rule>> {
        self.all(keys::RULES)
    }

    /// Device counters for one product, or for all with `product_id` 0.
    pub fn device_counts(&self, product_id: u64) -> Result<DeviceCounts> {
        let mut c = DeviceCounts::default();
        for s in 0..4u8 {
            c.by_status[usize::from(s)] = self
                .get(keys::SM_META, &keys::counter(product_id, s))?
                .and_then(|v| keys::parse_id(&v))
                .unwrap_or(0);
        }
        Ok(c)
    }

    pub fn device(&self, id: u64) -> Result<Option<Device>> {
        self.get_value(keys::DEVICES, &keys::id(id))
    }

    pub fn device_by_name(&self, name: &str) -> Result<Option<Device>> {
        self.by_index(keys::DEVICE_BY_NAME, name.as_bytes(), keys::DEVICES)
    }

    pub fn device_by_username(&self, username: &str) -> Result<Option<Device>> {
        self.by_index(keys::DEVICE_BY_USERNAME, username.as_bytes(), keys::DEVICES)
    }

    pub fn device_by_client_id(&self, client_id: &str) -> Result<Option<Device>> {
        self.by_index(
            keys::DEVICE_BY_CLIENT_ID,
            client_id.as_bytes(),
            keys::DEVICES,
        )
    }

    /// A page of devices, by id, filtered by product, status and name substring.
    pub fn devices(&self, q: &DeviceQuery) -> Result<Page<Device>> {
        if let Some(like) = &q.name_like {
            return self.devices_by_name_scan(q, like);
        }
        let counts = self.device_counts(q.product_id.unwrap_or(0))?;
        let with_status = |s: u8| counts.by_status.get(usize::from(s)).copied().unwrap_or(0);
        let (ids, total) = match (q.product_id, q.status) {
            (Some(p), None) => {
                let total = counts.total();
                let ids = self.index_page(keys::DEVICE_BY_PRODUCT, &keys::id(p), total, q)?;
                (ids, total)
            }
            (None, Some(s)) => {
                let total = with_status(s);
                (
                    self.index_page(keys::DEVICE_BY_STATUS, &[s], total, q)?,
                    total,
                )
            }
            (None, None) => {
                let total = counts.total();
                (self.index_page(keys::DEVICES, &[], total, q)?, total)
            }
            // No index covers both: walk the product's devices and check each one's status.
            (Some(p), Some(s)) => {
                let mut ids = Vec::with_capacity(q.limit);
                let matching = self
                    .prefixed(keys::DEVICE_BY_PRODUCT, keys::id(p).to_vec())
                    .map(|k| k.map(|k| keys::parse_id(&k[8..]).unwrap_or(0)))
                    .filter(|r| match r {
                        Ok(id) => self
                            .device(*id)
                            .ok()
                            .flatten()
                            .is_some_and(|d| d.status() == s),
                        Err(_) => true,
                    });
                for id in matching.skip(q.offset).take(q.limit) {
                    ids.push(id?);
                }
                (ids, with_status(s))
            }
        };
        let mut items = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(d) = self.device(id)? {
                items.push(d);
            }
        }
        Ok(Page { items, total })
    }

    /// The ids at `q.offset .. q.offset + q.limit` among the `total` keys of `cf` under
    /// `prefix` (an id is a key's last 8 bytes). Skipped keys are stepped over in place, from
    /// whichever end of the range is nearer, so the last page costs what the first does and
    /// no page walks more than half the range.
    fn index_page(&self, cf: &str, prefix: &[u8], total: u64, q: &DeviceQuery) -> Result<Vec<u64>> {
        let total = usize::try_from(total).unwrap_or(usize::MAX);
        let n = q.limit.min(total.saturating_sub(q.offset));
        let mut ids = Vec::with_capacity(n);
        if n == 0 {
            return Ok(ids);
        }
        let id_of = |k: &[u8]| keys::parse_id(&k[k.len().saturating_sub(8)..]).unwrap_or(0);
        let mut it = self.db.raw_iterator_cf(self.cf(cf));
        let after = total - q.offset - n;
        let (mut skip, forward) = if q.offset <= after {
            it.seek(prefix);
            (q.offset, true)
        } else {
            match keys::prefix_end(prefix) {
                Some(end) => it.seek_for_prev(&end),
                None => it.seek_to_last(),
            }
            if it.key().is_some_and(|k| !k.starts_with(prefix)) {
                it.prev();
            }
            (after, false)
        };
        while ids.len() < n {
            let Some(key) = it.key().filter(|k| k.starts_with(prefix)) else {
                break;
            };
            if skip > 0 {
                skip -= 1;
            } else {
                ids.push(id_of(key));
            }
            if forward { it.next() } else { it.prev() }
        }
        it.status()?;
        if !forward {
            ids.reverse();
        }
        Ok(ids)
    }

    fn devices_by_name_scan(&self, q: &DeviceQuery, like: &str) -> Result<Page<Device>> {
        let mut items = Vec::new();
        let mut total = 0u64;
        for r in self
            .db
            .iterator_cf(self.cf(keys::DEVICE_BY_NAME), IteratorMode::Start)
        {
            let (name, id) = r?;
            if !String::from_utf8_lossy(&name).contains(like) {
                continue;
            }
            let Some(d) = self.get_value::<Device>(keys::DEVICES, &id)? else {
                continue;
            };
            if q.product_id.is_some_and(|p| d.product_id != p)
                || q.status.is_some_and(|s| d.status() != s)
            {
                continue;
            }
            if total as usize >= q.offset && items.len() < q.limit {
                items.push(d);
            }
            total += 1;
        }
        items.sort_by_key(|d| d.id);
        Ok(Page { items, total })
    }

    pub fn session(&self, client_id: &str) -> Result<Option<SessionRecord>> {
        self.get_value(keys::SESSIONS, client_id.as_bytes())
    }

    pub fn sessions(&self) -> Result<Vec<SessionRecord>> {
        self.all(keys::SESSIONS)
    }

    pub fn retained(&self) -> Result<Vec<RetainedRecord>> {
        self.all(keys::RETAINED)
    }
}
