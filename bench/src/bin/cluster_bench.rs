//! `cluster-bench`: the metadata figures of a three-node cluster of real `realmq` processes on
//! this machine, with the production raft timings.
//!
//! 1. create: devices per second through `POST /api/v1/devices` from N clients spread evenly
//!    over the three nodes (two thirds of the writes forwarded by a follower to the leader),
//!    every one replicated to a majority and fsynced, with request latency percentiles;
//! 2. follower reads: `GET /api/v1/devices/{id}` on the followers (each takes the read-index
//!    barrier: a round trip to the leader), latency percentiles;
//! 3. MQTT across nodes (with `--bench`, the load generator): the same runs with the subscriber
//!    on the publisher's node and on another node, for the ratio cross / same-node (QoS 0 and
//!    QoS 1 fan-in flat out, QoS 1 fan-in at 100k msg/s, latency at 10k msg/s); a persistent session taken over back and forth
//!    between two nodes (CONNECT to CONNACK); 10,000 idle connections held on each node;
//! 4. leader loss: one client writes through a follower in a loop while the leader is killed
//!    with SIGKILL; the time from the kill to the next acknowledged write.
//!
//! All three nodes and the generator share the machine's cores: the figures are for the whole
//! cluster on one 2-core host, not for three hosts. Prints one JSON object.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use realmq_bench::rest::{Node, call, free_port, percentiles, post, wait_ready};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "REST/metadata benchmarks of a three-node realmq cluster")]
struct Args {
    /// The realmq binary to run (a release build for meaningful figures).
    #[arg(long)]
    realmq: std::path::PathBuf,
    /// Concurrent HTTP clients creating devices, spread over the nodes.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 30_000)]
    devices: usize,
    /// Reads measured on the followers.
    #[arg(long, default_value_t = 4_000)]
    reads: usize,
    /// The MQTT load generator (`realmq-bench`); without it the MQTT phase is skipped.
    #[arg(long)]
    bench: Option<std::path::PathBuf>,
    /// Seconds per MQTT throughput run.
    #[arg(long, default_value_t = 8)]
    mqtt_seconds: u64,
    /// Idle connections held on each node.
    #[arg(long, default_value_t = 10_000)]
    idle_per_node: usize,
}

const NODES: u64 = 3;

struct Cluster {
    nodes: Vec<Node>,
    /// Each node's MQTT port.
    mqtt: Vec<u16>,
}

async fn start(args: &Args, dir: &Path) -> anyhow::Result<Cluster> {
    let cluster_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect::<Result<_, _>>()?;
    let peers = cluster_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    let mut mqtt = Vec::new();
    for (i, port) in cluster_ports.iter().enumerate() {
        let api = free_port()?;
        mqtt.push(free_port()?);
        let child = Command::new(&args.realmq)
            .arg("--node-id")
            .arg((i + 1).to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("node{}", i + 1)))
            .args(["--peers", &peers])
            .args(["--cluster-addr", &format!("127.0.0.1:{port}")])
            .args(["--ws-addr", ""])
            .args(["--mqtt-addr", &format!("127.0.0.1:{}", mqtt[i])])
            .arg("--allow-anonymous")
            .args(["--api-addr", &format!("127.0.0.1:{api}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("failed to run {}", args.realmq.display()))?;
        nodes.push(Node {
            child,
            api: format!("http://127.0.0.1:{api}/api/v1"),
        });
    }
    for n in &nodes {
        wait_ready(&n.api, Duration::from_secs(60)).await?;
    }
    Ok(Cluster { nodes, mqtt })
}

/// The leader's index in `nodes`, as node 1 sees it.
async fn leader(http: &reqwest::Client, c: &Cluster, ask: usize) -> anyhow::Result<usize> {
    let v = call(
        http,
        reqwest::Method::GET,
        &format!("{}/nodes", c.nodes[ask].api),
        None,
    )
    .await?;
    let id = v["data"]
        .as_array()
        .and_then(|a| a.iter().find_map(|n| n["leader"].as_u64()))
        .context("no leader in /nodes")?;
    Ok(id as usize - 1)
}

async fn create_phase(args: &Args, c: &Cluster) -> anyhow::Result<(Vec<u64>, Value)> {
    let http = reqwest::Client::new();
    let product = post(
        &http,
        &format!("{}/products", c.nodes[0].api),
        json!({"name": "bench"}),
    )
    .await?;
    let key = product["data"]["product_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let per = args.devices.div_ceil(args.clients);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let url = format!("{}/devices", c.nodes[client % c.nodes.len()].api);
        let (http, key) = (http.clone(), key.clone());
        let n = per.min(args.devices.saturating_sub(client * per));
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let name = format!("dev-{client}-{i}");
                let t = Instant::now();
                let v = post(&http, &url, json!({"name": name, "product_key": key, "username": name, "mqtt_client_id": name, "password": "pw"})).await?;
                h.record(t.elapsed().as_micros() as u64).ok();
                ids.extend(v["data"]["id"].as_u64());
            }
            anyhow::Ok((h, ids))
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    let mut ids = Vec::new();
    for t in tasks {
        let (h, mut i) = t.await??;
        all.add(h)?;
        ids.append(&mut i);
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        ids,
        json!({"devices": args.devices, "clients": args.clients, "seconds": secs, "devices_per_s": args.devices as f64 / secs, "latency": percentiles(&all)}),
    ))
}

async fn read_phase(args: &Args, c: &Cluster, ids: &[u64]) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let leader = leader(&http, c, 0).await?;
    let followers: Vec<&Node> = (0..c.nodes.len())
        .filter(|&i| i != leader)
        .map(|i| &c.nodes[i])
        .collect();
    let mut h = Histogram::<u64>::new(3)?;
    for r in 0..args.reads {
        let id = ids[rand::random_range(0..ids.len())];
        let url = format!("{}/devices/{id}", followers[r % followers.len()].api);
        let t = Instant::now();
        call(&http, reqwest::Method::GET, &url, None).await?;
        h.record(t.elapsed().as_micros() as u64).ok();
    }
    Ok(percentiles(&h))
}

/// Kills the leader under a write loop through a follower; seconds until the next success.
async fn leader_loss(c: &mut Cluster) -> anyhow::Result<Value> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let leader = leader(&http, c, 0).await?;
    let via = (leader + 1) % c.nodes.len();
    let url = format!("{}/users", c.nodes[via].api);
    for i in 0..20 {
        post(
            &http,
            &url,
            json!({"username": format!("warm{i}"), "password": "secret12"}),
        )
        .await?;
    }
    c.nodes[leader].kill9();
    let killed = Instant::now();
    let mut failed = 0;
    for i in 0.. {
        let body = json!({"username": format!("after{i}"), "password": "secret12"});
        if post(&http, &url, body).await.is_ok() {
            break;
        }
        failed += 1;
        if killed.elapsed() > Duration::from_secs(60) {
            bail!("no write succeeded within 60 s of the leader's death");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(
        json!({"writes_available_after_s": killed.elapsed().as_secs_f64(), "failed_attempts": failed}),
    )
}

/// Runs the generator with `args`; its JSON summary.
fn generate(bench: &Path, args: &[String]) -> anyhow::Result<Value> {
    let out = Command::new(bench)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("failed to run {}", bench.display()))?;
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("generator output: {}", String::from_utf8_lossy(&out.stdout)))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn ratio(cross: &Value, same: &Value, field: &str) -> Value {
    json!(cross[field].as_f64().unwrap_or(0.0) / same[field].as_f64().unwrap_or(f64::NAN))
}

/// Same-node against cross-node MQTT, takeovers between nodes, idle connections on every node.
fn mqtt_phase(args: &Args, bench: &Path, c: &Cluster) -> anyhow::Result<Value> {
    let d = args.mqtt_seconds.to_string();
    // Flat out, a QoS 1 publisher acknowledged at once on one node outruns the subscriber
    // (whose queue drops) and starves the generator's receiving side, while across nodes the
    // acknowledgement waits for the other node: the flat-out ratio favours cross-node. The
    // paced run compares the two at the same offered load.
    let runs: [(&str, Vec<String>); 4] = [
        (
            "qos0_fanin_100_to_1",
            strings(&["--publishers", "100", "--qos", "0"]),
        ),
        (
            "qos1_fanin_100_to_1",
            strings(&["--publishers", "100", "--qos", "1"]),
        ),
        (
            "qos1_fanin_100_to_1_at_100k",
            strings(&["--publishers", "100", "--qos", "1", "--rate", "100000"]),
        ),
        (
            "latency_at_10k",
            strings(&["--publishers", "1", "--qos", "0", "--rate", "10000"]),
        ),
    ];
    let mut report = serde_json::Map::new();
    for (name, extra) in runs {
        let mut pair = serde_json::Map::new();
        for (place, sub_node) in [("same_node", 0), ("cross_node", 1)] {
            eprintln!("mqtt {name}, subscriber on the {place} ...");
            let mut a = strings(&["pubsub", "--size", "64", "--subscribers", "1"]);
            a.extend(extra.iter().cloned());
            a.extend(strings(&[
                "--duration",
                &d,
                "--port",
                &c.mqtt[0].to_string(),
            ]));
            a.extend(strings(&["--sub-port", &c.mqtt[sub_node].to_string()]));
            a.extend(strings(&["--client-id", &format!("{name}-{place}-%i")]));
            let v = generate(bench, &a)?;
            pair.insert(
                place.into(),
                json!({"received_per_s": v["received_per_s"], "sent_per_s": v["sent_per_s"], "latency_ms": v["latency_ms"], "errors": v["errors"]}),
            );
        }
        let (same, cross) = (&pair["same_node"], &pair["cross_node"]);
        let r = ratio(cross, same, "received_per_s");
        pair.insert("cross_over_same".into(), r);
        report.insert(name.into(), Value::Object(pair));
    }
    eprintln!("mqtt takeovers between nodes ...");
    let t = generate(
        bench,
        &strings(&[
            "takeover",
            "--port",
            &c.mqtt[0].to_string(),
            "--other-port",
            &c.mqtt[1].to_string(),
            "--rounds",
            "300",
        ]),
    )?;
    report.insert("takeover".into(), t);
    report.insert("idle".into(), idle(args, bench, c)?);
    Ok(Value::Object(report))
}

/// `idle_per_node` connections opened on every node at once (one generator per node, each
/// within the per-process file limit) and held; the rate they were opened at.
fn idle(args: &Args, bench: &Path, c: &Cluster) -> anyhow::Result<Value> {
    eprintln!(
        "mqtt: {} idle connections on each node ...",
        args.idle_per_node
    );
    let hold = 10 + args.idle_per_node as u64 / 1000;
    let children = c
        .mqtt
        .iter()
        .enumerate()
        .map(|(i, port)| {
            Command::new(bench)
                .args(strings(&[
                    "conn",
                    "-c",
                    &args.idle_per_node.to_string(),
                    "--rate",
                    "5000",
                    "--source",
                    &format!("127.0.0.{},127.0.0.{}", 2 + 2 * i, 3 + 2 * i),
                    "--client-id",
                    &format!("idle{i}-%i"),
                    "--duration",
                    &hold.to_string(),
                    "--port",
                    &port.to_string(),
                ]))
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("failed to run the generator")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut connected = 0.0;
    let mut errors = 0.0;
    let mut open_s: f64 = 0.0;
    for child in children {
        let out = child.wait_with_output()?;
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!({}));
        connected += v["connected"].as_f64().unwrap_or(0.0);
        errors += v["errors"].as_f64().unwrap_or(0.0);
        open_s = open_s.max(v["open_seconds"].as_f64().unwrap_or(0.0));
    }
    Ok(
        json!({"connections": connected, "errors": errors, "open_seconds": open_s, "connects_per_s": connected / open_s}),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let mut cluster = start(&args, dir.path()).await?;
    eprintln!(
        "create: {} devices from {} clients over {NODES} nodes ...",
        args.devices, args.clients
    );
    let (ids, create) = create_phase(&args, &cluster).await?;
    eprintln!("follower reads: {} ...", args.reads);
    let reads = read_phase(&args, &cluster, &ids).await?;
    let mqtt = match &args.bench {
        Some(bench) => mqtt_phase(&args, bench, &cluster)?,
        None => Value::Null,
    };
    eprintln!("leader loss ...");
    let loss = leader_loss(&mut cluster).await?;
    let report = json!({"nodes": NODES, "create": create, "follower_reads": reads, "mqtt": mqtt, "leader_loss": loss});
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
