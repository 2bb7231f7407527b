//! Connected clients, subscriptions, routes and statistics, cluster-wide (EMQX v4's operator
//! endpoints): `GET /api/v1/clients` and `/clients/{clientid}`, `DELETE /clients/{clientid}`
//! (kick), `GET /api/v1/subscriptions`, `/routes`, `/stats`, `/metrics` (the counters as JSON,
//! for the console; Prometheus scrapes `GET /metrics`). Every node answers for the whole
//! cluster: the node asks each member for what it holds (`NodeOps`), then filters and pages.

use serde::{Deserialize, Serialize};
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::auth::{Caller, authenticate, authenticate_read};
use crate::context::ApiContext;
use crate::error::ApiError;
use crate::query::{Query, paging, text};
use crate::response::{ApiResult, Reply, data, ok, page};

/// One connected MQTT client.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientView {
    pub clientid: String,
    pub username: Option<String>,
    /// The node it is connected to.
    pub node: u64,
    pub ip_address: Option<String>,
    pub port: Option<u16>,
    /// 4 (MQTT 3.1.1) or 5.
    pub proto_ver: u8,
    pub keepalive: u16,
    pub clean_start: bool,
    /// Session Expiry Interval, seconds (3.1.1: 0 for a clean session, 4294967295 otherwise).
    pub expiry_interval: u32,
    pub connected_at: String,
    pub subscriptions_cnt: usize,
    /// Outbound QoS 1/2 messages awaiting acknowledgement.
    pub inflight: usize,
    /// Messages queued for it.
    pub mqueue_len: usize,
}

/// One subscription of a session (connected or persistent and offline).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubscriptionView {
    pub node: u64,
    pub clientid: String,
    pub topic: String,
    pub qos: u8,
}

/// A topic filter some session on `node` subscribes to.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteView {
    pub topic: String,
    pub node: u64,
}

/// One node's figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStats {
    pub node: u64,
    pub connections: i64,
    pub sessions: usize,
    pub subscriptions: usize,
    pub retained: usize,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub uptime_seconds: u64,
}

/// What the API asks every node for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Inspect {
    Clients {
        clientid: Option<String>,
        username: Option<String>,
    },
    Subscriptions {
        clientid: Option<String>,
    },
    Routes {
        topic: Option<String>,
    },
    Stats,
    Metrics,
    /// The rule engine's counters of one rule, or of every rule.
    Rules {
        id: Option<u64>,
    },
}

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    collection!(get ctx, "clients", list)
        .or(member!(get ctx, "clients", get))
        .unify()
        .or(member!(delete ctx, "clients", kick))
        .unify()
        .or(collection!(get ctx, "subscriptions", subscriptions))
        .unify()
        .or(collection!(get ctx, "routes", route_list))
        .unify()
        .or(collection!(get ctx, "stats", stats))
        .unify()
        .or(collection!(get ctx, "metrics", metrics))
        .unify()
        .boxed()
}

/// A page of `rows`, sorted by `key`.
fn paged<T: Serialize, K: Ord>(mut rows: Vec<T>, q: &Query, key: impl Fn(&T) -> K) -> ApiResult {
    let p = paging(q)?;
    rows.sort_by_key(|r| key(r));
    let count = rows.len() as u64;
    let items: Vec<T> = rows.into_iter().skip(p.offset()).take(p.limit).collect();
    page(items, p.page, p.limit, count)
}

fn clients_query(q: &Query, clientid: Option<String>) -> Inspect {
    Inspect::Clients {
        clientid,
        username: text(q, "username").map(String::from),
    }
}

#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", security(("basic" = []), ("bearer" = [])),
    params(("_page" = Option<u64>, Query), ("_limit" = Option<u64>, Query),
           ("clientid" = Option<String>, Query, description = "Exact client id"),
           ("username" = Option<String>, Query, description = "Exact user name")),
    responses((status = 200, description = "Connected clients on every node, as `ClientView`, by client id", body = crate::response::Envelope),
              (status = 400, description = "Bad paging", body = crate::error::ErrorBody)))]
pub(crate) async fn list(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    paging(q)?;
    let query = clients_query(q, text(q, "clientid").map(String::from));
    let rows = ctx.node.clients(query).await?;
    paged(rows, q, |c| (c.clientid.clone(), c.node))
}

#[utoipa::path(get, path = "/api/v1/clients/{clientid}", tag = "clients", security(("basic" = []), ("bearer" = [])),
    params(("clientid" = String, Path)),
    responses((status = 200, description = "The client, as `ClientView`", body = crate::response::Envelope),
              (status = 404, description = "Not connected", body = crate::error::ErrorBody)))]
pub(crate) async fn get(ctx: &ApiContext, auth: &Caller, clientid: &str) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let query = clients_query(&Query::new(), Some(clientid.to_string()));
    let mut rows = ctx.node.clients(query).await?;
    rows.sort_by_key(|c| c.connected_at.clone());
    match rows.pop() {
        Some(c) => data(c),
        None => Err(ApiError::NotFound(format!(
            "client {clientid:?} is not connected"
        ))),
    }
}

#[utoipa::path(delete, path = "/api/v1/clients/{clientid}", tag = "clients", security(("basic" = []), ("bearer" = [])),
    params(("clientid" = String, Path)),
    responses((status = 200, description = "Disconnected (MQTT 5 clients get DISCONNECT 0x98); a persistent session stays", body = crate::response::Envelope),
              (status = 403, description = "Not an administrator", body = crate::error::ErrorBody),
              (status = 404, description = "Not connected", body = crate::error::ErrorBody),
              (status = 503, description = "The node holding it did not answer", body = crate::error::ErrorBody)))]
pub(crate) async fn kick(ctx: &ApiContext, auth: &Caller, clientid: &str) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    ctx.node.kick(clientid).await?;
    ok()
}

#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "clients", security(("basic" = []), ("bearer" = [])),
    params(("_page" = Option<u64>, Query), ("_limit" = Option<u64>, Query),
           ("clientid" = Option<String>, Query, description = "Only this client's")),
    responses((status = 200, description = "Subscriptions on every node, as `SubscriptionView`", body = crate::response::Envelope),
              (status = 400, description = "Bad paging", body = crate::error::ErrorBody)))]
pub(crate) async fn subscriptions(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    paging(q)?;
    let query = Inspect::Subscriptions {
        clientid: text(q, "clientid").map(String::from),
    };
    let rows = ctx.node.subscriptions(query).await?;
    paged(rows, q, |s| (s.clientid.clone(), s.topic.clone()))
}

#[utoipa::path(get, path = "/api/v1/routes", tag = "clients", security(("basic" = []), ("bearer" = [])),
    params(("_page" = Option<u64>, Query), ("_limit" = Option<u64>, Query),
           ("topic" = Option<String>, Query, description = "A topic name: the filters matching it; a filter: that filter")),
    responses((status = 200, description = "Topic filters subscribed to, with the node holding the subscribers, as `RouteView`", body = crate::response::Envelope),
              (status = 400, description = "Bad paging", body = crate::error::ErrorBody)))]
pub(crate) async fn route_list(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    paging(q)?;
    let query = Inspect::Routes {
        topic: text(q, "topic").map(String::from),
    };
    let rows = ctx.node.routes(query).await?;
    paged(rows, q, |r| (r.topic.clone(), r.node))
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "clients", security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Each reachable node's figures, as `NodeStats`", body = crate::response::Envelope)))]
pub(crate) async fn stats(ctx: &ApiContext, auth: &Caller, _q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let mut rows = ctx.node.stats().await?;
    rows.sort_by_key(|s| s.node);
    data(rows)
}

#[utoipa::path(get, path = "/api/v1/metrics", tag = "clients", security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Each reachable node's counters (`node` and one field per counter, as in `$SYS` and `GET /metrics`)", body = crate::response::Envelope)))]
pub(crate) async fn metrics(ctx: &ApiContext, auth: &Caller, _q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let mut rows = ctx.node.inspect(Inspect::Metrics).await?;
    rows.sort_by_key(|r| r["node"].as_u64());
    data(rows)
}
