//! Election safety: at most one leader per term. Counted from what each node says about itself,
//! both the nodes that call themselves leader and the leader each node follows.

use std::collections::{BTreeMap, BTreeSet};

use super::Observation;

pub(super) fn check(seen: &[Observation]) {
    let mut leaders: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for o in seen {
        let Some(term) = o.status.term else { continue };
        if o.status.role.as_deref() == Some("leader") {
            leaders.entry(term).or_default().insert(o.node);
        }
        if let Some(leader) = o.status.leader {
            leaders.entry(term).or_default().insert(leader);
        }
    }
    let split: Vec<String> = leaders
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(term, ids)| format!("term {term}: leaders {ids:?}"))
        .collect();
    assert!(
        split.is_empty(),
        "more than one leader in a term: {}",
        split.join("; ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::NodeStatus;

    fn seen(node: u64, role: &str, leader: u64, term: u64) -> Observation {
        Observation {
            node,
            status: NodeStatus {
                id: node,
                role: Some(role.into()),
                leader: Some(leader),
                term: Some(term),
                ..NodeStatus::default()
            },
        }
    }

    #[test]
    fn one_leader_per_term_across_terms_passes() {
        check(&[
            seen(1, "leader", 1, 2),
            seen(2, "follower", 1, 2),
            seen(2, "leader", 2, 3),
            seen(3, "follower", 2, 3),
        ]);
    }

    #[test]
    #[should_panic(expected = "term 2: leaders {1, 2}")]
    fn two_leaders_in_a_term_fail() {
        check(&[seen(1, "leader", 1, 2), seen(3, "follower", 2, 2)]);
    }
}
