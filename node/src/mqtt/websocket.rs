//! MQTT over WebSocket (and over secure WebSocket, below which `preface.rs` put TLS): the HTTP
//! upgrade on `PATH`, then ntex's WebSocket transport as an io layer, so the drivers read and
//! write MQTT bytes as on TCP, one or more packets per binary frame.
//!
//! A request for another path, or one that is not a WebSocket upgrade, gets its HTTP error and
//! the connection ends. The subprotocol a client offers (`mqtt`, or `mqttv3.1` from older
//! clients) is echoed back, as browsers require; a client offering none is served too.

use ntex::http::body::BodySize;
use ntex::http::{HttpServiceConfig, Request, Response, h1, header};
use ntex::io::{Filter, Io, Layer};
use ntex::time::{Millis, timeout};
use ntex::ws;

/// The path MQTT clients and browsers connect to (`ws://host:8083/mqtt`), as on other brokers.
pub(super) const PATH: &str = "/mqtt";

/// The subprotocols accepted, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Reads the upgrade request (within `wait`) and answers it; `None` when the connection is to
/// end (the refusal, if any, is already written).
pub(super) async fn upgrade<F: Filter>(
    io: Io<F>,
    wait: Millis,
) -> Option<Io<Layer<ws::WsTransport, F>>> {
    let codec = h1::Codec::new(0, io.shared().get::<HttpServiceConfig>());
    let (req, _) = match timeout(wait, io.recv(&codec)).await {
        Ok(Ok(Some(item))) => item,
        _ => return None,
    };
    let response = match answer(&req) {
        Ok(res) => res,
        Err(refusal) => {
            tracing::debug!(path = req.path(), status = %refusal.status(), "websocket upgrade refused");
            let _ = io
                .send(
                    h1::Message::Item((refusal.drop_body(), BodySize::Empty)),
                    &codec,
                )
                .await;
            let _ = io.shutdown().await;
            return None;
        }
    };
    io.send(
        h1::Message::Item((response.drop_body(), BodySize::Empty)),
        &codec,
    )
    .await
    .ok()?;
    Some(ws::WsTransport::create(io, ws::Codec::new()))
}

/// The 101 answer to a valid upgrade on `PATH`, or the error response.
fn answer(req: &Request) -> Result<Response, Response> {
    if req.path() != PATH {
        return Err(Response::NotFound().body(""));
    }
    let mut res = ws::handshake(req.head()).map_err(|_| Response::BadRequest().body(""))?;
    let offered: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_ascii_lowercase()))
        .collect();
    if let Some(chosen) = SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o == *p))
    {
        res.header(header::SEC_WEBSOCKET_PROTOCOL, *chosen);
    } else if !offered.is_empty() {
        // A client asking only for protocols other than MQTT is not an MQTT client.
        return Err(Response::BadRequest().body(""));
    }
    Ok(res.body(""))
}
