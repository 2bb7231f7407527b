//! `Router`: which sessions get a message. The subscription trie behind a read-mostly lock, plus
//! the per-message decisions MQTT asks for: one copy per session at the highest granted QoS with
//! every matching Subscription Identifier, No Local, Retain As Published, and one member per
//! shared-subscription group.

pub mod topic;
pub mod topic_tree;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::auth::TopicGuard;
use crate::message::{Delivery, Message, SubOptions};
use crate::session::SessionCell;
use topic::FilterSpec;
use topic_tree::{Hit, SharedGroup, TopicTree};

/// How a shared-subscription group picks the member that gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareStrategy {
    #[default]
    RoundRobin,
    Random,
    /// The same publisher always lands on the same member (while membership is unchanged).
    HashClientid,
}

/// A subscription as stored in the trie.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub session: Arc<SessionCell>,
    pub opts: SubOptions,
    /// Set when the filter overlaps an ACL deny rule: each message is checked against it.
    pub guard: Option<Arc<TopicGuard>>,
}

impl Subscriber {
    fn admits(&self, msg: &Message) -> bool {
        self.guard.as_ref().is_none_or(|g| g.allows(&msg.topic))
    }
}

/// Which shared-subscription groups a routing serves: all of them for a message published on
/// this node; for one a peer forwarded, only those the peer chose this node for (by route key).
#[derive(Clone, Copy)]
pub enum Groups<'a> {
    All,
    Only(&'a [String]),
}

/// How a shared subscription is named between nodes: its MQTT form, `$share/{group}/{filter}`;
/// a plain filter is its own name.
pub fn route_key(spec: FilterSpec<'_>) -> std::borrow::Cow<'_, str> {
    match spec.group {
        None => spec.filter.into(),
        Some(g) => format!("$share/{g}/{}", spec.filter).into(),
    }
}

/// Whether `key` names the shared subscription of `group` to `filter`.
pub fn is_route_of(key: &str, group: &str, filter: &str) -> bool {
    key.strip_prefix("$share/")
        .and_then(|k| k.strip_prefix(group))
        .and_then(|k| k.strip_prefix('/'))
        == Some(filter)
}

/// Where a shared group's pick starts among `n` members, per the configured strategy.
pub fn pick_start(strategy: ShareStrategy, cursor: &AtomicUsize, n: usize, msg: &Message) -> usize {
    match strategy {
        ShareStrategy::RoundRobin => cursor.fetch_add(1, Ordering::Relaxed) % n,
        ShareStrategy::Random => rand::random_range(0..n),
        ShareStrategy::HashClientid => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            msg.publisher.as_deref().unwrap_or("").hash(&mut h);
            (h.finish() % n as u64) as usize
        }
    }
}

/// One session's copy of a message, before it is queued.
pub struct Target {
    pub session: Arc<SessionCell>,
    pub delivery: Delivery,
}

pub struct Router {
    tree: RwLock<TopicTree<u64, Subscriber>>,
    strategy: ShareStrategy,
}

impl Router {
    pub fn strategy(&self) -> ShareStrategy {
        self.strategy
    }

    pub fn new(strategy: ShareStrategy) -> Self {
        Router {
            tree: RwLock::new(TopicTree::default()),
            strategy,
        }
    }

    /// Number of subscriptions in the trie.
    pub fn len(&self) -> usize {
        self.tree.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or replaces a subscription; true if it replaced an existing one.
    pub fn subscribe(
        &self,
        session: &Arc<SessionCell>,
        spec: FilterSpec<'_>,
        opts: SubOptions,
        guard: Option<Arc<TopicGuard>>,
    ) -> bool {
        let sub = Subscriber {
            session: session.clone(),
            opts,
            guard,
        };
        self.tree
            .write()
            .insert(spec.filter, spec.group, session.id, sub)
            .is_some()
    }

    /// Removes a subscription; true if it existed.
    pub fn unsubscribe(&self, session_id: u64, spec: FilterSpec<'_>) -> bool {
        self.tree
            .write()
            .remove(spec.filter, spec.group, &session_id)
            .is_some()
    }

    /// Computes every session's copy of `msg` into `out`.
    pub fn route(&self, msg: &Arc<Message>, groups: Groups<'_>, out: &mut Vec<Target>) {
        let tree = self.tree.read();
        let mut plain: Vec<&Subscriber> = Vec::new();
        tree.matches(&msg.topic, |hit| match hit {
            Hit::Subscriber(_, sub) => {
                if !(sub.opts.no_local && is_publisher(sub, msg)) && sub.admits(msg) {
                    plain.push(sub);
                }
            }
            Hit::Group(group) => {
                if let Groups::Only(keys) = groups
                    && !keys
                        .iter()
                        .any(|k| is_route_of(k, &group.name, &group.filter))
                {
                    return;
                }
                if let Some(sub) = self.pick(group, msg) {
                    out.push(Target {
                        session: sub.session.clone(),
                        delivery: delivery_for(msg, &sub.opts),
                    });
                }
            }
        });
        // Overlapping subscriptions of one session: one copy at the highest granted QoS, carrying
        // every matching Subscription Identifier [MQTT-3.3.4-3..5].
        plain.sort_unstable_by_key(|s| s.session.id);
        let mut i = 0;
        while i < plain.len() {
            let first = plain[i];
            let mut delivery = delivery_for(msg, &first.opts);
            let mut j = i + 1;
            while j < plain.len() && plain[j].session.id == first.session.id {
                let other = delivery_for(msg, &plain[j].opts);
                delivery.qos = delivery.qos.max(other.qos);
                delivery.retain |= other.retain;
                delivery.subscription_ids.extend(other.subscription_ids);
                j += 1;
            }
            out.push(Target {
                session: first.session.clone(),
                delivery,
            });
            i = j;
        }
    }

    /// Picks one member of a shared group, preferring connected members.
    fn pick<'a>(
        &self,
        group: &'a SharedGroup<u64, Subscriber>,
        msg: &Message,
    ) -> Option<&'a Subscriber> {
        let n = group.members.len();
        if n == 0 {
            return None;
        }
        let start = pick_start(self.strategy, &group.cursor, n, msg);
        // Members whose ACL guard refuses the topic are not candidates.
        let candidates = || {
            (0..n)
                .map(move |k| &group.members[(start + k) % n].1)
                .filter(|s| s.admits(msg))
        };
        candidates()
            .find(|s| s.session.is_online())
            .or_else(|| candidates().next())
    }
}

fn is_publisher(sub: &Subscriber, msg: &Message) -> bool {
    msg.publisher
        .as_deref()
        .is_some_and(|p| p == &*sub.session.client_id)
}

/// The copy a subscription gets: QoS downgraded to the granted maximum; the retain flag kept only
/// with Retain As Published [MQTT-3.3.1-9, MQTT-3.3.1-12/13].
fn delivery_for(msg: &Arc<Message>, opts: &SubOptions) -> Delivery {
    Delivery {
        msg: msg.clone(),
        qos: msg.qos.min(opts.qos),
        retain: msg.retain && opts.retain_as_published,
        subscription_ids: opts.subscription_id.into_iter().collect(),
    }
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;
