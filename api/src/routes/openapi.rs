//! `GET /api/v1/openapi.json`.

use warp::Filter;
use warp::filters::BoxedFilter;

use crate::response::{Reply, into_reply};

pub(crate) fn routes() -> BoxedFilter<(Reply,)> {
    warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| into_reply(Ok(openapi_json())))
        .boxed()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub(crate) fn openapi_json() -> serde_json::Value {
    crate::openapi::document()
}
