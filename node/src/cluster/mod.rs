//! The node's raft: open the store in the data directory and start a member. Today a node is a
//! one-member cluster; the transport to peers arrives with multi-node clustering.

use anyhow::Context;
use realmq_raft_store::{Member, NoPeers, NodeAddr};

use crate::config::Config;

/// Opens `data_dir`, starts raft (bootstrapping a one-member cluster on first start, recovering
/// log and state on a restart) and returns once this node leads.
pub async fn start(config: &Config) -> anyhow::Result<Member> {
    let me = NodeAddr {
        rpc_addr: String::new(),
        api_addr: config.api_addr.clone(),
    };
    realmq_raft_store::start_single(&config.data_dir, config.node_id, me, NoPeers)
        .await
        .with_context(|| {
            format!(
                "failed to start the metadata store in {}",
                config.data_dir.display()
            )
        })
}
