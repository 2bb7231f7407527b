//! Publishing and proxy subscriptions over HTTP: `POST /api/v1/mqtt/{publish,subscribe,
//! unsubscribe}` and their `_batch` forms. They go through the broker's own routing path
//! (`NodeOps`); a batch answers per item, and a failed item leaves the others applied.

use std::collections::BTreeMap;

use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use warp::Filter;
use warp::filters::BoxedFilter;

use super::{body, caller, with_ctx};
use crate::auth::{Caller, authenticate};
use crate::context::{ApiContext, Properties, Publish};
use crate::error::ApiError;
use crate::json::{lenient_bool, parse};
use crate::response::{ApiResult, Reply, data, into_reply, ok};

/// Items one batch request may carry.
const MAX_BATCH: usize = 1000;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PublishBody {
    /// One topic; give this or `topics`.
    topic: Option<String>,
    /// Several topics separated by commas.
    topics: Option<String>,
    /// The client id the message is published as.
    clientid: Option<String>,
    payload: String,
    /// `plain` (default) or `base64`.
    encoding: Option<String>,
    /// 0 (default), 1 or 2.
    qos: Option<i64>,
    #[serde(default, deserialize_with = "lenient_bool")]
    #[schema(value_type = Option<bool>)]
    retain: Option<bool>,
    properties: Option<PropertiesBody>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PropertiesBody {
    payload_format_indicator: Option<u8>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<String>,
    user_properties: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubscribeBody {
    topic: Option<String>,
    topics: Option<String>,
    clientid: String,
    qos: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnsubscribeBody {
    topic: String,
    clientid: String,
    /// Accepted and ignored, as in the contract's example.
    qos: Option<i64>,
}

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    let max = ctx.config.max_body;
    let post = |name: &'static str| {
        warp::path("api")
            .and(warp::path("v1"))
            .and(warp::path("mqtt"))
            .and(warp::path(name))
            .and(warp::path::end())
            .and(warp::post())
            .and(with_ctx(ctx.clone()))
            .and(caller())
            .and(body(max))
    };
    // Every endpoint here changes broker state: administrators only.
    macro_rules! endpoint {
        ($name:literal, $handler:ident) => {
            post($name).then(|ctx: ApiContext, a: Caller, b: Bytes| async move {
                let answer = async {
                    authenticate(&ctx, &a).await?.require_admin()?;
                    $handler(&ctx, &b).await
                };
                into_reply(answer.await)
            })
        };
    }
    endpoint!("publish", publish)
        .or(endpoint!("subscribe", subscribe))
        .unify()
        .or(endpoint!("unsubscribe", unsubscribe))
        .unify()
        .or(endpoint!("publish_batch", publish_batch))
        .unify()
        .or(endpoint!("subscribe_batch", subscribe_batch))
        .unify()
        .or(endpoint!("unsubscribe_batch", unsubscribe_batch))
        .unify()
        .boxed()
}

/// `topic` and the comma-separated `topics`, at least one and at most `max`.
fn topic_list(
    ctx: &ApiContext,
    topic: Option<&str>,
    topics: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let max = ctx.config.max_topics;
    let mut all: Vec<String> = topic.into_iter().map(String::from).collect();
    if let Some(t) = topics {
        all.extend(
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    if all.is_empty() {
        return Err(ApiError::BadRequest("topic or topics is required".into()));
    }
    if all.len() > max {
        return ctx.within_limits(Err(ApiError::BadRequest(format!(
            "topics names {} topics; at most {max} per request",
            all.len()
        ))));
    }
    Ok(all)
}

fn qos(q: Option<i64>) -> Result<u8, ApiError> {
    match q.unwrap_or(0) {
        q @ 0..=2 => Ok(q as u8),
        q => Err(ApiError::BadRequest(format!(
            "qos must be 0, 1 or 2, got {q}"
        ))),
    }
}

/// Validates a publish body into one message per topic.
fn messages(ctx: &ApiContext, req: PublishBody) -> Result<Vec<Publish>, ApiError> {
    let topics = topic_list(ctx, req.topic.as_deref(), req.topics.as_deref())?;
    let payload = match req.encoding.as_deref().unwrap_or("plain") {
        "plain" => req.payload.into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(req.payload.trim())
            .map_err(|e| ApiError::BadRequest(format!("payload is not valid base64: {e}")))?,
        other => {
            return Err(ApiError::BadRequest(format!(
                "encoding must be plain or base64, got {other:?}"
            )));
        }
    };
    let qos = qos(req.qos)?;
    let p = req.properties.unwrap_or_default();
    if p.payload_format_indicator.is_some_and(|f| f > 1) {
        return Err(ApiError::BadRequest(
            "properties.payload_format_indicator must be 0 or 1".into(),
        ));
    }
    let properties = Properties {
        payload_format_indicator: p.payload_format_indicator,
        message_expiry_interval: p.message_expiry_interval,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties.unwrap_or_default(),
    };
    Ok(topics
        .into_iter()
        .map(|topic| Publish {
            topic,
            payload: payload.clone(),
            qos,
            retain: req.retain.unwrap_or(false),
            client_id: req.clientid.clone(),
            properties: properties.clone(),
        })
        .collect())
}

fn message_id() -> String {
    let mut b = [0u8; 8];
    rand::fill(&mut b);
    hex::encode(b)
}

#[utoipa::path(post, path = "/api/v1/mqtt/publish", tag = "mqtt", request_body = PublishBody, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Routed; `data.id` and `data.matched` (sessions reached)", body = crate::response::Envelope),
              (status = 400, description = "Invalid topic, qos, encoding or payload", body = crate::error::ErrorBody)))]
pub(crate) async fn publish(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    let msgs = messages(ctx, parse(body)?)?;
    // Routed in order, confirmed together.
    let confirms: Vec<_> = msgs.into_iter().map(|m| ctx.node.publish(m)).collect();
    let mut matched = 0;
    for c in confirms {
        matched += c.await?;
    }
    data(json!({"id": message_id(), "matched": matched}))
}

#[utoipa::path(post, path = "/api/v1/mqtt/subscribe", tag = "mqtt", request_body = SubscribeBody, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Subscribed", body = crate::response::Envelope),
              (status = 400, description = "Invalid filter or qos", body = crate::error::ErrorBody),
              (status = 404, description = "The client has no session", body = crate::error::ErrorBody)))]
pub(crate) async fn subscribe(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    let req: SubscribeBody = parse(body)?;
    let q = qos(req.qos)?;
    for f in topic_list(ctx, req.topic.as_deref(), req.topics.as_deref())? {
        ctx.node.subscribe(&req.clientid, &f, q).await?;
    }
    ok()
}

#[utoipa::path(post, path = "/api/v1/mqtt/unsubscribe", tag = "mqtt", request_body = UnsubscribeBody, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Unsubscribed", body = crate::response::Envelope),
              (status = 404, description = "No such session or subscription", body = crate::error::ErrorBody)))]
pub(crate) async fn unsubscribe(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    let req: UnsubscribeBody = parse(body)?;
    let _ = req.qos;
    ctx.node.unsubscribe(&req.clientid, &req.topic).await?;
    ok()
}

/// Splits a batch body into its items; only the outer shape can fail the whole request.
fn items(body: &[u8]) -> Result<Vec<Value>, ApiError> {
    let all: Vec<Value> = parse(body)?;
    if all.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "a batch holds at most {MAX_BATCH} items, got {}",
            all.len()
        )));
    }
    Ok(all)
}

/// Parses one item; a failure becomes that item's result.
fn item<T: DeserializeOwned>(v: &Value, i: usize) -> Result<T, ApiError> {
    parse(v.to_string().as_bytes()).map_err(|e| ApiError::BadRequest(format!("[{i}] {e}")))
}

fn result(topic: &str, r: Result<(), ApiError>) -> Value {
    match r {
        Ok(()) => json!({"topic": topic, "code": 0}),
        Err(e) => json!({"topic": topic, "code": e.code(), "message": e.to_string()}),
    }
}

fn topic_of(v: &Value) -> String {
    v.get("topic")
        .or_else(|| v.get("topics"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[utoipa::path(post, path = "/api/v1/mqtt/publish_batch", tag = "mqtt", request_body = Vec<PublishBody>, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data`: one `{topic, code}` per topic", body = crate::response::Envelope)))]
pub(crate) async fn publish_batch(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    // Every item is routed in order first; then the confirmations are awaited together.
    let mut pending = Vec::new();
    for (i, v) in items(body)?.iter().enumerate() {
        match item::<PublishBody>(v, i).and_then(|r| messages(ctx, r)) {
            Err(e) => pending.push((topic_of(v), Err(e))),
            Ok(msgs) => {
                for m in msgs {
                    let topic = m.topic.clone();
                    pending.push((topic, Ok(ctx.node.publish(m))));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(pending.len());
    for (topic, p) in pending {
        let r = match p {
            Ok(confirm) => confirm.await.map(|_| ()).map_err(ApiError::from),
            Err(e) => Err(e),
        };
        out.push(result(&topic, r));
    }
    data(out)
}

#[utoipa::path(post, path = "/api/v1/mqtt/subscribe_batch", tag = "mqtt", request_body = Vec<SubscribeBody>, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data`: one `{topic, code}` per topic", body = crate::response::Envelope)))]
pub(crate) async fn subscribe_batch(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    let mut out = Vec::new();
    for (i, v) in items(body)?.iter().enumerate() {
        let parsed = item::<SubscribeBody>(v, i).and_then(|r| {
            let q = qos(r.qos)?;
            Ok((
                topic_list(ctx, r.topic.as_deref(), r.topics.as_deref())?,
                r.clientid,
                q,
            ))
        });
        match parsed {
            Err(e) => out.push(result(&topic_of(v), Err(e))),
            Ok((filters, client, q)) => {
                for f in filters {
                    let r = ctx.node.subscribe(&client, &f, q).await;
                    out.push(result(&f, r.map_err(ApiError::from)));
                }
            }
        }
    }
    data(out)
}

#[utoipa::path(post, path = "/api/v1/mqtt/unsubscribe_batch", tag = "mqtt", request_body = Vec<UnsubscribeBody>, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data`: one `{topic, code}` per item", body = crate::response::Envelope)))]
pub(crate) async fn unsubscribe_batch(ctx: &ApiContext, body: &[u8]) -> ApiResult {
    let mut out = Vec::new();
    for (i, v) in items(body)?.iter().enumerate() {
        let r = match item::<UnsubscribeBody>(v, i) {
            Ok(r) => ctx
                .node
                .unsubscribe(&r.clientid, &r.topic)
                .await
                .map_err(ApiError::from),
            Err(e) => Err(e),
        };
        out.push(result(&topic_of(v), r));
    }
    data(out)
}
