//! Mounts every resource under `/api/v1`. Each resource file builds its filters with the helpers
//! here: one filter per endpoint, ending in a plain async handler that returns `ApiResult`.

pub(crate) mod auth;
pub(crate) mod devices;
pub(crate) mod health;
pub(crate) mod mqtt;
pub(crate) mod openapi;
pub(crate) mod products;
pub(crate) mod users;

use std::convert::Infallible;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

use crate::context::ApiContext;
use crate::query::Query;
use crate::response::Reply;

/// Every route of the API.
pub fn api_v1(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    health::routes(ctx.clone())
        .or(openapi::routes())
        .unify()
        .or(auth::routes(ctx.clone()))
        .unify()
        .or(users::routes(ctx.clone()))
        .unify()
        .or(products::routes(ctx.clone()))
        .unify()
        .or(devices::routes(ctx.clone()))
        .unify()
        .or(mqtt::routes(ctx))
        .unify()
        .boxed()
}

pub(crate) fn with_ctx(
    ctx: ApiContext,
) -> impl Filter<Extract = (ApiContext,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// The raw `Authorization` header, checked by the handler (so errors use the envelope).
pub(crate) fn auth_header() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
}

/// The request body, at most `max` bytes.
pub(crate) fn body(max: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(max).and(warp::body::bytes())
}

/// Query parameters as strings; handlers parse them with `query.rs`.
pub(crate) fn query() -> impl Filter<Extract = (Query,), Error = Rejection> + Clone {
    warp::query::<Query>()
}
