//! What the broker tells the rule engine (`$events/...`) about clients, sessions and messages.
//! Each call costs an atomic load unless an enabled rule reads that event; the event's fields
//! are built only then, and the rest happens on the rule engine's worker.

use std::net::SocketAddr;

use serde_json::json;

use super::Broker;
use crate::auth::ClientInfo;
use crate::message::{Delivery, Message, Protocol};
use crate::rules::context::message_fields;
use crate::rules::{Event, EventData};

impl Broker {
    pub(super) fn client_connected_event(
        &self,
        client: &ClientInfo,
        peer: Option<SocketAddr>,
        protocol: Protocol,
        keep_alive: u16,
        clean_start: bool,
    ) {
        self.rules.on_event(Event::ClientConnected, || {
            EventData::new(
                Some(client),
                json!({
                    "peerhost": peer.map(|p| p.ip().to_string()),
                    "proto_ver": match protocol {
                        Protocol::V311 => 4,
                        Protocol::V5 => 5,
                    },
                    "keepalive": keep_alive,
                    "clean_start": clean_start,
                    "connected_at": chrono::Utc::now().timestamp_millis(),
                }),
            )
        });
        self.device_status_event(client, true);
    }

    pub(super) fn client_disconnected_event(&self, client: &ClientInfo, reason: &str) {
        self.rules.on_event(Event::ClientDisconnected, || {
            EventData::new(
                Some(client),
                json!({
                    "reason": reason,
                    "disconnected_at": chrono::Utc::now().timestamp_millis(),
                }),
            )
        });
        self.device_status_event(client, false);
    }

    /// Only clients that are registered devices have a status; the worker checks that.
    fn device_status_event(&self, client: &ClientInfo, online: bool) {
        if client.username.is_none() {
            return;
        }
        self.rules.on_event(Event::DeviceStatus, || {
            EventData::new(
                Some(client),
                json!({"status": if online { "online" } else { "offline" }}),
            )
        });
    }

    /// A message was written to `receiver`'s connection.
    pub fn delivered(&self, receiver: &ClientInfo, d: &Delivery) {
        self.rules.on_event(Event::MessageDelivered, || {
            let mut fields = message_fields(&d.msg, None, chrono::Utc::now().timestamp_millis());
            fields.insert(
                "from_clientid".into(),
                d.msg.publisher.as_deref().map(String::from).into(),
            );
            fields.insert("from_username".into(), serde_json::Value::Null);
            fields.insert("qos".into(), (d.qos as u8).into());
            EventData::new(Some(receiver), serde_json::Value::Object(fields))
        });
    }

    /// A message published by `from` was dropped: `no_subscribers`, `queue_full`.
    pub(super) fn dropped_event(&self, from: Option<&ClientInfo>, msg: &Message, reason: &str) {
        self.rules.on_event(Event::MessageDropped, || {
            let mut fields = message_fields(msg, from, chrono::Utc::now().timestamp_millis());
            fields.insert("reason".into(), reason.into());
            EventData::new(from, serde_json::Value::Object(fields))
        });
    }
}
