//! `Broker`: the protocol-independent core the MQTT edge (and later the REST API) calls into.
//!
//! It ties the session registry, the router, the retained store, the auth seam and the metrics
//! together. Every entry point takes plain types (`Message`, `SubRequest`, `ConnectRequest`) and
//! returns decisions; none blocks, and none names an ntex type.
//!
//! - `mod.rs`: construction and the publish path (`publish` → `Router::route` → `SessionCell::deliver`)
//! - `subscribe.rs`: SUBSCRIBE / UNSUBSCRIBE and retained-message delivery on subscribe
//! - `lifecycle.rs`: CONNECT (auth, session open/takeover), disconnect, wills, session expiry
//! - `persist.rs`: what the broker records in the replicated store, and restoring it at start-up
//! - `applied.rs`: following writes applied on any node (kicks, retained messages, takeovers)
//! - `remote.rs`: routes to other nodes' subscribers and the `Peering` seam that forwards to them
//! - `proxy.rs`: subscriptions an operator adds to or removes from a client's session, kicks
//! - `inspect.rs`: clients, subscriptions, routes and figures as operators look them up
//! - `handover.rs`: a persistent session moving to another node with what it had not delivered
//! - `spool.rs`: offline sessions' queued messages on disk, so they survive a restart
//! - `events.rs`: the client, session and message events rules read (`$events/...`)

mod applied;
mod events;
mod handover;
mod inspect;
mod lifecycle;
mod persist;
mod proxy;
mod remote;
mod spool;
mod subscribe;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

pub use handover::Takeover;
pub use lifecycle::{Accepted, Closed, ConnectRefused, ConnectRequest};
pub(crate) use persist::{retained_message, retained_record};
pub use proxy::{ProxyError, ProxyOp};
pub use remote::{Confirm, PeerTarget, Peering, Published, Want};
pub use subscribe::{SubRequest, SubResult};

use crate::auth::{Authenticator, ClientInfo};
use crate::config::MqttConfig;
use crate::message::{Message, Will};
use crate::metrics::{Metrics, inc};
use crate::retain::RetainStore;
use crate::routing::{Groups, Router, Target};
use crate::session::{ConnLink, Pushed, Sessions};
use realmq_raft_store::client::Writer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("not authorized to publish to this topic")]
    NotAuthorized,
    /// Retaining it would pass `max_retained` / `max_retained_bytes`.
    #[error("the retained message store is full (max_retained / max_retained_bytes)")]
    QuotaExceeded,
}

pub struct Broker {
    pub node_id: u64,
    pub limits: MqttConfig,
    pub sessions: Sessions,
    pub router: Router,
    pub retained: RetainStore,
    pub metrics: Metrics,
    pub started: Instant,
    auth: Arc<dyn Authenticator>,
    /// The multi-threaded runtime that runs timers (will delay, session expiry) and `$SYS`.
    runtime: tokio::runtime::Handle,
    next_conn_id: AtomicU64,
    /// Replicated session ownership, subscriptions and retained messages: registration on
    /// CONNECT is awaited (the cluster knows who owns a client id before CONNACK); the rest is
    /// recorded without waiting, in order, and retried until committed, so the MQTT hot path
    /// never waits for consensus.
    meta: Writer,
    /// The replicated state: a session resumed on this node after living on another is
    /// rebuilt from its record.
    registry: realmq_raft_store::Registry,
    /// Local subscriptions per route (plain filter, or shared group and filter): a route's
    /// first and last subscriber are announced to the peers (`remote.rs`).
    local_routes: parking_lot::Mutex<std::collections::HashMap<Box<str>, usize>>,
    /// What the peers announced, and whether there is anything in it (the hot path's check).
    remote: parking_lot::RwLock<remote::RemoteRoutes>,
    has_remote: std::sync::atomic::AtomicBool,
    peering: std::sync::OnceLock<Arc<dyn Peering>>,
    takeover: std::sync::OnceLock<Arc<dyn Takeover>>,
    /// Sessions that moved to another node, waiting for it to take their messages.
    stash: handover::Stash,
    spool: std::sync::OnceLock<spool::Spool>,
    /// The `[[webhook]]` entries, when there are any.
    pub webhooks: std::sync::OnceLock<crate::webhook::Webhooks>,
    /// The rule engine: messages and events that enter the cluster here.
    pub rules: crate::rules::Rules,
}

impl Broker {
    pub fn new(
        node_id: u64,
        limits: MqttConfig,
        auth: Arc<dyn Authenticator>,
        runtime: tokio::runtime::Handle,
        meta: Writer,
        registry: realmq_raft_store::Registry,
    ) -> Arc<Broker> {
        Arc::new(Broker {
            node_id,
            sessions: Sessions::new(limits.max_queued_messages, limits.queue_drop_policy)
                .with_max_queued_bytes(limits.max_queued_bytes),
            router: Router::new(limits.shared_subscription_strategy),
            limits,
            retained: RetainStore::default(),
            metrics: Metrics::default(),
            started: Instant::now(),
            auth,
            runtime,
            next_conn_id: AtomicU64::new(boot_epoch()),
            meta,
            registry,
            local_routes: Default::default(),
            remote: Default::default(),
            has_remote: Default::default(),
            peering: Default::default(),
            takeover: Default::default(),
            stash: Default::default(),
            spool: Default::default(),
            webhooks: Default::default(),
            rules: crate::rules::Rules::new(node_id),
        })
    }

    /// Authorizes and routes a message. `from` is the publishing client; `None` for messages the
    /// broker itself originates (`$SYS`). Returns the sessions it was queued for here plus the
    /// peers it was forwarded to, and for QoS 1/2 with peers, what resolves once they have it.
    ///
    /// Never awaits: a QoS 0 PUBLISH is routed before the handler returns, so a client's
    /// DISCONNECT right behind it cannot overtake it.
    pub fn publish(
        &self,
        from: Option<&ClientInfo>,
        msg: Message,
    ) -> Result<Published, PublishError> {
        let want = remote::want_for(msg.qos);
        self.publish_wanting(from, msg, want, true)
    }

    /// `publish` for a rule's republish action: routed like any message, but it triggers no
    /// rule itself (a rule's loop ends at a depth of one).
    pub fn publish_from_rule(
        &self,
        from: Option<&ClientInfo>,
        msg: Message,
    ) -> Result<(), PublishError> {
        let want = remote::want_for(msg.qos);
        self.publish_wanting(from, msg, want, false).map(|_| ())
    }

    /// `publish` for the REST API: whatever the QoS, the confirmation reports how many sessions
    /// the peers reached, so the answer's `matched` is cluster-wide.
    pub fn publish_counted(&self, msg: Message) -> Result<Published, PublishError> {
        self.publish_wanting(None, msg, Want::Count, true)
    }

    fn publish_wanting(
        &self,
        from: Option<&ClientInfo>,
        msg: Message,
        want: Want,
        rules: bool,
    ) -> Result<Published, PublishError> {
        if let Some(client) = from
            && !self.auth.may_publish(client, &msg.topic)
        {
            inc(&self.metrics.denied, 1);
            return Err(PublishError::NotAuthorized);
        }
        if let Some(hooks) = self.webhooks.get() {
            hooks.message_publish(from, &msg);
        }
        let msg = Arc::new(msg);
        if rules {
            self.rules
                .on_message(|| crate::rules::MessageInput::new(&msg, from), &msg.topic);
        }
        let mut replicated = None;
        if msg.retain && self.limits.retain_available {
            if !self.retained.set_within(
                msg.clone(),
                self.limits.max_retained,
                self.limits.max_retained_bytes,
            ) {
                inc(&self.metrics.retained_refused, 1);
                return Err(PublishError::QuotaExceeded);
            }
            replicated = self.persist_retained(&msg, want != Want::Nothing);
        }
        let (local, congested) = self.route(&msg, Groups::All);
        let (peers, mut confirm) = self.forward(&msg, want);
        if local == 0 && peers == 0 && rules {
            self.dropped_event(from, &msg, "no_subscribers");
        }
        if let Some(replicated) = replicated {
            let forwarded = confirm.take();
            let topic = msg.topic.clone();
            confirm = Some(Box::pin(async move {
                let matched = match forwarded {
                    Some(f) => f.await,
                    None => 0,
                };
                if let Err(e) = replicated.await {
                    tracing::warn!(%topic, error = %e, "a retained message was acknowledged before it was replicated");
                }
                matched
            }));
        }
        Ok(Published {
            local,
            peers,
            confirm,
            congested,
        })
    }

    /// Queues `msg` for the local sessions it matches; returns how many, and a subscriber
    /// connection whose queue it congested, if any.
    fn route(&self, msg: &Arc<Message>, groups: Groups<'_>) -> (usize, Option<Arc<ConnLink>>) {
        let mut targets: Vec<Target> = Vec::new();
        self.router.route(msg, groups, &mut targets);
        let n = targets.len();
        let mut congested = None;
        for t in targets {
            // An offline session's copy also goes to disk (QoS 0 is not kept offline); an
            // online one's costs nothing more.
            let offline = (t.delivery.qos != crate::message::QoS::AtMostOnce
                && !t.session.is_online())
            .then(|| spool::entry(&t.delivery));
            let (pushed, full) = t.session.deliver(t.delivery);
            congested = congested.or(full);
            if pushed == Pushed::DroppedFull {
                inc(&self.metrics.dropped_queue_full, 1);
                self.dropped_event(None, msg, "queue_full");
            }
            let kept = pushed == Pushed::Queued
                || (pushed == Pushed::DroppedFull
                    && self.limits.queue_drop_policy == crate::session::DropPolicy::DropOldest);
            if let Some(entry) = offline.filter(|_| kept) {
                self.spool_queued(&t.session, entry);
            }
        }
        (n, congested)
    }

    fn publish_will(&self, client: &ClientInfo, will: Will) {
        let now = Instant::now();
        let msg = Message {
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: will.properties,
            expires_at: will
                .message_expiry
                .map(|s| now + std::time::Duration::from_secs(u64::from(s))),
            publisher: Some(client.client_id.clone()),
        };
        if let Err(e) = self.publish(Some(client), msg) {
            tracing::info!(client_id = %client.client_id, error = %e, "will message not published");
        }
    }
}

/// Where this process's connection ids start: the boot time in seconds, shifted so that ids stay
/// unique across restarts of a node (the replicated session record names a connection by node
/// and id) while staying below 2^53 (exact in JSON).
fn boot_epoch() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs << 20) | 1
}
