//! Bearer tokens are signed with a cluster-wide secret: one node's token is accepted by every
//! node, with the role it was issued for; a password changed through one node revokes the
//! user's tokens and old password on every node.

use realmq_cluster_tests::{Auth, Cluster, WAIT, eventually};
use serde_json::json;

use crate::fixtures::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t12_a_token_from_one_node_works_on_another() {
    let cluster = Cluster::start(3).await;

    let body = ok(
        "log in as root on node 1",
        cluster
            .api_as(
                1,
                &Auth::None,
                "POST",
                "/api/v1/auth",
                Some(json!({"username": "root", "password": "123456"})),
            )
            .await,
    );
    assert_eq!(body["data"]["role"], "administrator", "{body}");
    let root = Auth::Bearer(body["data"]["token"].as_str().expect("token").into());

    ok(
        "root's token writes on node 2",
        cluster
            .api_as(
                2,
                &root,
                "POST",
                "/api/v1/products",
                Some(json!({"name": "t12-meter"})),
            )
            .await,
    );
    let body = ok(
        "root's token reads on node 3",
        cluster
            .api_as(
                3,
                &root,
                "GET",
                "/api/v1/products?product_name=t12-meter",
                None,
            )
            .await,
    );
    assert_eq!(body["meta"]["count"], 1, "{body}");

    // A viewer created on node 3 logs in on node 2; node 1 honours the token's role.
    ok(
        "create a viewer on node 3",
        cluster
            .api(
                3,
                "POST",
                "/api/v1/users",
                Some(json!({"username": "t12-viewer", "password": "viewer-secret", "role": "viewer"})),
            )
            .await,
    );
    let body = ok(
        "log in as the viewer on node 2",
        cluster
            .api_as(
                2,
                &Auth::None,
                "POST",
                "/api/v1/auth",
                Some(json!({"username": "t12-viewer", "password": "viewer-secret"})),
            )
            .await,
    );
    assert_eq!(body["data"]["role"], "viewer", "{body}");
    let viewer = Auth::Bearer(body["data"]["token"].as_str().expect("token").into());
    ok(
        "viewer's token reads on node 1",
        cluster
            .api_as(1, &viewer, "GET", "/api/v1/products", None)
            .await,
    );
    let (status, body) = cluster
        .api_as(
            1,
            &viewer,
            "POST",
            "/api/v1/products",
            Some(json!({"name": "t12-denied"})),
        )
        .await;
    assert_eq!(
        status, 403,
        "the viewer's token cannot write on node 1: {body}"
    );

    // The viewer's password is changed through node 3: node 1 refuses the old token and the
    // old password as soon as it has applied the change.
    ok(
        "change the viewer's password on node 3",
        cluster
            .api(
                3,
                "PUT",
                "/api/v1/users/t12-viewer",
                Some(json!({"password": "viewer-secret-2"})),
            )
            .await,
    );
    let old_password = Auth::basic("t12-viewer", "viewer-secret");
    eventually(
        "node 1 to refuse the viewer's old token and password",
        WAIT,
        async || {
            let by_token = cluster
                .api_as(1, &viewer, "GET", "/api/v1/products", None)
                .await;
            let by_password = cluster
                .api_as(1, &old_password, "GET", "/api/v1/products", None)
                .await;
            match (by_token.0, by_password.0) {
                (401, 401) => Ok(()),
                other => Err(format!("statuses {other:?}")),
            }
        },
    )
    .await;

    // The check is real: a token no node signed is refused.
    let forged = Auth::Bearer("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290In0.c2lnbmF0dXJl".into());
    let (status, body) = cluster
        .api_as(2, &forged, "GET", "/api/v1/products", None)
        .await;
    assert_eq!(status, 401, "a forged token on node 2: {body}");

    cluster.invariant_check().await;
}
