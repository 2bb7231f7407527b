//! # realmq-bench
//!
//! RealMQ's load generator (`realmq-bench`, `src/main.rs`) and the benchmark drivers behind
//! `make bench` (`src/bin/`): `bench-suite` (MQTT side by side with Mosquitto), `api-bench`
//! (REST and metadata on one node), `cluster-bench` (REST across a three-node cluster, leader
//! loss). This library holds what the REST drivers share: running `realmq` processes and
//! calling the API.

pub mod rest;
