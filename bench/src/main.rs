//! `realmq-bench`: an MQTT load generator in the spirit of emqtt-bench.
//!
//! - `conn`: open N connections at a rate and hold them;
//! - `pubsub`: P publishers and S subscribers on one topic (fan-in with S = 1, fan-out with
//!   P = 1), flat out or at a fixed total rate, counting what subscribers receive; with a rate
//!   it is the latency test: every payload carries its send time and subscribers record the
//!   delay in an HDR histogram. Subscribers may connect to another port (another node of a
//!   cluster) than publishers;
//! - `takeover`: one persistent client id connecting alternately to two ports (two nodes), each
//!   connection taking the session over from the previous one; CONNECT-to-CONNACK percentiles;
//! - `null`: not a generator but the "null broker" (`null.rs`) that measures the generator's
//!   own ceiling.
//!
//! Every run is bounded in time. A progress line goes to stderr each second; the summary is one
//! JSON object on stdout.

mod client;
mod null;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use ntex_bytes::{ByteString, Bytes};
use serde_json::json;
use tokio::sync::Semaphore;

use client::{Incoming, Login, Version};

#[derive(Parser)]
#[command(name = "realmq-bench", about = "MQTT load generator")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Open connections at a rate and hold them.
    Conn(ConnArgs),
    /// Publishers and subscribers on one topic.
    Pubsub(PubSubArgs),
    /// One persistent session taken over back and forth between two ports.
    Takeover(TakeoverArgs),
    /// Serve as the null broker (until killed).
    Null {
        #[arg(long)]
        listen: SocketAddr,
        /// Also serve MQTT over TLS here, with `--cert` and `--key`.
        #[arg(long, requires_all = ["cert", "key"])]
        tls_listen: Option<SocketAddr>,
        #[arg(long)]
        cert: Option<std::path::PathBuf>,
        #[arg(long)]
        key: Option<std::path::PathBuf>,
    },
}

#[derive(Args, Clone)]
struct TakeoverArgs {
    #[command(flatten)]
    common: Common,
    /// The port every other connection goes to.
    #[arg(long)]
    other_port: u16,
    #[arg(long, default_value_t = 500)]
    rounds: usize,
}

#[derive(Args, Clone)]
struct Common {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, env = "REALMQ_BENCH_PORT", default_value_t = 1883)]
    port: u16,
    #[arg(long, value_enum, default_value = "3")]
    version: Version,
    /// Client id pattern; %i is the client index.
    #[arg(long, default_value = "bench-%i")]
    client_id: String,
    /// User name pattern (%i); none by default.
    #[arg(long)]
    username: Option<String>,
    /// Password pattern (%i).
    #[arg(long)]
    password: Option<String>,
    /// Local addresses to connect from, round robin (e.g. 127.0.0.1,127.0.0.2), to open more
    /// than 64k connections.
    #[arg(long, value_delimiter = ',')]
    source: Vec<IpAddr>,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Connect over TLS, trusting the CA certificate(s) in this PEM file.
    #[arg(long, env = "REALMQ_BENCH_CAFILE")]
    cafile: Option<std::path::PathBuf>,
}

#[derive(Args, Clone)]
struct ConnArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open.
    #[arg(short = 'c', long, default_value_t = 1000)]
    clients: usize,
    /// Connections opened per second (0 = as fast as possible).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
}

#[derive(Args, Clone)]
struct PubSubArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    #[arg(long, default_value_t = 1)]
    subscribers: usize,
    /// Topic pattern for publishers (%i is the publisher index).
    #[arg(long, default_value = "bench/t")]
    topic: String,
    /// Filter subscribers subscribe to.
    #[arg(long, default_value = "bench/t")]
    filter: String,
    /// Port subscribers connect to (default: `--port`), e.g. another node of a cluster.
    #[arg(long)]
    sub_port: Option<u16>,
    #[arg(long, default_value_t = 0)]
    qos: u8,
    /// Payload bytes (at least 8: the send time).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Total messages per second over all publishers (0 = flat out).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Seconds excluded from the figures at the start.
    #[arg(long, default_value_t = 1)]
    warmup: u64,
}

fn pattern(p: &str, i: usize) -> String {
    p.replace("%i", &i.to_string())
}

fn target(c: &Common) -> anyhow::Result<SocketAddr> {
    (c.host.as_str(), c.port)
        .to_socket_addrs()?
        .next()
        .context("host did not resolve")
}

/// The TLS client configuration from `--cafile`, loaded once in `main`.
static TLS: std::sync::OnceLock<std::sync::Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();

fn login(c: &Common, i: usize, role: &str) -> Login {
    Login {
        tls: TLS.get().cloned(),
        version: c.version,
        client_id: format!("{}-{role}", pattern(&c.client_id, i)),
        username: c.username.as_deref().map(|u| pattern(u, i)),
        password: c.password.as_deref().map(|p| pattern(p, i)),
        keep_alive: 300,
        clean: true,
    }
}

fn source(c: &Common, i: usize) -> Option<IpAddr> {
    (!c.source.is_empty()).then(|| c.source[i % c.source.len()])
}

/// Prints `label: rate/s (total)` for each counter every second until `stop`.
fn progress(
    counters: Vec<(&'static str, Arc<AtomicU64>)>,
    errors: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        let mut last: Vec<u64> = counters
            .iter()
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .collect();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let mut line = String::new();
            for (i, (label, c)) in counters.iter().enumerate() {
                let now = c.load(Ordering::Relaxed);
                line.push_str(&format!("{label} {}/s ({now})  ", now - last[i]));
                last[i] = now;
            }
            eprintln!("{line}errors {}", errors.load(Ordering::Relaxed));
        }
    });
}

async fn conn(args: ConnArgs) -> anyhow::Result<serde_json::Value> {
    let addr = target(&args.common)?;
    let connected = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    progress(
        vec![("connected", connected.clone())],
        errors.clone(),
        stop.clone(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    let pause = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / args.rate as f64));
    let deadline = started + Duration::from_secs(args.common.duration);
    for i in 0..args.clients {
        if Instant::now() > deadline {
            break;
        }
        if let Some(p) = pause {
            let due = started + p * i as u32;
            tokio::time::sleep_until(due.into()).await;
        }
        let (c, connected, errors) = (args.common.clone(), connected.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match client::connect(addr, source(&c, i), &login(&c, i, "c")).await {
                Ok(pair) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    Some((t.elapsed(), pair))
                }
                Err(_) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        }));
    }
    let mut held = Vec::new();
    let mut h = Histogram::<u64>::new(3)?;
    for t in tasks {
        if let Some((latency, pair)) = t.await? {
            h.record(latency.as_micros() as u64).ok();
            held.push(pair);
        }
    }
    let open_s = started.elapsed().as_secs_f64();
    // Hold the connections until the run's end (the driver measures the broker meanwhile).
    tokio::time::sleep_until(deadline.into()).await;
    stop.store(true, Ordering::Relaxed);
    Ok(json!({
        "mode": "conn",
        "connected": held.len(),
        "errors": errors.load(Ordering::Relaxed),
        "open_seconds": open_s,
        "connect_ms": {"p50": h.value_at_quantile(0.5) as f64 / 1e3, "p99": h.value_at_quantile(0.99) as f64 / 1e3, "max": h.max() as f64 / 1e3},
    }))
}

async fn takeover(args: TakeoverArgs) -> anyhow::Result<serde_json::Value> {
    let first = target(&args.common)?;
    let mut second = first;
    second.set_port(args.other_port);
    let login = Login {
        clean: false,
        ..login(&args.common, 0, "roamer")
    };
    let mut h = Histogram::<u64>::new(3)?;
    // The previous connection stays open: each CONNECT takes over a live session.
    let mut previous = client::connect(first, None, &login).await?;
    let started = Instant::now();
    for round in 0..args.rounds {
        let addr = if round % 2 == 0 { second } else { first };
        let t = Instant::now();
        let next = client::connect(addr, None, &login)
            .await
            .with_context(|| format!("takeover {round}"))?;
        h.record(t.elapsed().as_micros() as u64).ok();
        drop(std::mem::replace(&mut previous, next));
    }
    Ok(json!({
        "mode": "takeover",
        "rounds": args.rounds,
        "seconds": started.elapsed().as_secs_f64(),
        "connack_ms": {"p50": h.value_at_quantile(0.5) as f64 / 1e3, "p99": h.value_at_quantile(0.99) as f64 / 1e3, "max": h.max() as f64 / 1e3},
    }))
}

/// Shared state of a pubsub run.
struct Run {
    epoch: Instant,
    measure_from: Instant,
    measure_to: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    measured_sent: AtomicU64,
    measured_received: AtomicU64,
    errors: Arc<AtomicU64>,
    latency: std::sync::Mutex<Histogram<u64>>,
    stop: Arc<AtomicBool>,
}

impl Run {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.measure_from && t < self.measure_to
    }
}

async fn subscriber(
    run: Arc<Run>,
    args: Arc<PubSubArgs>,
    i: usize,
    ready: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let mut addr = target(&args.common)?;
    if let Some(port) = args.sub_port {
        addr.set_port(port);
    }
    let (mut rd, mut wr) =
        client::connect(addr, source(&args.common, i), &login(&args.common, i, "s")).await?;
    wr.subscribe(&args.filter, args.qos).await?;
    loop {
        match rd.next().await? {
            Some(Incoming::SubAck) => break,
            Some(_) => {}
            None => anyhow::bail!("closed before SUBACK"),
        }
    }
    ready.add_permits(1);
    let mut local = Histogram::<u64>::new(3)?;
    let mut pending = 0usize;
    while !run.stop.load(Ordering::Relaxed) {
        let next = tokio::time::timeout(Duration::from_millis(100), rd.next()).await;
        let Ok(item) = next else { continue };
        match item? {
            Some(Incoming::Publish {
                qos,
                packet_id,
                payload,
            }) => {
                let now = Instant::now();
                run.received.fetch_add(1, Ordering::Relaxed);
                if run.in_window(now) {
                    run.measured_received.fetch_add(1, Ordering::Relaxed);
                    if payload.len() >= 8 {
                        let sent = u64::from_le_bytes(payload[..8].try_into().unwrap_or_default());
                        let at = run.epoch + Duration::from_nanos(sent);
                        local
                            .record(now.saturating_duration_since(at).as_micros() as u64)
                            .ok();
                    }
                }
                if let (1 | 2, Some(id)) = (qos, packet_id) {
                    wr.codec.ack(&mut wr.out, qos, id);
                    pending += 1;
                }
            }
            Some(Incoming::PubRel(id)) => {
                wr.codec.ack(&mut wr.out, 4, id);
                pending += 1;
            }
            Some(Incoming::PubRec(_) | Incoming::PubAck | Incoming::SubAck | Incoming::Other) => {}
            Some(Incoming::PubComp) => {}
            None => break,
        }
        // Acks go out in batches: when 64 are due or nothing more is buffered to read.
        if pending >= 64 || (pending > 0 && !rd.has_buffered()) {
            wr.flush().await?;
            pending = 0;
        }
    }
    run.latency.lock().expect("latency lock").add(local).ok();
    Ok(())
}

async fn publisher(run: Arc<Run>, args: Arc<PubSubArgs>, i: usize) -> anyhow::Result<()> {
    let addr = target(&args.common)?;
    let (mut rd, mut wr) =
        client::connect(addr, source(&args.common, i), &login(&args.common, i, "p")).await?;
    let topic = ByteString::from(pattern(&args.topic, i));
    let window = Arc::new(Semaphore::new(if args.qos == 0 {
        0
    } else {
        args.inflight
    }));
    // Acks come back on the read half; each frees a slot in the window.
    let (acks, qos, stop) = (window.clone(), args.qos, run.stop.clone());
    let (rel_tx, mut rel_rx) = tokio::sync::mpsc::unbounded_channel::<u16>();
    tokio::spawn(async move {
        while let Ok(Some(item)) = rd.next().await {
            match item {
                Incoming::PubAck | Incoming::PubComp => acks.add_permits(1),
                Incoming::PubRec(id) if qos == 2 => {
                    let _ = rel_tx.send(id);
                }
                _ => {}
            }
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
    });
    let per_publisher = if args.rate == 0 {
        0.0
    } else {
        args.rate as f64 / args.publishers as f64
    };
    let interval = (per_publisher > 0.0).then(|| Duration::from_secs_f64(1.0 / per_publisher));
    let mut payload = vec![0u8; args.size.max(8)];
    let mut next_id: u16 = 0;
    let mut n: u64 = 0;
    let start = Instant::now();
    while !run.stop.load(Ordering::Relaxed) {
        // Flat out: encode a batch per write; at a rate: one message per tick.
        let batch = if interval.is_some() { 1 } else { 32 };
        if let Some(iv) = interval {
            tokio::time::sleep_until((start + iv * n as u32).into()).await;
        }
        for _ in 0..batch {
            if qos > 0 {
                // Wait for window, answering PUBRECs meanwhile, but never past the end of the run.
                loop {
                    tokio::select! {
                        permit = window.acquire() => {
                            permit?.forget();
                            break;
                        }
                        Some(id) = rel_rx.recv() => {
                            wr.codec.ack(&mut wr.out, 3, id);
                            while let Ok(id) = rel_rx.try_recv() {
                                wr.codec.ack(&mut wr.out, 3, id);
                            }
                            wr.flush().await?;
                        }
                        () = tokio::time::sleep(Duration::from_millis(50)) => {
                            if run.stop.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            while let Ok(id) = rel_rx.try_recv() {
                wr.codec.ack(&mut wr.out, 3, id);
            }
            let now = Instant::now();
            payload[..8].copy_from_slice(&(now - run.epoch).as_nanos().to_le_bytes()[..8]);
            next_id = next_id.checked_add(1).unwrap_or(1);
            wr.codec.publish(
                &mut wr.out,
                &topic,
                args.qos,
                next_id,
                Bytes::copy_from_slice(&payload),
            );
            n += 1;
            run.sent.fetch_add(1, Ordering::Relaxed);
            if run.in_window(now) {
                run.measured_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        wr.flush().await?;
    }
    Ok(())
}

async fn pubsub(args: PubSubArgs) -> anyhow::Result<serde_json::Value> {
    let args = Arc::new(args);
    let epoch = Instant::now();
    let errors = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Subscribers first, all subscribed before any publisher starts.
    let ready = Arc::new(Semaphore::new(0));
    let mut subs = Vec::new();
    // Publishers start together once every subscriber is in; the window excludes the warm-up.
    let start_at = Instant::now() + Duration::from_secs(2);
    let run = Arc::new(Run {
        epoch,
        measure_from: start_at + Duration::from_secs(args.warmup),
        measure_to: start_at + Duration::from_secs(args.common.duration),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        measured_sent: AtomicU64::new(0),
        measured_received: AtomicU64::new(0),
        errors: errors.clone(),
        latency: std::sync::Mutex::new(Histogram::new(3)?),
        stop: stop.clone(),
    });
    // Subscribers run on a thread of their own (pinned with the rest of the generator to its
    // core): as tasks among 100 publishers flat out on one thread, a subscriber got one turn in
    // 101 and read far slower than a broker could deliver, so brokers that drop what a slow
    // subscriber cannot take were measured at the generator's reading speed. On two threads the
    // kernel splits the core between sending and receiving.
    let sub_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sub_spawner = sub_rt.handle().clone();
    let (subs_done, subs_done_rx) = tokio::sync::oneshot::channel::<()>();
    let sub_thread = std::thread::Builder::new()
        .name("subscribers".into())
        .spawn(move || {
            sub_rt.block_on(async {
                let _ = subs_done_rx.await;
            })
        })?;
    for i in 0..args.subscribers {
        let (run, args, ready, errors) = (run.clone(), args.clone(), ready.clone(), errors.clone());
        subs.push(sub_spawner.spawn(async move {
            if let Err(e) = subscriber(run, args, i, ready).await {
                errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("subscriber {i}: {e:#}");
            }
        }));
    }
    tokio::time::timeout(
        Duration::from_secs(30),
        ready.acquire_many(args.subscribers as u32),
    )
    .await
    .context("subscribers did not subscribe within 30 s")??
    .forget();
    let mut pubs = Vec::new();
    for i in 0..args.publishers {
        let (run, args, errors) = (run.clone(), args.clone(), errors.clone());
        pubs.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at.into()).await;
            if let Err(e) = publisher(run, args, i).await {
                errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("publisher {i}: {e:#}");
            }
        }));
    }
    // Live progress from the run's own counters.
    {
        let run = run.clone();
        tokio::spawn(async move {
            let (mut s0, mut r0) = (0, 0);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            while !run.stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (s, r) = (
                    run.sent.load(Ordering::Relaxed),
                    run.received.load(Ordering::Relaxed),
                );
                eprintln!(
                    "sent {}/s ({s})  received {}/s ({r})  errors {}",
                    s - s0,
                    r - r0,
                    run.errors.load(Ordering::Relaxed)
                );
                (s0, r0) = (s, r);
            }
        });
    }
    tokio::time::sleep_until(run.measure_to.into()).await;
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        p.await.ok();
    }
    for s in subs {
        s.await.ok();
    }
    let _ = subs_done.send(());
    let _ = sub_thread.join();
    let window = run
        .measure_to
        .duration_since(run.measure_from)
        .as_secs_f64();
    let h = run.latency.lock().expect("latency lock");
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    Ok(json!({
        "mode": "pubsub",
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "qos": args.qos,
        "size": args.size,
        "rate": args.rate,
        "window_s": window,
        "sent_per_s": run.measured_sent.load(Ordering::Relaxed) as f64 / window,
        "received_per_s": run.measured_received.load(Ordering::Relaxed) as f64 / window,
        "sent_total": run.sent.load(Ordering::Relaxed),
        "received_total": run.received.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "latency_ms": {"p50": ms(0.5), "p99": ms(0.99), "p999": ms(0.999), "max": h.max() as f64 / 1e3, "samples": h.len()},
    }))
}

/// This process's CPU seconds (user + system), from /proc.
fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0)
        })
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let common = match &cli.mode {
        Mode::Conn(a) => Some(&a.common),
        Mode::Pubsub(a) => Some(&a.common),
        Mode::Takeover(a) => Some(&a.common),
        Mode::Null { .. } => None,
    };
    if let Some(ca) = common.and_then(|c| c.cafile.as_ref()) {
        let _ = TLS.set(client::tls_config(ca)?);
    }
    let (cpu0, wall0) = (own_cpu_seconds(), Instant::now());
    // The generator's share of the machine is one core (pin it with taskset): one thread, and
    // for `pubsub` a second one for the subscribers (see `pubsub`).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let summary = rt.block_on(async {
        match cli.mode {
            Mode::Conn(a) => conn(a).await,
            Mode::Pubsub(a) => pubsub(a).await,
            Mode::Takeover(a) => takeover(a).await,
            Mode::Null {
                listen,
                tls_listen,
                cert,
                key,
            } => {
                let tls = match (tls_listen, &cert, &key) {
                    (Some(addr), Some(cert), Some(key)) => {
                        Some((addr, cert.as_path(), key.as_path()))
                    }
                    _ => None,
                };
                null::serve(listen, tls).await.map(|()| json!({}))
            }
        }
    })?;
    let mut summary = summary;
    // How busy the generator itself was: near 1.0 means it, not the broker, may be the limit.
    summary["generator_cpu_share"] =
        json!((own_cpu_seconds() - cpu0) / wall0.elapsed().as_secs_f64());
    println!("{summary}");
    Ok(())
}
