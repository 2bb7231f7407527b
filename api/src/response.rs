//! The success envelope, `{"code": 0, "data": ..., "meta": ...}`, and turning a handler's
//! `Result` into a warp reply.

use serde::Serialize;
use serde_json::{Value, json};
use warp::Reply as _;
use warp::http::StatusCode;
use warp::http::header::{HeaderValue, RETRY_AFTER};

use crate::error::ApiError;

/// The success envelope's schema, for the OpenAPI document: `code` is 0; `data` and `meta`
/// depend on the endpoint.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct Envelope {
    code: i64,
    data: Option<serde_json::Value>,
    meta: Option<PageMeta>,
}

/// Pagination as the contract shows it: `page` and `limit` are strings.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct PageMeta {
    page: String,
    limit: String,
    hasnext: bool,
    count: u64,
}

pub type Reply = warp::reply::Response;
pub type ApiResult = Result<Value, ApiError>;

/// `{"code":0}`.
pub fn ok() -> ApiResult {
    Ok(json!({"code": 0}))
}

/// `{"code":0,"data":...}`.
pub fn data<T: Serialize>(data: T) -> ApiResult {
    Ok(json!({"code": 0, "data": data}))
}

/// A page as the contract shows it: `meta.page` and `meta.limit` are strings, `count` a number.
pub fn page<T: Serialize>(items: Vec<T>, page: usize, limit: usize, count: u64) -> ApiResult {
    let shown = (page - 1).saturating_mul(limit).saturating_add(items.len());
    let hasnext = (shown as u64) < count;
    Ok(json!({
        "code": 0,
        "meta": {"page": page.to_string(), "limit": limit.to_string(), "hasnext": hasnext, "count": count},
        "data": items,
    }))
}

pub fn into_reply(result: ApiResult) -> Reply {
    match result {
        Ok(body) => {
            warp::reply::with_status(warp::reply::json(&body), StatusCode::OK).into_response()
        }
        Err(e) => {
            let mut reply =
                warp::reply::with_status(warp::reply::json(&e.body()), e.status()).into_response();
            if let ApiError::TooManyRequests { retry_after, .. } = e {
                reply
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after));
            }
            reply
        }
    }
}
