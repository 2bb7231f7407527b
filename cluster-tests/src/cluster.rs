//! The sandbox a test drives: a set of `realmq` processes wired through link proxies. Shaped
//! like quickwit's `ClusterSandboxBuilder`: a builder for what differs between tests, then
//! methods named after what a test does to the cluster.
//!
//! Every method takes `&self`, so a test may share the cluster (`Arc`) with a task that keeps
//! writing while it kills or partitions nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use tokio::sync::OwnedMutexGuard;

use crate::api;
use crate::faults::Faults;
use crate::logs::TAIL;
use crate::node::{self, Node, NodeSpec};
use crate::proxy::Proxies;
use crate::{NodeId, START_TIMEOUT, eventually};

/// Held by each `Cluster` for its lifetime. Tests in one binary run on parallel threads, and
/// two clusters of debug builds on 2 cores would each see the other's load as network faults.
/// A tokio mutex because its guard may be held across awaits and does not poison: a failed
/// test must not fail every test after it.
static SERIAL: LazyLock<Arc<tokio::sync::Mutex<()>>> =
    LazyLock::new(|| Arc::new(tokio::sync::Mutex::new(())));

/// Timings that make elections and failure detection take well under a second, so fault tests
/// stay short; `$SYS` publishing off so that it does not add load or messages.
const CLUSTER_DEFAULTS: &[(&str, &str)] = &[
    ("heartbeat_interval_ms", "100"),
    ("election_timeout_min_ms", "500"),
    ("election_timeout_max_ms", "1000"),
];
const MQTT_DEFAULTS: &[(&str, &str)] = &[("sys_interval", "0")];

pub struct ClusterBuilder {
    nodes: usize,
    voters: Option<usize>,
    allow_anonymous: bool,
    cluster: BTreeMap<String, String>,
    mqtt: BTreeMap<String, String>,
    toml: String,
}

impl ClusterBuilder {
    /// How many nodes to start (default 3).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// How many of them are voters (default: all, at most 3); the rest join as learners.
    pub fn voters(mut self, n: usize) -> Self {
        self.voters = Some(n);
        self
    }

    /// Whether MQTT clients may connect without device credentials (default on).
    pub fn allow_anonymous(mut self, on: bool) -> Self {
        self.allow_anonymous = on;
        self
    }

    /// `key = value` lines for `[cluster]`; each replaces the harness's default for its key.
    pub fn cluster_toml(mut self, lines: &str) -> Self {
        set_lines(&mut self.cluster, lines);
        self
    }

    /// `key = value` lines for `[mqtt]`; each replaces the harness's default for its key.
    pub fn mqtt_toml(mut self, lines: &str) -> Self {
        set_lines(&mut self.mqtt, lines);
        self
    }

    /// TOML placed at the top of the file: top-level keys, then any other tables (`[api]`,
    /// `[[acl]]`). Use `cluster_toml` / `mqtt_toml` for those two tables.
    pub fn toml(mut self, text: &str) -> Self {
        self.toml.push_str(text);
        self.toml.push('\n');
        self
    }

    fn config(&self) -> String {
        let table = |name: &str, keys: &BTreeMap<String, String>| {
            let body: String = keys.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
            format!("[{name}]\n{body}")
        };
        format!(
            "{}\n{}\n{}",
            self.toml,
            table("cluster", &self.cluster),
            table("mqtt", &self.mqtt)
        )
    }

    /// Starts every node and returns once each has logged that it started.
    pub async fn start(self) -> Cluster {
        let n = self.nodes;
        let voters = self.voters.unwrap_or(n.min(3));
        assert!((1..=n).contains(&voters), "{voters} voters among {n} nodes");
        let serial = SERIAL.clone().lock_owned().await;
        let bin = node::binary();
        let proxies = Proxies::new();
        // Held while the proxies are opened, so that none of them is given one of these ports.
        let reserved = reserve_ports(n);
        let real: Vec<SocketAddr> = reserved.iter().map(|l| l.local_addr().unwrap()).collect();
        let config = self.config();
        let mut nodes = Vec::new();
        for i in 1..=n as NodeId {
            let peers = (1..=voters as NodeId)
                .map(|j| {
                    let target = real[j as usize - 1];
                    let addr = if i == j {
                        target
                    } else {
                        proxies.open(Some(i), j, target)
                    };
                    format!("{j}={addr}")
                })
                .collect::<Vec<_>>()
                .join(",");
            let own = real[i as usize - 1];
            let advertise_addr = if i as usize <= voters {
                own
            } else {
                proxies.open(None, i, own)
            };
            let spec = NodeSpec {
                id: i,
                cluster_addr: own,
                advertise_addr,
                peers,
                voters,
                allow_anonymous: self.allow_anonymous,
                config: config.clone(),
            };
            nodes.push(Arc::new(Node::new(spec).expect("node directory")));
        }
        let cluster = Cluster {
            nodes: Mutex::new(nodes),
            proxies,
            faults: Mutex::new(Faults::default()),
            voters,
            allow_anonymous: self.allow_anonymous,
            config,
            http: api::client(),
            bin,
            epoch: Instant::now(),
            events: Mutex::new(Vec::new()),
            _serial: serial,
        };
        cluster.event(&format!("start {n} nodes, {voters} voters"));
        drop(reserved);
        let ids = cluster.ids();
        for id in &ids {
            cluster.node(*id).spawn(&cluster.bin);
        }
        cluster.wait_ready(&ids).await;
        cluster
    }
}

fn set_lines(table: &mut BTreeMap<String, String>, lines: &str) {
    for line in lines.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("expected `key = value`, got {line:?}"));
        table.insert(k.trim().to_string(), v.trim().to_string());
    }
}

/// Ports for the nodes' own listeners, held until just before a node binds them. They are picked
/// below Linux's ephemeral range (32768 and up): a port the OS hands out for port 0 is also what
/// it picks as the local port of outgoing connections, so between the reservation and the bind
/// another process's connection could take it (a node then fails with "address in use").
fn reserve_ports(n: usize) -> Vec<std::net::TcpListener> {
    use std::hash::{BuildHasher, RandomState};
    let seed = RandomState::new();
    let mut out = Vec::with_capacity(n);
    for attempt in 0u64.. {
        if out.len() == n {
            break;
        }
        assert!(attempt < 10_000, "no free port below 32768");
        let port = 20_000 + (seed.hash_one(attempt) % 12_000) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            out.push(l);
        }
    }
    out
}

pub struct Cluster {
    nodes: Mutex<Vec<Arc<Node>>>,
    pub(crate) proxies: Proxies,
    pub(crate) faults: Mutex<Faults>,
    voters: usize,
    allow_anonymous: bool,
    config: String,
    pub(crate) http: reqwest::Client,
    bin: PathBuf,
    epoch: Instant,
    /// What the harness did and when, printed when a test fails.
    events: Mutex<Vec<String>>,
    /// Last field: released only after the processes and proxies are gone.
    _serial: OwnedMutexGuard<()>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        let defaults = |d: &[(&str, &str)]| {
            d.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        ClusterBuilder {
            nodes: 3,
            voters: None,
            allow_anonymous: true,
            cluster: defaults(CLUSTER_DEFAULTS),
            mqtt: defaults(MQTT_DEFAULTS),
            toml: String::new(),
        }
    }

    /// `n` nodes, all voters up to 3, anonymous MQTT allowed.
    pub async fn start(n: usize) -> Cluster {
        Cluster::builder().nodes(n).start().await
    }

    pub(crate) fn node(&self, i: NodeId) -> Arc<Node> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        nodes
            .iter()
            .find(|n| n.id() == i)
            .cloned()
            .unwrap_or_else(|| panic!("no node {i} in this cluster"))
    }

    fn all(&self) -> Vec<Arc<Node>> {
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Every node id, up or down.
    pub fn ids(&self) -> Vec<NodeId> {
        self.all().iter().map(|n| n.id()).collect()
    }

    /// The nodes the harness has running (started and not killed since).
    pub fn up(&self) -> Vec<NodeId> {
        self.all()
            .iter()
            .filter(|n| n.is_up())
            .map(|n| n.id())
            .collect()
    }

    pub fn mqtt_addr(&self, i: NodeId) -> SocketAddr {
        self.node(i).addrs().mqtt
    }

    pub fn api_addr(&self, i: NodeId) -> SocketAddr {
        self.node(i).addrs().api
    }

    /// Node `i`'s real cluster listener, bypassing the proxies.
    pub fn cluster_addr(&self, i: NodeId) -> SocketAddr {
        self.node(i).spec.cluster_addr
    }

    /// Every line node `i` wrote so far (JSON log lines; stderr lines prefixed `[stderr]`).
    pub fn logs(&self, i: NodeId) -> Vec<String> {
        self.node(i).log.lines()
    }

    pub fn logged(&self, i: NodeId, needle: &str) -> bool {
        self.node(i).log.contains(needle)
    }

    /// SIGKILL: no shutdown, nothing flushed that was not already durable.
    pub fn kill9(&self, i: NodeId) {
        self.node(i).kill9();
        self.event(&format!("kill9({i})"));
    }

    /// SIGTERM, as an orchestrator stops a node, and waits until it exited: it closes its
    /// clients, writes its offline queues and, as a learner, leaves the membership. Panics if it
    /// does not exit cleanly within `START_TIMEOUT`.
    pub async fn stop(&self, i: NodeId) {
        let node = self.node(i);
        node.signal("TERM");
        self.event(&format!("stop({i})"));
        let status = eventually(
            &format!("node {i} to exit after SIGTERM"),
            START_TIMEOUT,
            async || node.exited().ok_or_else(|| "still running".to_string()),
        )
        .await;
        assert!(
            status.success(),
            "node {i} exited with {status} after SIGTERM"
        );
    }

    /// SIGSTOP: node `i` freezes with every connection open, answering nothing, like a machine
    /// that hangs or drops off the network without a reset; `thaw` resumes it.
    pub fn freeze(&self, i: NodeId) {
        self.node(i).signal("STOP");
        self.event(&format!("freeze({i})"));
    }

    pub fn thaw(&self, i: NodeId) {
        self.node(i).signal("CONT");
        self.event(&format!("thaw({i})"));
    }

    /// Starts node `i` again on its data dir, ports and flags (killing it first if it is up).
    pub async fn restart(&self, i: NodeId) {
        self.restart_many(&[i]).await;
    }

    /// Restarts several nodes at once: all are spawned before any is waited for, since a node
    /// that needs the others to form a quorum only reports that it started once they are up.
    pub async fn restart_many(&self, ids: &[NodeId]) {
        for &i in ids {
            let node = self.node(i);
            node.kill9();
            node.spawn(&self.bin);
        }
        self.event(&format!("restart({ids:?})"));
        self.wait_ready(ids).await;
    }

    /// Node `i` loses its disk: killed, data dir deleted, started again with the same flags.
    pub async fn wipe(&self, i: NodeId) {
        let node = self.node(i);
        node.kill9();
        node.wipe();
        node.spawn(&self.bin);
        self.event(&format!("wipe({i})"));
        self.wait_ready(&[i]).await;
    }

    /// Stops node `i` for good once it is no longer a member (`DELETE /api/v1/nodes/{i}`):
    /// panics if it exited on its own meanwhile, then kills it. Being down, it is left out of
    /// `invariant_check`, where it could never converge with a cluster that dropped it.
    pub fn retire(&self, i: NodeId) {
        let node = self.node(i);
        if let Some(status) = node.crashed() {
            panic!("node {i} exited on its own ({status}) before it was retired");
        }
        node.kill9();
        self.event(&format!("retire({i})"));
    }

    /// Starts one more node with `--peers` naming every existing node, so it joins the running
    /// cluster (as a learner once the voters are complete); returns its id.
    pub async fn add_node(&self) -> NodeId {
        let existing = self.all();
        let id = existing.len() as NodeId + 1;
        let reserved = reserve_ports(1);
        let own = reserved[0].local_addr().unwrap();
        let peers = existing
            .iter()
            .map(|n| {
                let addr = self.proxies.open(Some(id), n.id(), n.spec.cluster_addr);
                format!("{}={addr}", n.id())
            })
            .collect::<Vec<_>>()
            .join(",");
        let spec = NodeSpec {
            id,
            cluster_addr: own,
            advertise_addr: self.proxies.open(None, id, own),
            peers,
            voters: self.voters,
            allow_anonymous: self.allow_anonymous,
            config: self.config.clone(),
        };
        let node = Arc::new(Node::new(spec).expect("node directory"));
        self.nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(node.clone());
        self.reapply_faults();
        drop(reserved);
        node.spawn(&self.bin);
        self.event(&format!("add_node() = {id}"));
        self.wait_ready(&[id]).await;
        id
    }

    async fn wait_ready(&self, ids: &[NodeId]) {
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        let mut failed = Vec::new();
        for &i in ids {
            if let Err(e) = self.node(i).wait_ready(deadline).await {
                failed.push(e);
            }
        }
        assert!(failed.is_empty(), "{}", failed.join("; "));
        self.event(&format!("ready {ids:?}"));
    }

    pub(crate) fn event(&self, what: &str) {
        let line = format!("+{:.3}s {what}", self.epoch.elapsed().as_secs_f64());
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }

    /// What a failed test prints: the harness's actions, then each node's state and last lines.
    fn diagnostics(&self) -> String {
        let mut out = String::from("\n==== realmq cluster: harness events ====\n");
        for e in self.events.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out.push_str(&format!("  {e}\n"));
        }
        for n in self.all() {
            let state = match (n.is_up(), n.crashed()) {
                (_, Some(status)) => format!("EXITED ({status})"),
                (true, None) => "up".to_string(),
                (false, None) => "down".to_string(),
            };
            out.push_str(&format!(
                "==== node {} ({state}), cluster {}, data kept in {}: last {TAIL} lines ====\n",
                n.id(),
                n.spec.cluster_addr,
                n.data_dir().display()
            ));
            for panic in n.log.panics() {
                out.push_str(&format!("  PANIC {panic}\n"));
            }
            for line in n.log.tail(TAIL) {
                out.push_str(&format!("  {line}\n"));
            }
        }
        out
    }
}

// The module docs promise that a test can share its cluster with a spawned task.
const _: fn() = || {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Cluster>();
};

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
            for n in self.all() {
                n.keep_files();
            }
        }
        for n in self.all() {
            n.kill9();
        }
    }
}

/// The container test's clients, run against this cluster's processes (node ids as places).
impl crate::containers::workload::Places for Cluster {
    fn mqtt_addr(&self, place: usize) -> SocketAddr {
        Cluster::mqtt_addr(self, place as NodeId)
    }

    fn serving(&self) -> Vec<usize> {
        self.up().into_iter().map(|i| i as usize).collect()
    }

    fn note(&self, what: String) {
        self.event(&what);
    }
}
