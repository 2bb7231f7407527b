//! `cluster-bench`: the metadata figures of a three-node cluster of real `realmq` processes on
//! this machine, with the production raft timings.
//!
//! 1. create: devices per second through `POST /api/v1/devices` from N clients spread evenly
//!    over the three nodes (two thirds of the writes forwarded by a follower to the leader),
//!    every one replicated to a majority and fsynced, with request latency percentiles;
//! 2. follower reads: `GET /api/v1/devices/{id}` on the followers (each takes the read-index
//!    barrier: a round trip to the leader), latency percentiles;
//! 3. leader loss: one client writes through a follower in a loop while the leader is killed
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
}

const NODES: u64 = 3;

struct Cluster {
    nodes: Vec<Node>,
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
    for (i, port) in cluster_ports.iter().enumerate() {
        let api = free_port()?;
        let child = Command::new(&args.realmq)
            .arg("--node-id")
            .arg((i + 1).to_string())
            .arg("--data-dir")
            .arg(dir.join(format!("node{}", i + 1)))
            .args(["--peers", &peers])
            .args(["--cluster-addr", &format!("127.0.0.1:{port}")])
            .args(["--mqtt-addr", &format!("127.0.0.1:{}", free_port()?)])
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
    Ok(Cluster { nodes })
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
    eprintln!("leader loss ...");
    let loss = leader_loss(&mut cluster).await?;
    let report =
        json!({"nodes": NODES, "create": create, "follower_reads": reads, "leader_loss": loss});
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
