//! # realmq-proto
//!
//! The gRPC contract between RealMQ nodes: `.proto` files under `proto/` and the tonic/prost code
//! generated from them (with protox, so no `protoc` is needed). It holds no logic.
//!
//! The single-node broker needs no node-to-node messages; the raft RPC and publish-forwarding
//! services are added here together with the cluster code that uses them.
