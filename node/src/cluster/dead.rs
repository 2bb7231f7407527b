//! What the leader does about members that stopped answering: after `dead_node_grace` seconds
//! unreachable, the sessions and devices they owned are marked disconnected / offline (so the
//! REST API stops listing their clients online and a client reconnecting elsewhere resumes its
//! session), and their offline sessions expire on schedule, since the dead node's own timers are
//! gone. Every write is conditional on the session still belonging to that node, so a client that
//! already moved is never touched, and the watch restarts from scratch on each new leader.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use realmq_raft_store::Command;
use realmq_raft_store::model::SessionRecord;
use realmq_raft_store::typ::NodeId;

use super::server::Shared;

const TICK: Duration = Duration::from_secs(1);
/// Ticks between expiry scans of dead nodes' sessions (a scan reads every session).
const EXPIRE_EVERY: u32 = 10;
/// Sessions per entry when marking a dead node's clients.
const CHUNK: usize = 512;

/// Runs until the process stops; acts only while this node leads.
pub async fn watch(s: Shared, grace: Duration) {
    let mut last_seen: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut dead: BTreeSet<NodeId> = BTreeSet::new();
    let mut led = false;
    let mut ticks = 0u32;
    loop {
        tokio::time::sleep(TICK).await;
        ticks = ticks.wrapping_add(1);
        let m = s.raft.metrics().borrow().clone();
        if m.current_leader != Some(m.id) {
            led = false;
            continue;
        }
        if !led {
            // A new term of leadership: everyone gets a full grace period from now.
            led = true;
            last_seen.clear();
            dead.clear();
        }
        let now = Instant::now();
        let members: Vec<(NodeId, String)> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != m.id)
            .filter_map(|(id, n)| Some((*id, s.peers.address(*id, Some(n))?)))
            .collect();
        last_seen.retain(|id, _| members.iter().any(|(m, _)| m == id));
        let mut reachable = Vec::new();
        for (id, addr) in members {
            let seen = last_seen.entry(id).or_insert(now);
            if s.peers.status(&addr, false).await.is_ok() {
                *seen = now;
                dead.remove(&id);
                reachable.push(id);
            } else if now.duration_since(*seen) >= grace && dead.insert(id) {
                tracing::warn!(
                    node_id = id,
                    grace_s = grace.as_secs(),
                    "node unreachable past the grace period; marking its clients disconnected"
                );
                if let Err(e) = release(&s, id).await {
                    tracing::warn!(node_id = id, error = %e, "failed to mark a dead node's clients");
                    dead.remove(&id);
                }
            }
        }
        promote(&s, &reachable).await;
        if !ticks.is_multiple_of(EXPIRE_EVERY) {
            continue;
        }
        for &id in &dead {
            if let Err(e) = expire(&s, id).await {
                tracing::warn!(node_id = id, error = %e, "failed to expire a dead node's sessions");
            }
        }
    }
}

/// Keeps the voter count: while the cluster has fewer voters than configured (a node that
/// crashed before its promotion, a voter removed), promotes a reachable learner that is caught
/// up with the log.
async fn promote(s: &Shared, reachable: &[NodeId]) {
    let membership = s.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.len() as u64 >= s.voters {
        return;
    }
    let m = s.raft.metrics().borrow().clone();
    let last = m.last_log_index.unwrap_or(0);
    let caught_up = |id: &NodeId| {
        m.replication
            .as_ref()
            .and_then(|r| r.get(id).cloned().flatten())
            .is_some_and(|l| l.index + 64 >= last)
    };
    let Some(&id) = reachable
        .iter()
        .find(|id| !voters.contains(id) && caught_up(id))
    else {
        return;
    };
    match s
        .raft
        .change_membership(
            openraft::ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            false,
        )
        .await
    {
        Ok(_) => tracing::info!(node_id = id, "promoted a learner to keep the voter count"),
        Err(e) => tracing::warn!(node_id = id, error = %e, "failed to promote a learner"),
    }
}

/// Marks every connected session of `node` disconnected (their devices offline).
pub async fn release(s: &Shared, node: NodeId) -> Result<(), String> {
    let at = chrono::Utc::now().timestamp_millis();
    let sessions = s.registry.sessions().map_err(|e| e.to_string())?;
    let n = write_all(s, disconnects(sessions, node, at)).await?;
    if n > 0 {
        tracing::info!(
            node_id = node,
            sessions = n,
            "marked a lost node's clients disconnected"
        );
    }
    Ok(())
}

/// Removes the offline sessions of `node` whose expiry has passed.
async fn expire(s: &Shared, node: NodeId) -> Result<(), String> {
    let now = chrono::Utc::now().timestamp_millis();
    let sessions = s.registry.sessions().map_err(|e| e.to_string())?;
    write_all(s, expired(sessions, node, now)).await.map(|_| ())
}

async fn write_all(s: &Shared, cmds: Vec<Command>) -> Result<usize, String> {
    for chunk in cmds.chunks(CHUNK) {
        s.writer
            .write(Command::Batch(chunk.to_vec()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(cmds.len())
}

/// The writes that end `node`'s connections: the same command the node itself writes when a
/// connection ends, so each applies only to a session still owned by that very connection.
fn disconnects(sessions: Vec<SessionRecord>, node: NodeId, at: i64) -> Vec<Command> {
    sessions
        .into_iter()
        .filter(|r| r.node_id == node && r.connected)
        .map(|r| Command::ClientDisconnected {
            client_id: r.client_id,
            node_id: r.node_id,
            conn_id: r.conn_id,
            at,
        })
        .collect()
}

/// The writes that end `node`'s offline sessions whose expiry passed by `now` (ms), each
/// conditional on the session still belonging to `node`.
fn expired(sessions: Vec<SessionRecord>, node: NodeId, now: i64) -> Vec<Command> {
    sessions
        .into_iter()
        .filter(|r| r.node_id == node && !r.connected && r.expiry_interval != u32::MAX)
        .filter(|r| {
            r.disconnected_at
                .is_some_and(|at| at + i64::from(r.expiry_interval) * 1000 <= now)
        })
        .map(|r| Command::RemoveSession {
            client_id: r.client_id,
            owner: Some(node),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(
        client: &str,
        node: NodeId,
        connected: bool,
        expiry: u32,
        gone: Option<i64>,
    ) -> SessionRecord {
        SessionRecord {
            client_id: client.into(),
            node_id: node,
            conn_id: 7,
            username: None,
            expiry_interval: expiry,
            subscriptions: Vec::new(),
            connected,
            disconnected_at: gone,
        }
    }

    #[test]
    fn a_lost_nodes_connected_clients_are_disconnected_and_only_those() {
        let all = vec![
            session("on-lost", 3, true, 60, None),
            session("offline-on-lost", 3, false, 60, Some(1)),
            session("elsewhere", 2, true, 60, None),
        ];
        assert_eq!(
            disconnects(all, 3, 5_000),
            vec![Command::ClientDisconnected {
                client_id: "on-lost".into(),
                node_id: 3,
                conn_id: 7,
                at: 5_000,
            }]
        );
    }

    #[test]
    fn a_lost_nodes_sessions_expire_on_schedule() {
        let all = vec![
            session("due", 3, false, 10, Some(1_000)),
            session("not-yet", 3, false, 10, Some(5_000)),
            session("forever", 3, false, u32::MAX, Some(0)),
            session("still-connected", 3, true, 10, None),
            session("other-node", 2, false, 10, Some(0)),
        ];
        let ids: Vec<_> = expired(all, 3, 11_000)
            .into_iter()
            .map(|c| match c {
                Command::RemoveSession { client_id, owner } => (client_id, owner),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![("due".to_string(), Some(3))]);
    }
}
