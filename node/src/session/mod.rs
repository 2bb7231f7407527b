//! Sessions: the registry of client id -> session, and the cell each session lives in.
//!
//! A session outlives its connections. It lives in an `Arc<SessionCell>` shared by the registry,
//! the subscription trie and, while connected, the connection's tasks on its ntex worker. Routing a
//! publish to a session is `SessionCell::deliver`: a short lock to queue the message and a wake-up
//! of the connection's writer task (`ConnLink`, `link.rs`), which does the I/O on its own thread.
//! No lock is ever held across I/O, and a publisher on one worker never touches another worker's
//! socket.

mod link;
pub mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, MutexGuard};

use crate::message::{Delivery, Will};
pub use link::{ConnInfo, ConnLink};
pub use state::{DropPolicy, InflightFlow, Outgoing, Pushed, SessionState, Undelivered};

pub type ClientId = Arc<str>;

/// Mutable part of a session, behind the cell's lock.
#[derive(Debug)]
pub struct SessionInner {
    pub state: SessionState,
    pub conn: Option<Arc<ConnLink>>,
    /// Bumped on every attach, so a timer armed at disconnect can tell the client came back.
    pub generation: u64,
    /// Session Expiry Interval in seconds; `u32::MAX` never expires.
    pub expiry_interval: u32,
    /// Set once the session is discarded (clean start, expiry); it no longer routes or queues.
    pub ended: bool,
    /// Set when the session ended here because it continues on another node: its will is
    /// cancelled, not due.
    pub moved: bool,
    /// A v5 will waiting out its Will Delay Interval; a resuming connection cancels it and the end
    /// of the session publishes it [MQTT-3.1.3-9]. Boxed: rare, and every session would carry its
    /// size.
    pub pending_will: Option<Box<Will>>,
    /// The user name of the connection that last owned the session: proxy subscriptions made
    /// while it is offline are decided by the ACL as that user's.
    pub username: Option<Arc<str>>,
}

#[derive(Debug)]
pub struct SessionCell {
    /// Unique per session incarnation; the subscription trie keys subscribers by it.
    pub id: u64,
    pub client_id: ClientId,
    online: AtomicBool,
    inner: Mutex<SessionInner>,
}

impl SessionCell {
    pub fn lock(&self) -> MutexGuard<'_, SessionInner> {
        self.inner.lock()
    }

    /// Lock-free hint for shared-subscription member choice.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Queues one delivery and wakes the owning connection, if any. Also returns that
    /// connection when its queue is congested, for the publisher to wait on.
    pub fn deliver(&self, delivery: Delivery) -> (Pushed, Option<Arc<ConnLink>>) {
        let mut inner = self.inner.lock();
        if inner.ended {
            return (Pushed::DroppedOffline, None);
        }
        let online = inner.conn.is_some();
        let pushed = inner.state.push(delivery, online);
        let mut congested = None;
        if pushed != Pushed::DroppedOffline
            && let Some(conn) = &inner.conn
        {
            conn.wake();
            if inner.state.congested() && conn.congest() {
                congested = Some(conn.clone());
            }
        }
        (pushed, congested)
    }
}

/// What `Sessions::totals` adds up.
#[derive(Debug, Default, Clone, Copy)]
pub struct SessionTotals {
    pub queued: usize,
    pub queued_bytes: usize,
    pub inflight: usize,
    pub online: usize,
}

/// Result of opening a session for a new connection.
pub struct Opened {
    pub cell: Arc<SessionCell>,
    /// CONNACK Session Present.
    pub present: bool,
    /// A session that clean start discarded; its subscriptions must leave the trie.
    pub discarded: Option<Arc<SessionCell>>,
    /// The connection that held this client id before; it must be closed (takeover).
    pub kicked: Option<Arc<ConnLink>>,
    /// The delayed will of the discarded session, due now that the session ended.
    pub due_will: Option<Will>,
}

/// A session that just ended, with the will that its end makes due.
pub struct Ended {
    pub will: Option<Will>,
}

/// How a connection left its session.
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    /// The connection owned the session, which is now offline at this generation.
    Owner {
        generation: u64,
        expiry_interval: u32,
    },
    /// Another connection had taken the session over; `ended` says whether it started afresh
    /// (the old session ended) or resumed it.
    TakenOver { ended: bool },
}

pub struct Sessions {
    map: Mutex<HashMap<ClientId, Arc<SessionCell>>>,
    next_id: AtomicU64,
    max_queued: usize,
    max_queued_bytes: usize,
    drop_policy: DropPolicy,
}

impl Sessions {
    pub fn new(max_queued: usize, drop_policy: DropPolicy) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            max_queued,
            max_queued_bytes: usize::MAX,
            drop_policy,
        }
    }

    /// Bounds every session's queue by bytes too (`[mqtt] max_queued_bytes`).
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Every session, as of now (for operators' lookups; not for the hot path).
    pub fn cells(&self) -> Vec<Arc<SessionCell>> {
        self.map.lock().values().cloned().collect()
    }

    /// Sums over every session, for the metrics: a walk over all of them, so for a scrape, not
    /// the hot path.
    pub fn totals(&self) -> SessionTotals {
        let mut t = SessionTotals::default();
        for cell in self.cells() {
            let inner = cell.lock();
            t.queued += inner.state.queued();
            t.queued_bytes += inner.state.queued_bytes();
            t.inflight += inner.state.inflight();
            t.online += usize::from(inner.conn.is_some());
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, client_id: &str) -> Option<Arc<SessionCell>> {
        self.map.lock().get(client_id).cloned()
    }

    /// Every session with a connection attached, with that connection.
    pub fn attached(&self) -> Vec<(ClientId, Arc<ConnLink>)> {
        self.map
            .lock()
            .iter()
            .filter_map(|(id, c)| Some((id.clone(), c.lock().conn.clone()?)))
            .collect()
    }

    /// Every connection currently attached to a session.
    pub fn connections(&self) -> Vec<Arc<ConnLink>> {
        self.map
            .lock()
            .values()
            .filter_map(|c| c.lock().conn.clone())
            .collect()
    }

    fn new_cell(
        &self,
        client_id: ClientId,
        link: Arc<ConnLink>,
        window: usize,
        expiry: u32,
    ) -> Arc<SessionCell> {
        let mut state = SessionState::new(self.max_queued, self.drop_policy)
            .with_max_queued_bytes(self.max_queued_bytes);
        state.set_window(window);
        Arc::new(SessionCell {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            client_id,
            online: AtomicBool::new(true),
            inner: Mutex::new(SessionInner {
                state,
                conn: Some(link),
                generation: 1,
                expiry_interval: expiry,
                ended: false,
                moved: false,
                pending_will: None,
                username: None,
            }),
        })
    }

    /// Attaches a new connection to `client_id`'s session: resumes it unless `clean_start`, and
    /// returns the previous connection to kick if the client id was in use [MQTT-3.1.4-2].
    pub fn open(
        &self,
        client_id: ClientId,
        clean_start: bool,
        link: Arc<ConnLink>,
        window: usize,
        expiry: u32,
    ) -> Opened {
        let mut map = self.map.lock();
        if let Some(cell) = map.get(&client_id).cloned() {
            let mut inner = cell.lock();
            if !clean_start {
                let kicked = inner.conn.replace(link);
                inner.generation += 1;
                inner.expiry_interval = expiry;
                inner.state.set_window(window);
                inner.pending_will = None;
                cell.online.store(true, Ordering::Relaxed);
                drop(inner);
                return Opened {
                    cell,
                    present: true,
                    discarded: None,
                    kicked,
                    due_will: None,
                };
            }
            inner.ended = true;
            let kicked = inner.conn.take();
            let due_will = inner.pending_will.take().map(|w| *w);
            cell.online.store(false, Ordering::Relaxed);
            drop(inner);
            let fresh = self.new_cell(client_id.clone(), link, window, expiry);
            map.insert(client_id, fresh.clone());
            return Opened {
                cell: fresh,
                present: false,
                discarded: Some(cell),
                kicked,
                due_will,
            };
        }
        let cell = self.new_cell(client_id.clone(), link, window, expiry);
        map.insert(client_id, cell.clone());
        Opened {
            cell,
            present: false,
            discarded: None,
            kicked: None,
            due_will: None,
        }
    }

    /// Re-creates an offline session from the replicated store at start-up.
    pub fn restore(&self, client_id: ClientId, expiry: u32) -> Arc<SessionCell> {
        let cell = self.new_cell(client_id.clone(), ConnLink::new(0), 0, expiry);
        {
            let mut inner = cell.lock();
            inner.conn = None;
            cell.online.store(false, Ordering::Relaxed);
            inner.state.detach();
        }
        self.map.lock().insert(client_id, cell.clone());
        cell
    }

    /// Detaches connection `conn_id` from `cell` when that connection ends.
    pub fn detach(&self, cell: &SessionCell, conn_id: u64) -> Detached {
        let mut inner = cell.lock();
        match &inner.conn {
            Some(link) if link.conn_id == conn_id => {
                inner.conn = None;
                inner.state.detach();
                cell.online.store(false, Ordering::Relaxed);
                Detached::Owner {
                    generation: inner.generation,
                    expiry_interval: inner.expiry_interval,
                }
            }
            _ => Detached::TakenOver {
                ended: inner.ended && !inner.moved,
            },
        }
    }

    /// Updates the expiry interval a v5 client sent in DISCONNECT.
    pub fn set_expiry(&self, cell: &SessionCell, expiry: u32) {
        cell.lock().expiry_interval = expiry;
    }

    /// Ends `cell` if it is still offline at `generation` (nobody reconnected since the timer was
    /// armed) and still the registered session for its client id. Returns `None` if it did not
    /// end, else the ended session's pending will, which is due now.
    pub fn end_if_idle(&self, cell: &Arc<SessionCell>, generation: u64) -> Option<Ended> {
        let mut map = self.map.lock();
        let mut inner = cell.lock();
        if inner.ended || inner.conn.is_some() || inner.generation != generation {
            return None;
        }
        inner.ended = true;
        let will = inner.pending_will.take().map(|w| *w);
        drop(inner);
        if map
            .get(&cell.client_id)
            .is_some_and(|c| Arc::ptr_eq(c, cell))
        {
            map.remove(&cell.client_id);
        }
        Some(Ended { will })
    }

    /// Ends `client_id`'s session here because it continues on another node: detaches its
    /// connection (returned, for the caller to close; its end will not publish the will, which
    /// the continuing session cancels), and takes what it had not delivered.
    pub fn hand_over(
        &self,
        client_id: &str,
    ) -> Option<(Arc<SessionCell>, Undelivered, Option<Arc<ConnLink>>)> {
        let mut map = self.map.lock();
        let cell = map.get(client_id)?.clone();
        let mut inner = cell.lock();
        if inner.ended {
            return None;
        }
        inner.ended = true;
        inner.moved = true;
        inner.pending_will = None;
        let link = inner.conn.take();
        cell.online.store(false, Ordering::Relaxed);
        let undelivered = inner.state.take_undelivered();
        drop(inner);
        map.remove(client_id);
        Some((cell, undelivered, link))
    }

    /// Parks a delayed will on an offline session.
    pub fn park_will(&self, cell: &SessionCell, will: Will) {
        cell.lock().pending_will = Some(Box::new(will));
    }

    /// Takes the parked will if the session is still offline at `generation` (delay elapsed).
    pub fn take_due_will(&self, cell: &SessionCell, generation: u64) -> Option<Will> {
        let mut inner = cell.lock();
        if inner.conn.is_none() && inner.generation == generation {
            inner.pending_will.take().map(|w| *w)
        } else {
            None
        }
    }
}
