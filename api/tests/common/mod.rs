//! The harness of the route tests and the body fuzzer: the real filters through `warp::test`, a
//! real single-node raft on RocksDB in a temp dir, and a recording broker.

// Each test binary uses its own part of the harness.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use base64::Engine;
use realmq_api::{
    ApiConfig, ApiContext, BoxFuture, ClientView, Inspect, NodeInfo, NodeOps, NodeStats, OpError,
    Publish, RouteView, SubscriptionView,
};
use serde_json::{Value, json};

/// The broker side, as far as the API can tell: records what it was asked to do. The MQTT
/// behaviour behind these calls is tested end to end in `node/tests/`.
#[derive(Default)]
pub struct Recorder {
    pub published: Mutex<Vec<Publish>>,
    pub subscribed: Mutex<Vec<(String, String, u8)>>,
    pub sessions: Mutex<HashSet<String>>,
    pub limits_refused: std::sync::atomic::AtomicUsize,
}

impl NodeOps for Recorder {
    fn clients(&self, _: Inspect) -> BoxFuture<'static, Result<Vec<ClientView>, OpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn subscriptions(
        &self,
        _: Inspect,
    ) -> BoxFuture<'static, Result<Vec<SubscriptionView>, OpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn routes(&self, _: Inspect) -> BoxFuture<'static, Result<Vec<RouteView>, OpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn stats(&self) -> BoxFuture<'static, Result<Vec<NodeStats>, OpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn inspect(&self, _: Inspect) -> BoxFuture<'static, Result<Vec<Value>, OpError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn kick(&self, client_id: &str) -> BoxFuture<'static, Result<(), OpError>> {
        let id = client_id.to_string();
        Box::pin(async move { Err(OpError::NotFound(format!("client {id:?} is not connected"))) })
    }
    // Rules are compiled by the node; the node's tests cover them (`node/tests/broker/rules.rs`).
    fn check_rule(&self, _rule: &realmq_raft_store::model::Rule) -> Result<(), String> {
        Ok(())
    }
    fn rule_written(&self, _id: u64) {}
    fn test_rule(
        &self,
        _sql: &str,
        _context: serde_json::Map<String, serde_json::Value>,
    ) -> Result<realmq_api::RuleTest, String> {
        Err("no rule engine here".into())
    }
    fn prometheus(&self) -> String {
        "# TYPE recorder_scrapes counter\nrecorder_scrapes_total 1\n# EOF\n".into()
    }

    fn limit_refused(&self) {
        self.limits_refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn publish(&self, msg: Publish) -> BoxFuture<'static, Result<usize, OpError>> {
        let r = if msg.topic.contains(['+', '#']) {
            Err(OpError::Invalid(format!(
                "topic {:?} has wildcards",
                msg.topic
            )))
        } else {
            self.published.lock().unwrap().push(msg);
            Ok(1)
        };
        Box::pin(async move { r })
    }
    fn subscribe(
        &self,
        client_id: &str,
        filter: &str,
        qos: u8,
    ) -> BoxFuture<'static, Result<(), OpError>> {
        let r = if self.sessions.lock().unwrap().contains(client_id) {
            self.subscribed
                .lock()
                .unwrap()
                .push((client_id.into(), filter.into(), qos));
            Ok(())
        } else {
            Err(OpError::NotFound(format!(
                "client {client_id:?} has no session"
            )))
        };
        Box::pin(async move { r })
    }
    fn unsubscribe(
        &self,
        client_id: &str,
        filter: &str,
    ) -> BoxFuture<'static, Result<(), OpError>> {
        let mut subs = self.subscribed.lock().unwrap();
        let before = subs.len();
        subs.retain(|(c, f, _)| !(c == client_id && f == filter));
        let r = if subs.len() == before {
            Err(OpError::NotFound("no such subscription".into()))
        } else {
            Ok(())
        };
        Box::pin(async move { r })
    }
    fn listening(&self) -> bool {
        true
    }
    fn nodes(&self, digest: bool) -> BoxFuture<'static, Vec<NodeInfo>> {
        Box::pin(async move {
            vec![NodeInfo {
                id: 1,
                role: "leader".into(),
                leader: Some(1),
                term: Some(1),
                last_applied: Some(1),
                digest: digest.then(|| "d".into()),
                cluster_addr: "c".into(),
                mqtt_addr: "m".into(),
                api_addr: "a".into(),
                connections: Some(0),
                reachable: true,
            }]
        })
    }
    fn remove_node(&self, id: u64) -> BoxFuture<'static, Result<(), OpError>> {
        Box::pin(async move { Err(OpError::NotFound(format!("node {id} is not a member"))) })
    }
}

pub struct Api {
    _dir: tempfile::TempDir,
    /// What the store announced to every node (kicks of revoked devices, among others).
    pub applied: Mutex<realmq_raft_store::applied::Receiver>,
    pub ctx: ApiContext,
    pub node: Arc<Recorder>,
}

pub async fn api() -> Api {
    api_with(ApiConfig::default()).await
}

pub async fn api_with(config: ApiConfig) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let member = realmq_raft_store::start_offline(dir.path(), 1)
        .await
        .unwrap();
    let node = Arc::new(Recorder::default());
    let applied = Mutex::new(member.applied.subscribe());
    let ctx = ApiContext::new(member.writer, member.registry, node.clone(), config);
    assert!(
        realmq_api::bootstrap(&ctx, "123456").await.unwrap(),
        "first start creates root"
    );
    assert!(
        !realmq_api::bootstrap(&ctx, "123456").await.unwrap(),
        "only once"
    );
    Api {
        _dir: dir,
        applied,
        ctx,
        node,
    }
}

pub const ROOT: &str = "Basic cm9vdDoxMjM0NTY="; // root:123456

pub fn basic(user: &str, pw: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
    )
}

impl Api {
    /// Client ids whose credentials the store announced as revoked since the last call.
    pub fn revoked(&self) -> Vec<String> {
        let mut rx = self.applied.lock().unwrap();
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            if let realmq_raft_store::applied::Applied::CredentialsRevoked { client_id } = e {
                out.push(client_id);
            }
        }
        out
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = warp::test::request().method(method).path(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }

    pub async fn raw(&self, method: &str, path: &str, body: &[u8]) -> (u16, Value) {
        let req = warp::test::request()
            .method(method)
            .path(path)
            .header("authorization", ROOT)
            .header("content-length", body.len().to_string())
            .body(body);
        self.send(req).await
    }

    pub async fn send(&self, req: warp::test::RequestBuilder) -> (u16, Value) {
        let res = req.reply(&realmq_api::routes(self.ctx.clone())).await;
        let body: Value = serde_json::from_slice(res.body())
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(res.body())));
        (res.status().as_u16(), body)
    }

    pub async fn root(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ROOT), body).await
    }

    pub async fn product(&self, name: &str) -> (u64, String, String) {
        let (s, b) = self
            .root("POST", "/api/v1/products", Some(json!({"name": name})))
            .await;
        assert_eq!(s, 200, "{b}");
        (
            b["data"]["id"].as_u64().unwrap(),
            b["data"]["product_key"].as_str().unwrap().into(),
            b["data"]["secret"].as_str().unwrap().into(),
        )
    }

    pub async fn device(&self, key: &str, name: &str) -> u64 {
        let body = json!({"name": name, "product_key": key, "username": format!("u-{name}"), "mqtt_client_id": format!("c-{name}")});
        let (s, b) = self.root("POST", "/api/v1/devices", Some(body)).await;
        assert_eq!(s, 200, "{b}");
        b["data"]["id"].as_u64().unwrap()
    }
}

/// An error answer: the status, a non-zero code and a message containing `needle`.
pub fn assert_error((status, body): (u16, Value), want: u16, needle: &str) {
    assert_eq!(status, want, "{body}");
    assert_ne!(body["code"], 0, "{body}");
    let msg = body["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}
