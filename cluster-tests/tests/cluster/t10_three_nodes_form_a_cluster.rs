//! Three nodes given each other as `--peers` form one cluster, and every node describes it the
//! same way in `GET /api/v1/nodes`: one leader, the same term, every node reachable, and the
//! client addresses a load balancer or client would use.

use realmq_cluster_tests::{Cluster, NodeId, NodeStatus, WAIT, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t10_three_nodes_form_a_cluster() {
    let cluster = Cluster::start(3).await;

    // Nodes report reachability from their own probes, which may lag the election slightly.
    let (leader, term) = eventually(
        "every node to report the same 3-node cluster",
        WAIT,
        async || {
            let mut views = Vec::new();
            for i in cluster.ids() {
                views.push(view_of(i, &cluster.nodes_seen_by(i).await?)?);
            }
            if views.windows(2).all(|w| w[0] == w[1]) {
                Ok(views[0])
            } else {
                Err(format!("(leader, term) per node differ: {views:?}"))
            }
        },
    )
    .await;
    assert!((1..=3).contains(&leader), "leader {leader}");
    assert!(term >= 1, "term {term}");

    for i in cluster.ids() {
        for n in cluster.nodes_seen_by(i).await.unwrap() {
            assert_eq!(
                (n.api_addr.clone(), n.mqtt_addr.clone()),
                (
                    Some(cluster.api_addr(n.id).to_string()),
                    Some(cluster.mqtt_addr(n.id).to_string())
                ),
                "node {i}'s entry for node {}",
                n.id
            );
        }
    }

    cluster.invariant_check().await;
}

/// The leader and term node `on` reports, if its view is complete and consistent: nodes 1 to 3,
/// all reachable, exactly one leader, the others following it in the same term.
fn view_of(on: NodeId, nodes: &[NodeStatus]) -> Result<(u64, u64), String> {
    let mut ids: Vec<u64> = nodes.iter().map(|n| n.id).collect();
    ids.sort();
    if ids != [1, 2, 3] {
        return Err(format!("node {on} lists nodes {ids:?}"));
    }
    let leaders: Vec<&NodeStatus> = nodes
        .iter()
        .filter(|n| n.role.as_deref() == Some("leader"))
        .collect();
    let [leader] = leaders[..] else {
        return Err(format!(
            "node {on} sees {} leaders: {nodes:?}",
            leaders.len()
        ));
    };
    let term = leader
        .term
        .ok_or_else(|| format!("node {on} reports no term for the leader: {nodes:?}"))?;
    for n in nodes {
        let role = if n.id == leader.id {
            "leader"
        } else {
            "follower"
        };
        let agrees = n.reachable
            && n.role.as_deref() == Some(role)
            && n.leader == Some(leader.id)
            && n.term == Some(term);
        if !agrees {
            return Err(format!(
                "node {on} reports node {} as {n:?}, expected a reachable {role} of leader {} in term {term}",
                n.id, leader.id
            ));
        }
    }
    Ok((leader.id, term))
}
