//! The binary's command line: config errors, generate-config, flags over environment.

use std::process::Command;

fn realmq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_realmq"))
}

#[test]
fn invalid_config_exits_non_zero_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "node_id = 0\nmqtt_addr = \"nowhere\"\nws_addr = \"web\"\ntls_key = \"k.pem\"\n\
         [mqtt]\nmax_inflight = 0\n\
         [[webhook]]\nurl = \"ftp://x\"\nevents = []\ntopic = \"a/#/b\"\n",
    )
    .unwrap();
    let out = realmq().arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "node_id",
        "mqtt_addr",
        "max_inflight",
        "ws_addr",
        "tls_cert and tls_key",
        "webhook[0].url",
        "webhook[0].events",
        "webhook[0].topic",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    assert!(!err.contains("panicked"), "{err}");

    let out = realmq().env("REALMQ_NODE_ID", "many").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("node_id")
    );
}

#[test]
fn generate_config_prints_the_commented_defaults() {
    let out = realmq().arg("generate-config").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[mqtt]") && text.contains("max_inflight"));
    // What it prints is a valid config file.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("realmq.toml");
    std::fs::write(&cfg, &text).unwrap();
    let out = realmq()
        .arg("--config")
        .arg(&cfg)
        .args(["--mqtt-addr", "bad"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("mqtt_addr \"bad\""),
        "a flag overrides the file: {err}"
    );
    assert_eq!(
        err.matches("  - ").count(),
        1,
        "the printed file itself is valid: {err}"
    );
}

#[test]
fn a_busy_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = realmq()
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--mqtt-addr", &addr, "--api-addr", "127.0.0.1:0"])
        .args(["--cluster-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to bind the mqtt listener"), "{err}");
}
