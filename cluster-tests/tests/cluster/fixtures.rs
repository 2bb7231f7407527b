//! REST fixtures shared by the tests: the spec's resources, created through any node.

use realmq_cluster_tests::{Cluster, NodeId};
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
