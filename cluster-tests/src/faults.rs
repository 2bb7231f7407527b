//! Link faults. Tests name nodes (`cut(2)`, `delay(1, ..)`) and occasionally single links; the
//! state of every proxy is recomputed from the whole set of faults, so overlapping faults
//! compose: `heal(1)` leaves the link 1 → 2 cut while node 2 is cut.
//!
//! A limit of the wiring (see the crate docs): links into a learner go through one proxy shared
//! by every caller, so they follow faults on the learner only. `cut(1)` on a voter does not
//! stop node 1 from dialling a learner, and `cut_link` cannot name a link into a learner.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::NodeId;
use crate::cluster::Cluster;
use crate::proxy::LinkState;

#[derive(Default)]
pub(crate) struct Faults {
    cut_nodes: BTreeSet<NodeId>,
    cut_links: BTreeSet<(NodeId, NodeId)>,
    delays: BTreeMap<NodeId, Duration>,
    hidden_deaths: BTreeSet<NodeId>,
}

impl Faults {
    /// The state of the link `from` → `to` (`from` is `None` for a learner's shared proxy).
    pub(crate) fn state(&self, from: Option<NodeId>, to: NodeId) -> LinkState {
        let cut = self.cut_nodes.contains(&to)
            || from
                .is_some_and(|f| self.cut_nodes.contains(&f) || self.cut_links.contains(&(f, to)));
        let delay_of = |n: NodeId| self.delays.get(&n).copied().unwrap_or_default();
        let delay = delay_of(to).max(from.map_or(Duration::ZERO, delay_of));
        LinkState {
            cut,
            delay,
            hide_death: self.hidden_deaths.contains(&to),
        }
    }
}

impl Cluster {
    /// Partitions node `i` from every other node: its open cluster connections are reset and
    /// new ones, either way, are black-holed. Clients (MQTT, REST) still reach it.
    pub fn cut(&self, i: NodeId) {
        self.node(i);
        self.change_faults(&format!("cut({i})"), |f| {
            f.cut_nodes.insert(i);
        });
    }

    /// Undoes `cut(i)`, `delay(i, ..)` and every `cut_link` touching `i`.
    pub fn heal(&self, i: NodeId) {
        self.change_faults(&format!("heal({i})"), |f| {
            f.cut_nodes.remove(&i);
            f.delays.remove(&i);
            f.cut_links.retain(|&(a, b)| a != i && b != i);
        });
    }

    /// Adds `d` to every chunk of bytes in both directions on node `i`'s links, so a request
    /// and its answer over one of them take at least `2 * d` more. `Duration::ZERO` removes it.
    pub fn delay(&self, i: NodeId, d: Duration) {
        self.node(i);
        self.change_faults(&format!("delay({i}, {d:?})"), |f| {
            if d.is_zero() {
                f.delays.remove(&i);
            } else {
                f.delays.insert(i, d);
            }
        });
    }

    /// From now on, when node `i`'s process ends, the connections its peers had opened to it
    /// stay open and silent instead of being closed, as when its machine vanishes without a
    /// reset: the peers learn of the death only from their own timeouts, and may still be
    /// waiting on them when `i` is back. New connections reach it as usual.
    pub fn hide_deaths(&self, i: NodeId) {
        self.node(i);
        self.change_faults(&format!("hide_deaths({i})"), |f| {
            f.hidden_deaths.insert(i);
        });
    }

    /// Cuts only connections that `from` opens to `to` (an asymmetric fault: `to` may still
    /// dial `from`). Panics for a link into a learner, which has no proxy of its own.
    pub fn cut_link(&self, from: NodeId, to: NodeId) {
        assert!(
            self.proxies.has_link(from, to),
            "node {from} has no proxy of its own towards node {to} (is {to} a learner?)"
        );
        self.change_faults(&format!("cut_link({from} -> {to})"), |f| {
            f.cut_links.insert((from, to));
        });
    }

    pub fn heal_link(&self, from: NodeId, to: NodeId) {
        self.change_faults(&format!("heal_link({from} -> {to})"), |f| {
            f.cut_links.remove(&(from, to));
        });
    }

    /// Removes every fault.
    pub fn heal_all(&self) {
        self.change_faults("heal_all()", |f| *f = Faults::default());
    }

    fn change_faults(&self, what: &str, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut faults);
        self.proxies.update(|from, to| faults.state(from, to));
        drop(faults);
        self.event(what);
    }

    /// Applies the current faults to links opened since (a node added during a partition).
    pub(crate) fn reapply_faults(&self) {
        let faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        self.proxies.update(|from, to| faults.state(from, to));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_compose() {
        let mut f = Faults::default();
        f.cut_nodes.insert(2);
        f.delays.insert(1, Duration::from_millis(50));
        f.delays.insert(3, Duration::from_millis(20));
        f.cut_links.insert((3, 1));
        let s = |from, to| f.state(from, to);
        assert!(
            s(Some(1), 2).cut && s(Some(2), 1).cut,
            "both ways of a cut node"
        );
        assert!(
            s(Some(3), 1).cut && !s(Some(1), 3).cut,
            "a cut link is directed"
        );
        assert!(s(None, 2).cut, "a cut learner's shared proxy");
        assert!(!s(None, 4).cut, "callers of a shared proxy are unknown");
        assert_eq!(
            s(Some(1), 3).delay,
            Duration::from_millis(50),
            "the larger delay"
        );
        assert_eq!(s(None, 4).delay, Duration::ZERO);
    }
}
