//! Requests to the node that holds a client's session (the replicated session record names it):
//!
//! - proxy subscriptions: the REST API's `mqtt/subscribe` and `unsubscribe` on any node reach
//!   that node, which applies them as the client's own SUBSCRIBE would be;
//! - handover: a node that a client resumed its session on asks the previous owner for what it
//!   had not delivered (`broker/handover.rs`).

use std::time::Duration;

use realmq_proto as pb;
use tonic::{Response, Status};

use super::network::describe;
use super::server::Shared;
use super::wire;
use crate::broker::{Broker, ProxyError, ProxyOp, Takeover};
use crate::session::Undelivered;
use realmq_raft_store::client::BoxFuture;

/// How long the node holding the session may take to answer a proxy request.
const PROXY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a CONNECT waits at most for the previous owner's handover.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(2);

/// A client of `node`'s `Peer` service, at the address the membership gives it.
fn peer_client(
    shared: &Shared,
    node: u64,
) -> Result<pb::peer_client::PeerClient<tonic::transport::Channel>, String> {
    let member = shared.membership().get_node(&node).cloned();
    let addr = shared
        .peers
        .address(node, member.as_ref())
        .ok_or("it is not a member")?;
    shared.peers.peer_client(&addr)
}

/// Applies `op` to `client_id`'s session wherever it is held.
pub async fn proxy(
    shared: &Shared,
    broker: &Broker,
    client_id: &str,
    op: ProxyOp,
) -> Result<(), ProxyError> {
    if broker.holds_session(client_id) {
        return apply_here(broker, client_id, &op).await;
    }
    let mut owner = broker.session_owner(client_id);
    if owner.is_none() {
        // The session may have been registered on another node an instant ago: read what the
        // leader has committed before answering 404.
        shared
            .writer
            .barrier()
            .await
            .map_err(|e| ProxyError::Unavailable(e.to_string()))?;
        owner = broker.session_owner(client_id);
    }
    let not_found = || ProxyError::NotFound(format!("client {client_id:?} has no session"));
    let owner = owner.ok_or_else(not_found)?;
    if owner == broker.node_id {
        // The record names this node, but the session ended here since.
        return apply_here(broker, client_id, &op).await;
    }
    let unreachable = |e: String| {
        ProxyError::Unavailable(format!(
            "node {owner}, which holds the session of {client_id:?}, did not answer: {e}"
        ))
    };
    let request = pb::ProxyRequest {
        client_id: client_id.to_string(),
        op: wire::encode(&op).map_err(|e| ProxyError::Invalid(e.to_string()))?,
    };
    let mut client = peer_client(shared, owner).map_err(unreachable)?;
    let reply = tokio::time::timeout(PROXY_TIMEOUT, client.proxy(request))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|s| unreachable(describe(&s)))?
        .into_inner();
    if reply.error.is_empty() {
        Ok(())
    } else {
        Err(wire::decode(&reply.error)
            .unwrap_or_else(|e| unreachable(format!("undecodable reply: {e}"))))
    }
}

/// Applies `op` to a session held here; a subscription answers once the other nodes know its
/// route, as a SUBACK does.
async fn apply_here(broker: &Broker, client_id: &str, op: &ProxyOp) -> Result<(), ProxyError> {
    broker.proxy(client_id, op)?;
    if matches!(op, ProxyOp::Subscribe { .. })
        && let Some(settled) = broker.routes_settled()
    {
        settled.await;
    }
    Ok(())
}

/// The receiving side: applies a peer's proxy request to a session held here.
pub async fn serve_proxy(
    broker: &Broker,
    req: pb::ProxyRequest,
) -> Result<Response<pb::ProxyReply>, Status> {
    let op: ProxyOp = wire::decode(&req.op)
        .map_err(|e| Status::invalid_argument(format!("undecodable proxy operation: {e}")))?;
    let error = match apply_here(broker, &req.client_id, &op).await {
        Ok(()) => bytes::Bytes::new(),
        Err(e) => wire::encode(&e).map_err(|e| Status::internal(e.to_string()))?,
    };
    Ok(Response::new(pb::ProxyReply { error }))
}

/// The node's `Takeover`: asks a previous owner for a session's undelivered messages.
pub struct Handovers(pub Shared);

impl Takeover for Handovers {
    fn hand_over(&self, from: u64, client_id: &str) -> BoxFuture<'static, Option<Undelivered>> {
        let shared = self.0.clone();
        let request = pb::HandoverRequest {
            client_id: client_id.to_string(),
        };
        Box::pin(async move {
            let client_id = request.client_id.clone();
            let asked = async {
                let mut client = peer_client(&shared, from)?;
                let reply = client
                    .handover(request)
                    .await
                    .map_err(|s| describe(&s))?
                    .into_inner();
                wire::decode_undelivered(&reply.undelivered).map_err(|e| e.to_string())
            };
            match tokio::time::timeout(HANDOVER_TIMEOUT, asked).await {
                Ok(Ok(u)) => Some(u),
                Ok(Err(e)) => {
                    tracing::warn!(client_id, node = from, error = %e, "session handover failed; resuming from the replicated record");
                    None
                }
                Err(_) => {
                    tracing::warn!(
                        client_id,
                        node = from,
                        "session handover timed out; resuming from the replicated record"
                    );
                    None
                }
            }
        })
    }
}

/// The receiving side: detaches a session that moved to the caller and returns what it had not
/// delivered.
pub fn serve_handover(
    broker: &Broker,
    req: pb::HandoverRequest,
) -> Result<Response<pb::HandoverReply>, Status> {
    let undelivered = broker.take_handover(&req.client_id);
    let undelivered =
        wire::encode_undelivered(&undelivered).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::HandoverReply { undelivered }))
}

/// How long a member may take to answer an operator's lookup before it is left out.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(3);

/// `query`'s rows from every member that answers within `INSPECT_TIMEOUT`; this node's own
/// without a round trip. A member that does not answer is left out (and logged): a lookup
/// shows what can be seen rather than failing while a node is down.
pub async fn inspect(
    shared: &Shared,
    broker: &Broker,
    query: &realmq_api::Inspect,
) -> Result<Vec<serde_json::Value>, String> {
    let encoded = serde_json::to_vec(query).map_err(|e| e.to_string())?;
    let members: Vec<u64> = shared.membership().nodes().map(|(id, _)| *id).collect();
    let asks = members.into_iter().map(|node| {
        let encoded = encoded.clone();
        async move {
            if node == broker.node_id {
                return Ok(broker.inspect(query));
            }
            let mut client = peer_client(shared, node)?;
            let request = pb::InspectRequest {
                query: encoded.into(),
            };
            let reply = tokio::time::timeout(INSPECT_TIMEOUT, client.inspect(request))
                .await
                .map_err(|_| "timed out".to_string())?
                .map_err(|s| describe(&s))?
                .into_inner();
            serde_json::from_slice::<Vec<serde_json::Value>>(&reply.rows).map_err(|e| e.to_string())
        }
    });
    let mut rows = Vec::new();
    for (i, answer) in futures::future::join_all(asks)
        .await
        .into_iter()
        .enumerate()
    {
        match answer {
            Ok(r) => rows.extend(r),
            Err(e) => tracing::warn!(member = i, error = %e, "a member did not answer a lookup"),
        }
    }
    Ok(rows)
}

/// The receiving side of `inspect`.
pub fn serve_inspect(
    broker: &Broker,
    req: pb::InspectRequest,
) -> Result<Response<pb::InspectReply>, Status> {
    let query: realmq_api::Inspect = serde_json::from_slice(&req.query)
        .map_err(|e| Status::invalid_argument(format!("undecodable lookup: {e}")))?;
    let rows =
        serde_json::to_vec(&broker.inspect(&query)).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::InspectReply { rows: rows.into() }))
}
