//! The control center's files as the node serves them: the page at `/`, modules with a
//! JavaScript type, gzip when asked, revalidation by ETag, a strict CSP, and the JSON error
//! envelope for a file that does not exist. (The pages themselves are tested in a browser:
//! api/tests/ui/console_test.py.)

mod common;

use std::io::Read;

use common::api_with;
use realmq_api::ApiConfig;
use realmq_api::console::ConsoleEnv;
use serde_json::Value;

async fn get(
    api: &common::Api,
    path: &str,
    headers: &[(&str, &str)],
) -> warp::http::Response<bytes::Bytes> {
    let mut req = warp::test::request().method("GET").path(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.reply(&realmq_api::routes(api.ctx.clone())).await
}

#[tokio::test]
async fn the_console_is_served_gzipped_and_revalidated() {
    let api = api_with(ApiConfig {
        console: ConsoleEnv {
            ws_port: Some(8083),
            wss_port: None,
        },
        ..ApiConfig::default()
    })
    .await;

    let page = get(&api, "/", &[]).await;
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = String::from_utf8(page.body().to_vec()).unwrap();
    assert!(
        html.contains(r#"<script type="module" src="/console/js/main.js">"#),
        "{html}"
    );
    let csp = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-cache");

    let js = get(
        &api,
        "/console/js/main.js",
        &[("accept-encoding", "gzip, br")],
    )
    .await;
    assert_eq!(js.status(), 200);
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert_eq!(js.headers()["content-encoding"], "gzip");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&js.body()[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert!(
        plain.contains("function route()"),
        "the gzip body is the module"
    );
    let raw = get(&api, "/console/js/main.js", &[]).await;
    assert!(raw.headers().get("content-encoding").is_none());
    assert_eq!(raw.body().as_ref(), plain.as_bytes());

    let etag = js.headers()["etag"].to_str().unwrap().to_string();
    let again = get(&api, "/console/js/main.js", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status(), 304);
    assert!(again.body().is_empty());
    let stale = get(&api, "/console/js/main.js", &[("if-none-match", "\"0\"")]).await;
    assert_eq!(stale.status(), 200);

    let env: Value =
        serde_json::from_slice(get(&api, "/console/env.json", &[]).await.body()).unwrap();
    assert_eq!(env, serde_json::json!({"ws_port": 8083, "wss_port": null}));

    let missing = get(&api, "/console/nope.js", &[]).await;
    assert_eq!(missing.status(), 404);
    let body: Value = serde_json::from_slice(missing.body()).unwrap();
    assert_ne!(body["code"], 0);
    assert!(body["message"].is_string());
    let escape = get(&api, "/console/../Cargo.toml", &[]).await;
    assert_eq!(escape.status(), 404);
}

/// Every string key the pages use exists in both language tables, and the tables have the
/// same keys: a gap would show as ⟦key⟧.
#[test]
fn both_language_tables_have_every_key() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
    let i18n = std::fs::read_to_string(dir.join("js/i18n.js")).unwrap();
    let table = |name: &str| -> std::collections::BTreeSet<String> {
        let start = i18n.find(&format!("const {name} = {{")).unwrap();
        let end = start + i18n[start..].find("\n};").unwrap();
        i18n[start..end]
            .lines()
            .skip(1)
            .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.to_string()))
            .filter(|k| !k.starts_with("//"))
            .collect()
    };
    let (en, zh) = (table("en"), table("zh"));
    assert_eq!(en, zh, "the English and Chinese tables differ");
    let mut used = std::collections::BTreeSet::new();
    let mut files = vec![dir.join("js")];
    while let Some(d) = files.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files.push(p);
            } else if p.extension().is_some_and(|x| x == "js") {
                let src = std::fs::read_to_string(&p).unwrap();
                // `t('key'`, but not `get('products'` and the like.
                for (at, _) in src.match_indices("t('") {
                    let before = src[..at].chars().last().unwrap_or(' ');
                    if before.is_alphanumeric() || before == '_' || before == '.' {
                        continue;
                    }
                    let key: String = src[at + 3..].chars().take_while(|c| *c != '\'').collect();
                    if key != "key" {
                        used.insert(key);
                    }
                }
            }
        }
    }
    let missing: Vec<_> = used.difference(&en).collect();
    assert!(
        missing.is_empty(),
        "keys used but not in the tables: {missing:?}"
    );
}
