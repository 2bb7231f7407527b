//! # realmq-proto
//!
//! The gRPC contract between RealMQ nodes: `proto/cluster.proto` and the tonic/prost code
//! generated from it (with protox, so no `protoc` is needed). It holds no logic; the node's
//! `cluster/` module is the only code that uses it.
//!
//! - `Raft`: append entries, vote, streamed snapshot install, forwarding commands to the
//!   leader, read-index
//! - `Cluster`: node status, join as a learner, leave

#![allow(clippy::all)]

tonic::include_proto!("realmq.cluster.v1");
