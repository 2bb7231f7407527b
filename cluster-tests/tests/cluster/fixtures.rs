//! REST fixtures shared by the tests: the spec's resources, created through any node.

use std::collections::BTreeSet;

use realmq_cluster_tests::{Auth, Cluster, NodeId, WAIT, all_pages, eventually};
use serde_json::{Value, json};

pub struct Product {
    pub id: u64,
    pub key: String,
    pub secret: String,
}

pub struct Device {
    pub id: u64,
    pub username: String,
    pub client_id: String,
    pub password: String,
}

/// Asserts a success envelope (HTTP 200, `code` 0) and returns the body.
pub fn ok(what: &str, (status, body): (u16, Value)) -> Value {
    assert_eq!(
        (status, &body["code"]),
        (200, &json!(0)),
        "{what}: {status} {body}"
    );
    body
}

pub async fn create_product(cluster: &Cluster, on: NodeId, name: &str) -> Product {
    let body = ok(
        &format!("create product {name} on node {on}"),
        cluster
            .api(on, "POST", "/api/v1/products", Some(json!({"name": name})))
            .await,
    );
    let data = &body["data"];
    Product {
        id: data["id"].as_u64().expect("product id"),
        key: data["product_key"].as_str().expect("product_key").into(),
        secret: data["secret"].as_str().expect("secret").into(),
    }
}

/// A device named `name` with user name `{name}-user`, client id `{name}-client` and password
/// `{name}-secret`.
pub async fn create_device(cluster: &Cluster, on: NodeId, product_key: &str, name: &str) -> Device {
    let (username, client_id, password) = (
        format!("{name}-user"),
        format!("{name}-client"),
        format!("{name}-secret"),
    );
    let body = ok(
        &format!("create device {name} on node {on}"),
        cluster
            .api(
                on,
                "POST",
                "/api/v1/devices",
                Some(json!({
                    "name": name,
                    "product_key": product_key,
                    "username": username,
                    "mqtt_client_id": client_id,
                    "password": password,
                })),
            )
            .await,
    );
    Device {
        id: body["data"]["id"].as_u64().expect("device id"),
        username,
        client_id,
        password,
    }
}

/// `GET /api/v1/devices/{id}` on node `on`: the device record (`data` is a one-element array).
pub async fn device(cluster: &Cluster, on: NodeId, id: u64) -> Value {
    let body = ok(
        &format!("get device {id} on node {on}"),
        cluster
            .api(on, "GET", &format!("/api/v1/devices/{id}"), None)
            .await,
    );
    body["data"][0].clone()
}

/// The user names `GET /api/v1/users` lists on node `on`, with their roles.
pub async fn users(cluster: &Cluster, on: NodeId) -> Vec<(String, String)> {
    let body = ok(
        &format!("list users on node {on}"),
        cluster.api(on, "GET", "/api/v1/users", None).await,
    );
    body["data"]
        .as_array()
        .expect("users array")
        .iter()
        .map(|u| {
            (
                u["username"].as_str().unwrap_or_default().to_string(),
                u["role"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The leader that every node in `among` names in its own entry of `GET /api/v1/nodes`, once
/// they agree on one that is among them.
pub async fn leader(cluster: &Cluster, among: &[NodeId]) -> NodeId {
    eventually(
        &format!("nodes {among:?} to agree on a leader among them"),
        WAIT,
        async || {
            let mut seen = Vec::new();
            for &i in among {
                seen.push(cluster.status(i).await?.leader);
            }
            match seen[0] {
                Some(l) if among.contains(&l) && seen.iter().all(|s| *s == Some(l)) => Ok(l),
                _ => Err(format!("leaders as seen by nodes {among:?}: {seen:?}")),
            }
        },
    )
    .await
}

/// The name of every product node `on` lists, page by page; `Err` describes a refusal (e.g.
/// 503 while the node has no quorum) or a request that got no answer.
pub async fn try_product_names(cluster: &Cluster, on: NodeId) -> Result<BTreeSet<String>, String> {
    let items = all_pages("/api/v1/products", async |url| {
        cluster.try_api(on, &Auth::Root, "GET", url, None).await
    })
    .await
    .map_err(|e| format!("node {on}: {e}"))?;
    Ok(items
        .iter()
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect())
}

/// `try_product_names`, on a node expected to answer.
pub async fn product_names(cluster: &Cluster, on: NodeId) -> BTreeSet<String> {
    try_product_names(cluster, on)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The names in `want` that node `on` does not list, in a short message (`None` if none).
pub async fn missing_products(
    cluster: &Cluster,
    on: NodeId,
    want: &BTreeSet<String>,
) -> Option<String> {
    let have = product_names(cluster, on).await;
    let missing: Vec<&String> = want.difference(&have).collect();
    (!missing.is_empty()).then(|| {
        format!(
            "node {on} lacks {} of {} products, e.g. {:?}",
            missing.len(),
            want.len(),
            &missing[..missing.len().min(10)]
        )
    })
}

/// Every line any node wrote that reports a panic (the process may survive a panicking task).
pub fn panics(cluster: &Cluster) -> Vec<String> {
    cluster
        .ids()
        .into_iter()
        .flat_map(|i| {
            cluster
                .logs(i)
                .into_iter()
                .filter(|l| l.starts_with("[stderr]") && l.contains("panicked at"))
                .map(move |l| format!("node {i}: {l}"))
        })
        .collect()
}

/// Whether node `i` logged `needle` since the harness last started it.
pub fn logged_since_last_start(cluster: &Cluster, i: NodeId, needle: &str) -> bool {
    let lines = cluster.logs(i);
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("=== harness: start #"))
        .unwrap_or(0);
    lines[start..].iter().any(|l| l.contains(needle))
}
