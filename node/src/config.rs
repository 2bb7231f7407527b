//! The one configuration struct: serde defaults, overridden by an optional TOML file, then by
//! `REALMQ_*` environment variables, then by command-line flags. `validate` lists every problem
//! at once; the binary prints them and exits non-zero.
//!
//! Environment variables name keys with `__` between table and key:
//! `REALMQ_MQTT_ADDR` is `mqtt_addr`, `REALMQ_MQTT__MAX_INFLIGHT` is `[mqtt] max_inflight`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::auth::AclRule;
use crate::routing::ShareStrategy;
use crate::routing::topic::validate_filter;
use crate::session::DropPolicy;

/// The commented default configuration, printed by `realmq generate-config`.
pub const DEFAULT_TOML: &str = include_str!("../realmq.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub mqtt_addr: String,
    pub api_addr: String,
    pub allow_anonymous: bool,
    /// MQTT worker threads; 0 means one per CPU.
    pub workers: usize,
    /// Seconds connections get to drain on shutdown before listeners are torn down.
    pub shutdown_grace: u64,
    pub log: LogConfig,
    pub mqtt: MqttConfig,
    pub api: ApiSettings,
    pub acl: Vec<AclRule>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node_id: 1,
            data_dir: PathBuf::from("./data"),
            mqtt_addr: "0.0.0.0:1883".into(),
            api_addr: "0.0.0.0:8090".into(),
            allow_anonymous: false,
            workers: 0,
            shutdown_grace: 5,
            log: LogConfig::default(),
            mqtt: MqttConfig::default(),
            api: ApiSettings::default(),
            acl: Vec::new(),
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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
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
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            token_ttl: 86_400,
            max_body: 1024 * 1024,
            failed_login_limit: 10,
        }
    }
}

/// Values given on the command line; `None` leaves lower layers in charge.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mqtt_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
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
        if self.node_id == 0 {
            errs.push("node_id must be at least 1".to_string());
        }
        for (name, addr) in [("mqtt_addr", &self.mqtt_addr), ("api_addr", &self.api_addr)] {
            if addr.parse::<SocketAddr>().is_err() {
                errs.push(format!("{name} {addr:?} is not an ip:port socket address"));
            }
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
        if m.connect_timeout == 0 {
            errs.push("mqtt.connect_timeout must be at least 1 second".into());
        }
        if !(1..=10 * 365 * 86_400).contains(&self.api.token_ttl) {
            errs.push("api.token_ttl must be between 1 second and 10 years".into());
        }
        if self.api.failed_login_limit == 0 {
            errs.push("api.failed_login_limit must be at least 1".into());
        }
        if self.api.max_body < 1024 {
            errs.push("api.max_body must be at least 1024 bytes".into());
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

    pub fn api_socket(&self) -> SocketAddr {
        self.api_addr
            .parse()
            .expect("validated in Config::validate")
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
