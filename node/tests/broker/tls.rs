//! MQTT over TLS and HTTPS for the REST API, with the clients users run: mosquitto_pub /
//! mosquitto_sub with `--cafile` (and `--cert`/`--key` for client certificates), and curl. The
//! certificates are made by each test (`common::certs`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::json;

use crate::common::certs::{Ca, write_ca};
use crate::common::{Node, WAIT, eventually};

/// A node with `tls` flags and its certificate files in the node's own directory.
struct TlsNode {
    node: Node,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn start(extra_args: &[&str], toml: &str) -> (TlsNode, Ca) {
    let ca = Ca::new("RealMQ test CA");
    let dir = tempfile::tempdir().unwrap().keep();
    let ca_path = write_ca(&ca, &dir, "ca");
    let (cert, key) = ca.server().write(&dir, "server");
    let mut args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".into(),
        key.display().to_string(),
    ];
    args.extend(
        extra_args
            .iter()
            .map(|a| a.replace("{ca}", &ca_path.display().to_string())),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Node::start_with(&args, toml);
    (
        TlsNode {
            node,
            ca: ca_path,
            cert,
            key,
        },
        ca,
    )
}

/// `mosquitto_pub` / `mosquitto_sub` to `localhost:port` with `args`, bounded in time.
fn mosquitto(tool: &str, port: u16, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["10", tool, "-h", "localhost", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto-clients must be installed: make deps")
}

/// A `mosquitto_sub -d` waiting for `count` messages: `start` returns once its SUBACK came,
/// `lines` the messages once they all came.
struct Subscriber {
    child: std::process::Child,
    messages: std::sync::mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, args: &[&str], count: usize) -> Subscriber {
        let mut child = Command::new("timeout")
            .args([
                "15",
                "stdbuf",
                "-oL",
                "mosquitto_sub",
                "-h",
                "localhost",
                "-p",
                &port.to_string(),
            ])
            .args(["-d", "-v", "-C", &count.to_string()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("mosquitto-clients must be installed: make deps");
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (tx, messages) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                // `-d` prints the client's packets as "Client ... received SUBACK" lines.
                if line.starts_with("Client ") {
                    if line.contains("received SUBACK") {
                        let _ = ready_tx.send(());
                    }
                } else if !line.starts_with("Subscribed (mid") {
                    let _ = tx.send(line);
                }
            }
        });
        ready
            .recv_timeout(WAIT)
            .expect("mosquitto_sub did not subscribe");
        Subscriber { child, messages }
    }

    /// The messages, once mosquitto_sub exited and its output was read to the end.
    fn lines(mut self) -> Vec<String> {
        let _ = self.child.wait();
        let mut out = Vec::new();
        while let Ok(line) = self.messages.recv_timeout(WAIT) {
            out.push(line);
        }
        out
    }
}

#[tokio::test]
async fn mosquitto_clients_over_tls_v311_and_v5() {
    let (t, _ca) = start(&["--allow-anonymous"], "[mqtt]\nsys_interval = 0\n");
    let port = t
        .node
        .mqtts
        .expect("the TLS listener is on with a certificate")
        .port();
    assert!(t.node.wss.is_some(), "so is secure WebSocket");
    let ca = t.ca.display().to_string();
    for version in ["mqttv311", "mqttv5"] {
        let sub = Subscriber::start(
            port,
            &[
                "--cafile",
                &ca,
                "-V",
                version,
                "-t",
                "tls/#",
                "-i",
                &format!("s-{version}"),
            ],
            2,
        );
        let out = mosquitto(
            "mosquitto_pub",
            port,
            &[
                "--cafile",
                &ca,
                "-V",
                version,
                "-t",
                "tls/secure",
                "-m",
                "over-tls",
                "-q",
                "1",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        // Plain TCP clients and TLS clients share the broker.
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &t.node.port().to_string()])
            .args(["-V", version, "-t", "tls/plain", "-m", "over-tcp"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got = sub.lines();
        assert_eq!(
            got,
            ["tls/secure over-tls", "tls/plain over-tcp"],
            "{version}"
        );
    }

    // A client that does not trust the server's CA refuses the handshake.
    let other = Ca::new("someone else");
    let other_ca = write_ca(&other, t.cert.parent().unwrap(), "other-ca");
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &["--cafile", other_ca.to_str().unwrap(), "-t", "x", "-m", "x"],
    );
    assert!(
        !out.status.success(),
        "an untrusted server certificate was accepted"
    );
    // Plain MQTT on the TLS port gets no CONNACK.
    let out = mosquitto("mosquitto_pub", port, &["-t", "x", "-m", "x"]);
    assert!(
        !out.status.success(),
        "plain MQTT was served on the TLS port"
    );
}

async fn device(node: &Node, key: &str, name: &str) -> String {
    let body = json!({"name": name, "product_key": key, "username": name, "password": "pw-1",
        "mqtt_client_id": format!("c-{name}")});
    let (s, b) = node.api("POST", "/api/v1/devices", Some(body)).await;
    assert_eq!(s, 200, "{b}");
    format!("c-{name}")
}

#[tokio::test]
async fn client_certificates_authenticate_devices() {
    let (t, ca) = start(&["--tls-client-ca", "{ca}"], "[mqtt]\nsys_interval = 0\n");
    let port = t.node.mqtts.unwrap().port();
    let dir = t.cert.parent().unwrap().to_path_buf();
    let (s, b) = t
        .node
        .api("POST", "/api/v1/products", Some(json!({"name": "certs"})))
        .await;
    assert_eq!(s, 200, "{b}");
    let key = b["data"]["product_key"].as_str().unwrap().to_string();
    let sub_id = device(&t.node, &key, "meter-sub").await;
    let pub_id = device(&t.node, &key, "meter-pub").await;
    let (sub_cert, sub_key) = ca.client("meter-sub").write(&dir, "meter-sub");
    let (pub_cert, pub_key) = ca.client("meter-pub").write(&dir, "meter-pub");
    let cafile = t.ca.display().to_string();
    let with_cert = |cert: &Path, key: &Path| {
        vec![
            "--cafile".to_string(),
            cafile.clone(),
            "--cert".into(),
            cert.display().to_string(),
            "--key".into(),
            key.display().to_string(),
        ]
    };
    let mut args = with_cert(&sub_cert, &sub_key);
    args.extend(["-i".into(), sub_id, "-t".into(), "meters/#".into()]);
    let sub = Subscriber::start(
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        2,
    );

    // The certificate is the device's credential: no user name or password needed.
    let mut args = with_cert(&pub_cert, &pub_key);
    args.extend(["-i".into(), pub_id.clone(), "-t".into(), "meters/1".into()]);
    args.extend([
        "-m".into(),
        "by-certificate".into(),
        "-q".into(),
        "1".into(),
    ]);
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{out:?}");

    // A certificate names one device: claiming another user name is refused.
    let mut args = with_cert(&pub_cert, &pub_key);
    args.extend(["-i".into(), pub_id.clone(), "-u".into(), "meter-sub".into()]);
    args.extend(["-t".into(), "meters/1".into(), "-m".into(), "x".into()]);
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        !out.status.success(),
        "a certificate for meter-pub logged in as meter-sub"
    );

    // A certificate from another CA ends the handshake.
    let rogue = Ca::new("rogue CA").client("meter-pub");
    let (rogue_cert, rogue_key) = rogue.write(&dir, "rogue");
    let mut args = with_cert(&rogue_cert, &rogue_key);
    args.extend(["-i".into(), pub_id.clone(), "-t".into(), "meters/1".into()]);
    args.extend(["-m".into(), "rogue".into()]);
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        !out.status.success(),
        "a certificate from an unknown CA was accepted"
    );

    // Without a certificate, the password still works over TLS; a wrong one does not.
    let by_password = |password: &str, payload: &str| {
        let args = [
            "--cafile",
            &cafile,
            "-i",
            &pub_id,
            "-u",
            "meter-pub",
            "-P",
            password,
        ];
        let message = ["-t", "meters/2", "-m", payload, "-q", "1"];
        mosquitto("mosquitto_pub", port, &[&args[..], &message].concat())
    };
    let out = by_password("pw-1", "by-password");
    assert!(out.status.success(), "{out:?}");
    let out = by_password("nope", "x");
    assert!(
        !out.status.success(),
        "a wrong password was accepted over TLS"
    );

    assert_eq!(
        sub.lines(),
        ["meters/1 by-certificate", "meters/2 by-password"]
    );
}

#[tokio::test]
async fn renewed_certificates_apply_without_dropping_connections() {
    let (t, _ca) = start(&["--allow-anonymous"], "[mqtt]\nsys_interval = 0\n");
    let port = t.node.mqtts.unwrap().port();
    let dir = t.cert.parent().unwrap().to_path_buf();
    let old_ca = t.ca.display().to_string();
    // Connected with the first certificate, and staying connected through both renewals.
    let sub = Subscriber::start(port, &["--cafile", &old_ca, "-t", "renew/#", "-q", "1"], 2);

    // Renewal by replacing the files: picked up by the watcher.
    let second = Ca::new("second CA");
    let second_ca = write_ca(&second, &dir, "second-ca");
    let issued = second.server();
    std::fs::write(&t.key, &issued.key).unwrap();
    std::fs::write(&t.cert, &issued.cert).unwrap();
    eventually("the changed files are reloaded", || {
        t.node.logged("tls certificates reloaded")
    })
    .await;
    let second_ca = second_ca.display().to_string();
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &[
            "--cafile",
            &second_ca,
            "-t",
            "renew/1",
            "-m",
            "after-file-change",
            "-q",
            "1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &["--cafile", &old_ca, "-t", "x", "-m", "x"],
    );
    assert!(
        !out.status.success(),
        "new connections still got the old certificate"
    );

    // Renewal announced with SIGHUP.
    let third = Ca::new("third CA");
    let third_ca = write_ca(&third, &dir, "third-ca").display().to_string();
    let issued = third.server();
    std::fs::write(&t.key, &issued.key).unwrap();
    std::fs::write(&t.cert, &issued.cert).unwrap();
    let before = t.node.log.lock().unwrap().len();
    let status = Command::new("kill")
        .args(["-HUP", &t.node.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    eventually("SIGHUP reloads", || {
        t.node.log.lock().unwrap()[before..]
            .iter()
            .any(|l| l.contains("tls certificates reloaded") && l.contains("SIGHUP"))
    })
    .await;
    let out = mosquitto(
        "mosquitto_pub",
        port,
        &[
            "--cafile",
            &third_ca,
            "-t",
            "renew/2",
            "-m",
            "after-sighup",
            "-q",
            "1",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sub.lines(),
        ["renew/1 after-file-change", "renew/2 after-sighup"],
        "the subscriber connected before both renewals kept its connection"
    );
}

#[tokio::test]
async fn a_bad_certificate_stops_the_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_realmq"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--mqtt-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"])
        .args(["--cluster-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"])
        .args(["--mqtts-addr", "127.0.0.1:0", "--wss-addr", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tls_cert"), "{err}");
    // A key without a certificate is a configuration error.
    let out = Command::new(env!("CARGO_BIN_EXE_realmq"))
        .arg("--tls-key")
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls_cert and tls_key"),
        "{out:?}"
    );
}

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl must be installed: make deps");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn rest_api_over_https() {
    let (t, _ca) = start(&["--api-tls"], "[mqtt]\nsys_interval = 0\n");
    let url = format!("https://localhost:{}/api/v1", t.node.api.port());
    let ca = t.ca.display().to_string();
    let (ok, body) = curl(&["--cacert", &ca, &format!("{url}/health")]);
    assert!(ok, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 0, "{body}");
    // Credentials travel inside TLS; the answers are the same as over HTTP.
    let (ok, body) = curl(&[
        "--cacert",
        &ca,
        "-u",
        "root:123456",
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "-d",
        r#"{"name":"over-https"}"#,
        &format!("{url}/products"),
    ]);
    assert!(ok, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["code"], 0, "{body}");
    let (ok, body) = curl(&["--cacert", &ca, &format!("{url}/products")]);
    assert!(ok);
    assert!(body.contains("\"code\""), "{body}");
    // Plain HTTP on the HTTPS port is not served.
    let (ok, _) = curl(&[&format!(
        "http://127.0.0.1:{}/api/v1/health",
        t.node.api.port()
    )]);
    assert!(!ok, "plain HTTP answered on the HTTPS port");
}
