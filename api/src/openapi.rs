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

/// The errors every operation can answer besides its own: 400 for any malformed input, 401 /
/// 403 / 429 where credentials are checked, 413 where there is a body, 503 without a quorum;
/// all with the error envelope (`crate::error`, the one error-to-status mapping).
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            if path == "/api/v1/health" || path == "/api/v1/openapi.json" {
                continue;
            }
            let ops = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ];
            for op in ops.into_iter().flatten() {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let mut wanted = vec![("503", "No raft quorum or leader")];
                if path != "/api/v1/ready" {
                    wanted.push(("400", "Malformed input; the message names the field"));
                }
                if secured {
                    wanted.push(("401", "Missing or wrong credentials"));
                    wanted.push(("403", "The viewer role may only read"));
                    wanted.push(("429", "Too many failed logins"));
                }
                if op.request_body.is_some() {
                    wanted.push(("413", "Body larger than max_body"));
                }
                for (code, why) in wanted {
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error_response(why));
                }
            }
        }
    }
}

fn error_response(why: &str) -> utoipa::openapi::RefOr<utoipa::openapi::response::Response> {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(why)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "RealMQ REST API", description = "Manage users, products, devices and rules; publish and proxy-subscribe."),
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
        routes::clients::list,
        routes::clients::get,
        routes::clients::kick,
        routes::clients::subscriptions,
        routes::clients::route_list,
        routes::clients::stats,
        routes::clients::metrics,
        routes::rules::create,
        routes::rules::list,
        routes::rules::get,
        routes::rules::update,
        routes::rules::delete,
        routes::rules::test,
        openapi_json,
    ),
    components(schemas(crate::response::Envelope, crate::response::PageMeta, crate::error::ErrorBody, crate::context::NodeInfo,
        crate::routes::clients::ClientView, crate::routes::clients::SubscriptionView,
        crate::routes::clients::RouteView, crate::routes::clients::NodeStats)),
    modifiers(&SecuritySchemes, &ErrorResponses)
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
