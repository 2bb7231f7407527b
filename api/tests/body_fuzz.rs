//! The REST API's JSON bodies, fuzzed: every input is a request line (`METHOD /path`), a newline
//! and a body, sent as root through the real filters to a node with a product, a device, a
//! viewer and a client session in place. The seeds in `fuzz/corpus/rest/` name every endpoint
//! that takes a body; `fuzz/driver.rs` mutates them (the request line too, so ids and paths
//! vary; `PRODUCT_KEY` in a body stands for the product's key). Whatever arrives, the answer is JSON in the envelope: 200 with `code` 0, or a 4xx (or
//! the documented 503) with a non-zero `code` and a message; never a 5xx, never a panic.

mod common;
#[allow(dead_code)] // the text-input helpers serve the node's targets
#[path = "../../fuzz/driver.rs"]
mod fuzzing;

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::{Value, json};

const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// The method and path of an input's first line; a mangled line still makes a request.
fn request_line(line: &[u8]) -> (&'static str, String) {
    let line = String::from_utf8_lossy(line);
    let mut parts = line.splitn(2, ' ');
    let method = parts.next().unwrap_or_default().to_ascii_uppercase();
    let method = METHODS.into_iter().find(|m| *m == method).unwrap_or("POST");
    let path = parts.next().unwrap_or_default().trim();
    let path = if path.starts_with('/') && path.parse::<warp::http::Uri>().is_ok() {
        path.to_string()
    } else {
        "/api/v1/products".to_string()
    };
    (method, path)
}

#[test]
fn fuzz_rest_bodies() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (api, key) = rt.block_on(async {
        let api = common::api().await;
        let (_, key, _) = api.product("fuzz").await;
        api.device(&key, "sensor").await;
        let viewer = json!({"username": "vic", "password": "secret1", "role": "viewer"});
        let (s, b) = api.root("POST", "/api/v1/users", Some(viewer)).await;
        assert_eq!(s, 200, "{b}");
        api.node.sessions.lock().unwrap().insert("root".into());
        (api, key)
    });
    let statuses = RefCell::new(BTreeMap::<u16, usize>::new());
    fuzzing::run("rest", |input| {
        let split = input
            .iter()
            .position(|b| *b == b'\n')
            .unwrap_or(input.len());
        let (method, path) = request_line(&input[..split]);
        let body = with_key(input.get(split + 1..).unwrap_or_default(), &key);
        let (status, answer) = rt.block_on(api.raw(method, &path, &body));
        check(method, &path, status, &answer);
        *statuses.borrow_mut().entry(status).or_default() += 1;
    });
    // Mutations that never got past validation would fuzz only the error paths.
    let statuses = statuses.into_inner();
    eprintln!("answers by status: {statuses:?}");
    let total: usize = statuses.values().sum();
    let ok = statuses.get(&200).copied().unwrap_or_default();
    assert!(ok * 50 >= total, "only {ok} of {total} requests succeeded");
}

fn with_key(body: &[u8], key: &str) -> Vec<u8> {
    const PLACEHOLDER: &[u8] = b"PRODUCT_KEY";
    let mut out = Vec::with_capacity(body.len());
    let mut rest = body;
    while let Some(i) = rest
        .windows(PLACEHOLDER.len())
        .position(|w| w == PLACEHOLDER)
    {
        out.extend_from_slice(&rest[..i]);
        out.extend_from_slice(key.as_bytes());
        rest = &rest[i + PLACEHOLDER.len()..];
    }
    out.extend_from_slice(rest);
    out
}

fn check(method: &str, path: &str, status: u16, answer: &Value) {
    let code = answer["code"].as_i64();
    let what = format!("{method} {path} -> {status} {answer}");
    assert!(status < 500 || status == 503, "{what}");
    if status == 200 {
        assert_eq!(code, Some(0), "{what}");
    } else {
        assert!(code.is_some_and(|c| c != 0), "{what}");
        assert!(
            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
}
