//! Webhooks: each `[[webhook]]` entry POSTs the events it names as JSON to its URL:
//! `client.connected`, `client.disconnected`, `message.publish` (messages published on this node
//! whose topic matches the entry's filter) and `device.status` (a registered device went online
//! or offline).
//!
//! The broker never waits for a hook: an event is handed to the hook's bounded queue with
//! `try_send`, and a full queue drops it and counts it (`realmq_webhook_dropped_total` in
//! `GET /metrics`; the log says which hook fell behind). One task per hook posts its events in
//! order; a failed POST (an error, a timeout or a status other than
//! 2xx) is retried with doubling pauses up to `retries` times, then dropped and logged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth::ClientInfo;
use crate::message::{Message, Protocol};
use crate::routing::topic::filter_matches;

/// What a hook can be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    #[serde(rename = "client.connected")]
    ClientConnected,
    #[serde(rename = "client.disconnected")]
    ClientDisconnected,
    #[serde(rename = "message.publish")]
    MessagePublish,
    #[serde(rename = "device.status")]
    DeviceStatus,
}

/// One `[[webhook]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://`.
    pub url: String,
    pub events: Vec<Event>,
    /// `message.publish` only for topics matching this filter.
    #[serde(default = "all_topics")]
    pub topic: String,
    /// Extra request headers (an `Authorization` for the receiver, say).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Milliseconds one POST may take.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Further attempts after a failed POST.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Events waiting to be posted, at most; beyond it new events are dropped.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn all_topics() -> String {
    "#".into()
}
fn default_timeout() -> u64 {
    5000
}
fn default_retries() -> u32 {
    3
}
fn default_queue() -> usize {
    10_000
}

/// The first pause before a retry; doubled for each further one.
const FIRST_RETRY: Duration = Duration::from_millis(200);

struct Hook {
    url: String,
    events: Vec<Event>,
    topic: String,
    tx: mpsc::Sender<Value>,
}

/// The running hooks of a node.
pub struct Webhooks {
    node: u64,
    hooks: Vec<Hook>,
    /// Whether any hook wants `message.publish` (the publish path's only cost otherwise).
    publishes: bool,
    devices: bool,
    /// Events dropped because a hook's queue was full, or given up after the retries.
    pub dropped: Arc<AtomicU64>,
}

impl Webhooks {
    /// Starts one posting task per hook on `runtime`.
    pub fn start(
        node: u64,
        configs: &[WebhookConfig],
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<Webhooks> {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut hooks = Vec::with_capacity(configs.len());
        for c in configs {
            let client = http_client(&c.headers, c.timeout_ms)?;
            let (tx, rx) = mpsc::channel(c.queue.max(1));
            runtime.spawn(post_all(client, c.clone(), rx, dropped.clone()));
            hooks.push(Hook {
                url: c.url.clone(),
                events: c.events.clone(),
                topic: c.topic.clone(),
                tx,
            });
        }
        let wants = |e: Event| hooks.iter().any(|h| h.events.contains(&e));
        Ok(Webhooks {
            node,
            publishes: wants(Event::MessagePublish),
            devices: wants(Event::DeviceStatus),
            hooks,
            dropped,
        })
    }

    /// Whether a hook wants device status changes (the caller then looks the device up).
    pub fn wants_devices(&self) -> bool {
        self.devices
    }

    fn emit(&self, event: Event, topic: Option<&str>, body: impl Fn() -> Value) {
        let mut made = None;
        for h in &self.hooks {
            if !h.events.contains(&event) || topic.is_some_and(|t| !filter_matches(&h.topic, t)) {
                continue;
            }
            let body = made.get_or_insert_with(&body).clone();
            // Logged on the first drop and every thousandth after it, not per event.
            if h.tx.try_send(body).is_err()
                && self
                    .dropped
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
            {
                tracing::warn!(url = %h.url, "a webhook's queue is full; events are dropped");
            }
        }
    }

    fn base(&self, event: &str, client_id: &str, username: Option<&str>) -> Value {
        json!({
            "event": event,
            "node": self.node,
            "timestamp": chrono::Utc::now().timestamp_millis(),
            "clientid": client_id,
            "username": username,
        })
    }

    pub fn client_connected(&self, client: &ClientInfo, ip: &str, protocol: Protocol) {
        self.emit(Event::ClientConnected, None, || {
            let mut v = self.base(
                "client.connected",
                &client.client_id,
                client.username.as_deref(),
            );
            v["ipaddress"] = ip.into();
            v["proto_ver"] = match protocol {
                Protocol::V311 => 4,
                Protocol::V5 => 5,
            }
            .into();
            v
        });
    }

    pub fn client_disconnected(&self, client: &ClientInfo, reason: &str) {
        self.emit(Event::ClientDisconnected, None, || {
            let mut v = self.base(
                "client.disconnected",
                &client.client_id,
                client.username.as_deref(),
            );
            v["reason"] = reason.into();
            v
        });
    }

    /// A message published on this node; cheap when no hook wants publishes.
    pub fn message_publish(&self, from: Option<&ClientInfo>, msg: &Message) {
        if !self.publishes {
            return;
        }
        self.emit(Event::MessagePublish, Some(&msg.topic), || {
            let (id, user) = from.map_or(("", None), |c| (&*c.client_id, c.username.as_deref()));
            let mut v = self.base("message.publish", id, user);
            v["topic"] = msg.topic.to_string().into();
            v["qos"] = (msg.qos as u8).into();
            v["retain"] = msg.retain.into();
            match std::str::from_utf8(&msg.payload) {
                Ok(text) => v["payload"] = text.into(),
                Err(_) => {
                    v["payload"] = base64::engine::general_purpose::STANDARD
                        .encode(&msg.payload)
                        .into();
                    v["payload_encoding"] = "base64".into();
                }
            }
            v
        });
    }

    /// A registered device went online or offline.
    pub fn device_status(&self, client: &ClientInfo, device: &Value, online: bool) {
        self.emit(Event::DeviceStatus, None, || {
            let mut v = self.base(
                "device.status",
                &client.client_id,
                client.username.as_deref(),
            );
            v["device"] = device.clone();
            v["status"] = if online { "online" } else { "offline" }.into();
            v
        });
    }
}

/// A client that sends `headers` (JSON's content type unless they name one) with every request
/// and gives up on one after `timeout_ms`.
pub fn http_client(
    headers: &BTreeMap<String, String>,
    timeout_ms: u64,
) -> anyhow::Result<reqwest::Client> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(k.as_bytes())?,
            reqwest::header::HeaderValue::from_str(v)?,
        );
    }
    // JSON unless the entry says otherwise.
    map.entry(reqwest::header::CONTENT_TYPE)
        .or_insert(reqwest::header::HeaderValue::from_static(
            "application/json",
        ));
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .default_headers(map)
        .build()?)
}

/// POSTs `body` (JSON) to `url`; a failure (an error, a timeout or a status other than 2xx) is
/// retried with doubling pauses up to `retries` times. The last failure comes back.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: bytes::Bytes,
    retries: u32,
) -> Result<(), String> {
    let mut pause = FIRST_RETRY;
    let mut attempt = 0;
    loop {
        let outcome = client.post(url).body(body.clone()).send().await;
        let failure = match outcome {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("status {}", r.status()),
            Err(e) => e.to_string(),
        };
        if attempt >= retries {
            return Err(failure);
        }
        attempt += 1;
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
}

/// One hook's task: posts its events in order until the broker goes away.
async fn post_all(
    client: reqwest::Client,
    config: WebhookConfig,
    mut rx: mpsc::Receiver<Value>,
    dropped: Arc<AtomicU64>,
) {
    while let Some(body) = rx.recv().await {
        let bytes = bytes::Bytes::from(body.to_string());
        if let Err(error) = post(&client, &config.url, bytes, config.retries).await {
            dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(url = %config.url, event = %body["event"], %error, "a webhook event was dropped after its retries");
        }
    }
}
