//! What one link holds between connections: the publishes queued for its peer and what the
//! peer acknowledged (`links.rs` moves them; this file says what they mean).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use realmq_proto as pb;
use tokio::sync::{oneshot, watch};

/// A publish on its way to one peer.
pub(super) struct Queued {
    pub(super) seq: u64,
    pub(super) message: bytes::Bytes,
    pub(super) groups: Vec<String>,
    /// QoS 1/2: kept until acknowledged, resent after a reconnect.
    pub(super) resend: bool,
    pub(super) count: bool,
    /// When it was last sent (`None`: not yet on this connection).
    pub(super) sent: Option<Instant>,
}

/// What is waiting to go to one peer.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) changes: Vec<pb::RouteChange>,
    /// The sequence number of the last change in `changes`.
    pub(super) route_seq: u64,
    /// Not sent yet on the current connection.
    pub(super) publishes: VecDeque<Queued>,
    /// Sent and waiting for the peer's acknowledgement (QoS 1/2, or counted).
    pub(super) unacked: VecDeque<Queued>,
    /// The last publish sequence number given out on this link.
    pub(super) publish_seq: u64,
    /// Who waits for the number of sessions a counted publish reached.
    pub(super) counts: HashMap<u64, oneshot::Sender<u32>>,
}

impl Pending {
    pub(super) fn len(&self) -> usize {
        self.publishes.len() + self.unacked.len()
    }

    /// A new connection: what the last one sent without an acknowledgement goes first (QoS 0
    /// is not resent; a count nobody will report is given up).
    pub(super) fn requeue(&mut self) {
        let mut again = VecDeque::with_capacity(self.unacked.len() + self.publishes.len());
        for mut q in self.unacked.drain(..) {
            if q.resend {
                q.sent = None;
                again.push_back(q);
            } else {
                self.counts.remove(&q.seq);
            }
        }
        again.extend(self.publishes.drain(..));
        self.publishes = again;
    }

    /// The peer has everything through `seq` in its sessions.
    pub(super) fn acknowledged(&mut self, seq: u64, counts: Vec<pb::Count>) {
        while self.unacked.front().is_some_and(|q| q.seq <= seq) {
            self.unacked.pop_front();
        }
        for c in counts {
            if let Some(tx) = self.counts.remove(&c.seq) {
                let _ = tx.send(c.matched);
            }
        }
    }
}

/// What the peer acknowledged, as publishers and SUBACKs wait for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Acked {
    /// Route changes acknowledged on the current connection, through this sequence number.
    pub(super) routes: u64,
    /// Publishes acknowledged on this link, through this sequence number.
    pub(super) publishes: u64,
    /// Since when the link is down (`None`: up).
    pub(super) down_since: Option<Instant>,
    /// Whether a connection was attempted yet (a new link is down before it tried).
    pub(super) tried: bool,
}

/// Waits for one peer to confirm publish `seq` (and report its count, if asked): `None` if the
/// peer has been without a link for `bound`, or left the cluster.
pub(super) async fn confirmed(
    mut acked: watch::Receiver<Acked>,
    seq: u64,
    mut count: Option<oneshot::Receiver<u32>>,
    bound: Duration,
) -> Option<usize> {
    loop {
        let a = *acked.borrow_and_update();
        if count.is_none() && a.publishes >= seq {
            return Some(0);
        }
        let deadline = a.down_since.map(|t| t + bound);
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return None;
        }
        // Far enough never to fire while the link is up (the branch is off then anyway).
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(
            deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400)),
        ));
        tokio::select! {
            changed = acked.changed() => if changed.is_err() {
                return None;
            },
            n = async {
                match count.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            } => return n.ok().map(|n| n as usize),
            () = sleep, if deadline.is_some() => {}
        }
    }
}
