//! Abuse over raw sockets, as a hostile or broken client on the network would try it: a packet
//! claiming 256 MB, a CONNECT trickled a byte at a time, a client that never reads, ten thousand
//! connections opened and dropped at once. Each time the broker stays up, its memory stays
//! bounded, and a bystander client keeps getting its messages.

use std::time::{Duration, Instant};

use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::{v3, v5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Node, Raw3, Raw5, Wire, connect3, connect5, sub_opts};

/// A v3.1.1 CONNECT with client id `x`, clean session, keep-alive 60.
const CONNECT: &[u8] = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x";

/// A subscriber on `by/#`; `check` proves it still gets messages published by a fresh client.
struct Bystander(Raw5);

impl Bystander {
    async fn new(node: &Node) -> Bystander {
        let (mut c, _) = Raw5::connect(node.mqtt, connect5("bystander")).await;
        c.subscribe(1, None, &[("by/#", sub_opts(v5::QoS::AtMostOnce))])
            .await;
        Bystander(c)
    }

    async fn check(&mut self, node: &Node, what: &str) {
        let (mut p, ack) = Raw3::connect(node.mqtt, connect3("by-publisher", true)).await;
        assert_eq!(
            ack.return_code,
            c3::ConnectAckReason::ConnectionAccepted,
            "{what}"
        );
        p.publish("by/x", what.as_bytes(), v3::QoS::AtMostOnce, 0, false)
            .await;
        let (m, body) = self.0.expect_publish().await;
        assert_eq!((&*m.topic, &body[..]), ("by/x", what.as_bytes()));
    }
}

/// Waits until the server closes `s`, reading and discarding; panics after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{what}: still open after {within:?}");
}

#[tokio::test]
async fn a_packet_claiming_256_mb_is_refused_without_allocating_it() {
    let node = Node::start("");
    let mut by = Bystander::new(&node).await;
    let before = node.memory("VmRSS");
    let mut w = Wire::open(node.mqtt).await;
    w.write_raw(CONNECT).await;
    let mut connack = [0u8; 4];
    w.stream_mut().read_exact(&mut connack).await.unwrap();
    assert_eq!(connack, [0x20, 2, 0, 0]);
    // PUBLISH with the largest remaining length MQTT can express (268,435,455 bytes), then 1 MB
    // of it: the broker must close the connection, not buffer its way towards 256 MB.
    w.write_raw(b"\x30\xff\xff\xff\x7f").await;
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..16 {
        if w.stream_mut().write_all(&chunk).await.is_err() {
            break;
        }
    }
    closed_within(w.stream_mut(), Duration::from_secs(10), "256 MB claim").await;
    let grown = node.memory("VmRSS").saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
    by.check(&node, "after the 256 MB claim").await;
}

#[tokio::test]
async fn a_connect_trickled_byte_by_byte_is_cut_at_the_connect_timeout() {
    let node = Node::start("connect_timeout = 2");
    let mut by = Bystander::new(&node).await;
    let mut s = TcpStream::connect(node.mqtt).await.unwrap();
    let started = Instant::now();
    // One byte every 400 ms would take 6 s for the whole CONNECT: the deadline runs from the
    // accept, not from the last byte.
    for b in CONNECT {
        if s.write_all(&[*b]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    closed_within(&mut s, Duration::from_secs(3), "slowloris CONNECT").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        started.elapsed()
    );
    by.check(&node, "after the slowloris").await;
}

#[tokio::test]
async fn a_client_that_never_reads_holds_bounded_memory() {
    let node = Node::start_with(
        &["--allow-anonymous"],
        "[mqtt]\nsys_interval = 0\nmax_queued_messages = 1000\n",
    );
    let mut by = Bystander::new(&node).await;
    // Subscribes to the flood, then never reads its socket again.
    let (mut stuck, _) = Raw3::connect(node.mqtt, connect3("stuck", true)).await;
    stuck.subscribe(1, &[("flood", v3::QoS::AtLeastOnce)]).await;
    let before = node.memory("VmRSS");
    let (mut p, _) = Raw3::connect(node.mqtt, connect3("flooder", true)).await;
    let payload = vec![b'x'; 1024];
    // 64 MB at QoS 0: what the stuck client cannot take is dropped per policy.
    for _ in 0..(64 * 1024) {
        p.publish("flood", &payload, v3::QoS::AtMostOnce, 0, false)
            .await;
    }
    by.check(&node, "during the flood").await;
    let grown = node.memory("VmRSS").saturating_sub(before);
    assert!(
        grown < 48 << 20,
        "RSS grew by {} MB for a client that reads nothing",
        grown >> 20
    );
    drop(stuck);
}

#[tokio::test]
async fn ten_thousand_connections_opened_and_dropped_at_once() {
    let node = Node::start("");
    let mut by = Bystander::new(&node).await;
    let mut opened = Vec::with_capacity(10_000);
    for i in 0..10_000 {
        match TcpStream::connect(node.mqtt).await {
            Ok(mut s) => {
                // Every other one starts a CONNECT it never finishes.
                if i % 2 == 0 {
                    let _ = s.write_all(&CONNECT[..5]).await;
                }
                opened.push(s);
            }
            Err(e) => panic!("connection {i} refused: {e}"),
        }
    }
    drop(opened);
    by.check(&node, "after 10,000 connections dropped").await;
    let (status, _) = node.api("GET", "/api/v1/health", None).await;
    assert_eq!(status, 200);
}

/// The inputs the fuzzer found (a PUBLISH whose topic, 3.1.1, or properties, 5.0, run past its
/// remaining length; ntex-mqtt's decoders overflow on them) close their own connection, and
/// only it: the node never panics over them, and a bystander keeps getting messages.
#[tokio::test]
async fn publish_headers_past_their_length_close_only_their_connection() {
    let node = Node::start("");
    let mut by = Bystander::new(&node).await;
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mqtt");
    for file in [
        "ntex-mqtt-v3-publish-topic-past-remaining-length.bin",
        "ntex-mqtt-v5-publish-properties-past-remaining-length.bin",
    ] {
        let mut s = TcpStream::connect(node.mqtt).await.unwrap();
        s.write_all(&std::fs::read(corpus.join(file)).unwrap())
            .await
            .unwrap();
        closed_within(&mut s, Duration::from_secs(5), file).await;
        by.check(&node, file).await;
    }
    assert!(!node.logged("panicked"), "the node panicked");
}
