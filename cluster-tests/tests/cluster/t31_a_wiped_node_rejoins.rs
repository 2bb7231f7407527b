//! A voter that lost its disk and comes back under the same id rejoins: the cluster re-admits it
//! (as a learner first, then a voter again once it caught up), it holds everything written
//! before, takes writes, and no node panics over the log it no longer has.

use realmq_cluster_tests::{Auth, Cluster, NodeId, WAIT, eventually};
use serde_json::json;

use crate::fixtures::{
    create_device, create_product, device, logged_since_last_start, ok, panics, users,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t31_a_wiped_node_rejoins() {
    let cluster = Cluster::start(3).await;
    let wiped: NodeId = 3;
    let product = create_product(&cluster, 1, "t31-meters").await;
    let meter = create_device(&cluster, 2, &product.key, "t31-meter").await;
    ok(
        "create user on node 3",
        cluster
            .api(
                wiped,
                "POST",
                "/api/v1/users",
                Some(json!({"username": "t31-ops", "password": "ops-secret", "role": "viewer"})),
            )
            .await,
    );

    cluster.wipe(wiped).await;
    eventually(
        &format!("node 1 to list node {wiped} as a reachable follower (a voter again)"),
        WAIT,
        async || {
            let nodes = cluster.nodes_seen_by(1).await?;
            match nodes.iter().find(|n| n.id == wiped) {
                Some(n) if n.reachable && n.role.as_deref() == Some("follower") => Ok(()),
                other => Err(format!("node 1 lists node {wiped} as {other:?}")),
            }
        },
    )
    .await;

    // Everything written before the wipe, read on the wiped node.
    let body = ok(
        "product on the wiped node",
        cluster
            .api(
                wiped,
                "GET",
                &format!("/api/v1/products/{}", product.id),
                None,
            )
            .await,
    );
    assert_eq!(
        (&body["data"][0]["name"], &body["data"][0]["product_key"]),
        (&json!("t31-meters"), &json!(product.key)),
        "{body}"
    );
    let d = device(&cluster, wiped, meter.id).await;
    assert_eq!(
        (&d["username"], &d["mqtt_client_id"]),
        (&json!(meter.username), &json!(meter.client_id)),
        "{d}"
    );
    assert!(
        users(&cluster, wiped)
            .await
            .contains(&("t31-ops".into(), "viewer".into())),
        "user on the wiped node"
    );
    ok(
        "t31-ops logs in on the wiped node",
        cluster
            .api_as(
                wiped,
                &Auth::basic("t31-ops", "ops-secret"),
                "GET",
                "/api/v1/products",
                None,
            )
            .await,
    );

    // It takes writes again.
    let after = create_product(&cluster, wiped, "t31-after-wipe").await;
    let body = ok(
        "read the wiped node's write on node 1",
        cluster
            .api(1, "GET", &format!("/api/v1/products/{}", after.id), None)
            .await,
    );
    assert_eq!(body["data"][0]["name"], "t31-after-wipe", "{body}");

    let panicked = panics(&cluster);
    assert!(panicked.is_empty(), "a node panicked: {panicked:?}");

    // How it came back matters too: a voter without its data must not vote (its wiped vote and
    // log would let it elect a leader lacking committed entries), so it has to ask to join and
    // be demoted to learner until it caught up, rather than be refilled while a voter.
    let joined = logged_since_last_start(&cluster, wiped, "joined the cluster");
    let demoted = cluster
        .ids()
        .into_iter()
        .any(|i| cluster.logged(i, "a voter rejoins without its data"));
    let refilled: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|&i| cluster.logged(i, "follower log is reverted"))
        .collect();
    assert!(
        joined && demoted,
        "wiped node {wiped} came back without asking to join (logged \"joined the cluster\": \
         {joined}; the leader logged demoting it: {demoted}); nodes {refilled:?} logged \
         \"follower log is reverted\", i.e. replicated straight into the wiped voter"
    );
    cluster.invariant_check().await;
}
