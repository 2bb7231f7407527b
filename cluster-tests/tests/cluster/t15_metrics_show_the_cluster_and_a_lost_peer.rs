//! Every node's `GET /metrics` describes the cluster: the same raft leader and term, its links
//! to both peers up; when a peer is killed (kill -9) the survivors' links to it go down and count
//! the failure, and the rest of the exposition stays scrapeable.

use std::collections::HashMap;

use realmq_cluster_tests::{Cluster, NodeId, WAIT, eventually};

/// Node `i`'s samples, `name{labels}` → value (parsed by prometheus-parse).
async fn scrape(cluster: &Cluster, i: NodeId) -> Result<HashMap<String, f64>, String> {
    let url = format!("http://{}/metrics", cluster.api_addr(i));
    let body = reqwest::get(&url)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("scrape node {i}: {e}"))?
        .text()
        .await
        .map_err(|e| e.to_string())?;
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .map_err(|e| format!("node {i}'s exposition does not parse: {e}"))?;
    Ok(scrape
        .samples
        .into_iter()
        .filter_map(|s| {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => return None,
            };
            let peer = s.labels.get("peer").map(|p| format!("{{peer={p}}}"));
            Some((format!("{}{}", s.metric, peer.unwrap_or_default()), v))
        })
        .collect())
}

fn get(m: &HashMap<String, f64>, key: &str) -> Result<f64, String> {
    m.get(key).copied().ok_or_else(|| format!("no {key}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t15_metrics_show_the_cluster_and_a_lost_peer() {
    let cluster = Cluster::start(3).await;
    let leader = eventually(
        "every node to show one leader and both links up",
        WAIT,
        async || {
            let mut leaders = Vec::new();
            for i in cluster.ids() {
                let m = scrape(&cluster, i).await?;
                leaders.push((get(&m, "realmq_raft_leader")?, get(&m, "realmq_raft_term")?));
                if get(&m, "realmq_cluster_voters")? != 3.0 {
                    return Err(format!("node {i} counts other than 3 voters"));
                }
                for peer in cluster.ids().into_iter().filter(|p| *p != i) {
                    if get(&m, &format!("realmq_peer_link_up{{peer={peer}}}"))? != 1.0 {
                        return Err(format!("node {i}'s link to {peer} is not up"));
                    }
                }
            }
            if leaders.windows(2).all(|w| w[0] == w[1]) && leaders[0].0 >= 1.0 {
                Ok(leaders[0].0 as NodeId)
            } else {
                Err(format!("(leader, term) per node: {leaders:?}"))
            }
        },
    )
    .await;
    let leaders_total: f64 = {
        let mut n = 0.0;
        for i in cluster.ids() {
            n += get(&scrape(&cluster, i).await.unwrap(), "realmq_raft_is_leader").unwrap();
        }
        n
    };
    assert_eq!(leaders_total, 1.0, "exactly one node says it leads");

    let lost = if leader == 3 { 2 } else { 3 };
    let survivors: Vec<NodeId> = cluster.ids().into_iter().filter(|i| *i != lost).collect();
    let failures_before: Vec<f64> = {
        let mut v = Vec::new();
        for i in &survivors {
            let m = scrape(&cluster, *i).await.unwrap();
            v.push(
                get(
                    &m,
                    &format!("realmq_peer_link_failures_total{{peer={lost}}}"),
                )
                .unwrap(),
            );
        }
        v
    };
    cluster.kill9(lost);
    eventually(
        "the survivors to show the lost peer's link down",
        WAIT,
        async || {
            for (n, i) in survivors.iter().enumerate() {
                let m = scrape(&cluster, *i).await?;
                if get(&m, &format!("realmq_peer_link_up{{peer={lost}}}"))? != 0.0 {
                    return Err(format!("node {i} still shows its link to {lost} up"));
                }
                let failures = get(
                    &m,
                    &format!("realmq_peer_link_failures_total{{peer={lost}}}"),
                )?;
                if failures <= failures_before[n] {
                    return Err(format!("node {i} counted no failure of its link to {lost}"));
                }
            }
            Ok(())
        },
    )
    .await;
    cluster.restart(lost).await;
    eventually(
        "the restarted peer's links to come back",
        WAIT,
        async || {
            for i in &survivors {
                let m = scrape(&cluster, *i).await?;
                if get(&m, &format!("realmq_peer_link_up{{peer={lost}}}"))? != 1.0 {
                    return Err(format!("node {i}'s link to {lost} is still down"));
                }
            }
            Ok(())
        },
    )
    .await;
    cluster.invariant_check().await;
}
