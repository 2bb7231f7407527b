//! A persistent session moving between nodes with both alive (a client reconnecting elsewhere
//! without a clean start): the old node detaches it (closing the old connection with 0x8E, its
//! will cancelled since the session continues) and hands over what it had not delivered, which
//! the new node takes before CONNACK. Subscriptions travel in the replicated session record.
//!
//! The old node learns of the move two ways, whichever comes first: the applied ownership change,
//! or the new node's handover request. What the first one detached waits in a stash for the
//! request, for `STASH_TTL`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use realmq_raft_store::client::BoxFuture;

use super::Broker;
use crate::message::CloseReason;
use crate::session::{SessionCell, Undelivered};

/// How long a detached session's messages wait for the new owner to ask.
const STASH_TTL: Duration = Duration::from_secs(30);

/// What the broker needs from the cluster to take a session over from another node.
pub trait Takeover: Send + Sync + 'static {
    /// Asks node `from` for what `client_id`'s session there had not delivered (bounded in
    /// time; `None` if it did not answer).
    fn hand_over(&self, from: u64, client_id: &str) -> BoxFuture<'static, Option<Undelivered>>;
}

/// Sessions detached here, waiting for their new owner's request.
#[derive(Default)]
pub(super) struct Stash(parking_lot::Mutex<HashMap<Box<str>, (Instant, Undelivered)>>);

impl Stash {
    pub(super) fn holds(&self, client_id: &str) -> bool {
        self.0
            .lock()
            .get(client_id)
            .is_some_and(|(at, _)| at.elapsed() < STASH_TTL)
    }
}

impl Broker {
    pub fn set_takeover(&self, t: Arc<dyn Takeover>) {
        let _ = self.takeover.set(t);
    }

    /// Detaches `client_id`'s session because it continues on another node; keeps what it
    /// had not delivered for the new owner's request.
    pub(super) fn detach_moved(&self, client_id: &str) {
        if let Some(u) = self.hand_over_local(client_id) {
            let mut stash = self.stash.0.lock();
            stash.retain(|_, (at, _)| at.elapsed() < STASH_TTL);
            stash.insert(client_id.into(), (Instant::now(), u));
        }
    }

    /// A new owner asks for `client_id`'s session: what is still attached here is detached
    /// now, else what an applied ownership change detached before.
    pub fn take_handover(&self, client_id: &str) -> Undelivered {
        if let Some(u) = self.hand_over_local(client_id) {
            return u;
        }
        match self.stash.0.lock().remove(client_id) {
            Some((at, u)) if at.elapsed() < STASH_TTL => u,
            _ => Undelivered::default(),
        }
    }

    fn hand_over_local(&self, client_id: &str) -> Option<Undelivered> {
        let (cell, undelivered, link) = self.sessions.hand_over(client_id)?;
        self.spool_clear(&cell.client_id);
        if let Some(l) = link {
            tracing::info!(client_id, "session moved to another node");
            l.close(CloseReason::SessionTakenOver);
        }
        self.drop_subscriptions(&cell);
        Some(undelivered)
    }

    /// Takes over from node `from` what `cell`'s session held there; true if anything came.
    pub(super) async fn take_over_from(&self, from: u64, cell: &Arc<SessionCell>) -> bool {
        let Some(t) = self.takeover.get() else {
            return false;
        };
        match t.hand_over(from, &cell.client_id).await {
            Some(u) if !u.is_empty() => {
                cell.lock().state.restore_undelivered(u);
                true
            }
            _ => false,
        }
    }
}
