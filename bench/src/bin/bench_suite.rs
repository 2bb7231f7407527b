//! `bench-suite`: the side-by-side benchmark behind `make bench`.
//!
//! Runs a fixed set of scenarios against Mosquitto and RealMQ in the same run, each broker pinned
//! to one core and the load generator (`realmq-bench`) to the other, brokers at raised priority
//! and restarted for every run, interleaved within each repetition. Reports min/median/max per
//! scenario and broker, the ratio of medians, broker and generator CPU (so a reader can see which
//! side was the limit), and writes everything as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "bench_suite/host.rs"]
mod host;
#[path = "bench_suite/scenarios.rs"]
mod scenarios;

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use host::{
    Certs, TICKS_PER_S, cpu_ticks, create_rules, realmq_received, rlimit_nofile, rss_kib, scrape_ms,
};
use scenarios::scenarios;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    realmq: PathBuf,
    #[arg(long)]
    bench: PathBuf,
    #[arg(long, default_value = "mosquitto")]
    mosquitto: PathBuf,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Seconds per throughput run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Idle connections to open (capped by the open-file limit).
    #[arg(long, default_value_t = 20_000)]
    idle: usize,
    #[arg(long, default_value = "bench/results/latest.json")]
    out: PathBuf,
    /// Core for the broker; the generator gets `generator_cpu`.
    #[arg(long, default_value = "0")]
    broker_cpu: String,
    #[arg(long, default_value = "1")]
    generator_cpu: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Broker {
    Mosquitto,
    /// RealMQ as users get it: the default configuration (listeners aside).
    RealMq,
    /// RealMQ tuned for these runs: `TUNED`.
    RealMqTuned,
    /// `realmq-bench null`: reads and discards, floods subscribers; the generator's ceiling.
    Null,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Mosquitto => "mosquitto",
            Broker::RealMq => "realmq",
            Broker::RealMqTuned => "realmq_tuned",
            Broker::Null => "null",
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A broker process, pinned and at raised priority; stopped on drop.
struct Running {
    child: Child,
    port: u16,
    /// The MQTT-over-TLS listener.
    tls_port: u16,
    /// RealMQ's REST API (for `/metrics`).
    api_port: Option<u16>,
    broker: Broker,
    _dir: tempfile::TempDir,
}

impl Running {
    fn port(&self, tls: bool) -> u16 {
        if tls { self.tls_port } else { self.port }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        realmq_bench::rest::stop(&mut self.child, Duration::from_secs(15));
    }
}

fn pinned(cpu: &str, program: &Path) -> Command {
    let mut c = Command::new("nice");
    c.args(["-n", "-5", "taskset", "-c", cpu]).arg(program);
    c
}

/// The tuned RealMQ: one MQTT worker (the broker has one core; a second worker thread would
/// only share it), logs at warn (no INFO line per connection), no $SYS publishing, windows and queues as deep as
/// Mosquitto's settings here (unlimited in-flight, 100,000 queued messages per session).
const TUNED: &str = "workers = 1\n[log]\nlevel = \"warn\"\n[mqtt]\nsys_interval = 0\nmax_inflight = 65535\nreceive_maximum = 65535\nmax_queued_messages = 100000\n";

fn start(a: &Args, certs: &Certs, broker: Broker) -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let (port, tls_port) = (free_port()?, free_port()?);
    let api_port = matches!(broker, Broker::RealMq | Broker::RealMqTuned)
        .then(free_port)
        .transpose()?;
    let (cert, key) = (certs.cert.display(), certs.key.display());
    let child = match broker {
        Broker::Mosquitto => {
            let conf = dir.path().join("mosquitto.conf");
            // Equivalent settings: no persistence, unlimited in-flight, a deep queue, no Nagle.
            // `user root`: started as root, Mosquitto would otherwise drop to its own user,
            // which cannot read the key in this run's private temporary directory.
            // `sys_interval 1`: its received-message count is read from $SYS (`ingested`).
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nlistener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\nallow_anonymous true\nuser root\nsys_interval 1\npersistence false\nmax_inflight_messages 0\nmax_queued_messages 100000\nset_tcp_nodelay true\nlog_dest none\n"
                ),
            )?;
            pinned(&a.broker_cpu, &a.mosquitto)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?
        }
        Broker::Null => pinned(&a.broker_cpu, &a.bench)
            .args(["null", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--tls-listen", &format!("127.0.0.1:{tls_port}")])
            .arg("--cert")
            .arg(&certs.cert)
            .arg("--key")
            .arg(&certs.key)
            .stdout(Stdio::null())
            .spawn()?,
        Broker::RealMq | Broker::RealMqTuned => {
            let conf = dir.path().join("realmq.toml");
            std::fs::write(
                &conf,
                if broker == Broker::RealMqTuned {
                    TUNED
                } else {
                    ""
                },
            )?;
            pinned(&a.broker_cpu, &a.realmq)
                .arg("--config")
                .arg(&conf)
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .args([
                    "--allow-anonymous",
                    "--mqtt-addr",
                    &format!("127.0.0.1:{port}"),
                    "--api-addr",
                    &format!("127.0.0.1:{}", api_port.unwrap_or(0)),
                    "--cluster-addr",
                    "127.0.0.1:0",
                    "--ws-addr",
                    "",
                    "--wss-addr",
                    "",
                    "--mqtts-addr",
                    &format!("127.0.0.1:{tls_port}"),
                ])
                .arg("--tls-cert")
                .arg(&certs.cert)
                .arg("--tls-key")
                .arg(&certs.key)
                .stdout(Stdio::null())
                .spawn()?
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for p in [port, tls_port] {
        while std::net::TcpStream::connect(("127.0.0.1", p)).is_err() {
            if Instant::now() > deadline {
                bail!("{} did not listen on {p}", broker.name());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(Running {
        child,
        port,
        tls_port,
        api_port,
        broker,
        _dir: dir,
    })
}

fn lookup(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// The generator, pinned, against `port`, over TLS trusting `ca` if given.
fn generator(a: &Args, port: u16, ca: Option<&Path>) -> Command {
    let mut c = Command::new("taskset");
    c.args(["-c", &a.generator_cpu]).arg(&a.bench);
    c.env("REALMQ_BENCH_PORT", port.to_string());
    if let Some(ca) = ca {
        c.env("REALMQ_BENCH_CAFILE", ca);
    }
    c
}

/// Runs the generator and returns its summary plus CPU use of both sides.
fn generate(
    a: &Args,
    run: &Running,
    ca: Option<&Path>,
    gen_args: &[String],
) -> anyhow::Result<Value> {
    let broker_pid = run.child.id();
    let b0 = cpu_ticks(broker_pid);
    let started = Instant::now();
    let child = generator(a, run.port(ca.is_some()), ca)
        .args(gen_args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // The broker's count of PUBLISH packets read over the generator's measuring window (it
    // starts publishing 2 s after it starts, and measures after a 1 s warm-up): after the
    // window, what publishers' socket buffers still hold is read by a broker whose subscriber
    // has gone, and counts for nothing.
    let (from, to) = (
        started + Duration::from_secs(3),
        started + Duration::from_secs(2 + a.duration),
    );
    let ingested = ingested_per_s(run, from, to);
    let out = child.wait_with_output()?;
    let wall = started.elapsed().as_secs_f64();
    let broker_cpu = (cpu_ticks(broker_pid) - b0) as f64 / TICKS_PER_S / wall;
    let mut v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("generator output: {}", String::from_utf8_lossy(&out.stdout)))?;
    v["broker_cpu_share"] = json!(broker_cpu);
    // What the broker read against what the subscribers received, over the same window.
    if let Some(per_s) = ingested {
        v["ingested_per_s"] = json!(per_s);
        // Each message is due once per subscriber (fan-out: 100 deliveries per message).
        let due = per_s * v["subscribers"].as_f64().unwrap_or(1.0);
        v["delivered_share"] = json!(v["received_per_s"].as_f64().unwrap_or(0.0) / due);
    }
    Ok(v)
}

/// PUBLISH packets per second the broker read from clients between `from` and `to` (both in
/// the future when called): RealMQ's `realmq_messages_received_total` from `/metrics` at both
/// instants; Mosquitto's `$SYS/broker/messages/received`, which it publishes every second,
/// timed as it arrives (the retained first copy is skipped: its age is unknown); none for the
/// null broker.
fn ingested_per_s(run: &Running, from: Instant, to: Instant) -> Option<f64> {
    let wait_until = |t: Instant| std::thread::sleep(t.saturating_duration_since(Instant::now()));
    if let Some(api) = run.api_port {
        wait_until(from);
        let (c0, t0) = (realmq_received(api)?, Instant::now());
        wait_until(to);
        let (c1, t1) = (realmq_received(api)?, Instant::now());
        return Some((c1 - c0) / t1.duration_since(t0).as_secs_f64());
    }
    if run.broker != Broker::Mosquitto {
        return None;
    }
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-p", &run.port.to_string()])
        .args(["-t", "$SYS/broker/messages/received"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let stdout = sub.stdout.take()?;
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .skip(1)
            .filter_map(|l| Some((Instant::now(), l.trim().parse::<f64>().ok()?)))
            .collect::<Vec<_>>()
    });
    wait_until(to + Duration::from_millis(1500));
    let _ = sub.kill();
    let _ = sub.wait();
    let samples = reader.join().ok()?;
    let first = samples.iter().find(|(t, _)| *t >= from)?;
    let last = samples.iter().rev().find(|(t, _)| *t <= to)?;
    let secs = last.0.checked_duration_since(first.0)?.as_secs_f64();
    (secs > 0.5).then(|| (last.1 - first.1) / secs)
}

/// An idle-connection run: clients that connect and only keep alive.
struct Idle {
    name: &'static str,
    version: &'static str,
    tls: bool,
}

const IDLE: [Idle; 3] = [
    Idle {
        name: "idle_connections",
        version: "3",
        tls: false,
    },
    Idle {
        name: "idle_connections_v5",
        version: "5",
        tls: false,
    },
    Idle {
        name: "idle_connections_tls",
        version: "3",
        tls: true,
    },
];

fn idle_run(a: &Args, certs: &Certs, broker: Broker, idle: &Idle) -> anyhow::Result<Value> {
    let limit = rlimit_nofile();
    // Each connection costs the broker one descriptor and the generator one; keep a margin.
    let n = a.idle.min(limit.saturating_sub(200) as usize);
    // Connecting from an address bound first reserves a port on it until TIME_WAIT ends (a
    // minute after the run), whatever the destination; each run therefore connects from four
    // addresses no earlier run of the last minutes used (127.0.R.2-5, R the run's number).
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let r = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 250 + 1;
    let sources = (2..=5)
        .map(|h| format!("127.0.{r}.{h}"))
        .collect::<Vec<_>>()
        .join(",");
    let run = start(a, certs, broker)?;
    let pid = run.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, cpu0) = (rss_kib(pid), cpu_ticks(pid));
    let hold = 8 + n as u64 / 2000;
    let ca = idle.tls.then_some(certs.ca.as_path());
    let child = generator(a, run.port(idle.tls), ca)
        .args([
            "conn",
            "--version",
            idle.version,
            "-c",
            &n.to_string(),
            "--rate",
            "2000",
            "--source",
            &sources,
            "--duration",
            &hold.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Measure once the connections are open and settled, before the generator lets go.
    std::thread::sleep(Duration::from_secs(hold.saturating_sub(3)));
    let (rss1, cpu1) = (rss_kib(pid), cpu_ticks(pid));
    let scrape_ms = run.api_port.map(scrape_ms);
    let out = child.wait_with_output()?;
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!({}));
    let connected = v["connected"].as_f64().unwrap_or(0.0).max(1.0);
    Ok(json!({
        "connections": v["connected"],
        "errors": v["errors"],
        "rss_delta_kib": rss1.saturating_sub(rss0),
        "bytes_per_connection": (rss1.saturating_sub(rss0) * 1024) as f64 / connected,
        "cpu_us_per_connect": (cpu1 - cpu0) as f64 / TICKS_PER_S * 1e6 / connected,
        "connect_ms": v["connect_ms"],
        "metrics_scrape_ms": scrape_ms,
    }))
}

fn stats(xs: &[f64]) -> Value {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let med = if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    };
    json!({"min": v.first(), "median": med, "max": v.last(), "runs": xs})
}

/// Rates as whole numbers, milliseconds to the microsecond.
fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let certs = Certs::new()?;
    let mut results: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for rep in 0..a.reps {
        // Interleave: alternate which broker goes first in each repetition.
        let order = if rep % 2 == 0 {
            [Broker::Mosquitto, Broker::RealMq, Broker::RealMqTuned]
        } else {
            [Broker::RealMqTuned, Broker::RealMq, Broker::Mosquitto]
        };
        for s in scenarios(&a) {
            // The null broker's latency is not worth comparing.
            let null = s.throughput.then_some(Broker::Null);
            for b in order.into_iter().chain(null) {
                let run = start(&a, &certs, b)?;
                if let Some(api) = run.api_port {
                    create_rules(api, &s.rules)?;
                }
                eprintln!("rep {} {} {} ...", rep + 1, s.name, b.name());
                let ca = s.tls.then_some(certs.ca.as_path());
                let v = generate(&a, &run, ca, &s.args)?;
                for (metric, _) in s.metrics {
                    eprintln!("  {metric} = {:.3}", lookup(&v, metric));
                }
                eprintln!(
                    "  broker cpu {:.2}",
                    v["broker_cpu_share"].as_f64().unwrap_or(0.0)
                );
                results
                    .entry(s.name)
                    .or_default()
                    .entry(b.name())
                    .or_default()
                    .push(v);
            }
        }
        // `--idle 0` skips the idle-connection runs.
        for idle in IDLE.iter().filter(|_| a.idle > 0) {
            // Idle connections cost what the defaults cost; tuning changes no per-connection state.
            for b in order.into_iter().filter(|b| *b != Broker::RealMqTuned) {
                eprintln!("rep {} {} {} ...", rep + 1, idle.name, b.name());
                let v = idle_run(&a, &certs, b, idle)?;
                eprintln!("  {v}");
                results
                    .entry(idle.name)
                    .or_default()
                    .entry(b.name())
                    .or_default()
                    .push(v);
            }
        }
    }

    let mut table = Vec::new();
    let mut report = json!({"date": chrono::Utc::now().to_rfc3339(), "reps": a.reps, "duration_s": a.duration, "scenarios": {}});
    for s in scenarios(&a) {
        let per = &results[s.name];
        let share = |b: &str, key: &str| {
            stats(
                &per[b]
                    .iter()
                    .map(|v| v[key].as_f64().unwrap_or(f64::NAN))
                    .collect::<Vec<_>>(),
            )
        };
        let generator = |b: &str| {
            share(b, "generator_cpu_share")["median"]
                .as_f64()
                .unwrap_or(f64::NAN)
        };
        let mut metrics = serde_json::Map::new();
        for &(metric, target) in s.metrics {
            let m = |b: &str| stats(&per[b].iter().map(|v| lookup(v, metric)).collect::<Vec<_>>());
            let med = |v: &Value| v["median"].as_f64().unwrap_or(f64::NAN);
            let (mq, rq, tq) = (m("mosquitto"), m("realmq"), m("realmq_tuned"));
            // Always RealMQ against Mosquitto, so above 1 means RealMQ did better.
            let ratio = |r: &Value| {
                if !metric.starts_with("latency") {
                    med(r) / med(&mq)
                } else {
                    med(&mq) / med(r)
                }
            };
            let span = |v: &Value| {
                format!(
                    "{} / {} / {}",
                    num(v["min"].as_f64().unwrap_or(0.0)),
                    num(med(v)),
                    num(v["max"].as_f64().unwrap_or(0.0))
                )
            };
            // The null broker reads everything at once: what it ingests is what was sent.
            let ceiling = per.contains_key("null").then(|| {
                let key = if metric == "ingested_per_s" {
                    "sent_per_s"
                } else {
                    metric
                };
                stats(
                    &per["null"]
                        .iter()
                        .map(|v| lookup(v, key))
                        .collect::<Vec<_>>(),
                )
            });
            table.push(format!(
                "| {} | {} | {} | {} | {:.2}x | {} | {:.2}x | {} | {} | {:.2} / {:.2} / {:.2} |",
                s.name,
                metric,
                span(&mq),
                span(&rq),
                ratio(&rq),
                span(&tq),
                ratio(&tq),
                target,
                ceiling
                    .as_ref()
                    .map(med)
                    .filter(|c| !c.is_nan())
                    .map_or(String::new(), num),
                generator("mosquitto"),
                generator("realmq"),
                generator("realmq_tuned"),
            ));
            metrics.insert(
                metric.to_string(),
                json!({"target": target, "ratio_of_medians": ratio(&rq), "ratio_of_medians_tuned": ratio(&tq), "mosquitto": mq, "realmq": rq, "realmq_tuned": tq, "generator_ceiling": ceiling}),
            );
        }
        let cpu = |key: &str| json!({"mosquitto": share("mosquitto", key), "realmq": share("realmq", key), "realmq_tuned": share("realmq_tuned", key)});
        report["scenarios"][s.name] = json!({
            "metrics": metrics,
            "broker_cpu_share": cpu("broker_cpu_share"),
            "generator_cpu_share": cpu("generator_cpu_share"),
            "raw": per,
        });
    }
    for Idle { name, .. } in IDLE.iter().filter(|_| a.idle > 0) {
        let idle = &results[name];
        for key in ["bytes_per_connection", "cpu_us_per_connect"] {
            let m = |b: &str| {
                stats(
                    &idle[b]
                        .iter()
                        .map(|v| v[key].as_f64().unwrap_or(f64::NAN))
                        .collect::<Vec<_>>(),
                )
            };
            let (mq, rq) = (m("mosquitto"), m("realmq"));
            let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
            table.push(format!(
                "| {name} | {key} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.2}x | | | {} | | |",
                f(&mq, "min"),
                f(&mq, "median"),
                f(&mq, "max"),
                f(&rq, "min"),
                f(&rq, "median"),
                f(&rq, "max"),
                f(&mq, "median") / f(&rq, "median"),
                if key == "bytes_per_connection" {
                    "<= 4096 B"
                } else {
                    "reported"
                },
            ));
            report["scenarios"][format!("{name}_{key}")] = json!({"mosquitto": mq, "realmq": rq});
        }
        report["scenarios"][format!("{name}_raw")] = json!(idle);
    }
    // What rules cost RealMQ's QoS 0 fan-in: delivered with rules over delivered without, in
    // the same run.
    let received = |s: &str, b: &str| {
        report["scenarios"][s]["metrics"]["received_per_s"][b]["median"]
            .as_f64()
            .unwrap_or(f64::NAN)
    };
    let mut costs = Vec::new();
    for (s, target) in [
        ("qos0_fanin_10_rules_no_match", ">= 0.95"),
        ("qos0_fanin_1_republish_rule", "reported"),
    ] {
        let with = |b: &str| received(s, b) / received("qos0_fanin_100_to_1", b);
        let (defaults, tuned) = (with("realmq"), with("realmq_tuned"));
        table.push(format!(
            "| {s} | received_per_s against no rules | | {defaults:.3} | | {tuned:.3} | | {target} | | |",
        ));
        costs.push((s, json!({"realmq": defaults, "realmq_tuned": tuned})));
    }
    for (s, cost) in costs {
        report["rules_cost"][s] = cost;
    }
    // `/metrics` while the 3.1.1 idle run held its connections open (RealMQ only).
    if a.idle > 0 {
        let scrapes: Vec<f64> = results
            .get("idle_connections")
            .and_then(|r| r.get("realmq"))
            .into_iter()
            .flatten()
            .filter_map(|v| v["metrics_scrape_ms"].as_f64())
            .collect();
        let sc = stats(&scrapes);
        table.push(format!(
            "| idle_connections | metrics_scrape_ms ({} connections) | | {} / {} / {} | | | | reported | | |",
            a.idle,
            num(sc["min"].as_f64().unwrap_or(f64::NAN)),
            num(sc["median"].as_f64().unwrap_or(f64::NAN)),
            num(sc["max"].as_f64().unwrap_or(f64::NAN)),
        ));
        report["scenarios"]["metrics_scrape_ms"] = sc;
    }
    println!(
        "| scenario | metric | mosquitto min / median / max | realmq (defaults) min / median / max | ratio | realmq (tuned) min / median / max | ratio | target | generator ceiling (null broker, median) | generator CPU (mosquitto / realmq / tuned runs) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in &table {
        println!("{row}");
    }
    report["table"] = json!(table);
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
