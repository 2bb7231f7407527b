//! The cluster's members: `GET /api/v1/nodes` (any node answers for all) and
//! `DELETE /api/v1/nodes/{id}` (scale-in, administrators only).

use warp::Filter;
use warp::filters::BoxedFilter;

use crate::auth::{Caller, authenticate};
use crate::context::ApiContext;
use crate::query::{Query, id, text};
use crate::response::{ApiResult, Reply, data, ok};

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    collection!(get ctx, "nodes", list)
        .or(member!(delete ctx, "nodes", remove))
        .unify()
        .boxed()
}

#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", security(("basic" = []), ("bearer" = [])),
    params(("digest" = Option<bool>, Query, description = "Also report each member's state digest (a full scan)")),
    responses((status = 200, description = "Every member, as `NodeInfo`", body = crate::response::Envelope)))]
pub(crate) async fn list(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate(ctx, auth).await?;
    let digest = matches!(text(q, "digest"), Some("true" | "1"));
    data(ctx.node.nodes(digest).await)
}

#[utoipa::path(delete, path = "/api/v1/nodes/{id}", tag = "nodes",
    params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Removed", body = crate::response::Envelope),
              (status = 404, description = "Not a member", body = crate::error::ErrorBody),
              (status = 503, description = "No quorum", body = crate::error::ErrorBody)))]
pub(crate) async fn remove(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let node = id(raw, "node")?;
    ctx.node.remove_node(node).await?;
    ok()
}
