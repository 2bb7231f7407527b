//! MQTT over WebSocket and secure WebSocket with rumqttc's WebSocket transport (tungstenite,
//! as browser libraries speak it), 3.1.1 and 5.0, and what the upgrade refuses.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::certs::{Ca, client_config, write_ca};
use crate::common::{Node, WAIT};

fn options(id: &str, url: String, port: u16, transport: Transport) -> MqttOptions {
    let mut o = MqttOptions::new(id, url, port);
    o.set_transport(transport)
        .set_keep_alive(Duration::from_secs(30));
    o
}

/// Connects a 3.1.1 client and subscribes to `filter`; returns once SUBACK came.
async fn v3_subscriber(opts: MqttOptions, filter: &str) -> rumqttc::EventLoop {
    let (client, mut events) = AsyncClient::new(opts, 16);
    client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await.expect("connection") {
                Event::Incoming(Packet::SubAck(_)) => return,
                _ => continue,
            }
        }
    })
    .await
    .expect("SUBACK");
    // The client handle stays alive inside the event loop's requests channel.
    std::mem::forget(client);
    events
}

async fn next_publish(events: &mut rumqttc::EventLoop) -> (String, Vec<u8>) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::Publish(p)) = events.poll().await.expect("connection") {
                return (p.topic, p.payload.to_vec());
            }
        }
    })
    .await
    .expect("a publish")
}

async fn v3_publish(opts: MqttOptions, topic: &str, payload: &str) {
    let (client, mut events) = AsyncClient::new(opts, 16);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("connection") {
                return;
            }
        }
    })
    .await
    .expect("PUBACK");
}

async fn v5_publish(opts: rumqttc::v5::MqttOptions, topic: &str, payload: &str) {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    let (client, mut events) = rumqttc::v5::AsyncClient::new(opts, 16);
    client
        .publish(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            payload.to_string(),
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let rumqttc::v5::Event::Incoming(P5::PubAck(_)) =
                events.poll().await.expect("connection")
            {
                return;
            }
        }
    })
    .await
    .expect("PUBACK");
}

#[tokio::test]
async fn mqtt_over_websocket_v311_and_v5() {
    let node = Node::start("");
    let ws = node
        .ws
        .expect("the WebSocket listener is on by default")
        .port();
    let url = format!("ws://127.0.0.1:{ws}/mqtt");

    // A WebSocket subscriber gets what TCP and WebSocket publishers send.
    let mut sub = v3_subscriber(options("ws-sub", url.clone(), ws, Transport::Ws), "ws/#").await;
    let tcp = MqttOptions::new("tcp-pub", "127.0.0.1", node.port());
    v3_publish(tcp, "ws/from-tcp", "a").await;
    assert_eq!(
        next_publish(&mut sub).await,
        ("ws/from-tcp".into(), b"a".to_vec())
    );
    v3_publish(
        options("ws-pub", url.clone(), ws, Transport::Ws),
        "ws/from-ws",
        "b",
    )
    .await;
    assert_eq!(
        next_publish(&mut sub).await,
        ("ws/from-ws".into(), b"b".to_vec())
    );

    // MQTT 5 over WebSocket, to a TCP subscriber.
    let mut tcp_sub = v3_subscriber(
        MqttOptions::new("tcp-sub", "127.0.0.1", node.port()),
        "ws5/#",
    )
    .await;
    let mut o5 = rumqttc::v5::MqttOptions::new("ws-v5", url.clone(), ws);
    o5.set_transport(Transport::Ws);
    v5_publish(o5, "ws5/x", "five").await;
    assert_eq!(
        next_publish(&mut tcp_sub).await,
        ("ws5/x".into(), b"five".to_vec())
    );
}

#[tokio::test]
async fn mqtt_over_secure_websocket() {
    let ca = Ca::new("RealMQ test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.server().write(dir.path(), "server");
    let _ = write_ca(&ca, dir.path(), "ca");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let node = Node::start_with(
        &["--allow-anonymous", "--tls-cert", &cert, "--tls-key", &key],
        "[mqtt]\nsys_interval = 0\n",
    );
    let wss = node
        .wss
        .expect("secure WebSocket is on with a certificate")
        .port();
    let url = format!("wss://localhost:{wss}/mqtt");
    let tls = || Transport::Wss(TlsConfiguration::Rustls(client_config(&ca)));
    let mut sub = v3_subscriber(options("wss-sub", url.clone(), wss, tls()), "wss/#").await;
    v3_publish(
        options("wss-pub", url.clone(), wss, tls()),
        "wss/1",
        "secure",
    )
    .await;
    assert_eq!(
        next_publish(&mut sub).await,
        ("wss/1".into(), b"secure".to_vec())
    );
    let mut o5 = rumqttc::v5::MqttOptions::new("wss-v5", url, wss);
    o5.set_transport(tls());
    v5_publish(o5, "wss/2", "secure5").await;
    assert_eq!(
        next_publish(&mut sub).await,
        ("wss/2".into(), b"secure5".to_vec())
    );
}

/// The HTTP status line the WebSocket port answers `request` with.
async fn status_line(port: u16, request: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_upgrade_refuses_what_is_not_mqtt_over_websocket() {
    let node = Node::start("");
    let ws = node.ws.unwrap().port();
    let upgrade = |path: &str, protocol: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n"
        )
    };
    let ok = status_line(ws, &upgrade("/mqtt", "Sec-WebSocket-Protocol: mqtt\r\n")).await;
    assert!(ok.contains(" 101 "), "{ok}");
    let other_path = status_line(ws, &upgrade("/other", "")).await;
    assert!(other_path.contains(" 404 "), "{other_path}");
    let other_protocol =
        status_line(ws, &upgrade("/mqtt", "Sec-WebSocket-Protocol: chat\r\n")).await;
    assert!(other_protocol.contains(" 400 "), "{other_protocol}");
    let plain = status_line(ws, "GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
    assert!(plain.contains(" 400 "), "{plain}");
}
