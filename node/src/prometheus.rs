//! The node's Prometheus exposition (`GET /metrics` on the API port): one registry holding the
//! REST API's request families, raft's commit latency, and `NodeCollector`, which reads the
//! broker's counters (`metrics.rs`), the sessions, raft's state, the links to the peers and the
//! process when scraped, so the hot path keeps its plain atomics and nothing is counted twice.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use realmq_raft_store::typ::Raft;

use crate::broker::Broker;
use crate::cluster::Cluster;

/// Builds the registry: the API's request families, the writer's commit latency and the node.
pub fn registry(
    broker: Arc<Broker>,
    cluster: Cluster,
    raft: Raft,
    commit_seconds: prometheus_client::metrics::histogram::Histogram,
    http: &realmq_api::metrics::HttpMetrics,
) -> Registry {
    let mut registry = Registry::default();
    http.register(&mut registry);
    registry.register(
        "realmq_raft_commit_seconds",
        "Seconds from proposing a metadata entry to its application on this node",
        commit_seconds,
    );
    registry.register_collector(Box::new(NodeCollector {
        broker,
        cluster,
        raft,
    }));
    registry
}

/// Renders the registry as OpenMetrics text.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "metrics could not be rendered");
    }
    out
}

struct NodeCollector {
    broker: Arc<Broker>,
    cluster: Cluster,
    raft: Raft,
}

impl fmt::Debug for NodeCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeCollector")
            .field("node", &self.broker.node_id)
            .finish()
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// A family of constant metrics (`ConstCounter`s or `ConstGauge`s), one per label set.
fn family<'a, L: EncodeLabelSet + 'a, M: EncodeMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    values: impl IntoIterator<Item = (&'a L, M)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in values {
        metric.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn counters<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, u64)],
) -> fmt::Result {
    let metrics = values.iter().map(|(l, v)| (l, ConstCounter::new(*v)));
    family(e, name, help, MetricType::Counter, metrics)
}

fn gauges<L: EncodeLabelSet>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(L, i64)],
) -> fmt::Result {
    let metrics = values.iter().map(|(l, v)| (l, ConstGauge::new(*v)));
    family(e, name, help, MetricType::Gauge, metrics)
}

fn int(v: usize) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for NodeCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let b = &self.broker;
        let m = b.metrics.snapshot();
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let e = &mut e;
        gauge(
            e,
            "realmq_uptime_seconds",
            "Seconds since the node started",
            b.started.elapsed().as_secs() as i64,
        )?;
        gauge(
            e,
            "realmq_connections",
            "MQTT connections open on this node",
            m.connections,
        )?;
        counter(
            e,
            "realmq_connects",
            "MQTT CONNECTs accepted",
            m.connects_total,
        )?;
        counter(
            e,
            "realmq_connects_refused",
            "MQTT CONNECTs refused, for any reason",
            m.connects_refused,
        )?;
        counter(
            e,
            "realmq_auth_failures",
            "MQTT CONNECTs refused for their credentials",
            load(&b.metrics.auth_failures),
        )?;
        let totals = b.sessions.totals();
        gauge(
            e,
            "realmq_sessions",
            "Sessions on this node, connected or not",
            int(b.sessions.len()),
        )?;
        gauge(
            e,
            "realmq_sessions_connected",
            "Sessions with a connection",
            int(totals.online),
        )?;
        gauge(
            e,
            "realmq_subscriptions",
            "Subscriptions of this node's sessions",
            int(b.router.len()),
        )?;
        gauge(
            e,
            "realmq_retained_messages",
            "Retained messages",
            int(b.retained.len()),
        )?;
        gauge(
            e,
            "realmq_retained_bytes",
            "Bytes of retained topics and payloads",
            int(b.retained.bytes()),
        )?;
        gauge(
            e,
            "realmq_inflight_messages",
            "Outbound QoS 1/2 messages awaiting acknowledgement",
            int(totals.inflight),
        )?;
        gauge(
            e,
            "realmq_queued_messages",
            "Messages queued in sessions (offline, or behind the in-flight window)",
            int(totals.queued),
        )?;
        gauge(
            e,
            "realmq_queued_bytes",
            "Bytes of the messages queued in sessions",
            int(totals.queued_bytes),
        )?;
        let by_qos = |a: &[std::sync::atomic::AtomicU64; 3]| {
            [0, 1, 2].map(|q| ([("qos", q.to_string())], load(&a[q])))
        };
        counters(
            e,
            "realmq_messages_received",
            "PUBLISH packets received from clients, by QoS",
            &by_qos(&b.metrics.received_by_qos),
        )?;
        counters(
            e,
            "realmq_messages_sent",
            "PUBLISH packets sent to clients, by QoS",
            &by_qos(&b.metrics.sent_by_qos),
        )?;
        counter(
            e,
            "realmq_bytes_received",
            "Bytes of PUBLISH packets received",
            m.bytes_received,
        )?;
        counter(
            e,
            "realmq_bytes_sent",
            "Bytes of PUBLISH packets sent",
            m.bytes_sent,
        )?;
        counters(
            e,
            "realmq_messages_dropped",
            "Messages dropped, by reason",
            &[
                ([("reason", "queue_full")], m.dropped_queue_full),
                ([("reason", "expired")], m.dropped_expired),
                ([("reason", "too_large")], m.dropped_too_large),
                ([("reason", "peer_queue_full")], m.forward_dropped),
            ],
        )?;
        counter(
            e,
            "realmq_publisher_pauses",
            "Times a publisher's reading paused until a subscriber it fills drained its queue",
            m.publisher_pauses,
        )?;
        counter(
            e,
            "realmq_authorization_denied",
            "PUBLISH and SUBSCRIBE refused by the ACL or device isolation",
            m.denied,
        )?;
        counter(
            e,
            "realmq_forward_unconfirmed",
            "QoS 1/2 publishes acknowledged without an unreachable peer's confirmation",
            m.forward_unconfirmed,
        )?;
        counters(
            e,
            "realmq_limits_refused",
            "Requests refused by a configured limit",
            &[
                ([("limit", "retained")], m.retained_refused),
                ([("limit", "subscriptions")], m.subscriptions_refused),
                ([("limit", "connections")], m.connections_refused),
                ([("limit", "api")], m.api_refused),
            ],
        )?;
        if let Some(hooks) = b.webhooks.get() {
            counter(
                e,
                "realmq_webhook_dropped",
                "Webhook events dropped: a full queue, or failed after their retries",
                hooks.dropped.load(std::sync::atomic::Ordering::Relaxed),
            )?;
        }
        self.encode_raft(e)?;
        self.encode_peers(e)?;
        encode_process(e)
    }
}

impl NodeCollector {
    fn encode_raft(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let r = self.raft.metrics().borrow().clone();
        let leader = r.current_leader.map_or(0, |l| l as i64);
        gauge(
            e,
            "realmq_raft_term",
            "The raft term this node is in",
            r.current_term as i64,
        )?;
        gauge(
            e,
            "realmq_raft_leader",
            "The raft leader's node id (0: none known)",
            leader,
        )?;
        gauge(
            e,
            "realmq_raft_is_leader",
            "1 on the raft leader",
            i64::from(r.current_leader == Some(r.id)),
        )?;
        gauge(
            e,
            "realmq_raft_last_log_index",
            "The last raft log index on this node",
            r.last_log_index.map_or(0, |i| i as i64),
        )?;
        gauge(
            e,
            "realmq_raft_applied_index",
            "The last raft log index applied on this node",
            r.last_applied.map_or(0, |l| l.index as i64),
        )?;
        let voters = r.membership_config.membership().voter_ids().count();
        let members = r.membership_config.membership().nodes().count();
        gauge(
            e,
            "realmq_cluster_voters",
            "Raft voters in the membership",
            int(voters),
        )?;
        gauge(
            e,
            "realmq_cluster_members",
            "Nodes in the membership, learners included",
            int(members),
        )
    }

    fn encode_peers(&self, e: &mut DescriptorEncoder) -> fmt::Result {
        let links = self.cluster.link_stats();
        let peer = |id: u64| [("peer", id.to_string())];
        let up: Vec<_> = links
            .iter()
            .map(|l| (peer(l.peer), i64::from(l.up)))
            .collect();
        let queued: Vec<_> = links
            .iter()
            .map(|l| (peer(l.peer), int(l.queued)))
            .collect();
        let failures: Vec<_> = links.iter().map(|l| (peer(l.peer), l.failures)).collect();
        gauges(
            e,
            "realmq_peer_link_up",
            "1 while the link forwarding MQTT to the peer is connected",
            &up,
        )?;
        gauges(
            e,
            "realmq_peer_queue",
            "Publishes queued for the peer, or sent and unacknowledged",
            &queued,
        )?;
        counters(
            e,
            "realmq_peer_link_failures",
            "Connections of the link to the peer that failed or ended",
            &failures,
        )
    }
}

/// The process's CPU time, resident memory and open descriptors, under the names Prometheus's
/// own client libraries use.
fn encode_process(e: &mut DescriptorEncoder) -> fmt::Result {
    let Ok(me) = procfs::process::Process::myself() else {
        return Ok(());
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second().max(1) as f64;
        let cpu = prometheus_client::metrics::counter::ConstCounter::new(
            (stat.utime + stat.stime) as f64 / ticks,
        );
        cpu.encode(e.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let rss = stat.rss.saturating_mul(procfs::page_size());
        gauge(
            e,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            rss as i64,
        )?;
        gauge(
            e,
            "process_threads",
            "Threads of the process",
            stat.num_threads,
        )?;
    }
    if let Ok(fds) = me.fd_count() {
        gauge(e, "process_open_fds", "Open file descriptors", int(fds))?;
    }
    Ok(())
}
