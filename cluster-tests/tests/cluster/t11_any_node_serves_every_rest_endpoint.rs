//! Any node serves the whole REST contract: a write acknowledged by one node is visible to a
//! read on another at once, with no polling, because reads are linearizable.

use realmq_cluster_tests::{Auth, Cluster};
use serde_json::json;

use crate::fixtures::{create_device, create_product, device, ok, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t11_any_node_serves_every_rest_endpoint() {
    let cluster = Cluster::start(3).await;

    // Products: create on 1, read on 3, update on 2, read back on 1.
    let product = create_product(&cluster, 1, "t11-thermostat").await;
    let path = format!("/api/v1/products/{}", product.id);
    let body = ok(
        "get product on node 3",
        cluster.api(3, "GET", &path, None).await,
    );
    let p = &body["data"][0];
    assert_eq!(
        (&p["name"], &p["product_key"], &p["product_secret"]),
        (
            &json!("t11-thermostat"),
            &json!(product.key),
            &json!(product.secret)
        ),
        "{body}"
    );
    ok(
        "update product on node 2",
        cluster
            .api(
                2,
                "PUT",
                &path,
                Some(json!({"name": "t11-renamed", "description": "hall"})),
            )
            .await,
    );
    let body = ok(
        "get product on node 1",
        cluster.api(1, "GET", &path, None).await,
    );
    assert_eq!(
        (&body["data"][0]["name"], &body["data"][0]["description"]),
        (&json!("t11-renamed"), &json!("hall")),
        "{body}"
    );

    // Devices: create on 2 under that product, list on 3, read on 1.
    let dev = create_device(&cluster, 2, &product.key, "t11-hall").await;
    let list = format!("/api/v1/devices?product_key={}", product.key);
    let body = ok(
        "list devices on node 3",
        cluster.api(3, "GET", &list, None).await,
    );
    assert_eq!(body["meta"]["count"], 1, "{body}");
    let d = &body["data"][0];
    assert_eq!(
        (
            &d["id"],
            &d["name"],
            &d["username"],
            &d["mqtt_client_id"],
            &d["product_key"]
        ),
        (
            &json!(dev.id),
            &json!("t11-hall"),
            &json!(dev.username),
            &json!(dev.client_id),
            &json!(product.key)
        ),
        "{body}"
    );
    assert_eq!(device(&cluster, 1, dev.id).await["status"], 1, "inactive");

    // A product that still has devices cannot be deleted, on a node other than the device's.
    let (status, body) = cluster.api(1, "DELETE", &path, None).await;
    assert_eq!(status, 400, "{body}");

    // Deletes on 3 are seen by 1.
    let dev_path = format!("/api/v1/devices/{}", dev.id);
    ok(
        "delete device on node 3",
        cluster.api(3, "DELETE", &dev_path, None).await,
    );
    let (status, body) = cluster.api(1, "GET", &dev_path, None).await;
    assert_eq!(status, 404, "deleted device on node 1: {body}");
    ok(
        "delete product on node 3",
        cluster.api(3, "DELETE", &path, None).await,
    );
    let (status, body) = cluster.api(1, "GET", &path, None).await;
    assert_eq!(status, 404, "deleted product on node 1: {body}");
    let body = ok(
        "list products on node 2",
        cluster.api(2, "GET", "/api/v1/products", None).await,
    );
    assert_eq!(body["meta"]["count"], 0, "{body}");

    // Users: create on 1, list on 2, log in on 3 (read-only role), delete on 3, gone on 1 and 2.
    ok(
        "create user on node 1",
        cluster
            .api(
                1,
                "POST",
                "/api/v1/users",
                Some(json!({"username": "t11-ops", "password": "ops-secret", "role": "viewer"})),
            )
            .await,
    );
    assert!(
        users(&cluster, 2)
            .await
            .contains(&("t11-ops".into(), "viewer".into())),
        "new user listed on node 2"
    );
    let ops = Auth::basic("t11-ops", "ops-secret");
    ok(
        "viewer reads on node 3",
        cluster
            .api_as(3, &ops, "GET", "/api/v1/products", None)
            .await,
    );
    let (status, body) = cluster
        .api_as(
            3,
            &ops,
            "POST",
            "/api/v1/products",
            Some(json!({"name": "t11-denied"})),
        )
        .await;
    assert_eq!(status, 403, "a viewer cannot write: {body}");
    ok(
        "delete user on node 3",
        cluster
            .api(3, "DELETE", "/api/v1/users/t11-ops", None)
            .await,
    );
    assert!(
        !users(&cluster, 1).await.iter().any(|(u, _)| u == "t11-ops"),
        "deleted user still listed on node 1"
    );
    let (status, body) = cluster
        .api_as(2, &ops, "GET", "/api/v1/products", None)
        .await;
    assert_eq!(
        status, 401,
        "a deleted user cannot log in on node 2: {body}"
    );

    // The control center is served by every node, and each names its own WebSocket port.
    for n in 1..=3 {
        let base = format!("http://{}", cluster.api_addr(n));
        let page = reqwest::get(format!("{base}/")).await.expect("GET /");
        assert_eq!(page.status(), 200, "node {n} serves the console");
        let html = page.text().await.unwrap();
        assert!(html.contains("RealMQ control center"), "node {n}: {html}");
        let env: serde_json::Value = reqwest::get(format!("{base}/console/env.json"))
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /console/env.json")
            .json()
            .await
            .unwrap();
        assert!(
            env["ws_port"].as_u64().is_some_and(|p| p > 0),
            "node {n}: {env}"
        );
    }

    cluster.invariant_check().await;
}
