//! The REST client the harness and tests use: requests to one node as some user, and the
//! typed view of `GET /api/v1/nodes` that tests and invariants read the cluster's state from.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::cluster::Cluster;
use crate::{NodeId, WAIT, eventually};

/// Bound for one HTTP request. Writes that cannot reach a quorum must fail (503) well within it.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Who a request is made as.
#[derive(Clone, Debug)]
pub enum Auth {
    /// Basic `root` / `123456`, the user every node creates at first start.
    Root,
    Basic {
        username: String,
        password: String,
    },
    Bearer(String),
    /// No `Authorization` header.
    None,
}

impl Auth {
    pub fn basic(username: &str, password: &str) -> Auth {
        Auth::Basic {
            username: username.into(),
            password: password.into(),
        }
    }
}

/// One client per cluster. No connection pool: a pooled connection to a node that was killed
/// would make the next request fail for a reason the test did not cause. No system proxy:
/// loopback must stay loopback.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .timeout(HTTP_TIMEOUT)
        .build()
        .expect("http client")
}

/// Sends one request to the node whose API listens on `addr`; the body of the answer is parsed
/// as JSON, or kept as a JSON string when it is not JSON, so that a test's assertion message
/// shows whatever came back.
pub(crate) async fn call(
    http: &reqwest::Client,
    addr: SocketAddr,
    auth: &Auth,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let method: reqwest::Method = method
        .parse()
        .unwrap_or_else(|_| panic!("bad HTTP method {method}"));
    let mut req = http.request(method, format!("http://{addr}{path}"));
    req = match auth {
        Auth::Root => req.basic_auth("root", Some("123456")),
        Auth::Basic { username, password } => req.basic_auth(username, Some(password)),
        Auth::Bearer(token) => req.bearer_auth(token),
        Auth::None => req,
    };
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    let text = res.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// A failed request with its causes: reqwest's own message ("error sending request") hides
/// them.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut why = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        why.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    why
}

/// How one REST write ended, as the fault tests account for it.
pub enum WriteOutcome {
    Acked,
    /// Any answer but 200 with `code` 0: the status and body.
    Refused(u16, Value),
    /// Why no answer came.
    NoAnswer(String),
}

impl WriteOutcome {
    pub fn of(answer: Result<(u16, Value), String>) -> WriteOutcome {
        match answer {
            Ok((200, body)) if body["code"] == 0 => WriteOutcome::Acked,
            Ok((status, body)) => WriteOutcome::Refused(status, body),
            Err(e) => WriteOutcome::NoAnswer(e),
        }
    }

    pub fn acked(&self) -> bool {
        matches!(self, WriteOutcome::Acked)
    }

    /// Whether this is the refusal the design promises without a quorum: 503 and an error
    /// envelope with a non-zero code and a message.
    pub fn clean_refusal(&self) -> bool {
        matches!(self, WriteOutcome::Refused(503, body)
            if body["code"].as_i64().is_some_and(|c| c != 0)
                && body["message"].as_str().is_some_and(|m| !m.is_empty()))
    }
}

impl std::fmt::Display for WriteOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteOutcome::Acked => write!(f, "acknowledged"),
            WriteOutcome::Refused(status, body) => write!(f, "{status} {body}"),
            WriteOutcome::NoAnswer(why) => write!(f, "no answer: {why}"),
        }
    }
}

/// Every item of the paginated list at `path` (the spec's `_page` / `_limit`, `meta.hasnext`),
/// fetching each page with `get`; `Err` describes a refusal or a request that got no answer.
pub async fn all_pages(
    path: &str,
    mut get: impl AsyncFnMut(&str) -> Result<(u16, Value), String>,
) -> Result<Vec<Value>, String> {
    let mut items = Vec::new();
    let mut page = 1;
    loop {
        let url = format!("{path}?_limit=1000&_page={page}");
        let (status, body) = get(&url).await?;
        if status != 200 || body["code"] != 0 {
            return Err(format!("GET {url}: {status} {body}"));
        }
        items.extend(
            body["data"]
                .as_array()
                .ok_or(format!("no data in {body}"))?
                .iter()
                .cloned(),
        );
        if body["meta"]["hasnext"] != true {
            return Ok(items);
        }
        page += 1;
    }
}

/// One entry of `GET /api/v1/nodes`: what the answering node knows about node `id`. Fields a
/// node cannot know about an unreachable peer are `None`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct NodeStatus {
    pub id: u64,
    /// `leader`, `follower`, `candidate` or `learner`.
    pub role: Option<String>,
    /// The leader's id as node `id` sees it.
    pub leader: Option<u64>,
    pub term: Option<u64>,
    pub last_applied: Option<u64>,
    /// Hash of node `id`'s replicated state at `last_applied`; only asked for by
    /// `Cluster::status_with_digest` (`?digest=true`), as computing it scans the whole state.
    pub digest: Option<String>,
    pub cluster_addr: Option<String>,
    pub mqtt_addr: Option<String>,
    pub api_addr: Option<String>,
    pub connections: Option<u64>,
    pub reachable: bool,
}

/// Parses the body of `GET /api/v1/nodes`.
pub(crate) fn parse_nodes(status: u16, body: &Value) -> Result<Vec<NodeStatus>, String> {
    if status != 200 || body["code"] != 0 {
        return Err(format!("GET /api/v1/nodes answered {status}: {body}"));
    }
    serde_json::from_value(body["data"].clone())
        .map_err(|e| format!("GET /api/v1/nodes: {e} in {body}"))
}

/// The REST side of the sandbox: requests to one node, and what nodes report in
/// `GET /api/v1/nodes`.
impl Cluster {
    /// Calls node `i`'s REST API as root; panics if the request gets no answer at all.
    pub async fn api(
        &self,
        i: NodeId,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.api_as(i, &Auth::Root, method, path, body).await
    }

    pub async fn api_as(
        &self,
        i: NodeId,
        auth: &Auth,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.try_api(i, auth, method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `api_as`, but a request that gets no answer (node down, timeout) is an `Err`.
    pub async fn try_api(
        &self,
        i: NodeId,
        auth: &Auth,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        call(&self.http, self.api_addr(i), auth, method, path, body)
            .await
            .map_err(|e| format!("{method} {path} on node {i}: {}", describe(&e)))
    }

    /// Node `i`'s `GET /api/v1/nodes`: every member as node `i` learns it from each of them.
    pub async fn nodes_seen_by(&self, i: NodeId) -> Result<Vec<NodeStatus>, String> {
        self.fetch_nodes(i, "/api/v1/nodes").await
    }

    /// What node `i` reports about itself.
    pub async fn status(&self, i: NodeId) -> Result<NodeStatus, String> {
        own_entry(i, self.nodes_seen_by(i).await?)
    }

    /// `status`, with the digest of node `i`'s replicated state (every member scans its whole
    /// state machine to answer, so this is for checks, not for polling in a loop).
    pub async fn status_with_digest(&self, i: NodeId) -> Result<NodeStatus, String> {
        own_entry(i, self.fetch_nodes(i, "/api/v1/nodes?digest=true").await?)
    }

    async fn fetch_nodes(&self, i: NodeId, path: &str) -> Result<Vec<NodeStatus>, String> {
        let (status, body) = self.try_api(i, &Auth::Root, "GET", path, None).await?;
        parse_nodes(status, &body).map_err(|e| format!("node {i}: {e}"))
    }

    /// Waits until node `i` has applied every entry node `with` had applied when this was
    /// called: after it, a read on `i` that is not linearizable (MQTT retained messages, a
    /// local lookup) sees whatever `with` acknowledged.
    pub async fn wait_caught_up(&self, i: NodeId, with: NodeId) {
        let target = eventually(&format!("node {with}'s applied index"), WAIT, async || {
            self.status(with)
                .await?
                .last_applied
                .ok_or_else(|| format!("node {with} reports no last_applied"))
        })
        .await;
        eventually(
            &format!("node {i} to apply index {target}"),
            WAIT,
            async || match self.status(i).await?.last_applied {
                Some(applied) if applied >= target => Ok(()),
                other => Err(format!("node {i} applied {other:?}")),
            },
        )
        .await
    }
}

fn own_entry(i: NodeId, nodes: Vec<NodeStatus>) -> Result<NodeStatus, String> {
    nodes
        .into_iter()
        .find(|s| s.id == i)
        .ok_or_else(|| format!("node {i} does not list itself in GET /api/v1/nodes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_reachable_and_unreachable_entries() {
        let body = json!({"code": 0, "data": [
            {"id": 1, "role": "leader", "leader": 1, "term": 3, "last_applied": 120,
             "digest": "ab", "cluster_addr": "127.0.0.1:1", "mqtt_addr": "127.0.0.1:2",
             "api_addr": "127.0.0.1:3", "connections": 10, "reachable": true},
            {"id": 2, "digest": null, "reachable": false}
        ]});
        let nodes = parse_nodes(200, &body).unwrap();
        assert_eq!(nodes[0].role.as_deref(), Some("leader"));
        assert_eq!(nodes[0].last_applied, Some(120));
        assert_eq!((nodes[1].digest.clone(), nodes[1].reachable), (None, false));
        assert!(parse_nodes(503, &json!({"code": 1, "message": "no quorum"})).is_err());
    }
}
