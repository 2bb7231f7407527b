//! The REST API's own metrics (requests by route, method and status, and their latency), and
//! `GET /metrics`: the node's Prometheus exposition, which the node renders (`NodeOps::
//! prometheus`) with these families registered in it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use warp::filters::BoxedFilter;
use warp::http::{StatusCode, header};
use warp::{Filter, Reply as _};

use crate::auth::Caller;
use crate::context::ApiContext;
use crate::response::{Reply, into_reply};
use crate::routes::{caller, with_ctx};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    route: String,
    method: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
    method: String,
}

fn latency() -> Histogram {
    // 0.25 ms to about 8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

/// Request counters and latencies; cheap to clone (the families are shared).
#[derive(Clone, Debug)]
pub struct HttpMetrics {
    requests: Family<Request, Counter>,
    seconds: Family<Route, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency),
        }
    }
}

impl HttpMetrics {
    /// Adds the families to the node's registry.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "realmq_http_requests",
            "REST requests answered, by route, method and status",
            self.requests.clone(),
        );
        registry.register(
            "realmq_http_request_duration_seconds",
            "REST request latency, by route and method",
            self.seconds.clone(),
        );
    }

    pub(crate) fn observe(&self, method: &str, path: &str, status: u16, took: Duration) {
        let route = route_of(path);
        let method = method.to_string();
        self.requests
            .get_or_create(&Request {
                route: route.clone(),
                method: method.clone(),
                status,
            })
            .inc();
        self.seconds
            .get_or_create(&Route { route, method })
            .observe(took.as_secs_f64());
    }
}

/// The resources and the actions under them; any other segment is an id or a name.
const KNOWN: &[&str] = &[
    "health",
    "ready",
    "auth",
    "users",
    "products",
    "devices",
    "register",
    "mqtt",
    "publish",
    "publish_batch",
    "subscribe",
    "subscribe_batch",
    "unsubscribe",
    "unsubscribe_batch",
    "nodes",
    "clients",
    "subscriptions",
    "routes",
    "stats",
    "metrics",
    "rules",
    "test",
    "openapi.json",
];

/// The route a path was served by, with ids and names as `:id`, so the label's values stay
/// few (`/api/v1/devices/17` → `/api/v1/devices/:id`); paths outside the API are `other`.
pub(crate) fn route_of(path: &str) -> String {
    if path == "/metrics" {
        return path.into();
    }
    let Some(rest) = path.strip_prefix("/api/v1/") else {
        return "other".into();
    };
    let mut route = String::from("/api/v1");
    for segment in rest.split('/').filter(|s| !s.is_empty()).take(4) {
        route.push('/');
        route.push_str(if KNOWN.contains(&segment) {
            segment
        } else {
            ":id"
        });
    }
    route
}

/// `GET /metrics`: the Prometheus exposition (OpenMetrics text); without credentials unless
/// `metrics_auth` (then any API user may scrape).
pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_ctx(ctx))
        .and(caller())
        .then(async |ctx: ApiContext, caller: Caller| {
            if ctx.config.metrics_auth
                && let Err(e) = crate::auth::authenticate_read(&ctx, &caller).await
            {
                return into_reply(Err(e));
            }
            let mut reply =
                warp::reply::with_status(ctx.node.prometheus(), StatusCode::OK).into_response();
            reply.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            reply
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    #[test]
    fn routes_are_templates() {
        for (path, route) in [
            ("/api/v1/devices/17", "/api/v1/devices/:id"),
            ("/api/v1/devices/register", "/api/v1/devices/register"),
            ("/api/v1/users/ana%20maria", "/api/v1/users/:id"),
            ("/api/v1/mqtt/publish_batch", "/api/v1/mqtt/publish_batch"),
            ("/api/v1/products", "/api/v1/products"),
            ("/metrics", "/metrics"),
            ("/favicon.ico", "other"),
            ("/api/v1/a/b/c/d/e/f", "/api/v1/:id/:id/:id/:id"),
        ] {
            assert_eq!(super::route_of(path), route, "{path}");
        }
    }
}
