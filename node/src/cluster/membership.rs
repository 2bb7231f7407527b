//! Forming and changing the cluster: the one-time initialization, joining as a learner,
//! promotion to voter, removal, and the view of every member that `GET /api/v1/nodes` shows.
//!
//! A fresh cluster is initialized exactly once, by the lowest voter id, and only after every
//! configured voter answered that it is uninitialized: two nodes can never each start a cluster
//! of their own. It starts as a cluster of that one node; every other node, finding it formed,
//! asks to join, and the leader adds it as a learner, waits for it to catch up, and promotes it
//! while the cluster has fewer voters than configured. The initializer acknowledges nothing until
//! the configured voters have joined. A new node, a node beyond the voter count and a node that
//! lost its disk all take that one path; a wiped voter is demoted first, and a node that started
//! without data refuses to vote until it has joined, so an empty log never helps elect a leader
//! that lacks committed entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use realmq_api::NodeInfo;
use realmq_proto as pb;
use realmq_proto::cluster_client::ClusterClient;
use realmq_raft_store::NodeAddr;
use realmq_raft_store::typ::NodeId;
use tonic::transport::Channel;

use super::network::describe;
use super::server::Shared;
use super::wire;

const POLL: Duration = Duration::from_millis(300);
/// How often a node still waiting for its peers says why.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Brings this node into the cluster: returns once it is a member that knows a leader. `fresh`:
/// the store held no raft state when the node started (checked before the cluster port
/// served anything).
pub async fn form(
    s: &Shared,
    voters: &BTreeMap<NodeId, String>,
    fresh: bool,
) -> anyhow::Result<()> {
    let me = s.peers.me();
    if !fresh && s.membership().voter_ids().any(|id| id == me) {
        // A voter restarting on its data: the log and vote are as they were.
        return wait_for_leader(s).await;
    }
    // A learner restarting on its data asks to be admitted again like a new node: it left the
    // membership when it stopped (`leave_if_learner`), or may have been removed meanwhile.
    if voters.len() <= 1 && voters.keys().all(|&id| id == me) {
        // A single node (or a one-voter cluster led by this node): nobody to wait for.
        s.raft
            .initialize(BTreeMap::from([(me, s.me.clone())]))
            .await?;
        tracing::info!(node_id = me, "initialized a one-member cluster");
        return wait_for_leader(s).await;
    }
    let mut last_report = Instant::now();
    loop {
        let why = match survey(s, voters).await {
            Survey::Formed(via) => match join(s, &via).await {
                Ok(()) => {
                    tracing::info!(node_id = me, via = %via, "joined the cluster");
                    break;
                }
                Err(e) => format!("the cluster exists, joining through {via} failed: {e}"),
            },
            Survey::AllFresh if voters.keys().next() == Some(&me) => {
                // The one initialization of this cluster, as a member of one; the others join
                // (as they would after losing their disks) and are promoted up to the voter
                // count, so a new node and a wiped node take the same path.
                match s
                    .raft
                    .initialize(BTreeMap::from([(me, s.me.clone())]))
                    .await
                {
                    Ok(()) => {
                        tracing::info!(
                            node_id = me,
                            "initialized the cluster; the other voters join it"
                        );
                        break;
                    }
                    Err(e) => format!("initializing failed: {e}"),
                }
            }
            Survey::AllFresh => format!(
                "waiting for node {} to initialize the cluster",
                voters.keys().next().copied().unwrap_or(0)
            ),
            Survey::Missing(why) => why,
        };
        if last_report.elapsed() >= REPORT_EVERY {
            tracing::info!(node_id = me, "not in a cluster yet: {why}");
            last_report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
    s.rejoining.store(false, Ordering::Release);
    if voters.keys().next() == Some(&me) {
        // Acknowledge nothing while this node alone is the quorum: wait for the configured
        // voters to join first.
        let want = voters.len().min(s.voters as usize);
        wait_until(s, &format!("{want} voters to join"), |m| {
            m.membership_config.membership().voter_ids().count() >= want
        })
        .await;
    }
    wait_for_leader(s).await
}

async fn wait_for_leader(s: &Shared) -> anyhow::Result<()> {
    wait_until(s, "a leader to be elected", |m| m.current_leader.is_some()).await;
    Ok(())
}

/// Waits, saying what for every few seconds, until this node's raft metrics satisfy `done`.
async fn wait_until(
    s: &Shared,
    what: &str,
    done: impl Fn(&realmq_raft_store::typ::RaftMetrics) -> bool,
) {
    let mut rx = s.raft.metrics();
    let mut last_report = Instant::now();
    while !done(&rx.borrow()) {
        let _ = tokio::time::timeout(POLL, rx.changed()).await;
        if last_report.elapsed() >= REPORT_EVERY {
            tracing::info!(
                node_id = s.peers.me(),
                "a cluster member, waiting for {what}"
            );
            last_report = Instant::now();
        }
    }
}

enum Survey {
    /// Some peer (at this address) is already a member of a cluster.
    Formed(String),
    /// Every configured voter answered and none is initialized.
    AllFresh,
    /// Someone did not answer (yet).
    Missing(String),
}

async fn survey(s: &Shared, voters: &BTreeMap<NodeId, String>) -> Survey {
    let me = s.peers.me();
    let mut missing = Vec::new();
    for (&id, addr) in voters.iter().filter(|(id, _)| **id != me) {
        match s.peers.status(addr, false).await {
            Ok(st) if st.initialized => return Survey::Formed(addr.clone()),
            Ok(st) if st.id != id => missing.push(format!(
                "{addr} answers as node {} instead of node {id}",
                st.id
            )),
            Ok(_) => {}
            Err(e) => missing.push(format!("node {id} at {addr}: {e}")),
        }
    }
    if !missing.is_empty() {
        Survey::Missing(missing.join("; "))
    } else if !voters.contains_key(&me) {
        // Not a configured voter, and nobody has formed the cluster yet: wait for them.
        Survey::Missing("waiting for the configured voters to form the cluster".into())
    } else {
        Survey::AllFresh
    }
}

/// Asks the cluster (through the member at `via`) to admit this node.
async fn join(s: &Shared, via: &str) -> Result<(), String> {
    let mut client = s.peers.cluster_client(via)?;
    let req = pb::JoinRequest {
        id: s.peers.me(),
        addr: wire::encode(&s.me).map_err(|e| e.to_string())?,
    };
    // Admission waits for this node to catch up; allow it time.
    match tokio::time::timeout(Duration::from_secs(120), client.join(req)).await {
        Ok(r) => join_result(r),
        Err(_) => Err("timed out".into()),
    }
}

/// `None` when this node leads; else a client to the leader, to relay a request there.
fn relay(s: &Shared) -> Result<Option<ClusterClient<Channel>>, String> {
    let m = s.raft.metrics().borrow().clone();
    let leader = m.current_leader.ok_or("no leader elected")?;
    if leader == s.peers.me() {
        return Ok(None);
    }
    let node = m.membership_config.membership().get_node(&leader).cloned();
    let via = s
        .peers
        .address(leader, node.as_ref())
        .ok_or("the leader's address is unknown")?;
    s.peers.cluster_client(&via).map(Some)
}

fn join_result(r: Result<tonic::Response<pb::JoinReply>, tonic::Status>) -> Result<(), String> {
    match r {
        Ok(r) => match r.into_inner().result {
            Some(pb::join_reply::Result::Ok(_)) => Ok(()),
            Some(pb::join_reply::Result::Error(e)) => Err(e),
            None => Err("empty reply".into()),
        },
        Err(st) => Err(describe(&st)),
    }
}

/// Admits `id` (at `addr`): served by the leader, relayed there by any other member.
pub async fn admit(s: &Shared, id: NodeId, addr: NodeAddr) -> Result<(), String> {
    if let Some(mut leader) = relay(s)? {
        let req = pb::JoinRequest {
            id,
            addr: wire::encode(&addr).map_err(|e| e.to_string())?,
        };
        return join_result(leader.join(req).await);
    }
    let membership = s.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.contains(&id) {
        // It asks to join although it is a voter: it lost its state. Demote it until it has
        // caught up again, so it cannot vote with a log it no longer holds.
        tracing::warn!(
            node_id = id,
            "a voter rejoins without its data; demoting it to learner until it catches up"
        );
        s.raft
            .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
            .await
            .map_err(|e| e.to_string())?;
    }
    // `blocking`: returns once the learner has caught up with the log.
    s.raft
        .add_learner(id, addr, true)
        .await
        .map_err(|e| e.to_string())?;
    let voters: BTreeSet<NodeId> = s.membership().voter_ids().collect();
    if (voters.len() as u64) < s.voters {
        s.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(node_id = id, "promoted to voter");
    } else {
        tracing::info!(node_id = id, "added as a learner");
    }
    Ok(())
}

/// Why a member could not be removed.
#[derive(Debug)]
pub enum RemoveError {
    NotMember,
    LastVoter,
    Unavailable(String),
}

/// Removes `id` from the cluster: served by the leader, relayed there by any other member.
pub async fn remove(s: &Shared, id: NodeId) -> Result<(), RemoveError> {
    let membership = s.membership();
    if membership.get_node(&id).is_none() {
        return Err(RemoveError::NotMember);
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.len() == 1 && voters.contains(&id) {
        return Err(RemoveError::LastVoter);
    }
    if let Some(mut leader) = relay(s).map_err(RemoveError::Unavailable)? {
        return match leader.leave(pb::LeaveRequest { id }).await {
            Ok(r) => match r.into_inner().result {
                Some(pb::leave_reply::Result::Ok(_)) => Ok(()),
                Some(pb::leave_reply::Result::Error(e)) => Err(RemoveError::Unavailable(e)),
                None => Err(RemoveError::Unavailable("empty reply".into())),
            },
            Err(st) => Err(RemoveError::Unavailable(describe(&st))),
        };
    }
    let change = if voters.contains(&id) {
        ChangeMembers::RemoveVoters(BTreeSet::from([id]))
    } else {
        ChangeMembers::RemoveNodes(BTreeSet::from([id]))
    };
    s.raft
        .change_membership(change, false)
        .await
        .map_err(|e| RemoveError::Unavailable(e.to_string()))?;
    tracing::info!(node_id = id, "removed from the cluster");
    // Its clients can no longer be connected there: release their sessions at once.
    if let Err(e) = super::dead::release(s, id).await {
        tracing::warn!(node_id = id, error = %e, "failed to release a removed node's sessions");
    }
    Ok(())
}

/// Called when this node stops: a learner leaves the membership, so scaling a StatefulSet in
/// (which stops the highest ordinals, always learners beyond the voter count) leaves no member
/// behind that the leader keeps replicating to; a learner that starts again is admitted anew.
/// A voter stays: a rolling restart must not shrink the quorum.
pub async fn leave_if_learner(s: &Shared) {
    let me = s.peers.me();
    let membership = s.membership();
    if membership.get_node(&me).is_none() || membership.voter_ids().any(|id| id == me) {
        return;
    }
    match tokio::time::timeout(Duration::from_secs(5), remove(s, me)).await {
        Ok(Ok(())) => tracing::info!(node_id = me, "left the cluster (a learner that stops)"),
        Ok(Err(e)) => tracing::warn!(node_id = me, error = ?e, "could not leave the cluster"),
        Err(_) => tracing::warn!(node_id = me, "leaving the cluster timed out"),
    }
}

/// Every member, each asked for its own status (unreachable ones as the membership has them).
pub async fn nodes(s: &Shared, digest: bool) -> Vec<NodeInfo> {
    let membership = s.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let members: Vec<(NodeId, NodeAddr)> =
        membership.nodes().map(|(id, a)| (*id, a.clone())).collect();
    let asks = members.iter().map(|(id, addr)| {
        let s = s.clone();
        let (id, addr) = (*id, addr.clone());
        async move {
            let dial = s.peers.address(id, Some(&addr)).unwrap_or_default();
            let status = if id == s.peers.me() {
                super::local_status(&s, digest).await
            } else {
                // Bounded by `Peers::status`.
                s.peers.status(&dial, digest).await
            };
            (id, addr, status)
        }
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .map(|(id, addr, status)| match status {
            Ok(st) => NodeInfo {
                id,
                role: if voters.contains(&id) || st.role != "follower" {
                    st.role
                } else {
                    "learner".into()
                },
                leader: (st.leader != 0).then_some(st.leader),
                term: Some(st.term),
                last_applied: Some(st.last_applied),
                digest: (!st.digest.is_empty()).then_some(st.digest),
                cluster_addr: addr.cluster_addr,
                mqtt_addr: addr.mqtt_addr,
                api_addr: addr.api_addr,
                connections: Some(st.connections),
                reachable: true,
            },
            Err(_) => NodeInfo {
                id,
                role: if voters.contains(&id) {
                    "follower"
                } else {
                    "learner"
                }
                .into(),
                leader: None,
                term: None,
                last_applied: None,
                digest: None,
                cluster_addr: addr.cluster_addr,
                mqtt_addr: addr.mqtt_addr,
                api_addr: addr.api_addr,
                connections: None,
                reachable: false,
            },
        })
        .collect()
}
