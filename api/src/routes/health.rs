//! `GET /api/v1/health` (the process is up) and `GET /api/v1/ready` (a raft member with a known
//! leader whose MQTT listener accepts connections). Neither needs credentials.

use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::with_ctx;
use crate::context::ApiContext;
use crate::error::ApiError;
use crate::response::{ApiResult, Reply, data, into_reply};

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    let health = warp::path!("api" / "v1" / "health")
        .and(warp::get())
        .map(|| into_reply(health()));
    let ready = warp::path!("api" / "v1" / "ready")
        .and(warp::get())
        .and(with_ctx(ctx))
        .then(async |ctx: ApiContext| into_reply(ready(&ctx).await));
    health.or(ready).unify().boxed()
}

#[utoipa::path(get, path = "/api/v1/health", tag = "health",
    responses((status = 200, description = "The process is up", body = crate::response::Envelope)))]
pub(crate) fn health() -> ApiResult {
    data(json!({"status": "up"}))
}

#[utoipa::path(get, path = "/api/v1/ready", tag = "health",
    responses((status = 200, description = "Ready to serve", body = crate::response::Envelope),
              (status = 503, description = "No raft leader or MQTT not listening", body = crate::error::ErrorBody)))]
pub(crate) async fn ready(ctx: &ApiContext) -> ApiResult {
    let leader = ctx.writer.raft().metrics().borrow().current_leader;
    match leader {
        None => Err(ApiError::Unavailable("no raft leader is known".into())),
        Some(_) if ctx.registry.installing() => Err(ApiError::Unavailable(
            "installing a snapshot from the leader".into(),
        )),
        Some(_) if !ctx.node.listening() => Err(ApiError::Unavailable(
            "the MQTT listener is not accepting connections".into(),
        )),
        Some(leader) => {
            // Operators see at a glance that anyone reaching the API is an administrator.
            let default_root = crate::root_has_default_password(ctx).await.unwrap_or(false);
            data(
                json!({"status": "ready", "leader": leader, "default_root_password": default_root}),
            )
        }
    }
}
