//! Running `realmq` processes for the REST benchmarks and calling their API as root.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// A `realmq` process; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Node {
    pub child: Child,
    /// `http://127.0.0.1:PORT/api/v1`
    pub api: String,
}

impl Node {
    /// SIGKILL, now: nothing flushed on the way out.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(20));
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Polls `GET {api}/ready` until it answers 200 or `within` passes.
pub async fn wait_ready(api: &str, within: Duration) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(format!("{api}/ready")).send().await
            && r.status() == 200
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{api} did not become ready within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A request as root; fails unless it answers HTTP 200 with `code` 0.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut req = http.request(method, url).basic_auth("root", Some("123456"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if status != 200 || v["code"] != 0 {
        bail!("{url} answered {status}: {v}");
    }
    Ok(v)
}

pub async fn post(http: &reqwest::Client, url: &str, body: Value) -> anyhow::Result<Value> {
    call(http, reqwest::Method::POST, url, Some(body)).await
}

pub fn percentiles(h: &Histogram<u64>) -> Value {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999), "max_ms": h.max() as f64 / 1000.0, "count": h.len()})
}
