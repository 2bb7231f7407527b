//! Password hashing and verification, kept from becoming a way to exhaust the node.
//!
//! Argon2 is slow and memory-hard on purpose (19 MiB and tens of milliseconds per check), so an
//! unbounded stream of wrong passwords would take every core and, on tokio's blocking pool of up
//! to 512 threads, gigabytes of memory. Three things bound it:
//!
//! - Argon2 runs on one dedicated thread per core (`Pool`), each computing in a memory area it
//!   allocated once, so concurrent checks cannot multiply memory or threads; callers wait for a
//!   free thread for a bounded time.
//! - `FailedLogins` counts wrong passwords per user name and per source address in one-minute
//!   windows; past `failed_login_limit`, further attempts get HTTP 429 before any hashing.
//! - A login for an unknown user verifies a dummy hash, so its timing matches a wrong password
//!   for a real user and does not reveal which user names exist.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use tokio::sync::{Semaphore, oneshot};

use crate::error::ApiError;

/// How long a verified Basic credential is remembered.
const CACHE_TTL: Duration = Duration::from_secs(60);
/// How long a request waits for a hashing thread before it is turned away.
const SLOT_WAIT: Duration = Duration::from_secs(10);
/// The window failed logins are counted in.
const WINDOW: Duration = Duration::from_secs(60);
/// Keys tracked at most (user names plus addresses); beyond it new keys go uncounted, and the
/// hashing threads still bound the cost.
const MAX_TRACKED: usize = 100_000;
/// Argon2 memory a stored hash may ask for, in 1 KiB blocks: hashes this node did not write
/// (a tampered store) cannot make a check allocate without bound.
const MAX_BLOCKS: usize = 256 * 1024;

/// (user name, SHA-256 of the password).
type CredentialKey = (String, [u8; 32]);

/// Verified Basic credentials, remembered by a SHA-256 of the password (never the password).
#[derive(Default)]
pub(crate) struct CredentialCache {
    /// (user, password digest) → the stored hash the password was verified against, and when.
    entries: parking_lot::Mutex<HashMap<CredentialKey, (String, Instant)>>,
}

impl CredentialCache {
    /// Whether `digest` was verified against `stored_hash` recently. Keyed on the stored hash,
    /// so a password changed on any node (a new hash) misses at once: no invalidation needed.
    pub(crate) fn verified(&self, user: &str, digest: &[u8; 32], stored_hash: &str) -> bool {
        let entries = self.entries.lock();
        entries
            .get(&(user.to_string(), *digest))
            .is_some_and(|(hash, at)| hash == stored_hash && at.elapsed() < CACHE_TTL)
    }

    pub(crate) fn put(&self, user: &str, digest: [u8; 32], stored_hash: String) {
        let mut entries = self.entries.lock();
        entries.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
        entries.insert((user.to_string(), digest), (stored_hash, Instant::now()));
    }
}

pub(crate) struct Passwords {
    pool: Pool,
    failures: FailedLogins,
}

impl Passwords {
    pub(crate) fn new(failed_login_limit: u32) -> Self {
        Passwords {
            pool: Pool::start(),
            failures: FailedLogins::new(failed_login_limit),
        }
    }

    pub(crate) async fn hash(&self, password: &str) -> Result<String, ApiError> {
        let password = password.to_string();
        self.pool
            .run(move |blocks| hash_with(blocks, &password))
            .await?
    }

    /// Checks `password` for `user` (whose stored hash is `hash`, `None` if there is no such
    /// user) coming from `addr`. `Ok(false)` is a wrong password or an unknown user alike.
    /// Whether `password` matches `hash`, outside the failed-login accounting: the node's own
    /// check, not a client's attempt.
    pub(crate) async fn matches(&self, password: &str, hash: &str) -> Result<bool, ApiError> {
        let (password, hash) = (password.to_string(), hash.to_string());
        self.pool
            .run(move |blocks| verify_with(blocks, &password, &hash))
            .await
    }

    pub(crate) async fn verify(
        &self,
        user: &str,
        addr: Option<IpAddr>,
        password: &str,
        hash: Option<String>,
    ) -> Result<bool, ApiError> {
        // The attempt counts as a failure from the start, so concurrent attempts cannot all
        // pass the check before any of them fails; a correct password takes it back.
        if let Err(wait) = self.failures.begin(user, addr) {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many failed logins for this user or address; retry in {} s",
                    wait.as_secs().max(1)
                ),
                retry_after: wait.as_secs().max(1),
            });
        }
        let password = password.to_string();
        let ok = self
            .pool
            .run(move |blocks| match hash {
                Some(h) => verify_with(blocks, &password, &h),
                None => {
                    let _ = verify_with(blocks, &password, dummy_hash());
                    false
                }
            })
            .await?;
        if ok {
            self.failures.succeeded(user, addr);
        }
        Ok(ok)
    }
}

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// One argon2 thread per core, each with the memory blocks it computes in, allocated once.
struct Pool {
    /// One permit per thread: a job is only sent when a thread is free for it.
    slots: Arc<Semaphore>,
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Pool {
    fn start() -> Pool {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || {
                    let mut blocks = Vec::new();
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(&mut blocks),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Pool {
            slots: Arc::new(Semaphore::new(threads)),
            jobs: Mutex::new(tx),
        }
    }

    /// Runs `job` on a free argon2 thread, waiting up to `SLOT_WAIT` for one.
    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = tokio::time::timeout(SLOT_WAIT, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| ApiError::TooManyRequests {
                message: "too many password checks in progress; retry shortly".into(),
                retry_after: 1,
            })?
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |blocks| {
            let _ = tx.send(job(blocks));
            drop(permit);
        });
        let lost = || ApiError::Internal("the password hashing thread stopped".into());
        self.jobs
            .lock()
            .map_err(|_| lost())?
            .send(job)
            .map_err(|_| lost())?;
        rx.await.map_err(|_| lost())
    }
}

/// The memory for `params`, grown (never shrunk) in the thread's own blocks.
fn blocks_for<'a>(blocks: &'a mut Vec<Block>, params: &Params) -> Option<&'a mut [Block]> {
    let n = params.block_count();
    if n > MAX_BLOCKS {
        return None;
    }
    if blocks.len() < n {
        blocks.resize(n, Block::default());
    }
    Some(&mut blocks[..n])
}

/// A PHC string for `password`: Argon2id with the crate's default parameters and a random salt.
fn hash_with(blocks: &mut Vec<Block>, password: &str) -> Result<String, ApiError> {
    let failed =
        |e: &dyn std::fmt::Display| ApiError::Internal(format!("password hashing failed: {e}"));
    let params = Params::default();
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_raw = salt.decode_b64(&mut salt_bytes).map_err(|e| failed(&e))?;
    let mut out = vec![0u8; params.output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN)];
    let memory = blocks_for(blocks, &params).ok_or_else(|| failed(&"parameters too large"))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(password.as_bytes(), salt_raw, &mut out, memory)
        .map_err(|e| failed(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| failed(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| failed(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the PHC string `phc`.
fn verify_with(blocks: &mut Vec<Block>, password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (&hash.hash, &hash.salt) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) =
        (Algorithm::try_from(hash.algorithm), Params::try_from(&hash))
    else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let Some(memory) = blocks_for(blocks, &params) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, memory)
        .is_ok()
        && bool::from(out.ct_eq(expected.as_bytes()))
}

/// A hash of a random password with the same parameters as real ones.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        let random: [u8; 16] = rand::random();
        hash_with(&mut Vec::new(), &hex::encode(random)).unwrap_or_default()
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

/// Failed logins per key in fixed windows: (failures, window start).
struct FailedLogins {
    limit: u32,
    counts: parking_lot::Mutex<HashMap<Key, (u32, Instant)>>,
}

impl FailedLogins {
    fn new(limit: u32) -> Self {
        FailedLogins {
            limit,
            counts: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    fn keys(user: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::User(user.to_string())).chain(addr.map(Key::Addr))
    }

    /// Counts an attempt by `user` from `addr` as failed, unless either has used up its window:
    /// then nothing is counted and the answer is how long until the window ends.
    fn begin(&self, user: &str, addr: Option<IpAddr>) -> Result<(), Duration> {
        let mut counts = self.counts.lock();
        let blocked = Self::keys(user, addr)
            .filter_map(|k| {
                let (n, start) = counts.get(&k)?;
                let left = WINDOW.checked_sub(start.elapsed())?;
                (*n >= self.limit).then_some(left)
            })
            .max();
        if let Some(wait) = blocked {
            return Err(wait);
        }
        if counts.len() >= MAX_TRACKED {
            counts.retain(|_, (_, start)| start.elapsed() < WINDOW);
        }
        for key in Self::keys(user, addr) {
            if counts.len() >= MAX_TRACKED && !counts.contains_key(&key) {
                continue;
            }
            let (n, start) = counts.entry(key).or_insert((0, Instant::now()));
            if start.elapsed() >= WINDOW {
                (*n, *start) = (0, Instant::now());
            }
            *n += 1;
        }
        Ok(())
    }

    /// The attempt had the right password: it is not a failure, and the user's earlier failures
    /// are forgiven (the address's are not).
    fn succeeded(&self, user: &str, addr: Option<IpAddr>) {
        let mut counts = self.counts.lock();
        counts.remove(&Key::User(user.to_string()));
        if let Some((n, _)) = addr.and_then(|a| counts.get_mut(&Key::Addr(a))) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_salted_and_verify() {
        let mut blocks = Vec::new();
        let a = hash_with(&mut blocks, "123456").unwrap();
        let b = hash_with(&mut blocks, "123456").unwrap();
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert!(verify_with(&mut blocks, "123456", &a));
        assert!(!verify_with(&mut blocks, "1234567", &a));
        assert!(!verify_with(&mut blocks, "123456", "not a hash"));
        assert!(!verify_with(&mut blocks, "x", dummy_hash()));
        // Interchangeable with the argon2 crate's own hashing and verification.
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        let theirs = Argon2::default()
            .hash_password(
                b"pw",
                &SaltString::generate(&mut argon2::password_hash::rand_core::OsRng),
            )
            .unwrap()
            .to_string();
        assert!(verify_with(&mut blocks, "pw", &theirs));
        assert!(
            Argon2::default()
                .verify_password(b"123456", &PasswordHash::new(&a).unwrap())
                .is_ok()
        );
        // One allocation of the default parameters' size, reused.
        assert_eq!(blocks.len(), Params::default().block_count());
    }

    #[test]
    fn failures_block_per_user_and_per_address() {
        let f = FailedLogins::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(f.begin("root", Some(a)).is_ok());
        }
        let wait = f
            .begin("root", Some(b))
            .expect_err("the user is blocked from anywhere");
        assert!(wait <= WINDOW && wait > WINDOW - Duration::from_secs(5));
        assert!(
            f.begin("alice", Some(a)).is_err(),
            "the address is blocked too"
        );
        assert!(f.begin("alice", Some(b)).is_ok());
        f.succeeded("alice", Some(b));
        f.succeeded("root", Some(b));
        assert!(
            f.begin("root", Some(b)).is_ok(),
            "a correct password forgives"
        );
        assert!(f.begin("root", Some(a)).is_err(), "but not the address");
        // b: alice's success was refunded and root's attempt counted, so 1 of 3 is used.
        assert!(f.begin("carol", Some(b)).is_ok());
        assert!(f.begin("dave", Some(b)).is_ok());
        assert!(f.begin("eve", Some(b)).is_err());
    }

    #[tokio::test]
    async fn jobs_run_one_per_core_at_a_time() {
        let p = Arc::new(Passwords::new(1000));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let jobs = (0..cores * 4).map(|_| {
            let (p, running, peak) = (p.clone(), running.clone(), peak.clone());
            tokio::spawn(async move {
                p.pool
                    .run(move |_| {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        std::thread::sleep(Duration::from_millis(20));
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
            })
        });
        for j in futures::future::join_all(jobs).await {
            j.unwrap().unwrap();
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), cores);
    }
}
