//! # realmq-node: the `realmq` broker node
//!
//! ## Layout
//!
//! - `config/`: the one `Config` (defaults < TOML file < `REALMQ_*` env < flags), `validate()`;
//!   `flags.rs`, the command line
//! - `telemetry.rs`: the tracing subscriber
//! - `message.rs`: broker-level `Message`, `Delivery`, `QoS`, `Will`; no ntex types
//! - `mqtt/`: the only ntex-mqtt code: listener, the v3.1.1 driver, the v5 adapter, the writer
//! - `auth.rs`: the authentication / authorization seam: devices from the registry, the ACL
//! - `broker/`: the protocol-independent core: connect, publish, subscribe, disconnect, what
//!   is recorded in (and restored from) the replicated store, and `applied.rs`, how the broker
//!   follows writes applied anywhere in the cluster
//! - `session/`: session registry, `SessionState` (the pure per-client state machine), and
//!   `ConnLink`, how a session reaches its connection
//! - `cluster/`: the node's raft member, the gRPC cluster port (raft, forwarding to the
//!   leader, status), forming and joining the cluster; the only tonic code
//! - `api_ops.rs`: the broker operations the REST API calls (`realmq_api::NodeOps`)
//! - `routing/`: topic rules, the subscription trie, per-message routing decisions
//! - `retain.rs`: retained messages; `metrics.rs`: counters; `sys.rs`: `$SYS` topics;
//!   `prometheus.rs`: the `GET /metrics` exposition
//! - `tls.rs`: the certificates of the TLS listeners and HTTPS, reloaded when renewed
//! - `webhook.rs`: `[[webhook]]` entries, events POSTed without holding up the broker
//! - `rules/`: the rule engine: SQL over messages and events, republish / webhook / log actions
//!
//! ## How a message flows
//!
//! CONNECT → `mqtt/preface.rs` (spawns the connection's task, `mqtt/driver.rs::serve`) →
//! `mqtt/v3.rs::connect` or `mqtt/v5.rs::connect` → `Broker::connect` (`broker/lifecycle.rs`:
//! auth seam, session registered through raft and awaited, `Sessions::open`, takeover) →
//! CONNACK → the connection's loop starts (`driver::run`: packets in, deliveries out).
//!
//! SUBSCRIBE → `mqtt/v3.rs::handle` or `mqtt/v5.rs::handle` → `Broker::subscribe`
//! (`broker/subscribe.rs`) → `Router::subscribe` (`routing/topic_tree.rs`) → retained messages
//! queued to the session.
//!
//! PUBLISH → `publish_in` in `mqtt/v3.rs` / `mqtt/v5.rs` → `Broker::publish` (`broker/mod.rs`) →
//! `Router::route` (`routing/mod.rs`) → `SessionCell::deliver` (`session/mod.rs`: queue + wake)
//! → the subscriber's writer → `Conn::flush` → `SessionState::transmit` (`session/state.rs`) →
//! socket.

pub mod api_ops;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
#[cfg(test)]
#[path = "../../fuzz/driver.rs"]
mod fuzzing;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod prometheus;
pub mod retain;
pub mod routing;
pub mod rules;
pub mod session;
pub mod sys;
pub mod telemetry;
pub mod tls;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use realmq_api::{ApiConfig, ApiContext};
use tokio_util::sync::CancellationToken;

use crate::api_ops::BrokerOps;
use crate::auth::{Acl, DeviceAuth};
use crate::broker::Broker;
use crate::config::Config;
use crate::message::CloseReason;

/// How long a starting node waits for the reachable members' route sets before it serves
/// clients (a peer reconnects its link within its 1 s backoff, or at once when this node's link
/// reaches it first: `cluster/links.rs`).
const PEER_ROUTES_BOUND: Duration = Duration::from_secs(10);

/// How long a stopping member keeps serving its peers after its clients are gone, for the
/// clients of persistent sessions that resume on another node: that node asks this one for
/// what the session had not delivered (`broker/handover.rs`).
const HANDOVER_LINGER: Duration = Duration::from_secs(3);

/// A running node: the tokio runtime (raft, API, timers), the MQTT listener thread and the broker.
pub struct Node {
    runtime: tokio::runtime::Runtime,
    raft: realmq_raft_store::typ::Raft,
    broker: Arc<Broker>,
    mqtt: mqtt::MqttListener,
    api: tokio::task::JoinHandle<()>,
    api_addr: SocketAddr,
    cluster: cluster::Cluster,
    shutdown: CancellationToken,
    /// Stops the cluster port, last: peers reach this node until it is drained.
    cluster_stop: CancellationToken,
    grace: Duration,
}

/// Retries a start-up step that needs a quorum until it succeeds, saying why it waits: a node
/// whose peers are still starting (or a minority, until the others return) waits rather than
/// exits.
async fn until_quorum<T, E, F, Fut>(what: &str, mut step: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match step().await {
            Ok(v) => return v,
            Err(e) => {
                tracing::warn!(error = %e, "waiting to {what}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

impl Node {
    /// Binds the listeners, joins or forms the cluster, builds everything, and returns once
    /// MQTT and REST accept connections.
    pub fn start(mut config: Config) -> anyhow::Result<Node> {
        let topology = cluster::Topology::from_config(&config)?;
        config.node_id = topology.id;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("failed to create data dir {}", config.data_dir.display()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.cluster.runtime_threads)
            .thread_name("realmq")
            .enable_all()
            .build()
            .context("failed to build the tokio runtime")?;
        let shutdown = CancellationToken::new();
        // Read before anything is bound, so a bad certificate stops the start with its reason.
        let tls = tls::Tls::from_config(&config).context("failed to set up TLS")?;

        // Bound first: the membership record carries every address, ephemeral ports included.
        // Clients that connect before the cluster is formed wait in the listen backlog.
        let mqtt_listeners = mqtt::bind(&config)?;
        let (api_listener, cluster_listener) = runtime.block_on(async {
            let api = tokio::net::TcpListener::bind(config.api_socket())
                .await
                .with_context(|| format!("failed to bind the REST API on {}", config.api_addr))?;
            let cluster = tokio::net::TcpListener::bind(config.cluster_socket())
                .await
                .with_context(|| {
                    format!("failed to bind the cluster port on {}", config.cluster_addr)
                })?;
            anyhow::Ok((api, cluster))
        })?;
        let bound = cluster::Bound {
            cluster: cluster_listener,
            mqtt: mqtt_listeners.tcp_addr()?,
            api: api_listener.local_addr()?,
        };
        let cluster_stop = CancellationToken::new();
        let (meta, cluster) = runtime.block_on(cluster::start(
            &config,
            &topology,
            bound,
            cluster_stop.clone(),
        ))?;
        // Subscribed before anything is read from the store, so no applied write is missed.
        let applied = meta.applied.subscribe();
        let auth = Arc::new(DeviceAuth {
            registry: meta.registry.clone(),
            allow_anonymous: config.allow_anonymous,
            isolation: config.mqtt.device_isolation,
            acl: Acl::new(config.acl.clone()),
        });
        let broker = Broker::new(
            config.node_id,
            config.mqtt.clone(),
            auth,
            runtime.handle().clone(),
            meta.writer.clone(),
            meta.registry.clone(),
        );
        if !config.webhook.is_empty() {
            let hooks = webhook::Webhooks::start(config.node_id, &config.webhook, runtime.handle())
                .context("failed to set up the webhooks")?;
            let _ = broker.webhooks.set(hooks);
        }
        let counted = broker.clone();
        cluster.count_connections(Arc::new(move || {
            u64::try_from(counted.metrics.connections.load(Ordering::Relaxed)).unwrap_or(0)
        }));
        // What this node restores must include everything acknowledged before it started.
        runtime.block_on(until_quorum("catch up with the cluster", || {
            meta.writer.barrier()
        }));
        let spooled = broker
            .start_spool(meta.queues.clone())
            .context("failed to read the offline queues")?;
        let restored = broker.restore(
            meta.registry
                .sessions()
                .context("failed to read sessions")?,
            meta.registry
                .retained()
                .context("failed to read retained messages")?,
            spooled,
        );

        rules::Rules::start(&broker, &meta.registry, runtime.handle());
        runtime.spawn(
            broker
                .clone()
                .follow_applied(applied, meta.registry.clone()),
        );
        {
            let _guard = runtime.enter();
            cluster.link_broker(broker.clone());
        }

        let listening = Arc::new(AtomicBool::new(false));
        let http = realmq_api::metrics::HttpMetrics::default();
        let api_ctx = ApiContext::new(
            meta.writer.clone(),
            meta.registry.clone(),
            Arc::new(BrokerOps {
                broker: broker.clone(),
                listening: listening.clone(),
                cluster: cluster.clone(),
                prometheus: prometheus::registry(
                    broker.clone(),
                    cluster.clone(),
                    meta.raft.clone(),
                    meta.writer.commit_seconds(),
                    &http,
                ),
            }),
            ApiConfig {
                token_ttl: Duration::from_secs(config.api.token_ttl),
                max_body: config.api.max_body,
                failed_login_limit: config.api.failed_login_limit,
                max_text: config.api.max_text,
                max_topics: config.api.max_topics,
                metrics_auth: config.api.metrics_auth,
                access_log: config.log.access,
                console: console_env(&mqtt_listeners),
            },
        )
        .with_http_metrics(http);
        if runtime.block_on(until_quorum("create the default user", || {
            realmq_api::bootstrap(&api_ctx, &config.api.root_password)
        })) {
            tracing::info!("first start: created the API user root");
        }
        // On every start, for as long as it is true (also shown in /api/v1/ready).
        if runtime
            .block_on(realmq_api::root_has_default_password(&api_ctx))
            .unwrap_or(false)
        {
            tracing::warn!(
                "the API user root still has the default password {}: whoever reaches the REST \
                 API is an administrator; change it (PUT /api/v1/users/root) or set \
                 [api] root_password / REALMQ_ROOT_PASSWORD before a cluster's first start",
                config::DEFAULT_ROOT_PASSWORD
            );
        }

        // Clients are served once this node knows where the other nodes' subscribers are.
        if let Err(waiting) = runtime.block_on(cluster.peer_routes(PEER_ROUTES_BOUND)) {
            tracing::warn!(
                peers = ?waiting,
                "serving clients before these members sent their subscriptions; publishes here \
                 reach their subscribers once they do"
            );
        }
        let mqtt = mqtt::start(broker.clone(), mqtt_listeners, &config, tls.clone())?;
        listening.store(true, Ordering::Relaxed);
        if let Some(tls) = &tls {
            let _guard = runtime.enter();
            tls.watch(shutdown.clone());
        }
        let https = tls.clone().filter(|_| config.api_tls).map(|tls| {
            let source: realmq_api::TlsSource = Arc::new(move || tls.server_config());
            source
        });
        let stop_api = shutdown.clone();
        let (api_addr, api_server) = runtime
            .block_on(realmq_api::serve(
                api_listener,
                api_ctx,
                https,
                async move { stop_api.cancelled().await },
            ))
            .context("failed to start the REST API")?;
        let api = runtime.spawn(api_server);
        sys::spawn(runtime.handle(), broker.clone(), shutdown.clone());
        // Installed before the node reports that it started, so a SIGTERM from then on drains
        // it; until here the default action ends a node that has no clients to drain yet.
        {
            let _entered = runtime.enter();
            stop_on_signals(shutdown.clone()).context("failed to listen for SIGTERM")?;
        }
        let addr = |t| mqtt.addr(t).map(|a| a.to_string()).unwrap_or_default();
        tracing::info!(
            node_id = config.node_id,
            mqtt = %addr(config::Transport::Tcp),
            mqtts = %addr(config::Transport::Tls),
            ws = %addr(config::Transport::Ws),
            wss = %addr(config::Transport::Wss),
            api = %api_addr,
            https = config.api_tls,
            anonymous = config.allow_anonymous,
            sessions = restored.sessions,
            retained = restored.retained,
            queued = restored.queued,
            "realmq node started"
        );
        Ok(Node {
            runtime,
            raft: meta.raft,
            broker,
            mqtt,
            api,
            api_addr,
            cluster,
            shutdown,
            cluster_stop,
            grace: Duration::from_secs(config.shutdown_grace),
        })
    }

    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt
            .addr(config::Transport::Tcp)
            .expect("the TCP listener is always on")
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Cancel this token to stop the node; `wait` then drains and returns.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Blocks until the shutdown token is cancelled, then drains: the MQTT listener closes, every
    /// client gets DISCONNECT (v5 reason 0x8B) and up to `shutdown_grace` seconds to go; in a
    /// cluster, the persistent sessions get up to `HANDOVER_LINGER` to be taken over by the
    /// nodes their clients resume on; then the rest stops, the cluster port last.
    pub fn wait(self) -> anyhow::Result<()> {
        let Node {
            runtime,
            raft,
            broker,
            mqtt,
            api,
            cluster,
            shutdown,
            cluster_stop,
            grace,
            ..
        } = self;
        runtime.block_on(async move {
            shutdown.cancelled().await;
            mqtt.stop_accepting().await;
            let connections = broker.metrics.connections.load(Ordering::Relaxed);
            let moving = broker.close_all(CloseReason::ServerShuttingDown);
            tracing::info!(connections, "shutting down");
            let deadline = Instant::now() + grace;
            while broker.metrics.connections.load(Ordering::Relaxed) > 0
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            mqtt.stop().await;
            let _ = api.await;
            if !cluster.link_stats().is_empty() {
                let deadline = Instant::now() + HANDOVER_LINGER;
                while broker.still_held(&moving) > 0 && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let left = broker.still_held(&moving);
                if left > 0 {
                    tracing::info!(
                        sessions = left,
                        "persistent sessions not resumed on another node; their queues stay on disk here"
                    );
                }
            }
            // What the offline sessions hold is on disk before the process ends.
            if tokio::time::timeout(Duration::from_secs(5), broker.flush_spool())
                .await
                .is_err()
            {
                tracing::warn!("offline queues were not all written within 5 s");
            }
            // Pending metadata writes were queued before the connections closed; give the
            // writer a moment, then stop raft so RocksDB closes cleanly.
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster.leave_if_learner().await;
            cluster_stop.cancel();
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(error = %e, "raft did not shut down cleanly");
            }
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        tracing::info!("realmq node stopped");
        Ok(())
    }
}

/// Cancels `shutdown` on SIGTERM or SIGINT; the handlers are in place when this returns. Call
/// within the node's runtime.
fn stop_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        shutdown.cancel();
    });
    Ok(())
}

/// The WebSocket ports the console's browser MQTT client may use on this node.
fn console_env(listeners: &mqtt::Listeners) -> realmq_api::console::ConsoleEnv {
    let port = |t| listeners.addr(t).map(|a| a.port());
    realmq_api::console::ConsoleEnv {
        ws_port: port(config::Transport::Ws),
        wss_port: port(config::Transport::Wss),
    }
}
