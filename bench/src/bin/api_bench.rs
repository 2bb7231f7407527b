//! `api-bench`: the metadata benchmarks of the REST API against a real `realmq` process.
//!
//! 1. create: devices per second through `POST /api/v1/devices` (raft, fsync) from N concurrent
//!    clients, with request latency percentiles;
//! 2. page: latency of `GET /api/v1/devices?product_key=..` pages over the devices just created;
//! 3. restart: a data directory seeded with a million devices (written through the same raft
//!    state machine, in batches), then the time from process start to `GET /api/v1/ready`.
//!
//! Prints one JSON object with every figure. Bounded: each phase has a size and a deadline.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use realmq_bench::rest::{Node, free_port, percentiles, post, wait_ready};
use realmq_raft_store::model::{ConnState, Device, Product};
use realmq_raft_store::{Command as Cmd, CommandResult};
use serde_json::{Value, json};

#[derive(Parser)]
#[command(about = "REST/metadata benchmarks of a realmq binary")]
struct Args {
    /// The realmq binary to run (a release build for meaningful figures).
    #[arg(long)]
    realmq: PathBuf,
    /// Concurrent HTTP clients creating devices.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Devices created through the API (also the fleet the page phase reads).
    #[arg(long, default_value_t = 100_000)]
    devices: usize,
    /// Page requests measured.
    #[arg(long, default_value_t = 2_000)]
    pages: usize,
    /// Devices seeded for the restart phase; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    restart_devices: usize,
    /// CPU list for `taskset` when running realmq (e.g. "0").
    #[arg(long)]
    cpu: Option<String>,
}

/// Starts realmq on `data` and returns once `/api/v1/ready` answers 200, with the time it took.
async fn start(args: &Args, data: &Path) -> anyhow::Result<(Node, Duration)> {
    let (mqtt, api) = (free_port()?, free_port()?);
    let mut cmd = match &args.cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpu]).arg(&args.realmq);
            c
        }
        None => Command::new(&args.realmq),
    };
    let started = Instant::now();
    let child = cmd
        .arg("--data-dir")
        .arg(data)
        .args([
            "--mqtt-addr",
            &format!("127.0.0.1:{mqtt}"),
            "--api-addr",
            &format!("127.0.0.1:{api}"),
            "--cluster-addr",
            "127.0.0.1:0",
            "--ws-addr",
            "",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("failed to run {}", args.realmq.display()))?;
    let node = Node {
        child,
        api: format!("http://127.0.0.1:{api}/api/v1"),
    };
    wait_ready(&node.api, Duration::from_secs(120)).await?;
    Ok((node, started.elapsed()))
}

/// Creates `args.devices` devices from `args.clients` concurrent clients.
async fn create_phase(args: &Args, node: &Node) -> anyhow::Result<(String, Value)> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients)
        .build()?;
    let product = post(
        &http,
        &format!("{}/products", node.api),
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
    for c in 0..args.clients {
        let (http, url, key) = (http.clone(), format!("{}/devices", node.api), key.clone());
        let n = per.min(args.devices.saturating_sub(c * per));
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..n {
                let name = format!("dev-{c}-{i}");
                let t = Instant::now();
                post(&http, &url, json!({"name": name, "product_key": key, "username": name, "mqtt_client_id": name, "password": "pw"})).await?;
                h.record(t.elapsed().as_micros() as u64).ok();
            }
            anyhow::Ok(h)
        }));
    }
    let mut all = Histogram::<u64>::new(3)?;
    for t in tasks {
        all.add(t.await??)?;
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((
        key,
        json!({"devices": args.devices, "clients": args.clients, "seconds": secs, "devices_per_s": args.devices as f64 / secs, "latency": percentiles(&all)}),
    ))
}

/// Page latencies: the first page, random pages among the first hundred, the middle page (the
/// deepest walk, half the index) and the last page.
async fn page_phase(args: &Args, node: &Node, key: &str) -> anyhow::Result<Value> {
    let http = reqwest::Client::new();
    let last = args.devices.div_ceil(10).max(1);
    let mut result = json!({});
    for (label, pick) in [
        ("first", 0usize),
        ("random_first_100", 1),
        ("middle", 3),
        ("last", 2),
    ] {
        let mut h = Histogram::<u64>::new(3)?;
        let n = if pick >= 2 {
            (args.pages / 10).max(10)
        } else {
            args.pages
        };
        for _ in 0..n {
            let page = match pick {
                0 => 1,
                1 => rand::random_range(1..=100.min(last)),
                2 => last,
                _ => last.div_ceil(2),
            };
            let url = format!(
                "{}/devices?product_key={key}&_page={page}&_limit=10",
                node.api
            );
            let t = Instant::now();
            let r = http
                .get(&url)
                .basic_auth("root", Some("123456"))
                .send()
                .await?;
            let v: Value = r.json().await?;
            h.record(t.elapsed().as_micros() as u64).ok();
            if v["meta"]["count"] != json!(args.devices) {
                bail!("page count {} != {}", v["meta"]["count"], args.devices);
            }
        }
        result[label] = percentiles(&h);
    }
    Ok(result)
}

/// Seeds `n` devices straight through the raft state machine, in batches, into a fresh dir.
async fn seed(dir: &Path, n: usize) -> anyhow::Result<()> {
    let member = realmq_raft_store::start_offline(dir, 1).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let product = Product {
        id: 0,
        name: "seeded".into(),
        product_key: "5eed5eed5e".into(),
        secret: "0000000000000000".into(),
        product_type: 1,
        dynamic_reg: 1,
        auth_type: 1,
        status: 1,
        description: None,
        created_at: now,
    };
    let CommandResult::Created { id: product_id } =
        member.writer.write(Cmd::CreateProduct { product }).await?
    else {
        bail!("seeding the product failed");
    };
    for chunk in 0..n.div_ceil(1000) {
        let batch = (chunk * 1000..((chunk + 1) * 1000).min(n))
            .map(|i| Cmd::CreateDevice {
                device: Device {
                    id: 0,
                    product_id,
                    name: format!("s{i}"),
                    username: format!("s{i}"),
                    mqtt_client_id: format!("s{i}"),
                    password: "pw".into(),
                    nickname: String::new(),
                    device_type: None,
                    description: None,
                    enable: true,
                    conn: ConnState::Inactive,
                    ip: None,
                    connected_at: None,
                    disconnected_at: None,
                    credentials_issued: false,
                    created_at: now,
                },
            })
            .collect();
        member.writer.write(Cmd::Batch(batch)).await?;
    }
    member.raft.shutdown().await.ok();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let (node, cold) = start(&args, &dir.path().join("api")).await?;
    eprintln!(
        "create: {} devices from {} clients ...",
        args.devices, args.clients
    );
    let (key, create) = create_phase(&args, &node).await?;
    eprintln!("page: {} requests ...", args.pages);
    let page = page_phase(&args, &node, &key).await?;
    drop(node);
    let mut report = json!({"cold_start_s": cold.as_secs_f64(), "create": create, "page": page});
    if args.restart_devices > 0 {
        let data = dir.path().join("restart");
        eprintln!("restart: seeding {} devices ...", args.restart_devices);
        let t = Instant::now();
        // Seeded on a runtime of its own, dropped before the node starts: that ends every task
        // still holding the store (raft's, the writer's), so RocksDB's lock on the directory
        // is free when the node opens it.
        let (seed_dir, n) = (data.clone(), args.restart_devices);
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Runtime::new()?;
            let seeded = rt.block_on(seed(&seed_dir, n));
            drop(rt);
            seeded
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the seeding thread panicked"))??;
        let seeded = t.elapsed().as_secs_f64();
        let (node, ready) = start(&args, &data).await?;
        let http = reqwest::Client::new();
        let v: Value = http
            .get(format!("{}/devices?_limit=1", node.api))
            .basic_auth("root", Some("123456"))
            .send()
            .await?
            .json()
            .await?;
        report["restart"] = json!({
            "devices": args.restart_devices,
            "seed_s": seeded,
            "ready_s": ready.as_secs_f64(),
            "devices_seen": v["meta"]["count"],
        });
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
