//! `ConnLink`: how a session reaches the connection that owns it, from any thread.
//!
//! Deliveries wake the connection's task through a `Notify`; wake-ups coalesce, so a burst of
//! deliveries costs one wake and one batched write. (Writing each delivery from the publisher's
//! task instead was measured: it lowers nothing at low load and raises p50 and p99 when many
//! publishers' packets arrive together, because the subscriber's writes stop being batched.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::message::CloseReason;

/// The link from a session to the connection that currently owns it.
#[derive(Debug)]
pub struct ConnLink {
    pub conn_id: u64,
    /// What the connection said about itself, for `GET /api/v1/clients`.
    pub info: ConnInfo,
    /// Wakes the connection's writer task: queued messages, a freed window, or a close request.
    notify: Notify,
    close: Mutex<Option<CloseReason>>,
    /// Backpressure: set while the session's queue is congested (`SessionState::congested`);
    /// publishers that fed it wait on `drained` before reading more (`mqtt/driver.rs`).
    congested: AtomicBool,
    drained: Notify,
    /// Milliseconds since `EPOCH` until which congestion here pauses nobody: the connection
    /// once made no progress for `STUCK_AFTER`, so it is slow rather than busy, and its queue
    /// drops as it would without backpressure instead of holding its publishers back.
    slow_until: AtomicU64,
    /// Bumped whenever the connection writes deliveries: a pause goes on while this moves.
    progress: AtomicU64,
}

/// A subscriber that writes nothing for this long is stuck: its publishers go on.
const STUCK_AFTER: Duration = Duration::from_millis(100);
/// The longest a publisher waits for a congested subscriber that is draining, but slowly.
pub const MAX_PAUSE: Duration = Duration::from_secs(5);
/// How long a subscriber that did not drain within `MAX_PAUSE` pauses no publisher.
const SLOW_FOR: Duration = Duration::from_secs(1);

static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

/// A connection as operators look it up.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnInfo {
    pub peer: Option<std::net::SocketAddr>,
    pub protocol: Option<crate::message::Protocol>,
    pub keep_alive: u16,
    pub clean_start: bool,
    /// Milliseconds since the Unix epoch.
    pub connected_at: i64,
}

impl ConnLink {
    pub fn new(conn_id: u64) -> Arc<ConnLink> {
        ConnLink::with_info(conn_id, ConnInfo::default())
    }

    pub fn with_info(conn_id: u64, info: ConnInfo) -> Arc<ConnLink> {
        Arc::new(ConnLink {
            conn_id,
            info,
            notify: Notify::new(),
            close: Mutex::new(None),
            congested: AtomicBool::new(false),
            drained: Notify::new(),
            slow_until: AtomicU64::new(0),
            progress: AtomicU64::new(0),
        })
    }

    /// Marks the queue congested; false if this connection is known slow and pauses nobody.
    pub fn congest(&self) -> bool {
        if now_ms() < self.slow_until.load(Ordering::Relaxed) {
            return false;
        }
        self.congested.store(true, Ordering::Relaxed);
        true
    }

    pub fn is_congested(&self) -> bool {
        self.congested.load(Ordering::Relaxed)
    }

    /// The queue drained (or the connection ended): paused publishers go on.
    pub fn release(&self) {
        if self.congested.swap(false, Ordering::Relaxed) {
            self.drained.notify_waiters();
        }
    }

    /// The connection wrote deliveries (called once per flush that wrote any).
    pub fn progressed(&self) {
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until the queue drains. A connection that writes nothing for `STUCK_AFTER`, or
    /// has not drained after `MAX_PAUSE`, counts as slow for `SLOW_FOR`: its queue drops
    /// instead of holding publishers back.
    pub async fn until_drained(&self) {
        let drained = self.drained.notified();
        tokio::pin!(drained);
        // Registered before the check, so a release in between is not missed.
        drained.as_mut().enable();
        if !self.is_congested() {
            return;
        }
        let started = Instant::now();
        loop {
            let seen = self.progress.load(Ordering::Relaxed);
            if tokio::time::timeout(STUCK_AFTER, &mut drained)
                .await
                .is_ok()
            {
                return;
            }
            let moving = self.progress.load(Ordering::Relaxed) != seen;
            if !moving || started.elapsed() >= MAX_PAUSE {
                break;
            }
        }
        let until = now_ms() + SLOW_FOR.as_millis() as u64;
        self.slow_until.store(until, Ordering::Relaxed);
        self.release();
    }

    /// Wakes the writer. Wake-ups coalesce: many deliveries before the writer runs cost one wake.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    pub async fn woken(&self) {
        self.notify.notified().await;
    }

    /// Asks the connection to close with `reason`; the first reason wins.
    pub fn close(&self, reason: CloseReason) {
        self.close.lock().get_or_insert(reason);
        self.wake();
    }

    pub fn close_requested(&self) -> Option<CloseReason> {
        *self.close.lock()
    }
}
