//! The chart's StatefulSet on a Docker engine: `make cluster-test`'s sandbox. The pods are
//! containers of the image `make image` built, started with the command, environment, files,
//! data volume and security context the chart renders (`plan.rs`), named as Kubernetes names
//! them (host `realmq-0`, peers reaching it as `realmq-0.realmq-headless`), so the cluster forms
//! from the chart's own configuration.
//!
//! Each pod is on two private networks: the pod network, where the headless Service's names
//! resolve and the nodes talk to each other, and the client network, where this process reaches
//! MQTT and the REST API (by container address; nothing is published on the host). A partition
//! takes a pod off the pod network only, so the test still sees what the cut-off node answers.
//!
//! - `docker.rs`: the engine, through the `docker` command.
//! - `plan.rs`: the rendered chart, as containers to run.
//! - `workload.rs`: REST writers and MQTT publishers and subscribers on every pod, and the
//!   accounting of what was acknowledged and what arrived.

pub mod docker;
pub mod plan;
pub mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::api::{Auth, NodeStatus, all_pages, call, client, describe, parse_nodes};
use crate::eventually;
use plan::PodPlan;

/// Bound for a started pod to become ready (open RocksDB, find its peers, catch up).
pub const READY_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Pods {
    /// Prefix of every container, network and volume of this run.
    run: String,
    label: String,
    plan: Mutex<PodPlan>,
    pod_net: String,
    client_net: String,
    /// The ConfigMap's files, mounted read-only.
    config_dir: tempfile::TempDir,
    /// Client-network address of each pod that exists, as of its last start.
    ips: Mutex<BTreeMap<usize, IpAddr>>,
    /// Pods running and reachable by their peers: where a client that lost its node goes.
    serving: Mutex<BTreeSet<usize>>,
    started: Instant,
    /// What the harness did, with when, printed if the run fails.
    actions: Mutex<Vec<String>>,
    pub root: Auth,
    /// One client for every REST call of the run (it keeps no idle connections).
    http: reqwest::Client,
}

impl Pods {
    /// Creates the networks and the ConfigMap's files; no pod runs yet.
    pub async fn create(plan: PodPlan) -> Result<Pods, String> {
        let label = "io.realmq.cluster-test".to_string();
        // A run killed before its clean-up left these behind.
        docker::remove_labelled(&label);
        let run = format!("rmqct{}", std::process::id());
        let config_dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        for f in &plan.files {
            let dir = config_dir.path().join(f.dir.trim_start_matches('/'));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            std::fs::write(dir.join(&f.name), &f.content).map_err(|e| e.to_string())?;
        }
        // The pods run as the chart's non-root user: the files must be readable by anyone.
        chmod_readable(config_dir.path())?;
        let (pod_net, client_net) = (format!("{run}-pods"), format!("{run}-clients"));
        for net in [&pod_net, &client_net] {
            docker::docker(&["network", "create", "--label", &label, net]).await?;
        }
        let root = Auth::basic(
            "root",
            plan.env(0)
                .get("REALMQ_API__ROOT_PASSWORD")
                .ok_or("the chart gives the pods no root password")?,
        );
        Ok(Pods {
            run,
            label,
            plan: Mutex::new(plan),
            pod_net,
            client_net,
            config_dir,
            ips: Mutex::new(BTreeMap::new()),
            serving: Mutex::new(BTreeSet::new()),
            started: Instant::now(),
            actions: Mutex::new(Vec::new()),
            root,
            http: client(),
        })
    }

    /// Replaces the rendered plan (a scale changes `replicas`, and with it the pods that exist).
    pub fn set_plan(&self, plan: PodPlan) {
        *self.plan.lock().unwrap() = plan;
    }

    /// When the run began: the zero of the harness's notes.
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn replicas(&self) -> usize {
        self.plan.lock().unwrap().replicas
    }

    /// Pods running and not cut off from their peers.
    pub fn serving(&self) -> Vec<usize> {
        self.serving.lock().unwrap().iter().copied().collect()
    }

    fn set_serving(&self, ordinal: usize, on: bool) {
        let mut serving = self.serving.lock().unwrap();
        if on {
            serving.insert(ordinal);
        } else {
            serving.remove(&ordinal);
        }
    }

    /// Pods that exist (running or stopped), by ordinal.
    pub fn ordinals(&self) -> Vec<usize> {
        self.ips.lock().unwrap().keys().copied().collect()
    }

    fn container(&self, ordinal: usize) -> String {
        format!(
            "{}-{}",
            self.run,
            self.plan.lock().unwrap().pod_name(ordinal)
        )
    }

    pub fn note(&self, what: impl Into<String>) {
        let line = format!(
            "[{:>7.2}s] {}",
            self.started.elapsed().as_secs_f64(),
            what.into()
        );
        eprintln!("{line}");
        self.actions.lock().unwrap().push(line);
    }

    /// Creates and starts pod `ordinal` as the StatefulSet controller would.
    pub async fn create_pod(&self, ordinal: usize) -> Result<(), String> {
        let plan = self.plan.lock().unwrap().clone();
        let pod = plan.pod_name(ordinal);
        let env = plan
            .pods
            .get(ordinal)
            .ok_or(format!("the plan has no pod {ordinal}"))?
            .env
            .clone();
        let container = self.container(ordinal);
        let alias = format!("{pod}.{}", plan.headless);
        let volume = format!("{}-data-{ordinal}", self.run);
        docker::docker(&["volume", "create", "--label", &self.label, &volume]).await?;
        let mut args: Vec<String> = [
            "create",
            "--name",
            &container,
            "--hostname",
            &pod,
            "--label",
            &self.label,
            "--network",
            &self.pod_net,
            "--network-alias",
            &alias,
            "--stop-timeout",
            &plan.termination_grace_seconds.to_string(),
            "-v",
            &format!("{volume}:{}", plan.data_mount),
        ]
        .map(String::from)
        .to_vec();
        let mut dirs: Vec<&str> = plan.files.iter().map(|f| f.dir.as_str()).collect();
        dirs.dedup();
        for dir in dirs {
            let host = self.config_dir.path().join(dir.trim_start_matches('/'));
            args.extend(["-v".into(), format!("{}:{dir}:ro", host.display())]);
        }
        if let Some(uid) = plan.user {
            let gid = plan.group.unwrap_or(uid);
            args.extend(["--user".into(), format!("{uid}:{gid}")]);
        }
        if plan.read_only_root {
            args.push("--read-only".into());
        }
        if plan.drop_all_capabilities {
            args.extend(["--cap-drop".into(), "ALL".into()]);
        }
        if plan.no_new_privileges {
            args.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        if let Some(bytes) = plan.memory_limit {
            args.extend(["--memory".into(), bytes.to_string()]);
        }
        for (k, v) in &env {
            args.extend(["-e".into(), format!("{k}={v}")]);
        }
        let (entry, rest) = plan
            .command
            .split_first()
            .ok_or("the chart gives no command")?;
        args.extend(["--entrypoint".into(), entry.clone(), plan.image.clone()]);
        args.extend(rest.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker::docker(&args).await?;
        docker::docker(&["network", "connect", &self.client_net, &container]).await?;
        self.note(format!("created pod {pod}"));
        self.start(ordinal).await
    }

    /// Starts the existing container of pod `ordinal` (after a kill or a stop: same data).
    pub async fn start(&self, ordinal: usize) -> Result<(), String> {
        let container = self.container(ordinal);
        docker::docker(&["start", &container]).await?;
        let ip = docker::ip_on(&container, &self.client_net).await?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{container} has no address on the client network: {ip:?}"))?;
        self.ips.lock().unwrap().insert(ordinal, ip);
        self.set_serving(ordinal, true);
        self.note(format!("started pod {ordinal} at {ip}"));
        Ok(())
    }

    /// `kill -9` of the node's process (the container's PID 1).
    pub async fn kill9(&self, ordinal: usize) -> Result<(), String> {
        self.set_serving(ordinal, false);
        docker::docker(&["kill", "--signal", "KILL", &self.container(ordinal)]).await?;
        self.note(format!("killed pod {ordinal} (SIGKILL)"));
        Ok(())
    }

    /// What the kubelet does to a pod being deleted: SIGTERM, then SIGKILL after the grace.
    pub async fn stop(&self, ordinal: usize) -> Result<(), String> {
        let t = Instant::now();
        self.set_serving(ordinal, false);
        docker::docker(&["stop", &self.container(ordinal)]).await?;
        self.note(format!(
            "stopped pod {ordinal} (SIGTERM) in {:.1?}",
            t.elapsed()
        ));
        Ok(())
    }

    /// Deletes pod `ordinal` and its volume (a scale-in whose claim is deleted too).
    pub async fn delete(&self, ordinal: usize) -> Result<(), String> {
        docker::docker(&["rm", "-f", &self.container(ordinal)]).await?;
        docker::docker(&[
            "volume",
            "rm",
            "-f",
            &format!("{}-data-{ordinal}", self.run),
        ])
        .await?;
        self.ips.lock().unwrap().remove(&ordinal);
        self.set_serving(ordinal, false);
        self.note(format!("deleted pod {ordinal}"));
        Ok(())
    }

    /// Takes pod `ordinal` off the pod network: it no longer reaches its peers, nor they it.
    pub async fn partition(&self, ordinal: usize) -> Result<(), String> {
        self.set_serving(ordinal, false);
        docker::docker(&[
            "network",
            "disconnect",
            &self.pod_net,
            &self.container(ordinal),
        ])
        .await?;
        self.note(format!("partitioned pod {ordinal} from its peers"));
        Ok(())
    }

    pub async fn heal(&self, ordinal: usize) -> Result<(), String> {
        let plan = self.plan.lock().unwrap().clone();
        let alias = format!("{}.{}", plan.pod_name(ordinal), plan.headless);
        let container = self.container(ordinal);
        docker::docker(&[
            "network",
            "connect",
            "--alias",
            &alias,
            &self.pod_net,
            &container,
        ])
        .await?;
        self.set_serving(ordinal, true);
        self.note(format!("healed pod {ordinal}'s partition"));
        Ok(())
    }

    fn ip(&self, ordinal: usize) -> IpAddr {
        *self
            .ips
            .lock()
            .unwrap()
            .get(&ordinal)
            .unwrap_or_else(|| panic!("pod {ordinal} does not exist"))
    }

    pub fn api_addr(&self, ordinal: usize) -> SocketAddr {
        SocketAddr::new(self.ip(ordinal), self.plan.lock().unwrap().port("api"))
    }

    pub fn mqtt_addr(&self, ordinal: usize) -> SocketAddr {
        SocketAddr::new(self.ip(ordinal), self.plan.lock().unwrap().port("mqtt"))
    }

    /// Waits until pod `ordinal` passes the chart's readiness probe.
    pub async fn wait_ready(&self, ordinal: usize) {
        let probe = self.plan.lock().unwrap().readiness.clone();
        let probe = probe.expect("the chart's container has a readiness probe");
        let addr = SocketAddr::new(self.ip(ordinal), probe.port);
        let t = Instant::now();
        eventually(
            &format!("pod {ordinal} to be ready"),
            READY_TIMEOUT,
            async || match call(&self.http, addr, &Auth::None, "GET", &probe.path, None).await {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(e) => Err(e.to_string()),
            },
        )
        .await;
        self.note(format!("pod {ordinal} ready after {:.1?}", t.elapsed()));
    }

    /// A REST call to pod `ordinal` as root.
    pub async fn api(
        &self,
        ordinal: usize,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value), String> {
        call(
            &self.http,
            self.api_addr(ordinal),
            &self.root,
            method,
            path,
            body,
        )
        .await
        .map_err(|e| format!("{method} {path} on pod {ordinal}: {}", describe(&e)))
    }

    /// Pod `ordinal`'s `GET /api/v1/nodes`.
    pub async fn nodes(&self, ordinal: usize) -> Result<Vec<NodeStatus>, String> {
        let (status, body) = self.api(ordinal, "GET", "/api/v1/nodes", None).await?;
        parse_nodes(status, &body)
    }

    /// The pod ordinal of the leader, as pod `ordinal` sees it.
    pub async fn leader(&self, ordinal: usize) -> Result<usize, String> {
        let nodes = self.nodes(ordinal).await?;
        nodes
            .iter()
            .find(|n| n.role.as_deref() == Some("leader"))
            .map(|n| (n.id - 1) as usize)
            .ok_or_else(|| format!("no leader among {nodes:?}"))
    }

    /// Every product name pod `ordinal` lists.
    pub async fn product_names(&self, ordinal: usize) -> Result<BTreeSet<String>, String> {
        let items = all_pages("/api/v1/products", async |url| {
            self.api(ordinal, "GET", url, None).await
        })
        .await?;
        Ok(items
            .iter()
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect())
    }

    /// The harness's actions and every pod's last log lines: what a failed run prints.
    pub async fn post_mortem(&self) {
        eprintln!("--- harness actions ---");
        for a in self.actions.lock().unwrap().iter() {
            eprintln!("{a}");
        }
        let filter = format!("label={}", self.label);
        let names = docker::docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter])
            .await
            .unwrap_or_default();
        for name in names.lines() {
            eprintln!("--- {name}: last log lines ---");
            eprintln!("{}", docker::logs(name, 40).await);
        }
        // Last, so that they end up in the tail a CI log keeps.
        for name in names.lines() {
            eprintln!("--- {name}: warnings ---");
            eprintln!("{}", docker::warnings(name).await);
        }
    }

    /// Removes every container, network and volume of the run (also done on drop; call it
    /// before `process::exit`, which skips destructors).
    pub fn remove_all(&self) {
        docker::remove_labelled(&self.label);
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Makes every directory under `dir` (itself included) 0755 and every file 0644.
fn chmod_readable(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_dir() {
            chmod_readable(&path)?;
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}
