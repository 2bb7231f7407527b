//! What a new user types first: mosquitto_pub / mosquitto_sub, and the rumqttc client library.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Node, WAIT};

fn mosquitto_sub(node: &Node, args: &[&str]) -> std::process::Child {
    Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &node.port().to_string()])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mosquitto_sub (mosquitto-clients) must be installed: make deps")
}

fn mosquitto_pub(node: &Node, args: &[&str]) {
    let status = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &node.port().to_string()])
        .args(args)
        .status()
        .expect("mosquitto_pub (mosquitto-clients) must be installed: make deps");
    assert!(status.success(), "mosquitto_pub {args:?} failed");
}

/// A running `mosquitto_sub -v`, its output lines arriving on a channel.
struct Sub {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Sub {
    /// Subscribes to `#` and returns once the subscription is live: it publishes probes until
    /// one comes back, so no test message can race the SUBSCRIBE.
    fn live(node: &Node, version: &str) -> Sub {
        let mut child = mosquitto_sub(node, &["-V", version, "-t", "#", "-v", "-q", "2"]);
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "mosquitto_sub never became live"
            );
            mosquitto_pub(node, &["-V", version, "-t", "probe", "-m", "p"]);
            if let Ok(l) = lines.recv_timeout(Duration::from_millis(200)) {
                assert_eq!(l, "probe p");
                break;
            }
        }
        // Drain probes still in flight.
        while lines.recv_timeout(Duration::from_millis(200)).is_ok() {}
        Sub { child, lines }
    }

    fn next(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                self.lines
                    .recv_timeout(WAIT)
                    .expect("mosquitto_sub printed too few lines")
            })
            .collect()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mosquitto_sub_sees_mosquitto_pub_at_every_qos_v311_and_v5() {
    let node = Node::start("");
    for version in ["mqttv311", "mqttv5"] {
        let sub = Sub::live(&node, version);
        for qos in ["0", "1", "2"] {
            mosquitto_pub(
                &node,
                &[
                    "-V",
                    version,
                    "-t",
                    &format!("e2e/{version}/{qos}"),
                    "-m",
                    &format!("hello {qos}"),
                    "-q",
                    qos,
                ],
            );
        }
        let got = sub.next(3);
        assert_eq!(
            got,
            vec![
                format!("e2e/{version}/0 hello 0"),
                format!("e2e/{version}/1 hello 1"),
                format!("e2e/{version}/2 hello 2")
            ]
        );
    }
}

/// `mosquitto_pub -q 0` sends PUBLISH and DISCONNECT back to back and closes the socket: the
/// first message a new user sends must never be lost to that race.
#[test]
fn qos0_publish_followed_by_disconnect_is_delivered_every_time() {
    let node = Node::start("");
    let sub = Sub::live(&node, "mqttv311");
    for i in 0..100 {
        mosquitto_pub(
            &node,
            &["-t", &format!("first/{i}"), "-m", &i.to_string(), "-q", "0"],
        );
    }
    let got = sub.next(100);
    let want: Vec<String> = (0..100).map(|i| format!("first/{i} {i}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn rumqttc_client_library_round_trip() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let node = Node::start("");
    let mut opts = MqttOptions::new("rumqttc-sub", "127.0.0.1", node.port());
    opts.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(opts, 10);
    client.subscribe("lib/+", QoS::ExactlyOnce).await.unwrap();
    let publisher = client.clone();
    let got = tokio::time::timeout(WAIT, async move {
        let mut got = Vec::new();
        loop {
            match events.poll().await.expect("event loop") {
                Event::Incoming(Packet::SubAck(_)) => {
                    for q in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                        publisher
                            .publish(format!("lib/{q:?}"), q, false, format!("{q:?}"))
                            .await
                            .unwrap();
                    }
                }
                Event::Incoming(Packet::Publish(p)) => {
                    got.push((
                        p.topic.clone(),
                        p.qos,
                        String::from_utf8_lossy(&p.payload).to_string(),
                    ));
                    if got.len() == 3 {
                        return got;
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .expect("timed out");
    assert_eq!(
        got,
        vec![
            (
                "lib/AtMostOnce".to_string(),
                QoS::AtMostOnce,
                "AtMostOnce".to_string()
            ),
            (
                "lib/AtLeastOnce".to_string(),
                QoS::AtLeastOnce,
                "AtLeastOnce".to_string()
            ),
            (
                "lib/ExactlyOnce".to_string(),
                QoS::ExactlyOnce,
                "ExactlyOnce".to_string()
            ),
        ]
    );
}
