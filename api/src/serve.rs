//! The HTTP(S) server around the routes: RealMQ accepts connections itself (warp 0.4's own
//! server speaks plain HTTP only), completes the TLS handshake when the API is served over
//! HTTPS, and runs each connection with hyper, closing them gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::context::ApiContext;

/// How long a client has to complete its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The peer of a request, as the routes see it (warp's own `addr::remote` is only set by its
/// server).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// Where HTTPS gets its current certificate: called per connection, so a renewed
/// certificate applies to the next connection.
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// Serves the API on `listener` (over TLS with `tls`); returns the bound address with the
/// server future, which ends once `shutdown` resolves and in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    ctx: ApiContext,
    tls: Option<TlsSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()> + Send + 'static)> {
    let local = listener.local_addr()?;
    let routes = crate::routes(ctx);
    let server = async move {
        let graceful = GracefulShutdown::new();
        let http = auto::Builder::new(TokioExecutor::new());
        tokio::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        tracing::warn!(error = %e, "api accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let routes = routes.clone();
            let service = tower::ServiceExt::map_request(
                warp::service(routes),
                move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(Peer(peer));
                    req
                },
            );
            let service = TowerToHyperService::new(service);
            match &tls {
                None => {
                    let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
                Some(source) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(source());
                    let http = http.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "api tls handshake failed");
                                    return;
                                }
                                Err(_) => return,
                            };
                        let conn =
                            http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    });
                }
            }
        }
        drop(listener);
        graceful.shutdown().await;
    };
    Ok((local, server))
}
