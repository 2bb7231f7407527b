//! Scaling a StatefulSet in stops its highest pods, which are learners: a learner stopped with
//! SIGTERM leaves the membership on its way out, so no member is left behind for the leader to
//! replicate to forever; started again on its data it is admitted anew and serves what was
//! written while it was away. A voter stopped the same way stays a member (a rolling restart
//! must not shrink the quorum) and is simply back when it starts.

use realmq_cluster_tests::{Cluster, NodeId, WAIT, eventually};

use crate::fixtures::{create_product, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t32_a_learner_that_stops_leaves_and_comes_back() {
    let cluster = Cluster::start(3).await;
    let learner = cluster.add_node().await;
    members_become(&cluster, &[1, 2, 3, learner]).await;

    cluster.stop(learner).await;
    members_become(&cluster, &[1, 2, 3]).await;
    let away = create_product(&cluster, 1, "t32-while-away").await;

    cluster.restart(learner).await;
    members_become(&cluster, &[1, 2, 3, learner]).await;
    let body = ok(
        "read on the learner a write made while it was away",
        cluster
            .api(
                learner,
                "GET",
                &format!("/api/v1/products/{}", away.id),
                None,
            )
            .await,
    );
    assert_eq!(body["data"][0]["name"], "t32-while-away", "{body}");
    let roles = cluster
        .nodes_seen_by(1)
        .await
        .expect("node 1 lists the members");
    let role = roles
        .iter()
        .find(|n| n.id == learner)
        .and_then(|n| n.role.clone());
    assert_eq!(role.as_deref(), Some("learner"), "{roles:?}");

    // A voter stopped the same way stays in the membership while it is down.
    cluster.stop(3).await;
    let view = cluster
        .nodes_seen_by(1)
        .await
        .expect("node 1 lists the members");
    let ids: Vec<NodeId> = view.iter().map(|n| n.id).collect();
    assert_eq!(ids, [1, 2, 3, learner], "a stopped voter left: {view:?}");
    create_product(&cluster, 2, "t32-voter-down").await;
    cluster.restart(3).await;
    members_become(&cluster, &[1, 2, 3, learner]).await;

    cluster.invariant_check().await;
}

/// Waits until node 1 lists exactly `ids`, every one of them reachable.
async fn members_become(cluster: &Cluster, ids: &[NodeId]) {
    eventually(&format!("the members to be {ids:?}"), WAIT, async || {
        let view = cluster.nodes_seen_by(1).await?;
        let listed: Vec<NodeId> = view.iter().map(|n| n.id).collect();
        if listed == ids && view.iter().all(|n| n.reachable) {
            Ok(())
        } else {
            Err(format!("{view:?}"))
        }
    })
    .await
}
