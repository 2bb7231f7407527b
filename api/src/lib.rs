//! # realmq-api: the REST front, `/api/v1`
//!
//! ## Layout
//!
//! - `routes/`: one file per resource (`products`, `devices`, `users`, `auth`, `mqtt`,
//!   `nodes`, `health`, `clients`, `rules`), each a set of warp filters ending in plain async handlers
//! - `context.rs`: `ApiContext` and `NodeOps`, the only way the API reaches the broker
//! - `auth.rs`: Basic and Bearer authentication, tokens
//! - `passwords.rs`: argon2 hashing and verification, bounded per core, failed-login limits
//! - `write.rs`: `submit`, every metadata write, through `raft_store::client::Writer`
//! - `json.rs`, `query.rs`, `time.rs`: request parsing and the contract's formats
//! - `error.rs`, `response.rs`: the one error → status mapping and the envelopes
//! - `openapi.rs`: the OpenAPI document
//! - `metrics.rs`: request metrics, and `GET /metrics` (the node renders the exposition)
//! - `console.rs`: the control center, the web console's files (`api/console/`) at `/`
//! - `serve.rs`: the accept loop, HTTP or HTTPS (rustls), each connection run by hyper
//!
//! ## How a request flows
//!
//! `POST /api/v1/devices` → `routes/devices.rs` filter → `authenticate` → `json::parse` →
//! `write::submit(Command::CreateDevice)` → raft → `apply` → a typed answer (`Created`) →
//! envelope.
//! Reads go to `Registry` directly.

pub mod auth;
pub mod console;
pub mod context;
pub mod error;
mod json;
pub mod metrics;
pub mod openapi;
mod passwords;
mod query;
mod response;
mod routes;
mod serve;
mod time;
mod write;

use std::convert::Infallible;

use realmq_raft_store::Command;
use realmq_raft_store::model::{Role, User};
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

pub use context::{
    ApiConfig, ApiContext, BoxFuture, NodeInfo, NodeOps, OpError, Properties, Publish, RuleTest,
};
pub use error::ApiError;
pub use routes::clients::{ClientView, Inspect, NodeStats, RouteView, SubscriptionView};
pub use routes::devices::registration_sign;
pub use serve::{TlsSource, serve};
pub use time::format_ms;

use response::Reply;

/// Every route, with rejections turned into the error envelope.
pub fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    let http = ctx.http.clone();
    let access_log = ctx.config.access_log;
    let console = ctx.config.console;
    routes::api_v1(ctx.clone())
        .or(metrics::routes(ctx))
        .unify()
        .or(console::routes(console))
        .unify()
        .or(openapi::serve())
        .unify()
        .recover(recover)
        .unify()
        .with(warp::log::custom(move |info| {
            http.observe(
                info.method().as_str(),
                info.path(),
                info.status().as_u16(),
                info.elapsed(),
            );
            if access_log {
                let user = info
                    .request_headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .map(auth::claimed_user)
                    .unwrap_or_default();
                tracing::info!(
                    target: "realmq::access",
                    method = %info.method(),
                    path = info.path(),
                    status = info.status().as_u16(),
                    ms = info.elapsed().as_secs_f64() * 1000.0,
                    user,
                    peer = ?info.remote_addr(),
                    "request"
                );
            }
        }))
        .map(warp::Reply::into_response)
        .boxed()
}

async fn recover(err: Rejection) -> Result<Reply, Infallible> {
    let e = if err.is_not_found() {
        ApiError::NotFound("no such endpoint".into())
    } else if err.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::PayloadTooLarge
    } else if err.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::BadRequest("a request body with a Content-Length header is required".into())
    } else if err.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::NotFound("no such endpoint for this method".into())
    } else if let Some(e) = err.find::<warp::reject::InvalidQuery>() {
        ApiError::BadRequest(format!("invalid query string: {e}"))
    } else if let Some(e) = err.find::<warp::reject::InvalidHeader>() {
        ApiError::BadRequest(e.to_string())
    } else {
        tracing::warn!(rejection = ?err, "unhandled rejection");
        ApiError::BadRequest(format!("{err:?}"))
    };
    Ok(response::into_reply(Err(e)))
}

/// On a cluster's first start (no token secret yet), creates the secret and the `root`
/// administrator with `root_password` in one command that applies only while no secret exists
/// (every node may propose it; the first wins). Returns whether this node's command was the one
/// applied; later starts, even after `root` was deleted or with another password, change
/// nothing.
pub async fn bootstrap(ctx: &ApiContext, root_password: &str) -> Result<bool, ApiError> {
    ctx.writer.barrier().await?;
    if ctx.registry.token_secret()?.is_some() {
        return Ok(false);
    }
    let mut secret = vec![0u8; 32];
    rand::fill(&mut secret[..]);
    let root = User {
        username: "root".into(),
        password_hash: auth::hash_password(ctx, root_password).await?,
        role: Role::Administrator,
        created_at: chrono::Utc::now().timestamp_millis(),
    };
    // Every node of a new cluster gets here; only the first bootstrap to commit applies.
    Ok(
        write::submit_or_refused::<()>(ctx, Command::Bootstrap { secret, root })
            .await?
            .is_ok(),
    )
}

/// The `root` password of a cluster created without `[api] root_password`, kept for
/// compatibility with the seed; a node warns on every start while it still works.
pub const DEFAULT_ROOT_PASSWORD: &str = "123456";

/// Whether `root` still has `DEFAULT_ROOT_PASSWORD`. Checked once per stored hash, so the
/// readiness probe pays for argon2 only after root's password changed.
pub async fn root_has_default_password(ctx: &ApiContext) -> Result<bool, ApiError> {
    let Some(root) = ctx.registry.user("root")? else {
        return Ok(false);
    };
    if let Some((hash, verdict)) = ctx.default_root.lock().clone()
        && hash == root.password_hash
    {
        return Ok(verdict);
    }
    let verdict = ctx
        .passwords
        .matches(DEFAULT_ROOT_PASSWORD, &root.password_hash)
        .await?;
    *ctx.default_root.lock() = Some((root.password_hash, verdict));
    Ok(verdict)
}
