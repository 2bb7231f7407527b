//! The Docker engine, through its command-line client: one function per thing the sandbox asks
//! of it, each bounded in time, each failure carrying the command and what it printed.

use std::time::Duration;

use tokio::process::Command;

/// Bound for one `docker` command: `docker stop` waits out the pod's termination grace.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(90);

/// Whether an engine answers (`docker version` reaches the daemon).
pub async fn available() -> Result<(), String> {
    docker(&["version", "--format", "{{.Server.Version}}"])
        .await
        .map(|_| ())
}

/// Whether `image` is in the engine's local store.
pub async fn has_image(image: &str) -> bool {
    docker(&["image", "inspect", "--format", "{{.Id}}", image])
        .await
        .is_ok()
}

/// Runs `docker args...`; `Ok(stdout)` when it exits 0.
pub async fn docker(args: &[&str]) -> Result<String, String> {
    let mut cmd = Command::new("docker");
    cmd.args(args).kill_on_drop(true);
    let out = tokio::time::timeout(DOCKER_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "docker {} timed out after {DOCKER_TIMEOUT:?}",
                args.join(" ")
            )
        })?
        .map_err(|e| format!("cannot run docker: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {} failed ({}): {}",
            redact(args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The command line for an error message, with environment values left out (they carry the
/// root password).
fn redact(args: &[&str]) -> String {
    let mut shown = Vec::with_capacity(args.len());
    let mut after_env = false;
    for a in args {
        shown.push(if after_env {
            a.split_once('=').map_or(*a, |(k, _)| k).to_string() + "=…"
        } else {
            a.to_string()
        });
        after_env = *a == "-e";
    }
    shown.join(" ")
}

/// The IPv4 address `container` has on `network` (empty while it is not attached or stopped).
pub async fn ip_on(container: &str, network: &str) -> Result<String, String> {
    let format = format!(
        "{{{{with index .NetworkSettings.Networks \"{network}\"}}}}{{{{.IPAddress}}}}{{{{end}}}}"
    );
    docker(&["inspect", "--format", &format, container]).await
}

/// The last `lines` lines `container` wrote (stdout and stderr interleaved by the engine).
pub async fn logs(container: &str, lines: usize) -> String {
    logs_with(container, &["--tail", &lines.to_string()]).await
}

/// Every line `container` logged at WARN or above: what a post-mortem needs beyond the tail.
pub async fn warnings(container: &str) -> String {
    let all = logs_with(container, &[]).await;
    all.lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn logs_with(container: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("docker");
    cmd.arg("logs").args(args).arg(container);
    match tokio::time::timeout(DOCKER_TIMEOUT, cmd.output()).await {
        Ok(Ok(out)) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(Err(e)) => format!("(docker logs failed: {e})"),
        Err(_) => "(docker logs timed out)".into(),
    }
}

/// Removes everything labelled `label` (containers, then networks and volumes), ignoring what
/// is already gone: called before a run, for leftovers of one that was killed, and after it.
pub fn remove_labelled(label: &str) {
    let filter = format!("label={label}");
    let list = |args: &[&str]| -> Vec<String> {
        std::process::Command::new("docker")
            .args(args)
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let remove = |what: &[&str], ids: Vec<String>| {
        if !ids.is_empty() {
            let _ = std::process::Command::new("docker")
                .args(what)
                .args(&ids)
                .output();
        }
    };
    remove(
        &["rm", "-f", "-v"],
        list(&["ps", "-aq", "--filter", &filter]),
    );
    remove(
        &["network", "rm"],
        list(&["network", "ls", "-q", "--filter", &filter]),
    );
    remove(
        &["volume", "rm", "-f"],
        list(&["volume", "ls", "-q", "--filter", &filter]),
    );
}
