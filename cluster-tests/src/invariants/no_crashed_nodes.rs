//! A node process only ends when the harness kills it: an exit on its own is a crash (a panic,
//! an abort, a fatal storage error), whatever the test saw over the network.

use crate::cluster::Cluster;

pub(super) fn check(cluster: &Cluster) {
    let crashed: Vec<String> = cluster
        .ids()
        .into_iter()
        .filter_map(|i| {
            let status = cluster.node(i).crashed()?;
            Some(format!("node {i} exited on its own ({status})"))
        })
        .collect();
    assert!(crashed.is_empty(), "{}", crashed.join("; "));
}
