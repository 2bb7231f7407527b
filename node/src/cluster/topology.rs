//! Who this node is and who its peers are: from `--peers`, or in Kubernetes from the pod name
//! and the StatefulSet's DNS names (`realmq-2` is node 3, reachable at
//! `realmq-2.<headless service>:<cluster port>`).

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use realmq_raft_store::typ::NodeId;

use crate::config::Config;

#[derive(Debug, Clone)]
pub struct Topology {
    pub id: NodeId,
    /// The initial voters and how this node dials them (itself included when it is one).
    pub voters: BTreeMap<NodeId, String>,
    /// How this node dials the peers it was told about.
    pub routes: BTreeMap<NodeId, String>,
    /// The cluster address peers dial; `None`: the bound cluster address.
    pub advertise: Option<String>,
}

impl Topology {
    pub fn from_config(config: &Config) -> anyhow::Result<Topology> {
        if !config.k8s_statefulset.is_empty() {
            let host = std::env::var("HOSTNAME")
                .or_else(|_| std::env::var("POD_NAME"))
                .context("Kubernetes mode needs the pod name in HOSTNAME or POD_NAME")?;
            return Topology::statefulset(config, &host);
        }
        let peers = config.peer_map().map_err(anyhow::Error::msg)?;
        let advertise = if !config.advertise_addr.is_empty() {
            Some(config.advertise_addr.clone())
        } else {
            peers.get(&config.node_id).cloned()
        };
        // Nodes listed beyond the voter count are learners from the start.
        let voters = peers
            .iter()
            .take(config.voters as usize)
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        Ok(Topology {
            id: config.node_id,
            voters,
            routes: peers,
            advertise,
        })
    }

    /// The pod `host` of StatefulSet `k8s_statefulset`: the id from its ordinal, peers from the
    /// first `voters` pods' stable DNS names (`min(replicas, voters)` when replicas is given).
    fn statefulset(config: &Config, host: &str) -> anyhow::Result<Topology> {
        let sts = &config.k8s_statefulset;
        let ordinal: u64 = host
            .strip_prefix(sts.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("pod name {host:?} is not {sts}-<ordinal>"))?;
        let port = config.cluster_socket().port();
        let name = |ordinal: u64| format!("{sts}-{ordinal}.{}:{port}", config.k8s_headless_service);
        // Without a replica count, the first `voters` pods; a smaller StatefulSet has fewer.
        let initial = match config.k8s_replicas {
            0 => config.voters,
            replicas => replicas.min(config.voters),
        };
        let voters: BTreeMap<NodeId, String> = (0..initial).map(|o| (o + 1, name(o))).collect();
        if voters.is_empty() {
            bail!("a StatefulSet needs at least one voter");
        }
        Ok(Topology {
            id: ordinal + 1,
            routes: voters.clone(),
            voters,
            advertise: Some(if config.advertise_addr.is_empty() {
                name(ordinal)
            } else {
                config.advertise_addr.clone()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statefulset_names_give_ids_and_peers() {
        let config = Config {
            k8s_statefulset: "realmq".into(),
            k8s_replicas: 5,
            k8s_headless_service: "realmq-headless".into(),
            voters: 3,
            ..Config::default()
        };
        let t = Topology::statefulset(&config, "realmq-4").unwrap();
        assert_eq!(t.id, 5, "ordinal 4 is node 5");
        assert_eq!(
            t.voters.values().collect::<Vec<_>>(),
            [
                "realmq-0.realmq-headless:7090",
                "realmq-1.realmq-headless:7090",
                "realmq-2.realmq-headless:7090"
            ],
            "only the first three pods are the initial voters; node 5 joins as a learner"
        );
        assert_eq!(
            t.advertise.as_deref(),
            Some("realmq-4.realmq-headless:7090")
        );
        assert!(Topology::statefulset(&config, "other-1").is_err());
    }

    #[test]
    fn peers_beyond_the_voter_count_are_not_initial_voters() {
        let config = Config {
            node_id: 4,
            peers: "1=a:1,2=b:1,3=c:1,4=d:1".into(),
            voters: 3,
            ..Config::default()
        };
        let t = Topology::from_config(&config).unwrap();
        assert_eq!(t.voters.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(t.routes.len(), 4);
        assert_eq!(t.advertise.as_deref(), Some("d:1"));
    }
}
