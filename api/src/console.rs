//! The control center: the web console's files (`api/console/`), compiled into the binary and
//! served at `/` and `/console/...` on every node.
//!
//! The console is static HTML, CSS and JavaScript modules that talk only to `/api/v1` with a
//! bearer token, so it needs nothing from the server but its files and which WebSocket ports
//! the browser's MQTT client may use (`/console/env.json`). Every file is gzipped once, at the
//! first request, and revalidated by its content hash (`ETag`): the names carry no hash, so a
//! browser must never use a stale copy after an upgrade.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use warp::Filter;
use warp::filters::BoxedFilter;
use warp::http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, VARY,
};
use warp::http::{Response, StatusCode};

use crate::response::Reply;

#[derive(rust_embed::Embed)]
#[folder = "console/"]
struct Assets;

/// Which WebSocket listeners the browser's MQTT client may use (ports on the node it was
/// served from); `None` when that listener is off.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConsoleEnv {
    pub ws_port: Option<u16>,
    pub wss_port: Option<u16>,
}

struct Asset {
    mime: HeaderValue,
    etag: HeaderValue,
    plain: Bytes,
    /// `None` when gzip does not make it smaller (images).
    gzip: Option<Bytes>,
}

fn asset(mime: &str, digest: &[u8], body: Vec<u8>) -> Asset {
    let mut enc = GzEncoder::new(Vec::new(), Compression::best());
    let gzip = enc
        .write_all(&body)
        .and_then(|()| enc.finish())
        .ok()
        .filter(|z| z.len() + 64 < body.len())
        .map(Bytes::from);
    // Text without a charset would be read as Latin-1 by some browsers; the files are UTF-8.
    let mime = if (mime.starts_with("text/") || mime.ends_with("json")) && !mime.contains(';') {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    Asset {
        mime: HeaderValue::from_str(&mime)
            .unwrap_or(HeaderValue::from_static("application/octet-stream")),
        etag: HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
            .expect("hex is a valid header"),
        plain: Bytes::from(body),
        gzip,
    }
}

/// Every embedded file, by path under `console/`, built at the first request.
fn catalogue() -> &'static HashMap<String, Asset> {
    static FILES: OnceLock<HashMap<String, Asset>> = OnceLock::new();
    FILES.get_or_init(|| {
        Assets::iter()
            .filter_map(|name| {
                let file = Assets::get(&name)?;
                let a = asset(
                    file.metadata.mimetype(),
                    &file.metadata.sha256_hash(),
                    file.data.into_owned(),
                );
                Some((name.to_string(), a))
            })
            .collect()
    })
}

/// `env.json` for one node: its own ports, so it is not in the process-wide catalogue.
fn env_asset(env: ConsoleEnv) -> Asset {
    let env = json!({"ws_port": env.ws_port, "wss_port": env.wss_port}).to_string();
    let digest = {
        use sha2::Digest;
        sha2::Sha256::digest(env.as_bytes())
    };
    asset("application/json", &digest, env.into_bytes())
}

/// `GET /` (the console's page) and `GET /console/{file}`.
pub(crate) fn routes(env: ConsoleEnv) -> BoxedFilter<(Reply,)> {
    let index = warp::path::end().map(|| "index.html".to_string());
    let file = warp::path("console")
        .and(warp::path::tail())
        .map(|tail: warp::path::Tail| tail.as_str().to_string());
    let env = Arc::new(env_asset(env));
    index
        .or(file)
        .unify()
        .and(warp::get().or(warp::head()).unify())
        .and(warp::header::headers_cloned())
        .and_then(move |path: String, headers: HeaderMap| {
            let env = env.clone();
            async move {
                let found = if path == "env.json" {
                    Some(&*env)
                } else {
                    catalogue().get(&path)
                };
                match found {
                    Some(a) => Ok(serve(a, &headers)),
                    None => Err(warp::reject::not_found()),
                }
            }
        })
        .boxed()
}

fn serve(a: &Asset, req: &HeaderMap) -> Reply {
    let mut builder = Response::builder()
        .header(CONTENT_TYPE, a.mime.clone())
        .header(ETAG, a.etag.clone())
        .header(CACHE_CONTROL, "no-cache")
        .header(VARY, "accept-encoding")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .header("x-frame-options", "DENY")
        // Only its own scripts and styles, and the API and MQTT over WebSocket on this host.
        .header(
            "content-security-policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
             style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'",
        );
    let fresh = req
        .get("if-none-match")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().as_bytes() == a.etag.as_bytes())
        });
    if fresh {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Bytes::new().into())
            .expect("static headers are valid");
    }
    let gzip_ok = req
        .get("accept-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let body = match (&a.gzip, gzip_ok) {
        (Some(z), true) => {
            builder = builder.header(CONTENT_ENCODING, "gzip");
            z.clone()
        }
        _ => a.plain.clone(),
    };
    builder
        .status(StatusCode::OK)
        .body(body.into())
        .expect("static headers are valid")
}
