//! # realmq-raft-store
//!
//! RealMQ's replicated metadata: the openraft type config, the `Command`s every metadata write is
//! made of, and the RocksDB log store and state machine they are applied to. It does no
//! networking.
//!
//! The single-node MQTT broker keeps its state in memory; products, devices, users and persistent
//! sessions move here with the metadata work (see the repository's issues).
