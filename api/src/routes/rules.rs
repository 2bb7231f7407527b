//! Rules of the rule engine: `POST/GET /api/v1/rules`, `GET/PUT/DELETE /api/v1/rules/{id}`,
//! `POST /api/v1/rules/test`.
//!
//! A rule is checked by the node before it is written (`NodeOps::check_rule`: the SQL compiles,
//! the templates parse), so a rule that could not run is refused with 400 and where it fails.
//! The detail carries the rule's counters on every reachable node and their sum. A write is
//! answered once this node's engine runs the rule as written (`NodeOps::rule_written`).

use std::collections::BTreeMap;

use realmq_raft_store::model::{Rule, RuleAction, RulePatch};
use realmq_raft_store::{Command, Created};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use warp::Filter;
use warp::filters::BoxedFilter;

use super::clients::Inspect;
use crate::auth::{Caller, authenticate, authenticate_read};
use crate::context::{ApiContext, RuleTest};
use crate::error::ApiError;
use crate::json::parse;
use crate::query::{Query, id, paging, text};
use crate::response::{ApiResult, Reply, data, ok, page};
use crate::time::format_ms;
use crate::write::submit;

/// One action, as the API spells it: `{"type": "republish" | "webhook" | "log", ...}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum ActionBody {
    /// Publishes `payload` to `topic` (both `${field}` templates over the rule's output).
    Republish {
        topic: String,
        #[serde(default)]
        payload: Option<String>,
        #[serde(default)]
        qos: u8,
        #[serde(default)]
        retain: bool,
    },
    /// POSTs the output as JSON, or `body` (a template), to `url`.
    Webhook {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default)]
        body: Option<String>,
        /// Milliseconds one POST may take (default 5000).
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Further attempts after a failed POST (default 3).
        #[serde(default)]
        retries: Option<u32>,
        /// Outputs waiting to be posted, at most (default 1000).
        #[serde(default)]
        queue: Option<usize>,
    },
    /// Writes the output to the node's log (target `realmq::rules`).
    Log {},
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRule {
    name: String,
    /// `SELECT ... FROM "<topic filter>" | "$events/..." [WHERE ...]`.
    sql: String,
    actions: Vec<ActionBody>,
    description: Option<String>,
    /// Default true.
    enable: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleUpdate {
    name: Option<String>,
    sql: Option<String>,
    actions: Option<Vec<ActionBody>>,
    description: Option<String>,
    enable: Option<bool>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleTestBody {
    sql: String,
    /// The message or event fields (`topic`, `payload`, `clientid`, ...); the rest default.
    #[serde(default)]
    context: Map<String, Value>,
}

const COUNTERS: [&str; 5] = [
    "matched",
    "passed",
    "failed",
    "actions_success",
    "actions_failed",
];

pub(crate) fn routes(ctx: ApiContext) -> BoxedFilter<(Reply,)> {
    let test = warp::path!("api" / "v1" / "rules" / "test")
        .and(warp::post())
        .and(super::with_ctx(ctx.clone()))
        .and(super::caller())
        .and(super::body(ctx.config.max_body))
        .then(|ctx: ApiContext, a: Caller, b: bytes::Bytes| async move {
            crate::response::into_reply(test(&ctx, &a, &b).await)
        });
    test.or(collection!(post ctx, "rules", create))
        .unify()
        .or(collection!(get ctx, "rules", list))
        .unify()
        .or(member!(get ctx, "rules", get))
        .unify()
        .or(member!(put_body ctx, "rules", update))
        .unify()
        .or(member!(delete ctx, "rules", delete))
        .unify()
        .boxed()
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::BadRequest(m.into())
}

/// The stored action of one the API received, with defaults filled in and limits checked.
fn action(i: usize, a: ActionBody) -> Result<RuleAction, ApiError> {
    Ok(match a {
        ActionBody::Republish {
            topic,
            payload,
            qos,
            retain,
        } => {
            if topic.is_empty() {
                return Err(bad(format!("actions[{i}].topic must not be empty")));
            }
            if qos > 2 {
                return Err(bad(format!("actions[{i}].qos must be 0, 1 or 2")));
            }
            RuleAction::Republish {
                topic,
                payload: payload.unwrap_or_else(|| "${payload}".into()),
                qos,
                retain,
            }
        }
        ActionBody::Webhook {
            url,
            headers,
            body,
            timeout_ms,
            retries,
            queue,
        } => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| bad(format!("actions[{i}].url: {e}")))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(bad(format!(
                    "actions[{i}].url must be an http:// or https:// URL"
                )));
            }
            for (k, v) in &headers {
                if http::HeaderName::from_bytes(k.as_bytes()).is_err()
                    || http::HeaderValue::from_str(v).is_err()
                {
                    return Err(bad(format!(
                        "actions[{i}].headers: {k:?} is not a valid header"
                    )));
                }
            }
            let timeout_ms = timeout_ms.unwrap_or(5000);
            let retries = retries.unwrap_or(3);
            let queue = queue.unwrap_or(1000);
            if !(1..=60_000).contains(&timeout_ms) {
                return Err(bad(format!("actions[{i}].timeout_ms must be 1 to 60000")));
            }
            if retries > 10 {
                return Err(bad(format!("actions[{i}].retries must be at most 10")));
            }
            if !(1..=100_000).contains(&queue) {
                return Err(bad(format!("actions[{i}].queue must be 1 to 100000")));
            }
            RuleAction::Webhook {
                url,
                headers,
                body,
                timeout_ms,
                retries,
                queue,
            }
        }
        ActionBody::Log {} => RuleAction::Log,
    })
}

fn actions(list: Vec<ActionBody>) -> Result<Vec<RuleAction>, ApiError> {
    if list.is_empty() {
        return Err(bad("a rule needs at least one action"));
    }
    if list.len() > 16 {
        return Err(bad("a rule has at most 16 actions"));
    }
    list.into_iter()
        .enumerate()
        .map(|(i, a)| action(i, a))
        .collect()
}

fn check_name(name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 128 {
        return Err(bad("name must be 1 to 128 characters"));
    }
    Ok(name.to_string())
}

/// The node compiles what would be stored; a failure is the caller's mistake.
fn check(ctx: &ApiContext, rule: &Rule) -> Result<(), ApiError> {
    if rule.sql.len() > 16 * 1024 {
        return Err(bad("sql is longer than 16384 bytes"));
    }
    ctx.node.check_rule(rule).map_err(ApiError::BadRequest)
}

fn action_view(a: &RuleAction) -> Value {
    match a {
        RuleAction::Republish {
            topic,
            payload,
            qos,
            retain,
        } => {
            json!({"type": "republish", "topic": topic, "payload": payload, "qos": qos, "retain": retain})
        }
        RuleAction::Webhook {
            url,
            headers,
            body,
            timeout_ms,
            retries,
            queue,
        } => json!({"type": "webhook", "url": url, "headers": headers, "body": body,
                    "timeout_ms": timeout_ms, "retries": retries, "queue": queue}),
        RuleAction::Log => json!({"type": "log"}),
    }
}

fn view(r: &Rule) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "sql": r.sql,
        "actions": r.actions.iter().map(action_view).collect::<Vec<_>>(),
        "description": r.description,
        "enable": r.enable,
        "created_at": format_ms(r.created_at),
        "updated_at": format_ms(r.updated_at),
    })
}

#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", request_body = NewRule, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data.id`", body = crate::response::Envelope),
              (status = 400, description = "Invalid field; SQL that does not compile, with its position", body = crate::error::ErrorBody)))]
pub(crate) async fn create(ctx: &ApiContext, auth: &Caller, body: &[u8]) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let req: NewRule = parse(body)?;
    ctx.within_limits(crate::json::check_text_len(
        "description",
        req.description.as_deref(),
        ctx.config.max_text,
    ))?;
    let now = chrono::Utc::now().timestamp_millis();
    let rule = Rule {
        id: 0,
        name: check_name(&req.name)?,
        sql: req.sql,
        actions: actions(req.actions)?,
        description: req.description,
        enable: req.enable.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    check(ctx, &rule)?;
    let Created { id } = submit(ctx, Command::CreateRule { rule }).await?;
    ctx.node.rule_written(id);
    data(json!({ "id": id }))
}

#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", security(("basic" = []), ("bearer" = [])),
    params(("_page" = Option<u32>, Query, description = "Page, from 1"), ("_limit" = Option<u32>, Query, description = "Page size (default 10)"),
           ("name" = Option<String>, Query, description = "Substring of the name")),
    responses((status = 200, description = "A page of rules with `meta`", body = crate::response::Envelope)))]
pub(crate) async fn list(ctx: &ApiContext, auth: &Caller, q: &Query) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let paging = paging(q)?;
    let name = text(q, "name");
    let all: Vec<Rule> = ctx
        .registry
        .rules()?
        .into_iter()
        .filter(|r| name.is_none_or(|n| r.name.contains(n)))
        .collect();
    let total = all.len() as u64;
    let items: Vec<Value> = all
        .iter()
        .skip(paging.offset())
        .take(paging.limit)
        .map(view)
        .collect();
    page(items, paging.page, paging.limit, total)
}

async fn load(ctx: &ApiContext, raw: &str) -> Result<Rule, ApiError> {
    let id = id(raw, "rule")?;
    ctx.lookup(|r| r.rule(id))
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("rule {id} not found")))
}

#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "The rule, `metrics` summed over the nodes and `node_metrics` per node", body = crate::response::Envelope),
              (status = 404, description = "No such rule", body = crate::error::ErrorBody)))]
pub(crate) async fn get(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let rule = load(ctx, raw).await?;
    let mut rows = ctx
        .node
        .inspect(Inspect::Rules { id: Some(rule.id) })
        .await?;
    rows.sort_by_key(|r| r["node"].as_u64());
    let mut sum = Map::new();
    for c in COUNTERS {
        let total: u64 = rows.iter().filter_map(|r| r[c].as_u64()).sum();
        sum.insert(c.into(), total.into());
    }
    for r in &mut rows {
        if let Some(o) = r.as_object_mut() {
            o.remove("id");
        }
    }
    let mut v = view(&rule);
    v["metrics"] = Value::Object(sum);
    v["node_metrics"] = Value::Array(rows);
    data(v)
}

#[utoipa::path(put, path = "/api/v1/rules/{id}", tag = "rules", request_body = RuleUpdate, params(("id" = u64, Path)),
    security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Updated", body = crate::response::Envelope),
              (status = 400, description = "Invalid field; SQL that does not compile", body = crate::error::ErrorBody),
              (status = 404, description = "No such rule", body = crate::error::ErrorBody)))]
pub(crate) async fn update(ctx: &ApiContext, auth: &Caller, raw: &str, body: &[u8]) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let old = load(ctx, raw).await?;
    let req: RuleUpdate = parse(body)?;
    ctx.within_limits(crate::json::check_text_len(
        "description",
        req.description.as_deref(),
        ctx.config.max_text,
    ))?;
    let patch = RulePatch {
        name: req.name.as_deref().map(check_name).transpose()?,
        sql: req.sql,
        actions: req.actions.map(actions).transpose()?,
        description: req.description.map(Some),
        enable: req.enable,
        updated_at: chrono::Utc::now().timestamp_millis(),
    };
    // What the rule becomes is checked whole: new SQL with old actions, or the reverse.
    let mut next = old.clone();
    if let Some(sql) = &patch.sql {
        next.sql.clone_from(sql);
    }
    if let Some(a) = &patch.actions {
        next.actions.clone_from(a);
    }
    check(ctx, &next)?;
    submit::<()>(ctx, Command::UpdateRule { id: old.id, patch }).await?;
    ctx.node.rule_written(old.id);
    ok()
}

#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = u64, Path)), security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "Deleted", body = crate::response::Envelope),
              (status = 404, description = "No such rule", body = crate::error::ErrorBody)))]
pub(crate) async fn delete(ctx: &ApiContext, auth: &Caller, raw: &str) -> ApiResult {
    authenticate(ctx, auth).await?.require_admin()?;
    let id = load(ctx, raw).await?.id;
    submit::<()>(ctx, Command::DeleteRule { id }).await?;
    ctx.node.rule_written(id);
    ok()
}

#[utoipa::path(post, path = "/api/v1/rules/test", tag = "rules", request_body = RuleTestBody, security(("basic" = []), ("bearer" = [])),
    responses((status = 200, description = "`data.matched`, and `data.output` or `data.reason`", body = crate::response::Envelope),
              (status = 400, description = "The SQL does not compile, with its position", body = crate::error::ErrorBody)))]
pub(crate) async fn test(ctx: &ApiContext, auth: &Caller, body: &[u8]) -> ApiResult {
    authenticate_read(ctx, auth).await?;
    let req: RuleTestBody = parse(body)?;
    if req.sql.len() > 16 * 1024 {
        return Err(bad("sql is longer than 16384 bytes"));
    }
    match ctx.node.test_rule(&req.sql, req.context) {
        Ok(RuleTest::Output(out)) => data(json!({"matched": true, "output": out})),
        Ok(RuleTest::NoOutput(reason)) => data(json!({"matched": false, "reason": reason})),
        Err(e) => Err(ApiError::BadRequest(e)),
    }
}
