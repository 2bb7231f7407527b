//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations and served
//! at `GET /api/v1/openapi.json`. A test walks every documented operation against the router.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};
use warp::Filter;
use warp::filters::BoxedFilter;

use crate::response::{Reply, into_reply};
use crate::routes;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "RealMQ REST API", description = "Manage users, products and devices; publish and proxy-subscribe."),
    paths(
        routes::health::health,
        routes::health::ready,
        routes::auth::auth,
        routes::nodes::list,
        routes::nodes::remove,
        routes::users::list,
        routes::users::create,
        routes::users::update,
        routes::users::delete,
        routes::products::create,
        routes::products::list,
        routes::products::get,
        routes::products::update,
        routes::products::delete,
        routes::devices::create,
        routes::devices::list,
        routes::devices::get,
        routes::devices::update,
        routes::devices::delete,
        routes::devices::register,
        routes::mqtt::publish,
        routes::mqtt::subscribe,
        routes::mqtt::unsubscribe,
        routes::mqtt::publish_batch,
        routes::mqtt::subscribe_batch,
        routes::mqtt::unsubscribe_batch,
        openapi_json,
    ),
    components(schemas(crate::response::Envelope, crate::response::PageMeta, crate::error::ErrorBody, crate::context::NodeInfo)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// `GET /api/v1/openapi.json`. Mounted next to `routes::api_v1` (not inside it), so the
/// document depends on the routes and never the other way round.
pub(crate) fn serve() -> BoxedFilter<(Reply,)> {
    warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| into_reply(Ok(openapi_json())))
        .boxed()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub(crate) fn openapi_json() -> serde_json::Value {
    document()
}
