//! Properties every test must leave intact, checked by `Cluster::invariant_check` at the end of
//! each test (one property per file, as in openraft's `tests-turmoil/src/invariants/`). They
//! check outcomes only a whole cluster can get wrong; what a test is about, it asserts itself.

mod no_crashed_nodes;
mod one_leader_per_term;
mod state_machines_equal;

use crate::NodeId;
use crate::api::NodeStatus;
use crate::cluster::Cluster;

/// What node `node` reported about itself at one moment.
#[derive(Clone, Debug)]
pub(crate) struct Observation {
    pub node: NodeId,
    pub status: NodeStatus,
}

impl Cluster {
    /// Checks, in order:
    /// 1. no node exited that the harness did not kill;
    /// 2. after every link fault is healed (a partitioned node could never catch up), every
    ///    node that is up applies the same log index within `CONVERGE_TIMEOUT`, and nodes that
    ///    applied the same index hold the same replicated state (equal `digest`);
    /// 3. no two leaders were seen in one term.
    ///
    /// Panics with what each node reported when one does not hold.
    pub async fn invariant_check(&self) {
        no_crashed_nodes::check(self);
        self.heal_all();
        let seen = state_machines_equal::check(self).await;
        one_leader_per_term::check(&seen);
    }
}
