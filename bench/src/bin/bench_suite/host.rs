//! What `bench-suite` makes for a run and reads about its processes: the TLS certificates,
//! CPU, memory and descriptor figures from `/proc` and the shell, and RealMQ's `/metrics`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The CA and server certificate both brokers' TLS listeners use, made for this run.
pub struct Certs {
    _dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn new() -> anyhow::Result<Certs> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let dir = tempfile::tempdir()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name.push(DnType::CommonName, "bench CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
        let key = KeyPair::generate()?;
        let cert = leaf.signed_by(&key, &issuer)?.pem();
        let paths = Certs {
            ca: dir.path().join("ca.pem"),
            cert: dir.path().join("server.pem"),
            key: dir.path().join("server.key"),
            _dir: dir,
        };
        std::fs::write(&paths.ca, ca_pem)?;
        std::fs::write(&paths.cert, cert)?;
        std::fs::write(&paths.key, key.serialize_pem())?;
        Ok(paths)
    }
}

/// The broker's process id (the child may be `nice`, which execs, so the pid is the broker's).
pub fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(after.get(11)?.parse::<u64>().ok()? + after.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub const TICKS_PER_S: f64 = 100.0;

pub fn rlimit_nofile() -> u64 {
    Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(1024)
}

/// RealMQ's count of PUBLISH packets received, all QoS.
pub fn realmq_received(api: u16) -> Option<f64> {
    Some(
        metrics_response(api)?
            .lines()
            .filter(|l| l.starts_with("realmq_messages_received_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// The whole HTTP response to `GET /metrics` on RealMQ's API port.
fn metrics_response(api: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", api)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    Some(response)
}

/// The median time of five `GET /metrics` on RealMQ's API port, in milliseconds.
pub fn scrape_ms(api_port: u16) -> f64 {
    let mut times: Vec<f64> = (0..5)
        .filter_map(|_| {
            let t = Instant::now();
            let response = metrics_response(api_port)?;
            // The whole exposition, which ends with `# EOF` (chunked or not).
            (response.starts_with("HTTP/1.1 200") && response.contains("# EOF"))
                .then(|| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times.get(times.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Creates `rules` through RealMQ's REST API on `api` (default credentials).
pub fn create_rules(api: u16, rules: &[serde_json::Value]) -> anyhow::Result<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let http = reqwest::Client::new();
        for rule in rules {
            let res = http
                .post(format!("http://127.0.0.1:{api}/api/v1/rules"))
                .basic_auth("root", Some("123456"))
                .json(rule)
                .send()
                .await?;
            anyhow::ensure!(
                res.status().is_success(),
                "creating a rule: {}",
                res.text().await?
            );
        }
        Ok(())
    })
}
