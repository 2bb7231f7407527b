//! The fields a rule reads: what the hot path hands over (`MessageInput`, `EventData`) is
//! turned into a context on the worker, where the lookups it needs (the client's address, the
//! device behind a user name) cost the publisher nothing.

use std::sync::Arc;

use realmq_raft_store::Registry;
use serde_json::{Map, Value, json};

use super::Compiled;
use super::eval::Context;
use super::sql::{Event, Query};
use crate::auth::ClientInfo;
use crate::broker::Broker;
use crate::message::Message;

/// A message as it entered the cluster here.
pub struct MessageInput {
    pub msg: Arc<Message>,
    pub client: Option<ClientInfo>,
    /// Milliseconds since the Unix epoch at ingress.
    pub at: i64,
}

impl MessageInput {
    pub fn new(msg: &Arc<Message>, client: Option<&ClientInfo>) -> MessageInput {
        MessageInput {
            msg: msg.clone(),
            client: client.cloned(),
            at: now_ms(),
        }
    }
}

/// An event: its client and the fields of its own (`reason`, `connected_at`, ...).
pub struct EventData {
    pub client: Option<ClientInfo>,
    pub fields: Map<String, Value>,
    pub at: i64,
}

impl EventData {
    pub fn new(client: Option<&ClientInfo>, fields: Value) -> EventData {
        EventData {
            client: client.cloned(),
            fields: match fields {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            at: now_ms(),
        }
    }
}

/// A context and the client whose message or event it describes (a republish action
/// publishes as that client, through its ACL).
pub struct Built {
    pub ctx: Context,
    pub client: Option<ClientInfo>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A unique message id, as EMQX gives one: hex of the time and a counter.
fn message_id(at: i64) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{:012x}{:08x}", at, n & 0xffff_ffff)
}

pub fn payload_text(payload: &[u8]) -> Value {
    Value::String(String::from_utf8_lossy(payload).into_owned())
}

fn pub_props(msg: &Message) -> Value {
    let p = &msg.properties;
    let mut m = Map::new();
    if p.payload_is_utf8 {
        m.insert("Payload-Format-Indicator".into(), 1.into());
    }
    if let Some(ct) = &p.content_type {
        m.insert("Content-Type".into(), ct.to_string().into());
    }
    if let Some(rt) = &p.response_topic {
        m.insert("Response-Topic".into(), rt.to_string().into());
    }
    if let Some(cd) = &p.correlation_data {
        m.insert("Correlation-Data".into(), payload_text(cd));
    }
    if !p.user_properties.is_empty() {
        let users: Map<String, Value> = p
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string().into()))
            .collect();
        m.insert("User-Property".into(), Value::Object(users));
    }
    Value::Object(m)
}

/// The message fields a message rule reads.
pub fn message_fields(msg: &Message, client: Option<&ClientInfo>, at: i64) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("id".into(), message_id(at).into());
    m.insert(
        "clientid".into(),
        client.map_or(Value::Null, |c| c.client_id.to_string().into()),
    );
    m.insert(
        "username".into(),
        client
            .and_then(|c| c.username.as_deref())
            .map_or(Value::Null, Value::from),
    );
    m.insert("topic".into(), msg.topic.to_string().into());
    m.insert("qos".into(), (msg.qos as u8).into());
    m.insert("retain".into(), msg.retain.into());
    m.insert("payload".into(), payload_text(&msg.payload));
    m.insert("timestamp".into(), at.into());
    m.insert("pub_props".into(), pub_props(msg));
    m
}

pub fn for_message(
    broker: &Broker,
    registry: &Registry,
    input: MessageInput,
    rules: &[Arc<Compiled>],
) -> Built {
    let mut m = message_fields(&input.msg, input.client.as_ref(), input.at);
    common(broker, registry, &mut m, input.client.as_ref(), rules);
    Built {
        ctx: Context::new(m),
        client: input.client,
    }
}

pub fn for_event(
    broker: &Broker,
    registry: &Registry,
    event: Event,
    data: EventData,
    rules: &[Arc<Compiled>],
) -> Option<Built> {
    let mut m = data.fields;
    if event == Event::DeviceStatus {
        let username = data.client.as_ref()?.username.as_deref()?;
        let (product_key, device_name) = device_of(registry, username)?;
        m.insert("product_key".into(), product_key.into());
        m.insert("device_name".into(), device_name.into());
    }
    m.insert(
        "event".into(),
        event.topic().trim_start_matches("$events/").into(),
    );
    m.insert("timestamp".into(), data.at.into());
    if let Some(c) = &data.client {
        m.entry("clientid")
            .or_insert_with(|| c.client_id.to_string().into());
        m.entry("username")
            .or_insert_with(|| c.username.as_deref().map_or(Value::Null, Value::from));
    }
    common(broker, registry, &mut m, data.client.as_ref(), rules);
    Some(Built {
        ctx: Context::new(m),
        client: data.client,
    })
}

/// What every context has: the node, the client's address, and the device fields when a rule
/// reads them (two registry reads, so only then).
fn common(
    broker: &Broker,
    registry: &Registry,
    m: &mut Map<String, Value>,
    client: Option<&ClientInfo>,
    rules: &[Arc<Compiled>],
) {
    m.insert("node".into(), broker.node_id.into());
    if !m.contains_key("peerhost") {
        let peer = client
            .and_then(|c| broker.sessions.get(&c.client_id))
            .and_then(|cell| cell.lock().conn.as_ref().and_then(|l| l.info.peer));
        m.insert(
            "peerhost".into(),
            peer.map_or(Value::Null, |p| p.ip().to_string().into()),
        );
    }
    let wants_device = rules
        .iter()
        .any(|r| r.query.uses("product_key") || r.query.uses("device_name"));
    if wants_device && !m.contains_key("device_name") {
        let (product_key, device_name) = client
            .and_then(|c| c.username.as_deref())
            .and_then(|u| device_of(registry, u))
            .map_or((Value::Null, Value::Null), |(p, d)| (p.into(), d.into()));
        m.insert("product_key".into(), product_key);
        m.insert("device_name".into(), device_name);
    }
}

/// The product key and device name of the device with MQTT user name `username`.
pub fn device_of(registry: &Registry, username: &str) -> Option<(String, String)> {
    let device = registry.device_by_username(username).ok()??;
    let product = registry.product(device.product_id).ok()??;
    Some((product.product_key, device.name))
}

/// The context `POST /api/v1/rules/test` evaluates: the fields given, with defaults for the
/// ones a message would have.
pub fn for_test(query: &Query, node: u64, given: Map<String, Value>) -> Context {
    let now = now_ms();
    let mut m = Map::new();
    let defaults = json!({
        "id": message_id(now),
        "clientid": "test-client",
        "username": null,
        "topic": "t/1",
        "qos": 0,
        "retain": false,
        "payload": "",
        "peerhost": "127.0.0.1",
        "timestamp": now,
        "node": node,
        "pub_props": {},
    });
    if let Value::Object(d) = defaults {
        m.extend(d);
    }
    // A test of an event rule names the event as EMQX's tester does.
    if let Some(super::sql::Source::Event(e)) = query.from.first() {
        m.insert(
            "event".into(),
            e.topic().trim_start_matches("$events/").into(),
        );
    }
    m.extend(given);
    Context::new(m)
}
