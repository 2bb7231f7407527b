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

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

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
    RealMq,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Mosquitto => "mosquitto",
            Broker::RealMq => "realmq",
        }
    }
}

struct Scenario {
    name: &'static str,
    /// What is compared, each with its target: fields of the generator's summary.
    metrics: &'static [(&'static str, &'static str)],
    higher_is_better: bool,
    args: Vec<String>,
}

fn scenarios(a: &Args) -> Vec<Scenario> {
    let d = a.duration.to_string();
    let pubsub = |extra: &[&str]| {
        let mut v: Vec<String> = ["pubsub", "--size", "64", "--duration", &d]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    vec![
        Scenario {
            name: "qos0_fanin_100_to_1",
            metrics: &[("received_per_s", ">= 2.0x")],
            higher_is_better: true,
            args: pubsub(&["--publishers", "100", "--subscribers", "1", "--qos", "0"]),
        },
        Scenario {
            name: "qos1_fanin_100_to_1",
            metrics: &[("received_per_s", ">= 1.5x")],
            higher_is_better: true,
            args: pubsub(&["--publishers", "100", "--subscribers", "1", "--qos", "1"]),
        },
        Scenario {
            name: "fanout_1_to_100",
            metrics: &[("received_per_s", ">= 1.5x")],
            higher_is_better: true,
            args: pubsub(&["--publishers", "1", "--subscribers", "100", "--qos", "0"]),
        },
        Scenario {
            name: "latency_at_10k",
            metrics: &[
                ("latency_ms.p50", "<= mosquitto"),
                ("latency_ms.p99", "<= mosquitto and <= 1 ms"),
            ],
            higher_is_better: false,
            args: pubsub(&[
                "--publishers",
                "1",
                "--subscribers",
                "1",
                "--qos",
                "0",
                "--rate",
                "10000",
            ]),
        },
    ]
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
    _dir: tempfile::TempDir,
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

fn start(a: &Args, broker: Broker) -> anyhow::Result<Running> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let child = match broker {
        Broker::Mosquitto => {
            let conf = dir.path().join("mosquitto.conf");
            // Equivalent settings: no persistence, unlimited in-flight, a deep queue, no Nagle.
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_inflight_messages 0\nmax_queued_messages 100000\nset_tcp_nodelay true\nlog_dest none\n"
                ),
            )?;
            pinned(&a.broker_cpu, &a.mosquitto)
                .arg("-c")
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?
        }
        Broker::RealMq => {
            let conf = dir.path().join("realmq.toml");
            std::fs::write(
                &conf,
                "workers = 1\n[log]\nlevel = \"warn\"\n[mqtt]\nsys_interval = 0\nmax_inflight = 65535\nreceive_maximum = 65535\nmax_queued_messages = 100000\n",
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
                    "127.0.0.1:0",
                    "--cluster-addr",
                    "127.0.0.1:0",
                    "--ws-addr",
                    "",
                ])
                .stdout(Stdio::null())
                .spawn()?
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("{} did not listen on {port}", broker.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Running {
        child,
        port,
        _dir: dir,
    })
}

/// The broker's process id (the child may be `nice`, which execs, so the pid is the broker's).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
            Some(after.get(11)?.parse::<u64>().ok()? + after.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

const TICKS_PER_S: f64 = 100.0;

fn lookup(v: &Value, path: &str) -> f64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_f64()
        .unwrap_or(f64::NAN)
}

/// Runs the generator against `port` and returns its summary plus CPU use of both sides.
fn generate(a: &Args, port: u16, broker_pid: u32, gen_args: &[String]) -> anyhow::Result<Value> {
    let b0 = cpu_ticks(broker_pid);
    let started = Instant::now();
    let child = Command::new("taskset")
        .args(["-c", &a.generator_cpu])
        .arg(&a.bench)
        .args(gen_args)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let out = child.wait_with_output()?;
    let wall = started.elapsed().as_secs_f64();
    let broker_cpu = (cpu_ticks(broker_pid) - b0) as f64 / TICKS_PER_S / wall;
    let mut v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("generator output: {}", String::from_utf8_lossy(&out.stdout)))?;
    v["broker_cpu_share"] = json!(broker_cpu);
    Ok(v)
}

fn idle_run(a: &Args, broker: Broker) -> anyhow::Result<Value> {
    let limit = rlimit_nofile();
    // Each connection costs the broker one descriptor and the generator one; keep a margin.
    let n = a.idle.min(limit.saturating_sub(200) as usize);
    let run = start(a, broker)?;
    let pid = run.child.id();
    std::thread::sleep(Duration::from_millis(500));
    let (rss0, cpu0) = (rss_kib(pid), cpu_ticks(pid));
    let hold = 8 + n as u64 / 2000;
    let child = Command::new("taskset")
        .args(["-c", &a.generator_cpu])
        .arg(&a.bench)
        .args([
            "conn",
            "-c",
            &n.to_string(),
            "--rate",
            "2000",
            // Spread over four source addresses: from one, the previous run's ~20k ports still
            // in TIME_WAIT leave too few free ones, and connects stall or fail.
            "--source",
            "127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5",
            "--duration",
            &hold.to_string(),
            "--port",
            &run.port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    // Measure once the connections are open and settled, before the generator lets go.
    std::thread::sleep(Duration::from_secs(hold.saturating_sub(3)));
    let (rss1, cpu1) = (rss_kib(pid), cpu_ticks(pid));
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
    }))
}

fn rlimit_nofile() -> u64 {
    Command::new("sh")
        .args(["-c", "ulimit -n"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(1024)
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
    let mut results: BTreeMap<&str, BTreeMap<&str, Vec<Value>>> = BTreeMap::new();
    for rep in 0..a.reps {
        // Interleave: alternate which broker goes first in each repetition.
        let order = if rep % 2 == 0 {
            [Broker::Mosquitto, Broker::RealMq]
        } else {
            [Broker::RealMq, Broker::Mosquitto]
        };
        for s in scenarios(&a) {
            for b in order {
                let run = start(&a, b)?;
                eprintln!("rep {} {} {} ...", rep + 1, s.name, b.name());
                let v = generate(&a, run.port, run.child.id(), &s.args)?;
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
        for b in order {
            eprintln!("rep {} idle_connections {} ...", rep + 1, b.name());
            let v = idle_run(&a, b)?;
            eprintln!("  {v}");
            results
                .entry("idle_connections")
                .or_default()
                .entry(b.name())
                .or_default()
                .push(v);
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
            let (mq, rq) = (m("mosquitto"), m("realmq"));
            let (mmed, rmed) = (
                mq["median"].as_f64().unwrap_or(f64::NAN),
                rq["median"].as_f64().unwrap_or(f64::NAN),
            );
            let ratio = if s.higher_is_better {
                rmed / mmed
            } else {
                mmed / rmed
            };
            let span = |v: &Value, med: f64| {
                format!(
                    "{} / {} / {}",
                    num(v["min"].as_f64().unwrap_or(0.0)),
                    num(med),
                    num(v["max"].as_f64().unwrap_or(0.0))
                )
            };
            table.push(format!(
                "| {} | {} | {} | {} | {:.2}x | {} | {:.2} / {:.2} |",
                s.name,
                metric,
                span(&mq, mmed),
                span(&rq, rmed),
                ratio,
                target,
                generator("mosquitto"),
                generator("realmq"),
            ));
            metrics.insert(
                metric.to_string(),
                json!({"target": target, "ratio_of_medians": ratio, "mosquitto": mq, "realmq": rq}),
            );
        }
        report["scenarios"][s.name] = json!({
            "metrics": metrics,
            "broker_cpu_share": {"mosquitto": share("mosquitto", "broker_cpu_share"), "realmq": share("realmq", "broker_cpu_share")},
            "generator_cpu_share": {"mosquitto": share("mosquitto", "generator_cpu_share"), "realmq": share("realmq", "generator_cpu_share")},
            "raw": per,
        });
    }
    let idle = &results["idle_connections"];
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
        table.push(format!(
            "| idle_connections | {key} | {:.0} / {:.0} / {:.0} | {:.0} / {:.0} / {:.0} | {:.2}x | {} | |",
            mq["min"].as_f64().unwrap_or(0.0), mq["median"].as_f64().unwrap_or(0.0), mq["max"].as_f64().unwrap_or(0.0),
            rq["min"].as_f64().unwrap_or(0.0), rq["median"].as_f64().unwrap_or(0.0), rq["max"].as_f64().unwrap_or(0.0),
            mq["median"].as_f64().unwrap_or(f64::NAN) / rq["median"].as_f64().unwrap_or(f64::NAN),
            if key == "bytes_per_connection" { "<= 4096 B" } else { "reported" },
        ));
        report["scenarios"][format!("idle_{key}")] = json!({"mosquitto": mq, "realmq": rq});
    }
    report["scenarios"]["idle_connections_raw"] = json!(idle);
    println!(
        "| scenario | metric | mosquitto min / median / max | realmq min / median / max | ratio | target | generator CPU (mosquitto / realmq runs) |"
    );
    println!("|---|---|---|---|---|---|---|");
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
