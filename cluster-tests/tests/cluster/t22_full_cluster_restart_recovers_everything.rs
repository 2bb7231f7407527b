//! Every acknowledged write survives all nodes being killed at once (SIGKILL, nothing flushed on
//! the way out), and the cluster takes writes again after it restarts on its data.

use realmq_cluster_tests::{Auth, Cluster};
use serde_json::json;

use crate::fixtures::{create_device, create_product, ok, users};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t22_full_cluster_restart_recovers_everything() {
    let cluster = Cluster::start(3).await;
    let product = create_product(&cluster, 1, "t22-pumps").await;
    let pump = create_device(&cluster, 2, &product.key, "t22-pump").await;
    let valve = create_device(&cluster, 3, &product.key, "t22-valve").await;
    ok(
        "create user on node 3",
        cluster
            .api(
                3,
                "POST",
                "/api/v1/users",
                Some(json!({"username": "t22-ops", "password": "ops-secret", "role": "administrator"})),
            )
            .await,
    );

    for i in cluster.ids() {
        cluster.kill9(i);
    }
    cluster.restart_many(&cluster.ids()).await;

    let ops = Auth::basic("t22-ops", "ops-secret");
    for i in cluster.ids() {
        let body = ok(
            &format!("product on node {i}"),
            cluster
                .api(i, "GET", &format!("/api/v1/products/{}", product.id), None)
                .await,
        );
        assert_eq!(
            (&body["data"][0]["product_key"], &body["data"][0]["name"]),
            (&json!(product.key), &json!("t22-pumps")),
            "{body}"
        );
        let body = ok(
            &format!("devices on node {i}"),
            cluster
                .api(
                    i,
                    "GET",
                    &format!("/api/v1/devices?product_key={}", product.key),
                    None,
                )
                .await,
        );
        let mut ids: Vec<u64> = body["data"]
            .as_array()
            .expect("devices")
            .iter()
            .filter_map(|d| d["id"].as_u64())
            .collect();
        ids.sort();
        assert_eq!(ids, [pump.id, valve.id], "{body}");
        assert!(
            users(&cluster, i)
                .await
                .contains(&("t22-ops".into(), "administrator".into())),
            "user on node {i}"
        );
        // The password hash came back too, not just the name.
        ok(
            &format!("t22-ops logs in on node {i}"),
            cluster.api_as(i, &ops, "GET", "/api/v1/users", None).await,
        );
    }

    // Writes work again through every node, and each is read back on another.
    for i in cluster.ids() {
        let name = format!("t22-after-{i}");
        let created = create_product(&cluster, i, &name).await;
        let other = i % 3 + 1;
        let body = ok(
            &format!("new product read on node {other}"),
            cluster
                .api(
                    other,
                    "GET",
                    &format!("/api/v1/products/{}", created.id),
                    None,
                )
                .await,
        );
        assert_eq!(body["data"][0]["name"], json!(name), "{body}");
    }

    cluster.invariant_check().await;
}
