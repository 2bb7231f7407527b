//! One `realmq` process: how it is started, how we know it is ready, how it is killed. A `Node`
//! outlives its processes: `restart` starts a new one on the same data dir, ports and flags.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::NodeId;
use crate::logs::Log;

/// The client-facing addresses a node reports once it is ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Addrs {
    pub mqtt: SocketAddr,
    pub api: SocketAddr,
}

/// Everything that makes up a node's command line, fixed for the node's lifetime.
pub(crate) struct NodeSpec {
    pub id: NodeId,
    /// The real gRPC listener (`--cluster-addr`).
    pub cluster_addr: SocketAddr,
    /// What the node tells peers to dial (`--advertise-addr`).
    pub advertise_addr: SocketAddr,
    /// `--peers`, with this node's view of every peer address (proxies).
    pub peers: String,
    pub voters: usize,
    pub allow_anonymous: bool,
    /// The whole `realmq.toml`.
    pub config: String,
}

pub(crate) struct Node {
    pub spec: NodeSpec,
    /// Holds `realmq.toml` and `data/`; removed when the node is dropped unless `keep_files`.
    root: tempfile::TempDir,
    keep: AtomicBool,
    pub log: Log,
    /// Set by the first start; later starts bind the same ports so clients find the node again.
    addrs: OnceLock<Addrs>,
    process: Mutex<Process>,
}

#[derive(Default)]
struct Process {
    /// `None` while the node is down on purpose (killed by the harness).
    child: Option<Child>,
    /// Fires with the node's addresses when it logs "realmq node started"; dropped unfired when
    /// the process's stdout closes first, i.e. it died.
    ready: Option<oneshot::Receiver<Addrs>>,
    starts: u32,
}

impl Node {
    pub(crate) fn new(spec: NodeSpec) -> std::io::Result<Node> {
        let root = tempfile::Builder::new()
            .prefix(&format!("realmq-node{}-", spec.id))
            .tempdir()?;
        std::fs::write(root.path().join("realmq.toml"), &spec.config)?;
        Ok(Node {
            spec,
            root,
            keep: AtomicBool::new(false),
            log: Log::default(),
            addrs: OnceLock::new(),
            process: Mutex::new(Process::default()),
        })
    }

    pub(crate) fn id(&self) -> NodeId {
        self.spec.id
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The addresses reported at the first start; panics if the node never became ready.
    pub(crate) fn addrs(&self) -> Addrs {
        *self
            .addrs
            .get()
            .unwrap_or_else(|| panic!("node {} never became ready", self.id()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Process> {
        self.process.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a process; `wait_ready` then waits for it. Several nodes are spawned before any is
    /// waited for, because a node logs that it started only once the cluster has formed.
    pub(crate) fn spawn(&self, bin: &Path) {
        let mut p = self.lock();
        assert!(p.child.is_none(), "node {} is already running", self.id());
        p.starts += 1;
        self.log.push(format!(
            "=== harness: start #{} of node {} ===",
            p.starts,
            self.id()
        ));
        let (mqtt, api) = match self.addrs.get() {
            Some(a) => (a.mqtt.to_string(), a.api.to_string()),
            None => ("127.0.0.1:0".into(), "127.0.0.1:0".into()),
        };
        let s = &self.spec;
        let mut cmd = Command::new(bin);
        // A developer's REALMQ_* settings would silently change what the test runs.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REALMQ_") {
                cmd.env_remove(key);
            }
        }
        cmd.arg("--config")
            .arg(self.root.path().join("realmq.toml"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--node-id", &s.id.to_string()])
            .args(["--mqtt-addr", &mqtt, "--api-addr", &api])
            .args(["--cluster-addr", &s.cluster_addr.to_string()])
            .args(["--ws-addr", "127.0.0.1:0"])
            .args(["--advertise-addr", &s.advertise_addr.to_string()])
            .args(["--peers", &s.peers, "--voters", &s.voters.to_string()])
            .env("REALMQ_LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if s.allow_anonymous {
            cmd.arg("--allow-anonymous");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {}: {e}", bin.display()));
        let (tx, rx) = oneshot::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        std::thread::spawn(move || read_stdout(stdout, log, tx));
        let log = self.log.clone();
        std::thread::spawn(move || read_stderr(stderr, log));
        p.child = Some(child);
        p.ready = Some(rx);
    }

    /// Waits until the process started by the last `spawn` logs that it is ready.
    pub(crate) async fn wait_ready(&self, deadline: Instant) -> Result<(), String> {
        let rx = self.lock().ready.take();
        let Some(rx) = rx else {
            return Err(format!("node {} was not started", self.id()));
        };
        let addrs = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(_)) => {
                let status = self.reap();
                return Err(format!(
                    "node {} exited before it was ready ({status})",
                    self.id()
                ));
            }
            Err(_) => return Err(format!("node {} did not become ready in time", self.id())),
        };
        let first = *self.addrs.get_or_init(|| addrs);
        if first != addrs {
            return Err(format!(
                "node {} came back on {addrs:?} instead of {first:?}",
                self.id()
            ));
        }
        Ok(())
    }

    /// Describes how the process ended, waiting for it briefly: its stdout closing means it is
    /// exiting.
    fn reap(&self) -> String {
        let mut p = self.lock();
        let Some(child) = p.child.as_mut() else {
            return "killed".into();
        };
        for _ in 0..100 {
            match child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Err(e) => return format!("wait failed: {e}"),
            }
        }
        "stdout closed but the process is still running".into()
    }

    /// Whether the harness means the node to be up (it was started and not killed since).
    pub(crate) fn is_up(&self) -> bool {
        self.lock().child.is_some()
    }

    /// `Some(status)` if the process ended although the harness did not kill it.
    pub(crate) fn crashed(&self) -> Option<ExitStatus> {
        self.lock().child.as_mut()?.try_wait().ok().flatten()
    }

    /// SIGKILL, then reap. Killing a node that is down does nothing.
    pub(crate) fn kill9(&self) {
        let mut p = self.lock();
        p.ready = None;
        if let Some(mut child) = p.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.log
                .push(format!("=== harness: node {} killed ===", self.id()));
        }
    }

    /// Sends `signal` (`TERM`, `STOP`, `CONT`) to the process, if it runs.
    pub(crate) fn signal(&self, signal: &str) {
        if let Some(child) = self.lock().child.as_ref() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), &child.id().to_string()])
                .status();
        }
    }

    /// The exit status once a terminated process has ended (the node is then down); `None`
    /// while it still runs.
    pub(crate) fn exited(&self) -> Option<ExitStatus> {
        let mut p = self.lock();
        let status = p.child.as_mut()?.try_wait().ok().flatten()?;
        p.child = None;
        p.ready = None;
        self.log.push(format!(
            "=== harness: node {} stopped ({status}) ===",
            self.id()
        ));
        Some(status)
    }

    /// Leaves the node's directory on disk after the test, for a post-mortem of its RocksDB.
    pub(crate) fn keep_files(&self) {
        self.keep.store(true, Ordering::Relaxed);
    }

    /// Deletes the data directory of a node that is down.
    pub(crate) fn wipe(&self) {
        assert!(!self.is_up(), "wipe a node only while it is down");
        let dir = self.data_dir();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("failed to remove {}: {e}", dir.display()));
        }
        self.log
            .push(format!("=== harness: node {} data wiped ===", self.id()));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        if self.keep.load(Ordering::Relaxed) {
            self.root.disable_cleanup(true);
        }
    }
}

fn read_stdout(out: impl Read, log: Log, ready: oneshot::Sender<Addrs>) {
    let mut ready = Some(ready);
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(addrs) = started(&line)
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(addrs);
        }
        log.push(line);
    }
}

fn read_stderr(err: impl Read, log: Log) {
    for line in BufReader::new(err).lines().map_while(Result::ok) {
        log.push(format!("[stderr] {line}"));
    }
}

/// The addresses in the "realmq node started" line, if `line` is it.
fn started(line: &str) -> Option<Addrs> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "realmq node started" {
        return None;
    }
    // Fields are flattened into the event; tolerate tracing's default nesting under `fields`.
    let field = |k: &str| {
        v.get(k)
            .or_else(|| v.get("fields").and_then(|f| f.get(k)))
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
    };
    Some(Addrs {
        mqtt: field("mqtt")?,
        api: field("api")?,
    })
}

/// `$REALMQ_BIN`, else the `realmq` that cargo built next to this test executable
/// (`<target>/debug/deps/cluster-<hash>` → `<target>/debug/realmq`).
pub(crate) fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("REALMQ_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("realmq"))
        .expect("the test executable lives in <target>/<profile>/deps");
    assert!(
        bin.exists(),
        "{} does not exist: build the node first (`cargo test --workspace` does) or set REALMQ_BIN",
        bin.display()
    );
    bin
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_started_line() {
        let line = r#"{"level":"INFO","message":"realmq node started","mqtt":"127.0.0.1:1883","api":"127.0.0.1:8090","node_id":1}"#;
        assert_eq!(
            started(line),
            Some(Addrs {
                mqtt: "127.0.0.1:1883".parse().unwrap(),
                api: "127.0.0.1:8090".parse().unwrap(),
            })
        );
        let nested = r#"{"message":"realmq node started","fields":{"mqtt":"127.0.0.1:1","api":"127.0.0.1:2"}}"#;
        assert_eq!(started(nested).map(|a| a.api.port()), Some(2));
        let bare = r#"{"message":"realmq node started"}"#;
        assert_eq!(
            started(bare),
            None,
            "without addresses a test could not reach it"
        );
        assert_eq!(started(r#"{"message":"raft started"}"#), None);
        assert_eq!(started("not json"), None);
    }
}
