//! Server-initiated closes with a reason: the reason reaches a client that is still sending.
//!
//! Each test sends what makes the broker close the connection (a Receive Maximum violation, an
//! oversized packet, a refused CONNECT) followed at once by far more data than the broker reads
//! before it decides, as a client that does not wait for answers does. A socket closed with
//! unread data resets the connection and the client loses what it had not read yet; the broker
//! must instead deliver the DISCONNECT or CONNACK, then end the stream cleanly.

use std::io::ErrorKind;
use std::time::Duration;

use ntex::codec::{Decoder, Encoder};
use ntex_bytes::{Bytes, BytesMut};
use ntex_mqtt::v3::codec as c3;
use ntex_mqtt::v5;
use ntex_mqtt::v5::codec as c5;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{Node, Raw5, WAIT, connect3, connect5};

/// Bytes a client keeps sending after the packet that makes the broker close: PINGREQs, far
/// more than fit in what the broker reads at once.
fn trailing_pings() -> Vec<u8> {
    [0xC0u8, 0x00].repeat(128 * 1024)
}

/// Writes `bytes` (ignoring a broker that stops reading), then reads to the end. Returns what
/// arrived and how the stream ended: `None` for a clean end of stream, else the error.
async fn send_then_read(mut stream: TcpStream, bytes: &[u8]) -> (BytesMut, Option<ErrorKind>) {
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(bytes).await;
    };
    let read = async {
        let mut got = BytesMut::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match rd.read(&mut chunk).await {
                Ok(0) => return (got, None),
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) => return (got, Some(e.kind())),
            }
        }
    };
    let (_, out) = tokio::time::timeout(WAIT, async { tokio::join!(write, read) })
        .await
        .expect("the broker neither answered nor closed");
    out
}

fn v5_packets(mut bytes: BytesMut) -> Vec<c5::Decoded> {
    let codec = c5::Codec::new();
    codec.set_min_chunk_size(u32::MAX);
    std::iter::from_fn(|| codec.decode(&mut bytes).ok().flatten()).collect()
}

fn v5_disconnect(packets: &[c5::Decoded]) -> Option<c5::DisconnectReasonCode> {
    packets.iter().find_map(|p| match p {
        c5::Decoded::Packet(c5::Packet::Disconnect(d), _) => Some(d.reason_code),
        _ => None,
    })
}

#[tokio::test]
async fn receive_maximum_violation_0x93_reaches_the_client() {
    let node = Node::start("receive_maximum = 2");
    let (c, ack) = Raw5::connect(node.mqtt, connect5("rm")).await;
    assert_eq!(ack.receive_max.get(), 2);
    // Three QoS 2 PUBLISHes with no PUBREL: the third exceeds the Receive Maximum.
    let mut burst = Vec::new();
    for id in 1..=3 {
        let pkt = c5::Publish {
            dup: false,
            retain: false,
            qos: v5::QoS::ExactlyOnce,
            packet_id: std::num::NonZeroU16::new(id),
            topic: "rm/t".into(),
            payload_size: 1,
            properties: Default::default(),
        };
        burst.extend_from_slice(
            &c.encode(c5::Encoded::Publish(pkt, Some(Bytes::from_static(b"x")))),
        );
    }
    burst.extend(trailing_pings());
    let Raw5 { wire, .. } = c;
    let (got, end) = send_then_read(wire.into_stream(), &burst).await;
    let packets = v5_packets(got);
    assert_eq!(
        v5_disconnect(&packets),
        Some(c5::DisconnectReasonCode::ReceiveMaximumExceeded),
        "{packets:?}"
    );
    assert_eq!(end, None, "the stream ends cleanly, not with a reset");
}

#[tokio::test]
async fn packet_too_large_0x95_reaches_the_client() {
    let node = Node::start("max_packet_size = 4096");
    let (c, _) = Raw5::connect(node.mqtt, connect5("big")).await;
    let pkt = c5::Publish {
        dup: false,
        retain: false,
        qos: v5::QoS::AtMostOnce,
        packet_id: None,
        topic: "big/t".into(),
        payload_size: 256 * 1024,
        properties: Default::default(),
    };
    let burst = c.encode(c5::Encoded::Publish(
        pkt,
        Some(Bytes::from(vec![7u8; 256 * 1024])),
    ));
    let Raw5 { wire, .. } = c;
    let (got, end) = send_then_read(wire.into_stream(), &burst).await;
    let packets = v5_packets(got);
    assert_eq!(
        v5_disconnect(&packets),
        Some(c5::DisconnectReasonCode::PacketTooLarge),
        "{packets:?}"
    );
    assert_eq!(end, None, "the stream ends cleanly, not with a reset");
}

/// A refused CONNECT followed at once by more packets (a client pipelining its session set-up):
/// the CONNACK with the refusal arrives, for 5.0, 3.1.1 and a protocol level the broker refuses
/// before any MQTT library sees it.
#[tokio::test]
async fn connack_refusals_reach_a_client_that_pipelines() {
    let node = Node::start_with(&[], "[mqtt]\nsys_interval = 0\n");
    let connect_v5 = {
        let codec = c5::Codec::new();
        let mut out = ntex_bytes::BytePages::default();
        codec
            .encodev(
                c5::Encoded::Packet(c5::Packet::Connect(Box::new(connect5("nobody5")))),
                &mut out,
            )
            .unwrap();
        Bytes::from(out)
    };
    let connect_v3 = {
        let codec = c3::Codec::default();
        let mut out = ntex_bytes::BytePages::default();
        codec
            .encodev(
                c3::Encoded::Packet(c3::Packet::Connect(Box::new(connect3("nobody3", true)))),
                &mut out,
            )
            .unwrap();
        Bytes::from(out)
    };
    // MQTT 3.1 (`MQIsdp`, level 3): refused with 0x01 by the broker itself.
    let connect_v31: &[u8] = &[
        0x10, 0x11, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3c, 0x00,
        0x03, b'o', b'l', b'd',
    ];

    let open = |first: &[u8]| {
        let mut burst = first.to_vec();
        burst.extend(trailing_pings());
        let addr = node.mqtt;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            send_then_read(stream, &burst).await
        }
    };

    let (got, end) = open(&connect_v5).await;
    let packets = v5_packets(got);
    match packets.first() {
        Some(c5::Decoded::Packet(c5::Packet::ConnectAck(ack), _)) => {
            assert_eq!(ack.reason_code, c5::ConnectAckReason::NotAuthorized)
        }
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
    assert_eq!(end, None, "5.0: the stream ends cleanly");

    for (what, first, code) in [
        (
            "3.1.1",
            &connect_v3[..],
            c3::ConnectAckReason::NotAuthorized,
        ),
        (
            "3.1",
            connect_v31,
            c3::ConnectAckReason::UnacceptableProtocolVersion,
        ),
    ] {
        let (mut got, end) = open(first).await;
        let codec = c3::Codec::default();
        match codec.decode(&mut got) {
            Ok(Some(c3::Decoded::Packet(c3::Packet::ConnectAck(ack), _))) => {
                assert_eq!(ack.return_code, code, "{what}")
            }
            other => panic!("{what}: expected CONNACK {code:?}, got {other:?}"),
        }
        assert_eq!(end, None, "{what}: the stream ends cleanly");
    }
}

/// A client taken over while it keeps publishing still reads DISCONNECT 0x8E.
#[tokio::test]
async fn takeover_0x8e_reaches_a_busy_client() {
    let node = Node::start("");
    let (c, _) = Raw5::connect(node.mqtt, connect5("twin")).await;
    let Raw5 { wire, .. } = c;
    let stream = wire.into_stream();
    let flood = {
        let codec = c5::Codec::new();
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let pkt = c5::Publish {
                dup: false,
                retain: false,
                qos: v5::QoS::AtMostOnce,
                packet_id: None,
                topic: "nobody/listens".into(),
                payload_size: 64,
                properties: Default::default(),
            };
            let mut page = ntex_bytes::BytePages::default();
            codec
                .encodev(
                    c5::Encoded::Publish(pkt, Some(Bytes::from(vec![1u8; 64]))),
                    &mut page,
                )
                .unwrap();
            out.extend_from_slice(&Bytes::from(page));
        }
        out
    };
    let busy = tokio::spawn(async move { send_then_read(stream, &flood).await });
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (_twin, ack) = Raw5::connect(node.mqtt, connect5("twin")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    let (got, end) = busy.await.unwrap();
    let packets = v5_packets(got);
    assert_eq!(
        v5_disconnect(&packets),
        Some(c5::DisconnectReasonCode::SessionTakenOver),
        "{} packets",
        packets.len()
    );
    assert_eq!(end, None, "the stream ends cleanly");
}

/// What the 5.0 connection loop answers itself, each with the reason code the specification
/// names: an expired keep-alive (0x8D), a DISCONNECT that tries to keep a session the CONNECT
/// asked to end with the connection (0x82, [MQTT-3.14.2-22]), an AUTH exchange the broker does
/// not offer (0x8C), and a CONNECT that is too large (CONNACK 0x95) or malformed (CONNACK 0x81).
#[tokio::test]
async fn v5_connection_ends_carry_their_reason_codes() {
    let node = Node::start("max_packet_size = 1024");

    let mut pkt = connect5("ka");
    pkt.keep_alive = 1;
    let (mut c, ack) = Raw5::connect(node.mqtt, pkt).await;
    assert_eq!(ack.server_keepalive_sec, None, "no cap configured");
    let started = std::time::Instant::now();
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::KeepAliveTimeout)
    );
    // Enforced (1.5 times the keep-alive), not left to a check that never fires.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    let mut pkt = connect5("expiry");
    pkt.session_expiry_interval_secs = 0;
    let (mut c, _) = Raw5::connect(node.mqtt, pkt).await;
    let mut d = c5::Disconnect::new(c5::DisconnectReasonCode::NormalDisconnection);
    d.session_expiry_interval_secs = Some(300);
    c.send(c5::Packet::Disconnect(d)).await;
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::ProtocolError)
    );

    let (mut c, _) = Raw5::connect(node.mqtt, connect5("auth")).await;
    c.send(c5::Packet::Auth(c5::Auth::default())).await;
    assert_eq!(
        c.expect_disconnect().await,
        Some(c5::DisconnectReasonCode::BadAuthenticationMethod)
    );

    // A CONNECT carrying a 2 KB password against a 1 KB packet limit.
    let mut big = connect5("big");
    big.username = Some("u".into());
    big.password = Some(Bytes::from(vec![b'p'; 2048]));
    let codec = c5::Codec::new();
    let mut out = ntex_bytes::BytePages::default();
    codec
        .encodev(
            c5::Encoded::Packet(c5::Packet::Connect(Box::new(big))),
            &mut out,
        )
        .unwrap();
    let stream = TcpStream::connect(node.mqtt).await.unwrap();
    let (got, _) = send_then_read(stream, &Bytes::from(out)).await;
    match v5_packets(got).first() {
        Some(c5::Decoded::Packet(c5::Packet::ConnectAck(ack), _)) => {
            assert_eq!(ack.reason_code, c5::ConnectAckReason::PacketTooLarge)
        }
        other => panic!("expected CONNACK 0x95, got {other:?}"),
    }

    // A 5.0 CONNECT whose properties hold an identifier no CONNECT may carry (0x01, Payload
    // Format Indicator, belongs to PUBLISH and wills).
    let malformed: &[u8] = &[
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x02, 0x01, 0x01,
        0x00, 0x01, b'm',
    ];
    let stream = TcpStream::connect(node.mqtt).await.unwrap();
    let (got, _) = send_then_read(stream, malformed).await;
    match v5_packets(got).first() {
        Some(c5::Decoded::Packet(c5::Packet::ConnectAck(ack), _)) => {
            assert_eq!(ack.reason_code, c5::ConnectAckReason::MalformedPacket)
        }
        other => panic!("expected CONNACK 0x81, got {other:?}"),
    }

    // The broker still serves 5.0 clients after all of that.
    let (_c, ack) = Raw5::connect(node.mqtt, connect5("after")).await;
    assert_eq!(ack.reason_code, c5::ConnectAckReason::Success);
    assert_eq!(ack.max_packet_size, Some(1024));
}
