//! # realmq-cluster-tests
//!
//! Tests that start several real `realmq` processes on loopback and inject faults (node kill and
//! restart, link partitions). They arrive with clustering; single-node behaviour is tested in
//! `node/tests/`.
