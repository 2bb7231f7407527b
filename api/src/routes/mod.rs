//! Mounts every resource under `/api/v1`. Each resource file builds its filters with the helpers
//! here: one filter per endpoint, ending in a plain async handler that returns `ApiResult`.

/// An authenticated endpoint on a collection, `/api/v1/{resource}`:
/// `get` passes the query string to the handler, `post` the body.
macro_rules! collection {
    (get $ctx:expr, $res:literal, $handler:path) => {
        warp::path!("api" / "v1" / $res)
            .and(warp::get())
            .and($crate::routes::with_ctx($ctx.clone()))
            .and($crate::routes::caller())
            .and($crate::routes::query())
            .then(
                |ctx: ApiContext, a: $crate::auth::Caller, q: $crate::query::Query| async move {
                    $crate::response::into_reply($handler(&ctx, &a, &q).await)
                },
            )
    };
    (post $ctx:expr, $res:literal, $handler:path) => {
        warp::path!("api" / "v1" / $res)
            .and(warp::post())
            .and($crate::routes::with_ctx($ctx.clone()))
            .and($crate::routes::caller())
            .and($crate::routes::body($ctx.config.max_body))
            .then(
                |ctx: ApiContext, a: $crate::auth::Caller, b: bytes::Bytes| async move {
                    $crate::response::into_reply($handler(&ctx, &a, &b).await)
                },
            )
    };
}

/// An authenticated endpoint on one member, `/api/v1/{resource}/{key}`: the handler gets the
/// raw key (it parses and reports a bad one itself) and, for `put`, the body.
macro_rules! member {
    (put_body $ctx:expr, $res:literal, $handler:path) => {
        warp::path!("api" / "v1" / $res / String)
            .and(warp::put())
            .and($crate::routes::with_ctx($ctx.clone()))
            .and($crate::routes::caller())
            .and($crate::routes::body($ctx.config.max_body))
            .then(
                |key: String, ctx: ApiContext, a: $crate::auth::Caller, b: bytes::Bytes| async move {
                    $crate::response::into_reply(match $crate::routes::segment(&key) {
                        Ok(key) => $handler(&ctx, &a, &key, &b).await,
                        Err(e) => Err(e),
                    })
                },
            )
    };
    ($method:ident $ctx:expr, $res:literal, $handler:path) => {
        warp::path!("api" / "v1" / $res / String)
            .and(warp::$method())
            .and($crate::routes::with_ctx($ctx.clone()))
            .and($crate::routes::caller())
            .then(
                |key: String, ctx: ApiContext, a: $crate::auth::Caller| async move {
                    $crate::response::into_reply(match $crate::routes::segment(&key) {
                        Ok(key) => $handler(&ctx, &a, &key).await,
                        Err(e) => Err(e),
                    })
                },
            )
    };
}

pub(crate) mod auth;
pub(crate) mod clients;
pub(crate) mod devices;
pub(crate) mod health;
pub(crate) mod mqtt;
pub(crate) mod nodes;
pub(crate) mod products;
pub(crate) mod rules;
pub(crate) mod users;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use warp::filters::BoxedFilter;
use warp::{Filter, Rejection};

use crate::auth::Caller;
use crate::context::ApiContext;
use crate::error::ApiError;
use crate::query::Query;
use crate::response::Reply;

/// Every route of the API.
pub fn api_v1(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    health::routes(ctx.clone())
        .or(auth::routes(ctx.clone()))
        .unify()
        .or(users::routes(ctx.clone()))
        .unify()
        .or(products::routes(ctx.clone()))
        .unify()
        .or(devices::routes(ctx.clone()))
        .unify()
        .or(mqtt::routes(ctx.clone()))
        .unify()
        .or(nodes::routes(ctx.clone()))
        .unify()
        .or(clients::routes(ctx.clone()))
        .unify()
        .or(rules::routes(ctx))
        .unify()
        .boxed()
}

pub(crate) fn with_ctx(
    ctx: ApiContext,
) -> impl Filter<Extract = (ApiContext,), Error = Infallible> + Clone {
    warp::any().map(move || ctx.clone())
}

/// The caller's `Authorization` header and address, checked by the handler (so errors use the
/// envelope).
pub(crate) fn caller() -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::ext::optional::<crate::serve::Peer>())
        .and(warp::addr::remote())
        .map(
            |authorization, peer: Option<crate::serve::Peer>, addr: Option<SocketAddr>| Caller {
                authorization,
                // Set by RealMQ's server (`serve.rs`); warp's own is what `warp::test` sets.
                addr: peer.map(|p| p.0).or(addr).map(|a| a.ip()),
            },
        )
}

/// The request body, at most `max` bytes.
pub(crate) fn body(max: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::body::content_length_limit(max).and(warp::body::bytes())
}

/// Query parameters as strings; handlers parse them with `query.rs`.
pub(crate) fn query() -> impl Filter<Extract = (Query,), Error = Rejection> + Clone {
    warp::query::<Query>()
}

/// A path segment as the client meant it: warp hands it over still percent-encoded, so a user
/// named `ana maria` (sent as `ana%20maria`) could be created but never addressed.
pub(crate) fn segment(raw: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadRequest("the path segment is not valid UTF-8".into()))
}
