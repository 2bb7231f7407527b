//! A leader that stops answering without closing its connections (a hung machine, a killed pod
//! whose network vanished; here SIGSTOP) must not hold the writes a follower forwarded to it
//! until they time out: once the follower sees that leader replaced (a vote for another, or a
//! new leader), it gives up on the frozen one and sends the write to whoever wins. With a write
//! timeout of 15 s, a write sent through a follower right after the freeze is acknowledged
//! about when the election ends (a few seconds), not after 10-15 s.

use std::time::{Duration, Instant};

use realmq_cluster_tests::{Auth, Cluster};
use serde_json::json;

use crate::fixtures::{create_product, leader};

/// The chart's election timings, and a write timeout far beyond any election.
const TIMINGS: &str = "heartbeat_interval_ms = 250\nelection_timeout_min_ms = 1000\n\
                       election_timeout_max_ms = 2000\nwrite_timeout_ms = 15000";
/// Two election rounds at most (followers refuse votes while their leader's lease runs).
const BOUND: Duration = Duration::from_secs(7);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t25_a_frozen_leader_holds_writes_no_longer_than_an_election() {
    let cluster = Cluster::builder().cluster_toml(TIMINGS).start().await;
    let frozen = leader(&cluster, &cluster.ids()).await;
    let via = cluster.ids().into_iter().find(|&i| i != frozen).unwrap();
    // The follower's connection to the leader is open and in use.
    create_product(&cluster, via, "t25-before").await;

    cluster.freeze(frozen);
    let sent = Instant::now();
    let answer = cluster
        .try_api(
            via,
            &Auth::Root,
            "POST",
            "/api/v1/products",
            Some(json!({"name": "t25-during"})),
        )
        .await;
    let took = sent.elapsed();
    cluster.thaw(frozen);
    let (status, body) = answer.expect("the follower answers");
    assert_eq!(
        (status, &body["code"]),
        (200, &json!(0)),
        "a write forwarded to the frozen leader {frozen}, after {took:?}: {body}"
    );
    assert!(
        took < BOUND,
        "the write waited {took:?} on the frozen leader {frozen}, beyond the election"
    );
    eprintln!("t25: acknowledged {took:?} after leader {frozen} froze");

    cluster.invariant_check().await;
}
