//! Backpressure: a broker that cannot deliver as fast as publishers send reads them only as fast
//! as it delivers, instead of reading messages to drop them at a full subscriber queue; and a
//! subscriber that stops reading neither stalls unrelated traffic nor its publishers for long.

use std::time::{Duration, Instant};

use ntex_bytes::Bytes;
use ntex_mqtt::v3;
use ntex_mqtt::v3::codec as c3;
use tokio::io::AsyncWriteExt;

use crate::common::{Node, Raw3, WAIT, connect3};

/// The value of one metric line of `GET /metrics`.
async fn metric(node: &Node, line: &str) -> f64 {
    let body = reqwest::get(format!("http://{}/metrics", node.api))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    body.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// `n` QoS 0 PUBLISHes to `topic` in one buffer, each payload (`size` bytes) starting with its
/// sequence number.
fn burst(c: &Raw3, topic: &str, n: u32, size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let pkt = c3::Publish {
            dup: false,
            retain: false,
            qos: v3::QoS::AtMostOnce,
            topic: topic.into(),
            packet_id: None,
            payload_size: size as u32,
        };
        let mut payload = vec![0u8; size];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        let payload = Bytes::from(payload);
        out.extend_from_slice(&c.encode(c3::Encoded::Publish(pkt, Some(payload))));
    }
    out
}

#[tokio::test]
async fn a_flat_out_publisher_is_slowed_to_what_its_subscriber_takes() {
    // A queue of 200 messages against a burst of 50,000 sent in one go: without backpressure
    // the broker reads the burst as fast as it arrives and drops most of it at the queue.
    let node = Node::start("max_queued_messages = 200");
    let (mut sub, _) = Raw3::connect(node.mqtt, connect3("bp-sub", true)).await;
    sub.subscribe(1, &[("bp/t", v3::QoS::AtMostOnce)]).await;
    let (publ, _) = Raw3::connect(node.mqtt, connect3("bp-pub", true)).await;
    const N: u32 = 50_000;
    let bytes = burst(&publ, "bp/t", N, 4);
    let mut stream = publ.wire.into_stream();
    let writer = tokio::spawn(async move {
        stream.write_all(&bytes).await.expect("write");
        stream
    });
    let mut next = 0u32;
    while next < N {
        match sub.recv().await {
            Some(c3::Decoded::Publish(_, payload, _)) => {
                let seq = u32::from_be_bytes(payload[..4].try_into().unwrap());
                assert_eq!(seq, next, "in order and none missing");
                next += 1;
            }
            Some(_) => {}
            None => panic!("closed after {next} messages"),
        }
    }
    let _publisher = writer.await.unwrap();
    assert_eq!(
        metric(
            &node,
            "realmq_messages_dropped_total{reason=\"queue_full\"}"
        )
        .await,
        0.0
    );
    assert!(metric(&node, "realmq_publisher_pauses_total").await > 0.0);
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_holds_back_no_one_for_long() {
    let node = Node::start("max_queued_messages = 200");
    // `stuck` subscribes and never reads again; `fast` reads the same topic.
    let (mut stuck, _) = Raw3::connect(node.mqtt, connect3("stuck", true)).await;
    stuck
        .subscribe(1, &[("shared/t", v3::QoS::AtMostOnce)])
        .await;
    let (mut fast, _) = Raw3::connect(node.mqtt, connect3("fast", true)).await;
    fast.subscribe(1, &[("shared/t", v3::QoS::AtMostOnce)])
        .await;
    // Unrelated traffic on another topic, and its subscriber.
    let (mut other, _) = Raw3::connect(node.mqtt, connect3("other", true)).await;
    other
        .subscribe(1, &[("other/t", v3::QoS::AtMostOnce)])
        .await;

    // The publisher on the shared topic sends 1 KB messages flat out for the whole test, so
    // `stuck`'s socket buffers (a few MB on loopback) fill within the first second.
    let (publ, _) = Raw3::connect(node.mqtt, connect3("pub-shared", true)).await;
    let bytes = burst(&publ, "shared/t", 2_000, 1024);
    let mut stream = publ.wire.into_stream();
    let flood = tokio::spawn(async move {
        loop {
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });

    // Unrelated traffic goes through at once while `stuck`'s queue is full.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut unrelated, _) = Raw3::connect(node.mqtt, connect3("pub-other", true)).await;
    let started = Instant::now();
    for i in 0..100u32 {
        unrelated
            .publish("other/t", &i.to_be_bytes(), v3::QoS::AtMostOnce, 0, false)
            .await;
    }
    for i in 0..100u32 {
        let (_, payload) = other.expect_publish().await;
        assert_eq!(payload.as_ref(), i.to_be_bytes());
    }
    assert!(
        started.elapsed() < WAIT,
        "unrelated traffic waited {:?}",
        started.elapsed()
    );

    // The shared topic's publisher is paused at most briefly: `fast` keeps receiving, far
    // more than `stuck`'s queue and socket buffers hold (20,000 messages are 20 MB).
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if let Some(c3::Decoded::Publish(..)) = fast.recv().await {
            got += 1;
        }
    }
    assert!(
        got > 20_000,
        "the publisher was held back: {got} messages in 3 s"
    );
    flood.abort();
}
