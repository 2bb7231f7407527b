//! The OpenAPI 3 document of the whole API, generated from the handlers' annotations and served
//! at `GET /api/v1/openapi.json`. A test walks every documented operation against the router.

use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::routes;

/// The success envelope: `code` is 0; `data` and `meta` depend on the endpoint.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Envelope {
    code: i64,
    data: Option<serde_json::Value>,
    meta: Option<PageMeta>,
}

/// Pagination as the contract shows it: `page` and `limit` are strings.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PageMeta {
    page: String,
    limit: String,
    hasnext: bool,
    count: u64,
}

/// Every error: a non-zero `code` (the HTTP status) and a message naming what is wrong.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    code: i64,
    message: String,
}

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
        routes::openapi::openapi_json,
    ),
    components(schemas(Envelope, PageMeta, ErrorBody, crate::context::NodeInfo)),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}
