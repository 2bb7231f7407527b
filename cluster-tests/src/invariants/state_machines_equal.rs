//! Replicas agree: nodes that applied the same log index hold the same replicated state. Each
//! node reports `last_applied` and a digest of its state machine at that index; any two
//! reports with the same index and different digests are a divergence, whenever they were
//! taken. The check also waits for the nodes to converge, so that it compares something even
//! when the test ended mid-replication, and a node stuck behind fails it.

use std::collections::BTreeMap;

use super::Observation;
use crate::cluster::Cluster;
use crate::{CONVERGE_TIMEOUT, eventually};

/// Polls every node that is up until all report the same `last_applied`; returns every report
/// seen on the way. Panics on a divergence or when they do not converge in time.
pub(super) async fn check(cluster: &Cluster) -> Vec<Observation> {
    let up = cluster.up();
    let mut seen: Vec<Observation> = Vec::new();
    eventually(
        &format!("nodes {up:?} to apply the same log index"),
        CONVERGE_TIMEOUT,
        async || {
            let mut round = Vec::new();
            let mut errors = Vec::new();
            for &node in &up {
                match cluster.status_with_digest(node).await {
                    Ok(status) => round.push(Observation { node, status }),
                    Err(e) => errors.push(e),
                }
            }
            seen.extend(round.iter().cloned());
            assert_no_divergence(&seen);
            if !errors.is_empty() {
                return Err(errors.join("; "));
            }
            let converged = round
                .windows(2)
                .all(|w| w[0].status.last_applied == w[1].status.last_applied)
                && round
                    .iter()
                    .all(|o| o.status.last_applied.is_some() && o.status.digest.is_some());
            if converged {
                Ok(())
            } else {
                Err(describe(&round))
            }
        },
    )
    .await;
    seen
}

fn assert_no_divergence(seen: &[Observation]) {
    let mut at: BTreeMap<u64, BTreeMap<&str, Vec<u64>>> = BTreeMap::new();
    for o in seen {
        if let (Some(index), Some(digest)) = (o.status.last_applied, o.status.digest.as_deref()) {
            let nodes = at.entry(index).or_default().entry(digest).or_default();
            if !nodes.contains(&o.node) {
                nodes.push(o.node);
            }
        }
    }
    for (index, digests) in at {
        assert!(
            digests.len() == 1,
            "replicas diverged: at applied index {index} the state digests differ: {}",
            digests
                .iter()
                .map(|(d, nodes)| format!("nodes {nodes:?} have {d}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn describe(round: &[Observation]) -> String {
    round
        .iter()
        .map(|o| {
            format!(
                "node {}: applied {:?} digest {:?} role {:?} term {:?}",
                o.node, o.status.last_applied, o.status.digest, o.status.role, o.status.term
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeStatus;

    fn seen(node: u64, index: u64, digest: &str) -> Observation {
        Observation {
            node,
            status: NodeStatus {
                id: node,
                last_applied: Some(index),
                digest: Some(digest.into()),
                ..NodeStatus::default()
            },
        }
    }

    #[test]
    fn equal_digests_at_equal_indexes_pass() {
        assert_no_divergence(&[seen(1, 5, "a"), seen(2, 4, "b"), seen(2, 5, "a")]);
    }

    #[test]
    #[should_panic(expected = "at applied index 5 the state digests differ")]
    fn different_digests_at_one_index_fail() {
        assert_no_divergence(&[seen(1, 5, "a"), seen(2, 5, "b")]);
    }
}
