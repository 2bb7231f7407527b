//! `GET /api/v1/clients`, `/subscriptions`, `/routes` and `/stats` on any node describe every
//! node's clients; `DELETE /api/v1/clients/{id}` on one node disconnects a client connected to
//! another. With a member killed (kill -9), the lookups still answer with what the others hold.

use rumqttc::QoS;

use realmq_cluster_tests::{Cluster, MqttClient, WAIT, eventually};

use crate::fixtures::ok;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t52_any_node_lists_and_kicks_every_client() {
    let cluster = Cluster::start(3).await;
    let mut clients = Vec::new();
    for i in cluster.ids() {
        let mut c = MqttClient::connect(cluster.mqtt_addr(i), &format!("t52-on-{i}"), None)
            .await
            .expect("connects");
        c.subscribe(&format!("t52/{i}/#"), QoS::AtLeastOnce).await;
        clients.push(c);
    }
    for i in cluster.ids() {
        let (status, body) = cluster
            .api(i, "GET", "/api/v1/clients?_limit=100", None)
            .await;
        assert_eq!(status, 200, "{body}");
        let listed: Vec<(String, u64)> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["clientid"].as_str().unwrap().to_string(),
                    c["node"].as_u64().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, u64)> = cluster
            .ids()
            .iter()
            .map(|n| (format!("t52-on-{n}"), *n))
            .collect();
        assert_eq!(listed, want, "node {i}'s view");
        let (_, subs) = cluster
            .api(i, "GET", "/api/v1/subscriptions?clientid=t52-on-2", None)
            .await;
        assert_eq!(subs["data"][0]["topic"], "t52/2/#", "node {i}: {subs}");
        assert_eq!(subs["data"][0]["node"], 2);
        let (_, routes) = cluster
            .api(i, "GET", "/api/v1/routes?topic=t52/3/x", None)
            .await;
        assert_eq!(routes["data"][0]["node"], 3, "node {i}: {routes}");
        let (_, stats) = cluster.api(i, "GET", "/api/v1/stats", None).await;
        assert_eq!(stats["data"].as_array().unwrap().len(), 3, "{stats}");
    }

    // Kicked through node 3's API, connected to node 1.
    ok(
        "kick t52-on-1 through node 3",
        cluster
            .api(3, "DELETE", "/api/v1/clients/t52-on-1", None)
            .await,
    );
    clients[0].expect_closed(WAIT).await;
    let (status, _) = cluster
        .api(2, "GET", "/api/v1/clients/t52-on-1", None)
        .await;
    assert_eq!(status, 404, "a kicked client is not listed");

    // Node 2 dies: the others still list what they hold.
    cluster.kill9(2);
    eventually(
        "node 1 to list node 3's client without node 2",
        WAIT,
        async || {
            let (status, body) = cluster.api(1, "GET", "/api/v1/clients", None).await;
            let ids: Vec<&str> = body["data"]
                .as_array()
                .map(|a| a.iter().filter_map(|c| c["clientid"].as_str()).collect())
                .unwrap_or_default();
            if status == 200 && ids == ["t52-on-3"] {
                Ok(())
            } else {
                Err(format!("{status} {body}"))
            }
        },
    )
    .await;
    cluster.restart(2).await;
    cluster.invariant_check().await;
}
