//! `POST /api/v1/auth`: trades a user name and password for a bearer token.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;

use super::{body, caller, with_ctx};
use crate::auth::{Caller, issue_token, login};
use crate::context::ApiContext;
use crate::json::parse;
use crate::response::{ApiResult, Reply, data, into_reply};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Login {
    username: String,
    password: String,
}

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    let max = ctx.config.max_body;
    warp::path!("api" / "v1" / "auth")
        .and(warp::post())
        .and(with_ctx(ctx))
        .and(caller())
        .and(body(max))
        .then(|ctx: ApiContext, who: Caller, b: Bytes| async move {
            into_reply(auth(&ctx, &who, &b).await)
        })
        .boxed()
}

#[utoipa::path(post, path = "/api/v1/auth", tag = "auth", request_body = Login,
    responses((status = 200, description = "`data.token` and `data.role`", body = crate::response::Envelope),
              (status = 401, description = "Wrong user name or password", body = crate::error::ErrorBody),
              (status = 429, description = "Too many failed logins for this user or address", body = crate::error::ErrorBody)))]
pub(crate) async fn auth(ctx: &ApiContext, who: &Caller, body: &[u8]) -> ApiResult {
    let req: Login = parse(body)?;
    let role = login(ctx, &req.username, &req.password, who.addr).await?;
    let token = issue_token(ctx, &req.username, role).await?;
    data(json!({"token": token, "role": role.as_str()}))
}
