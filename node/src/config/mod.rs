//! The one configuration struct: serde defaults, overridden by an optional TOML file, then by
//! `REALMQ_*` environment variables, then by command-line flags (`flags.rs`). `validate` lists
//! every problem at once; the binary prints them and exits non-zero.
//!
//! Environment variables name keys with `__` between table and key:
//! `REALMQ_MQTT_ADDR` is `mqtt_addr`, `REALMQ_MQTT__MAX_INFLIGHT` is `[mqtt] max_inflight`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::auth::AclRule;
use crate::routing::ShareStrategy;
use crate::routing::topic::validate_filter;
use crate::session::DropPolicy;
use crate::webhook::WebhookConfig;

mod flags;
pub use flags::Overrides;

/// The commented default configuration, printed by `realmq generate-config`.
pub const DEFAULT_TOML: &str = include_str!("../../realmq.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub mqtt_addr: String,
    /// MQTT over TLS; on when `tls_cert` is set, empty: off.
    pub mqtts_addr: String,
    /// MQTT over WebSocket (path `/mqtt`, subprotocol `mqtt`); empty: off.
    pub ws_addr: String,
    /// MQTT over WebSocket over TLS; on when `tls_cert` is set, empty: off.
    pub wss_addr: String,
    /// PEM certificate chain and private key for the TLS listeners (and the API with
    /// `api_tls`); both empty: no TLS.
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// PEM CA bundle client certificates are checked against; empty: clients present none.
    pub tls_client_ca: PathBuf,
    /// Serve the REST API over HTTPS with `tls_cert`.
    pub api_tls: bool,
    pub api_addr: String,
    /// The cluster gRPC listener (raft, forwarding to the leader).
    pub cluster_addr: String,
    /// The cluster address peers dial; empty: this node's entry in `peers`, else `cluster_addr`.
    pub advertise_addr: String,
    /// The initial voters, `1=host:port,2=host:port,3=host:port`, this node included; empty for
    /// a single node. The address given for a peer is how this node dials it.
    pub peers: String,
    /// Voters the cluster keeps; further nodes join as learners.
    pub voters: u64,
    /// Kubernetes: the StatefulSet name; the node id and peers then derive from the pod name.
    pub k8s_statefulset: String,
    /// Kubernetes: the StatefulSet's replica count at first start, when it may be below
    /// `voters`; 0: not given (the first `voters` pods are the initial voters).
    pub k8s_replicas: u64,
    /// Kubernetes: the headless Service giving each pod a DNS name.
    pub k8s_headless_service: String,
    pub allow_anonymous: bool,
    /// MQTT worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Seconds connections get to drain on shutdown before listeners are torn down.
    pub shutdown_grace: u64,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub api: ApiSettings,
    pub cluster: ClusterSettings,
    pub acl: Vec<AclRule>,
    /// `[[webhook]]` entries: events POSTed as JSON (`webhook.rs`).
    pub webhook: Vec<WebhookConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            mqtt_addr: "0.0.0.0:1883".into(),
            mqtts_addr: "0.0.0.0:8883".into(),
            ws_addr: "0.0.0.0:8083".into(),
            wss_addr: "0.0.0.0:8084".into(),
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            tls_client_ca: PathBuf::new(),
            api_tls: false,
            api_addr: "0.0.0.0:8090".into(),
            cluster_addr: "0.0.0.0:7090".into(),
            advertise_addr: String::new(),
            peers: String::new(),
            voters: 3,
            k8s_statefulset: String::new(),
            k8s_replicas: 0,
            k8s_headless_service: String::new(),
            allow_anonymous: false,
            workers: 0,
            shutdown_grace: 5,
            log: LogConfig::default(),
            mqtt: MqttConfig::default(),
            api: ApiSettings::default(),
            cluster: ClusterSettings::default(),
            acl: Vec::new(),
            webhook: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter; the `RUST_LOG` variable, when set, wins.
    pub level: String,
    pub format: LogFormat,
    /// One INFO line per REST request (method, path, status, duration, user).
    pub access: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
            access: false,
        }
    }
}

/// Broker limits, the `[mqtt]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Largest keep-alive a v5 client gets (as Server Keep Alive); 0 = no cap.
    pub max_keepalive: u16,
    /// Receive Maximum advertised in the v5 CONNACK: QoS 1/2 publishes a client may have in flight.
    pub receive_maximum: u16,
    /// Largest packet accepted, advertised in the v5 CONNACK; bigger ones get DISCONNECT 0x95.
    pub max_packet_size: u32,
    /// Topic aliases a v5 client may use towards the broker.
    pub topic_alias_maximum: u16,
    /// Topic aliases the broker assigns towards one v5 client, at most (also capped by the
    /// client's Topic Alias Maximum); 0 sends every topic by name.
    pub max_outbound_topic_aliases: u16,
    /// Outbound QoS 1/2 messages in flight per client (further capped by its Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session (offline or behind the in-flight window).
    pub max_queued_messages: usize,
    pub queue_drop_policy: DropPolicy,
    /// Cap on a client's Session Expiry Interval, in seconds; 0 = no cap.
    pub max_session_expiry: u32,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout: u16,
    pub retain_available: bool,
    pub shared_subscription_strategy: ShareStrategy,
    /// Seconds between `$SYS/brokers/{node}/...` updates; 0 disables them.
    pub sys_interval: u32,
    /// Confines each device to its own topics (`auth::DeviceScope`); off by default so
    /// existing clients keep working.
    pub device_isolation: bool,
    /// Subscriptions one session may hold; more get SUBACK 0x97 (5.0) / 0x80 (3.1.1).
    pub max_subscriptions: usize,
    /// MQTT connections this node accepts at once; more get CONNACK 0x97 / 0x03.
    pub max_connections: usize,
    /// Retained messages (count, and bytes of topics and payloads) a node keeps; a retained
    /// publish past either is refused (PUBACK 0x97 in 5.0).
    pub max_retained: usize,
    pub max_retained_bytes: usize,
    /// Bytes of topics and payloads one session's queue may hold, beside `max_queued_messages`;
    /// past it `queue_drop_policy` applies.
    pub max_queued_bytes: usize,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            max_keepalive: 0,
            receive_maximum: 128,
            max_packet_size: 1024 * 1024,
            topic_alias_maximum: 64,
            max_outbound_topic_aliases: 64,
            max_inflight: 64,
            max_queued_messages: 10_000,
            queue_drop_policy: DropPolicy::DropOldest,
            max_session_expiry: 0,
            connect_timeout: 10,
            retain_available: true,
            shared_subscription_strategy: ShareStrategy::RoundRobin,
            sys_interval: 10,
            device_isolation: false,
            max_subscriptions: 10_000,
            max_connections: 1_000_000,
            max_retained: 1_000_000,
            max_retained_bytes: 1 << 30,
            max_queued_bytes: 64 << 20,
        }
    }
}

/// REST API settings, the `[api]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Seconds a bearer token from `POST /api/v1/auth` stays valid.
    pub token_ttl: u64,
    /// Largest request body accepted, in bytes.
    pub max_body: u64,
    /// Wrong passwords allowed per minute, per user name and per source address; further
    /// logins from either get HTTP 429 until the minute is over.
    pub failed_login_limit: u32,
    /// Longest free-text field (nickname, description, device_type), in bytes.
    pub max_text: usize,
    /// Most topics one REST publish / subscribe (or one batch item) may name.
    pub max_topics: usize,
    /// The `root` administrator's password, set once when the cluster is first created (later
    /// changes go through the API). Deployments pass it from a secret:
    /// `REALMQ_API__ROOT_PASSWORD`.
    pub root_password: String,
    /// Whether `GET /metrics` needs API credentials (any user, viewers included).
    pub metrics_auth: bool,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            token_ttl: 86_400,
            max_body: 1024 * 1024,
            failed_login_limit: 10,
            max_text: 1024,
            max_topics: 128,
            root_password: DEFAULT_ROOT_PASSWORD.into(),
            metrics_auth: false,
        }
    }
}

pub use realmq_api::DEFAULT_ROOT_PASSWORD;

/// Raft and cluster timings, the `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// How often the leader heartbeats its followers.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Log entries between state-machine snapshots (the log is purged behind a snapshot).
    pub snapshot_logs: u64,
    /// Seconds a node may be unreachable before the leader marks its clients disconnected.
    pub dead_node_grace: u64,
    /// Threads of the runtime that runs raft, the REST API and cluster RPCs.
    pub runtime_threads: usize,
    /// Milliseconds a peer may be without a link before it stops holding back the
    /// acknowledgements of QoS 1/2 messages forwarded to it (what it missed is counted, and
    /// still delivered if it comes back).
    pub peer_ack_timeout_ms: u64,
    /// Milliseconds a REST write or read waits for a quorum before it is refused with 503;
    /// 0: twice `election_timeout_max_ms` plus a heartbeat.
    pub write_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_logs: 100_000,
            dead_node_grace: 30,
            runtime_threads: 2,
            peer_ack_timeout_ms: 3000,
            write_timeout_ms: 0,
        }
    }
}

/// How an MQTT listener's clients reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
    Wss,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "mqtt",
            Transport::Tls => "mqtts",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Transport::Tls | Transport::Wss)
    }

    pub fn websocket(self) -> bool {
        matches!(self, Transport::Ws | Transport::Wss)
    }
}

/// Every problem found while loading or validating, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Loads defaults < `file` < `REALMQ_*` environment < `overrides`, then validates.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigErrors> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigErrors(vec![format!(
                    "config file {} does not exist",
                    path.display()
                )]));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        let known = known_env_keys();
        fig = fig
            // The short name deployments know from other brokers; the [api] key wins over it.
            .merge(
                Env::raw()
                    .only(&["REALMQ_ROOT_PASSWORD"])
                    .map(|_| "api.root_password".into()),
            )
            .merge(
                Env::prefixed("REALMQ_")
                    .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n)))
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides));
        let config: Config = fig
            .extract()
            .map_err(|e| ConfigErrors(e.into_iter().map(|e| e.to_string()).collect()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks everything serde cannot, collecting all problems.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errs = Vec::new();
        if self.api.root_password.is_empty() {
            errs.push("api.root_password must not be empty".to_string());
        }
        if self.node_id == 0 {
            errs.push("node_id must be at least 1".to_string());
        }
        for (name, addr) in [
            ("mqtt_addr", &self.mqtt_addr),
            ("api_addr", &self.api_addr),
            ("cluster_addr", &self.cluster_addr),
        ] {
            if addr.parse::<SocketAddr>().is_err() {
                errs.push(format!("{name} {addr:?} is not an ip:port socket address"));
            }
        }
        for (name, addr) in [
            ("mqtts_addr", &self.mqtts_addr),
            ("ws_addr", &self.ws_addr),
            ("wss_addr", &self.wss_addr),
        ] {
            if !addr.is_empty() && addr.parse::<SocketAddr>().is_err() {
                errs.push(format!(
                    "{name} {addr:?} is not an ip:port socket address (or \"\" for off)"
                ));
            }
        }
        let (cert, key) = (self.tls_cert.as_os_str(), self.tls_key.as_os_str());
        if cert.is_empty() != key.is_empty() {
            errs.push("tls_cert and tls_key must be given together".into());
        }
        if cert.is_empty() && (!self.tls_client_ca.as_os_str().is_empty() || self.api_tls) {
            errs.push("tls_client_ca and api_tls need tls_cert and tls_key".into());
        }
        if let Err(e) = self.peer_map() {
            errs.push(e);
        }
        if self.voters == 0 {
            errs.push("voters must be at least 1".into());
        }
        let k8s = [&self.k8s_statefulset, &self.k8s_headless_service];
        if k8s.iter().any(|v| !v.is_empty()) && k8s.iter().any(|v| v.is_empty()) {
            errs.push("Kubernetes mode needs both k8s_statefulset and k8s_headless_service".into());
        }
        let c = &self.cluster;
        if c.heartbeat_interval_ms == 0 || c.election_timeout_min_ms <= c.heartbeat_interval_ms {
            errs.push(
                "cluster.heartbeat_interval_ms must be at least 1 and below election_timeout_min_ms"
                    .into(),
            );
        }
        if c.election_timeout_max_ms <= c.election_timeout_min_ms {
            errs.push("cluster.election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if c.snapshot_logs == 0 {
            errs.push("cluster.snapshot_logs must be at least 1".into());
        }
        if c.dead_node_grace == 0 {
            errs.push("cluster.dead_node_grace must be at least 1 second".into());
        }
        if c.peer_ack_timeout_ms == 0 {
            errs.push("cluster.peer_ack_timeout_ms must be at least 1".into());
        }
        if c.runtime_threads == 0 {
            errs.push("cluster.runtime_threads must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log.level) {
            errs.push(format!(
                "log.level {:?} is not a valid filter: {e}",
                self.log.level
            ));
        }
        let m = &self.mqtt;
        if m.receive_maximum == 0 {
            errs.push("mqtt.receive_maximum must be at least 1".into());
        }
        if m.max_inflight == 0 {
            errs.push("mqtt.max_inflight must be at least 1".into());
        }
        if m.max_queued_messages == 0 {
            errs.push("mqtt.max_queued_messages must be at least 1".into());
        }
        if !(64..=268_435_455).contains(&m.max_packet_size) {
            errs.push("mqtt.max_packet_size must be between 64 and 268435455 bytes".into());
        }
        if m.max_subscriptions == 0
            || m.max_connections == 0
            || m.max_retained == 0
            || m.max_queued_bytes == 0
        {
            errs.push(
                "mqtt.max_subscriptions, max_connections, max_retained and max_queued_bytes must \
                 be at least 1"
                    .into(),
            );
        }
        if m.connect_timeout == 0 {
            errs.push("mqtt.connect_timeout must be at least 1 second".into());
        }
        if !(1..=10 * 365 * 86_400).contains(&self.api.token_ttl) {
            errs.push("api.token_ttl must be between 1 second and 10 years".into());
        }
        if self.api.max_text == 0 || self.api.max_topics == 0 {
            errs.push("api.max_text and api.max_topics must be at least 1".into());
        }
        if self.api.failed_login_limit == 0 {
            errs.push("api.failed_login_limit must be at least 1".into());
        }
        if self.api.max_body < 1024 {
            errs.push("api.max_body must be at least 1024 bytes".into());
        }
        for (i, hook) in self.webhook.iter().enumerate() {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                errs.push(format!(
                    "webhook[{i}].url {:?} is not an http(s) URL",
                    hook.url
                ));
            }
            if hook.events.is_empty() {
                errs.push(format!("webhook[{i}].events names no event"));
            }
            if let Err(e) = validate_filter(&hook.topic) {
                errs.push(format!("webhook[{i}].topic {:?}: {e}", hook.topic));
            }
            if hook.queue == 0 || hook.timeout_ms == 0 {
                errs.push(format!(
                    "webhook[{i}].queue and timeout_ms must be at least 1"
                ));
            }
        }
        for (i, rule) in self.acl.iter().enumerate() {
            let probe = rule.topic.replace("%c", "c").replace("%u", "u");
            if let Err(e) = validate_filter(&probe) {
                errs.push(format!("acl[{i}].topic {:?}: {e}", rule.topic));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errs))
        }
    }

    pub fn mqtt_socket(&self) -> SocketAddr {
        self.mqtt_addr
            .parse()
            .expect("validated in Config::validate")
    }

    /// The MQTT listeners this configuration turns on, each with its address.
    pub fn mqtt_listeners(&self) -> Vec<(Transport, SocketAddr)> {
        let tls = !self.tls_cert.as_os_str().is_empty();
        [
            (Transport::Tcp, self.mqtt_addr.as_str(), true),
            (Transport::Tls, &self.mqtts_addr, tls),
            (Transport::Ws, &self.ws_addr, true),
            (Transport::Wss, &self.wss_addr, tls),
        ]
        .into_iter()
        .filter(|(_, addr, on)| *on && !addr.is_empty())
        .map(|(t, addr, _)| (t, addr.parse().expect("validated in Config::validate")))
        .collect()
    }

    pub fn api_socket(&self) -> SocketAddr {
        self.api_addr
            .parse()
            .expect("validated in Config::validate")
    }

    pub fn cluster_socket(&self) -> SocketAddr {
        self.cluster_addr
            .parse()
            .expect("validated in Config::validate")
    }

    /// `peers` as id → address, checked: ids at least 1 and unique, addresses `host:port`.
    pub fn peer_map(&self) -> Result<BTreeMap<u64, String>, String> {
        let mut map = BTreeMap::new();
        for entry in self
            .peers
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
        {
            let bad = || format!("peers entry {entry:?} is not id=host:port");
            let (id, addr) = entry.split_once('=').ok_or_else(bad)?;
            let id: u64 = id.trim().parse().map_err(|_| bad())?;
            let addr = addr.trim();
            let port = addr.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if id == 0 || !matches!(port, Some(Ok(_))) {
                return Err(bad());
            }
            if map.insert(id, addr.to_string()).is_some() {
                return Err(format!("peers names node {id} twice"));
            }
        }
        Ok(map)
    }
}

/// Environment keys (after the `REALMQ_` prefix) that name config fields, so unrelated
/// `REALMQ_*` variables in the environment are not mistaken for settings.
fn known_env_keys() -> Vec<String> {
    let value = serde_json::to_value(Config::default()).unwrap_or_default();
    let mut keys = Vec::new();
    if let serde_json::Value::Object(top) = value {
        for (k, v) in top {
            if let serde_json::Value::Object(table) = v {
                keys.extend(table.keys().map(|sub| format!("{k}__{sub}")));
            } else {
                keys.push(k);
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_file_is_the_default() {
        let parsed: Config = Figment::from(Toml::string(DEFAULT_TOML)).extract().unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn validate_lists_every_problem() {
        let mut c = Config {
            node_id: 0,
            mqtt_addr: "nowhere".into(),
            ..Config::default()
        };
        c.mqtt.max_inflight = 0;
        c.mqtt.max_packet_size = 1;
        c.log.level = "info,[".into();
        let errs = c.validate().unwrap_err().0;
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(errs.iter().any(|e| e.contains("mqtt_addr")));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn precedence_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "realmq.toml",
                "node_id = 2\napi_addr = \"127.0.0.1:1\"\n[mqtt]\nmax_inflight = 7\n",
            )?;
            jail.set_env("REALMQ_NODE_ID", "3");
            jail.set_env("REALMQ_MQTT__MAX_INFLIGHT", "9");
            jail.set_env("REALMQ_UNRELATED_THING", "ignored");
            let flags = Overrides {
                api_addr: Some("127.0.0.1:2".into()),
                ..Default::default()
            };
            let c = Config::load(Some(Path::new("realmq.toml")), &flags).unwrap();
            assert_eq!(c.node_id, 3, "env beats file");
            assert_eq!(c.mqtt.max_inflight, 9, "nested env key");
            assert_eq!(c.api_addr, "127.0.0.1:2", "flag beats file");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's signature
    fn unknown_keys_and_bad_types_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[mqtt]\nmax_inflite = 3\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("max_inflite"), "{err}");
            Ok(())
        });
    }
}
