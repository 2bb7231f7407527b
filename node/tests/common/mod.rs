//! Test harness: the real `realmq` binary on ephemeral loopback ports, and two kinds of client:
//! rumqttc (an independent client library, for whole flows) and `Raw5` / `Raw3`, which speak
//! exact packets through ntex-mqtt's codecs so tests control packet ids, flags and timing.
#![allow(dead_code)]

pub mod certs;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ntex::codec::{Decoder, Encoder};
use ntex_bytes::{ByteString, Bytes, BytesMut};
use ntex_mqtt::{v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Upper bound for anything a test waits for.
pub const WAIT: Duration = Duration::from_secs(10);

/// A `realmq` process with its own data dir.
pub struct Node {
    child: Child,
    pub mqtt: SocketAddr,
    pub api: SocketAddr,
    /// The optional listeners, when on: MQTT over TLS, WebSocket, secure WebSocket.
    pub mqtts: Option<SocketAddr>,
    pub ws: Option<SocketAddr>,
    pub wss: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
    args: Vec<String>,
}

impl Node {
    /// Anonymous access on, `$SYS` off, plus `extra` TOML lines.
    pub fn start(extra: &str) -> Node {
        Node::start_with(
            &["--allow-anonymous"],
            &format!("[mqtt]\nsys_interval = 0\n{extra}"),
        )
    }

    /// `start("")` with extra environment variables for the process.
    pub fn start_env(env: &[(&str, &str)]) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("realmq.toml"), "[mqtt]\nsys_interval = 0\n")
            .expect("write config");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Node::spawn_with(dir, vec!["--allow-anonymous".into()], env)
    }

    /// Starts the binary with `args` and a config file holding `toml`.
    pub fn start_with(args: &[&str], toml: &str) -> Node {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("realmq.toml");
        std::fs::write(&cfg, toml).expect("write config");
        Node::spawn(dir, args.iter().map(|a| a.to_string()).collect())
    }

    /// Stops the node with SIGTERM and starts it again on the same data directory.
    pub fn restart(self) -> Node {
        let mut old = self;
        assert!(old.terminate().success());
        let dir = tempfile::TempDir::with_prefix("unused").expect("tempdir");
        let (dir, args) = (std::mem::replace(&mut old.dir, dir), old.args.clone());
        drop(old);
        Node::spawn(dir, args)
    }

    fn spawn(dir: tempfile::TempDir, args: Vec<String>) -> Node {
        Node::spawn_with(dir, args, Vec::new())
    }

    fn spawn_with(dir: tempfile::TempDir, args: Vec<String>, env: Vec<(String, String)>) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_realmq"))
            .envs(env)
            .arg("--config")
            .arg(dir.path().join("realmq.toml"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
            .args(["--cluster-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"])
            .args(["--mqtts-addr", "127.0.0.1:0", "--wss-addr", "127.0.0.1:0"])
            .args(&args)
            .env("REALMQ_LOG__FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn realmq");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        // Panics go to stderr: echoed for the test's output, and kept for `logged`.
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                sink.lock().unwrap().push(format!("[stderr] {line}"));
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let started = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .filter(|v| v["message"] == "realmq node started");
                // Kept before the start is reported, so a test sees the line once started.
                sink.lock().unwrap().push(line);
                if let Some(v) = started {
                    let _ = tx.send(v);
                }
            }
        });
        let started = rx
            .recv_timeout(WAIT)
            .expect("node did not report its addresses");
        let addr = |key: &str| -> Option<SocketAddr> { started[key].as_str()?.parse().ok() };
        Node {
            child,
            mqtt: addr("mqtt").expect("mqtt addr"),
            api: addr("api").expect("api addr"),
            mqtts: addr("mqtts"),
            ws: addr("ws"),
            wss: addr("wss"),
            dir,
            log,
            args,
        }
    }

    /// Calls the REST API as root; returns the status and the JSON body.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", self.api);
        let mut req = reqwest::Client::new()
            .request(method.parse().expect("method"), url)
            .basic_auth("root", Some("123456"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("api request");
        let status = res.status().as_u16();
        (status, res.json().await.expect("api answers JSON"))
    }

    pub fn port(&self) -> u16 {
        self.mqtt.port()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `/proc/{pid}/status` memory figure (`VmRSS`, `VmHWM`) in bytes.
    pub fn memory(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("read /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or_else(|| panic!("no {field} in /proc status"));
        kb * 1024
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.report();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    /// For a test that failed: the node's last log lines and, if it is still running (a hang),
    /// where each of its threads is, so a rare failure in CI explains itself.
    fn report(&mut self) {
        let pid = self.child.id();
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        eprintln!("--- node {pid}: last log lines ---");
        for line in log.iter().skip(log.len().saturating_sub(40)) {
            eprintln!("{line}");
        }
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        let stacks = Command::new("timeout")
            .args(["30", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
            .args([
                "-ex",
                "set print frame-arguments none",
                "-ex",
                "thread apply all bt 20",
            ])
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = stacks {
            eprintln!("--- node {pid}: threads ---");
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if line.starts_with("Thread ") || line.starts_with('#') {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Polls `probe` until it is true or `WAIT` passes.
pub async fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Byte transport shared by the raw clients.
pub struct Wire {
    stream: TcpStream,
    buf: BytesMut,
}

impl Wire {
    pub async fn open(addr: SocketAddr) -> Wire {
        Wire {
            stream: TcpStream::connect(addr).await.expect("tcp connect"),
            buf: BytesMut::new(),
        }
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// Next decoded item, `None` once the server closed the connection, panics after `WAIT`.
    /// A PUBLISH comes with its whole payload.
    async fn next<C: Decoder>(&mut self, codec: &C, wait: Duration) -> Option<C::Item>
    where
        C::Error: std::fmt::Debug,
        C::Item: Joined,
    {
        tokio::time::timeout(wait, async {
            let mut publish: Option<C::Item> = None;
            loop {
                if let Some(item) = codec.decode(&mut self.buf).expect("decode") {
                    let item = match publish.take() {
                        Some(mut p) => {
                            p.append(item);
                            p
                        }
                        None => item,
                    };
                    if !item.complete() {
                        publish = Some(item);
                        continue;
                    }
                    return Some(item);
                }
                let mut chunk = [0u8; 16 * 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }

    async fn idle<C: Decoder>(&mut self, codec: &C, wait: Duration) -> Option<C::Item>
    where
        C::Error: std::fmt::Debug,
        C::Item: Joined,
    {
        tokio::time::timeout(wait, self.next(codec, WAIT))
            .await
            .ok()
            .flatten()
    }
}

/// The codecs hand out a PUBLISH that straddles reads as its header plus payload chunks.
pub trait Joined {
    fn complete(&self) -> bool;
    /// Adds a payload chunk to this PUBLISH.
    fn append(&mut self, chunk: Self);
}

macro_rules! joined {
    ($v:ident) => {
        impl Joined for $v::codec::Decoded {
            fn complete(&self) -> bool {
                match self {
                    $v::codec::Decoded::Publish(p, payload, _) => {
                        payload.len() == p.payload_size as usize
                    }
                    _ => true,
                }
            }

            fn append(&mut self, chunk: Self) {
                match (self, chunk) {
                    (
                        $v::codec::Decoded::Publish(_, payload, _),
                        $v::codec::Decoded::PayloadChunk(more, _),
                    ) => {
                        let mut joined = BytesMut::from(&payload[..]);
                        joined.extend_from_slice(&more);
                        *payload = joined.freeze();
                    }
                    (_, other) => panic!("expected a payload chunk, got {other:?}"),
                }
            }
        }
    };
}
joined!(v3);
joined!(v5);

/// A raw MQTT 5 client.
pub struct Raw5 {
    pub wire: Wire,
    pub codec: v5::codec::Codec,
}

pub fn connect5(client_id: &str) -> v5::codec::Connect {
    v5::codec::Connect {
        clean_start: true,
        keep_alive: 60,
        ..Default::default()
    }
    .client_id(client_id.to_string())
}

impl Raw5 {
    pub async fn connect(
        addr: SocketAddr,
        pkt: v5::codec::Connect,
    ) -> (Raw5, v5::codec::ConnectAck) {
        let codec = v5::codec::Codec::new();
        codec.set_min_chunk_size(u32::MAX);
        let mut c = Raw5 {
            wire: Wire::open(addr).await,
            codec,
        };
        c.send(v5::codec::Packet::Connect(Box::new(pkt))).await;
        match c.recv().await {
            Some(v5::codec::Decoded::Packet(v5::codec::Packet::ConnectAck(ack), _)) => (c, *ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, pkt: v5::codec::Packet) {
        self.send_encoded(v5::codec::Encoded::Packet(pkt)).await;
    }

    pub async fn send_encoded(&mut self, item: v5::codec::Encoded) {
        let bytes = self.encode(item);
        self.wire.write_raw(&bytes).await;
    }

    pub fn encode(&self, item: v5::codec::Encoded) -> Bytes {
        let mut out = ntex_bytes::BytePages::default();
        self.codec.encodev(item, &mut out).expect("encode");
        Bytes::from(out)
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: v5::QoS,
        packet_id: u16,
        props: v5::codec::PublishProperties,
    ) {
        let pkt = v5::codec::Publish {
            dup: false,
            retain: false,
            qos,
            packet_id: std::num::NonZeroU16::new(packet_id),
            topic: ByteString::from(topic.to_string()),
            payload_size: payload.len() as u32,
            properties: props,
        };
        self.send_encoded(v5::codec::Encoded::Publish(
            pkt,
            Some(Bytes::copy_from_slice(payload)),
        ))
        .await;
    }

    pub async fn subscribe(
        &mut self,
        packet_id: u16,
        id: Option<u32>,
        filters: &[(&str, v5::codec::SubscriptionOptions)],
    ) -> v5::codec::SubscribeAck {
        self.send(v5::codec::Packet::Subscribe(v5::codec::Subscribe {
            packet_id: std::num::NonZeroU16::new(packet_id).unwrap(),
            id: id.and_then(std::num::NonZeroU32::new),
            user_properties: Vec::new(),
            topic_filters: filters
                .iter()
                .map(|(f, o)| (ByteString::from(f.to_string()), *o))
                .collect(),
        }))
        .await;
        match self.recv().await {
            Some(v5::codec::Decoded::Packet(v5::codec::Packet::SubscribeAck(ack), _)) => ack,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn recv(&mut self) -> Option<v5::codec::Decoded> {
        self.wire.next(&self.codec, WAIT).await
    }

    /// The next packet if one arrives within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<v5::codec::Decoded> {
        self.wire.idle(&self.codec, wait).await
    }

    pub async fn expect_publish(&mut self) -> (v5::codec::Publish, Bytes) {
        match self.recv().await {
            Some(v5::codec::Decoded::Publish(p, payload, _)) => (p, payload),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Waits for the server to close; returns the DISCONNECT reason it sent, if any.
    pub async fn expect_disconnect(&mut self) -> Option<v5::codec::DisconnectReasonCode> {
        let mut reason = None;
        loop {
            match self.recv().await {
                None => return reason,
                Some(v5::codec::Decoded::Packet(v5::codec::Packet::Disconnect(d), _)) => {
                    reason = Some(d.reason_code)
                }
                Some(_) => {}
            }
        }
    }
}

pub fn sub_opts(qos: v5::QoS) -> v5::codec::SubscriptionOptions {
    v5::codec::SubscriptionOptions {
        qos,
        ..Default::default()
    }
}

/// A raw MQTT 3.1.1 client.
pub struct Raw3 {
    pub wire: Wire,
    pub codec: v3::codec::Codec,
}

pub fn connect3(client_id: &str, clean_session: bool) -> v3::codec::Connect {
    v3::codec::Connect {
        clean_session,
        keep_alive: 60,
        ..Default::default()
    }
    .client_id(client_id.to_string())
}

impl Raw3 {
    pub async fn connect(
        addr: SocketAddr,
        pkt: v3::codec::Connect,
    ) -> (Raw3, v3::codec::ConnectAck) {
        let codec = v3::codec::Codec::default();
        codec.set_min_chunk_size(u32::MAX);
        let mut c = Raw3 {
            wire: Wire::open(addr).await,
            codec,
        };
        c.send(v3::codec::Packet::Connect(Box::new(pkt))).await;
        match c.recv().await {
            Some(v3::codec::Decoded::Packet(v3::codec::Packet::ConnectAck(ack), _)) => (c, ack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, pkt: v3::codec::Packet) {
        self.send_encoded(v3::codec::Encoded::Packet(pkt)).await;
    }

    pub async fn send_encoded(&mut self, item: v3::codec::Encoded) {
        let bytes = self.encode(item);
        self.wire.write_raw(&bytes).await;
    }

    pub fn encode(&self, item: v3::codec::Encoded) -> Bytes {
        let mut out = ntex_bytes::BytePages::default();
        self.codec.encodev(item, &mut out).expect("encode");
        Bytes::from(out)
    }

    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: v3::QoS,
        packet_id: u16,
        retain: bool,
    ) {
        let pkt = v3::codec::Publish {
            dup: false,
            retain,
            qos,
            topic: ByteString::from(topic.to_string()),
            packet_id: std::num::NonZeroU16::new(packet_id),
            payload_size: payload.len() as u32,
        };
        self.send_encoded(v3::codec::Encoded::Publish(
            pkt,
            Some(Bytes::copy_from_slice(payload)),
        ))
        .await;
    }

    pub async fn subscribe(
        &mut self,
        packet_id: u16,
        filters: &[(&str, v3::QoS)],
    ) -> Vec<v3::codec::SubscribeReturnCode> {
        self.send(v3::codec::Packet::Subscribe {
            packet_id: std::num::NonZeroU16::new(packet_id).unwrap(),
            topic_filters: filters
                .iter()
                .map(|(f, q)| (ByteString::from(f.to_string()), *q))
                .collect(),
        })
        .await;
        match self.recv().await {
            Some(v3::codec::Decoded::Packet(v3::codec::Packet::SubscribeAck { status, .. }, _)) => {
                status
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub async fn recv(&mut self) -> Option<v3::codec::Decoded> {
        self.wire.next(&self.codec, WAIT).await
    }

    pub async fn recv_within(&mut self, wait: Duration) -> Option<v3::codec::Decoded> {
        self.wire.idle(&self.codec, wait).await
    }

    pub async fn expect_publish(&mut self) -> (v3::codec::Publish, Bytes) {
        match self.recv().await {
            Some(v3::codec::Decoded::Publish(p, payload, _)) => (p, payload),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Waits until the server closes the connection.
    pub async fn expect_closed(&mut self) {
        while self.recv().await.is_some() {}
    }
}
