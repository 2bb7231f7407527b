//! Integration tests of the single-node broker: the real `realmq` binary, driven over TCP by
//! mosquitto's command-line clients, rumqttc and exact-packet clients. One module per area.

#[path = "../common/mod.rs"]
mod common;

mod abuse;
mod backpressure;
mod cli;
mod clients;
mod closing;
mod edge;
mod limits;
mod logs;
mod metrics;
mod operators;
mod platform;
mod qos;
mod retain_will;
mod routing;
mod rules;
mod session;
mod tls;
mod webhooks;
mod websocket;
