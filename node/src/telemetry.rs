//! The process's one tracing subscriber: an `EnvFilter` from `RUST_LOG` (or `[log] level`),
//! human-readable text on terminals or one JSON object per line for containers.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; a second call (tests starting several nodes) is a no-op.
pub fn init(log: &LogConfig) {
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| EnvFilter::try_new(s).is_ok())
        .unwrap_or_else(|| log.level.clone());
    let filter =
        EnvFilter::try_new(quiet_dependencies(&spec)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Dependencies that log every RPC, election step or connection at INFO: kept at WARN unless
/// the filter names them, so an operator's `info` shows RealMQ's own state changes. (Targets
/// match by prefix: `ntex` covers ntex-io, ntex-tls, ntex-mqtt and the rest.)
const CHATTY: &[&str] = &[
    "openraft", "tonic", "h2", "hyper", "tower", "ntex", "rustls",
];

fn quiet_dependencies(spec: &str) -> String {
    let mut out = spec.to_string();
    for dep in CHATTY {
        if !spec.contains(dep) {
            out.push_str(&format!(",{dep}=warn"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn dependencies_stay_at_warn_unless_named() {
        let f = super::quiet_dependencies("info,openraft=debug");
        assert!(f.starts_with("info,openraft=debug"));
        assert!(
            f.contains("tonic=warn") && !f.contains("openraft=warn"),
            "{f}"
        );
    }
}
