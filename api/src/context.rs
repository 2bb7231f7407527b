//! `ApiContext`: everything handlers may touch. The API depends on the node only through the
//! `NodeOps` trait it declares here, so it never imports node internals.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use realmq_raft_store::Registry;
use realmq_raft_store::client::Writer;

use crate::error::ApiError;
use crate::passwords::{CredentialCache, Passwords};
use crate::routes::clients::{ClientView, Inspect, NodeStats, RouteView, SubscriptionView};

/// A message to publish on the broker, as `POST /mqtt/publish` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// The client id the message is published as (No Local, the hash share strategy).
    pub client_id: Option<String>,
    pub properties: Properties,
}

/// MQTT 5 properties accepted in `properties`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    pub payload_format_indicator: Option<u8>,
    pub message_expiry_interval: Option<u32>,
    pub content_type: Option<String>,
    pub response_topic: Option<String>,
    pub correlation_data: Option<String>,
    pub user_properties: BTreeMap<String, String>,
}

/// Why the broker refused an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Denied(String),
    /// The cluster cannot do it now (no leader, no quorum).
    #[error("{0}")]
    Unavailable(String),
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the REST API asks of the node: its broker and its cluster.
pub trait NodeOps: Send + Sync + 'static {
    /// Routes a message exactly as an MQTT PUBLISH would, before returning (so publishes are
    /// routed in call order); the future resolves, once the other nodes it was forwarded to
    /// confirmed it, to how many sessions it reached cluster-wide.
    fn publish(&self, msg: Publish) -> BoxFuture<'static, Result<usize, OpError>>;
    /// Adds a subscription to `client_id`'s session (connected or persistent and offline), on
    /// whichever node holds it.
    fn subscribe(
        &self,
        client_id: &str,
        filter: &str,
        qos: u8,
    ) -> BoxFuture<'static, Result<(), OpError>>;
    /// Removes a subscription; `NotFound` if the client has no session or no such subscription.
    fn unsubscribe(&self, client_id: &str, filter: &str)
    -> BoxFuture<'static, Result<(), OpError>>;
    /// Whether the MQTT listener accepts connections.
    fn listening(&self) -> bool;
    /// Every cluster member as this node sees it, each asked for its own status; with `digest`,
    /// each also reports a digest of its replicated state (a full scan).
    fn nodes(&self, digest: bool) -> BoxFuture<'static, Vec<NodeInfo>>;
    /// Removes a member from the cluster (scale-in).
    fn remove_node(&self, id: u64) -> BoxFuture<'static, Result<(), OpError>>;
    /// A request was refused by `max_text` or `max_topics`; the node counts it in `$SYS`.
    fn limit_refused(&self) {}
    /// The node's metrics in the Prometheus (OpenMetrics) text format, `GET /metrics`.
    fn prometheus(&self) -> String;
    /// Connected clients on every reachable member, filtered as `query` says.
    fn clients(&self, query: Inspect) -> BoxFuture<'static, Result<Vec<ClientView>, OpError>>;
    /// Subscriptions of the sessions on every reachable member.
    fn subscriptions(
        &self,
        query: Inspect,
    ) -> BoxFuture<'static, Result<Vec<SubscriptionView>, OpError>>;
    /// The topic filters each reachable member's sessions subscribe to.
    fn routes(&self, query: Inspect) -> BoxFuture<'static, Result<Vec<RouteView>, OpError>>;
    /// Each reachable member's figures.
    fn stats(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, OpError>>;
    /// Each reachable member's rows for `query`, as the member encoded them (`GET
    /// /api/v1/metrics` passes them on as they are).
    fn inspect(
        &self,
        query: Inspect,
    ) -> BoxFuture<'static, Result<Vec<serde_json::Value>, OpError>>;
    /// Disconnects `client_id` wherever it is connected; `NotFound` if it is not.
    fn kick(&self, client_id: &str) -> BoxFuture<'static, Result<(), OpError>>;
    /// Whether a rule would compile (its SQL and templates); the message says where it fails.
    fn check_rule(&self, rule: &realmq_raft_store::model::Rule) -> Result<(), String>;
    /// Rule `id` was created, changed or deleted through this API and the write is applied on
    /// this node: the node's rule engine takes the change before the request is answered.
    fn rule_written(&self, id: u64);
    /// Runs `sql` once against `context` (`POST /api/v1/rules/test`); `Err` if it does not
    /// compile.
    fn test_rule(
        &self,
        sql: &str,
        context: serde_json::Map<String, serde_json::Value>,
    ) -> Result<RuleTest, String>;
}

/// What a rule made of a test context.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleTest {
    Output(serde_json::Value),
    /// Nothing was selected, and why (the WHERE clause was not true, evaluation failed).
    NoOutput(String),
}

/// One cluster member, as `GET /api/v1/nodes` lists it.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct NodeInfo {
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: String,
    /// The leader's id as this member sees it.
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub last_applied: Option<u64>,
    /// Digest of the replicated state at `last_applied` (only with `?digest=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub cluster_addr: String,
    pub mqtt_addr: String,
    pub api_addr: String,
    /// MQTT connections on that member.
    pub connections: Option<u64>,
    /// Whether it answered; the other fields but the addresses are null when not.
    pub reachable: bool,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Lifetime of bearer tokens from `POST /auth`.
    pub token_ttl: Duration,
    /// Largest request body accepted.
    pub max_body: u64,
    /// Wrong passwords per minute, per user name and per source address, before HTTP 429.
    pub failed_login_limit: u32,
    /// Longest free-text field (nickname, description, device_type), in bytes.
    pub max_text: usize,
    /// Most topics one publish / subscribe / unsubscribe (or one batch item) names.
    pub max_topics: usize,
    /// Whether `GET /metrics` needs API credentials.
    pub metrics_auth: bool,
    /// One INFO line per request (target `realmq::access`).
    pub access_log: bool,
    /// What the web console needs to know of this node's listeners.
    pub console: crate::console::ConsoleEnv,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            token_ttl: Duration::from_secs(24 * 3600),
            max_body: 1024 * 1024,
            failed_login_limit: 10,
            max_text: 1024,
            max_topics: 128,
            metrics_auth: false,
            access_log: false,
            console: Default::default(),
        }
    }
}

#[derive(Clone)]
pub struct ApiContext {
    pub writer: Writer,
    pub registry: Registry,
    pub node: Arc<dyn NodeOps>,
    pub config: Arc<ApiConfig>,
    pub(crate) creds: Arc<CredentialCache>,
    pub(crate) passwords: Arc<Passwords>,
    /// Root's stored hash when it was last checked against the default password, and whether
    /// it matched (`root_has_default_password`).
    pub(crate) default_root: Arc<parking_lot::Mutex<Option<(String, bool)>>>,
    /// Request counters and latencies; the node registers them for `GET /metrics`.
    pub http: crate::metrics::HttpMetrics,
}

impl ApiContext {
    /// `checked`, counting a refusal by a configured limit (`NodeOps::limit_refused`).
    pub(crate) fn within_limits<T>(&self, checked: Result<T, ApiError>) -> Result<T, ApiError> {
        if checked.is_err() {
            self.node.limit_refused();
        }
        checked
    }

    /// A read that may be served locally when it finds something: a miss may only mean this
    /// node has not applied a write acknowledged elsewhere yet, so it is repeated after the
    /// read barrier before the caller is told "not found". (A hit may be stale; the write it
    /// leads to is validated again when applied.)
    pub(crate) async fn lookup<T>(
        &self,
        read: impl Fn(&Registry) -> Result<Option<T>, realmq_raft_store::read::ReadError>,
    ) -> Result<Option<T>, ApiError> {
        if let Some(v) = read(&self.registry)? {
            return Ok(Some(v));
        }
        self.writer.barrier().await?;
        Ok(read(&self.registry)?)
    }

    pub fn new(
        writer: Writer,
        registry: Registry,
        node: Arc<dyn NodeOps>,
        config: ApiConfig,
    ) -> Self {
        ApiContext {
            writer,
            registry,
            node,
            passwords: Arc::new(Passwords::new(config.failed_login_limit)),
            config: Arc::new(config),
            creds: Arc::new(CredentialCache::default()),
            default_root: Arc::default(),
            http: crate::metrics::HttpMetrics::default(),
        }
    }

    /// Counts requests into `http` (families the node registered for `GET /metrics`).
    pub fn with_http_metrics(mut self, http: crate::metrics::HttpMetrics) -> Self {
        self.http = http;
        self
    }
}
