//! The MQTT edge: the only module that names ntex-mqtt types.
//!
//! `start` binds the TCP listener and starts the worker threads, each a single-threaded ntex
//! runtime that accepts from the shared socket and runs what it accepted (`linger.rs` says why
//! RealMQ accepts itself). Every connection first meets `preface.rs`, which reads
//! the CONNECT header and starts RealMQ's connection loop (`driver.rs`, on ntex-io with
//! ntex-mqtt's codecs behind `guard.rs`, which refuses the PUBLISH headers those decoders cannot
//! take) with the version's packet handling (`v3.rs`, `v5.rs`); `conn.rs` holds the
//! per-connection state both share, `wire.rs` how its outbound packets are encoded, and
//! `socket.rs` the one task that moves a connection's bytes between its socket and ntex-io.

mod conn;
mod driver;
mod guard;
mod linger;
mod preface;
mod socket;
mod v3;
mod v5;
mod websocket;
mod wire;

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use ntex::SharedCfg;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::{Config, Transport};
use crate::message::QoS;
use crate::tls::Tls;

pub(crate) fn qos_in(q: ntex_mqtt::QoS) -> QoS {
    match q {
        ntex_mqtt::QoS::AtMostOnce => QoS::AtMostOnce,
        ntex_mqtt::QoS::AtLeastOnce => QoS::AtLeastOnce,
        ntex_mqtt::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

pub(crate) fn qos_out(q: QoS) -> ntex_mqtt::QoS {
    match q {
        QoS::AtMostOnce => ntex_mqtt::QoS::AtMostOnce,
        QoS::AtLeastOnce => ntex_mqtt::QoS::AtLeastOnce,
        QoS::ExactlyOnce => ntex_mqtt::QoS::ExactlyOnce,
    }
}

/// The identity a verified client certificate gives the connection: its common name (only
/// TLS listeners with `tls_client_ca` ask for certificates).
fn certified(io: &ntex::io::IoRef) -> Option<String> {
    let cert = io.query::<ntex_tls::rustls::PeerCert<'static>>();
    crate::tls::client_identity(&cert.as_ref()?.0)
}

/// v5 keep-alive: the idle timeout in seconds (1.5x the effective keep-alive, 0 = none) and the
/// Server Keep Alive to announce when `max` (0 = no cap) overrides what the client asked for.
fn keep_alive(client: u16, max: u16) -> (u16, Option<u16>) {
    let effective = if max > 0 && (client == 0 || client > max) {
        max
    } else {
        client
    };
    let announce = (effective != client).then_some(effective);
    let timeout = effective.saturating_add(effective / 2);
    (timeout, announce)
}

fn service_config() -> SharedCfg {
    SharedCfg::new("mqtt")
        .add(ntex::io::IoConfig::new())
        // Parses the WebSocket upgrade request (`websocket.rs`).
        .add(ntex::http::HttpServiceConfig::new())
        .into()
}

/// The running MQTT listeners: one thread per worker, each an ntex runtime accepting from every
/// shared listening socket and running the connections it accepted.
pub struct MqttListener {
    accepting: CancellationToken,
    /// Accept loops still holding their handle of a listening socket.
    open_loops: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    pub addrs: Vec<(Transport, SocketAddr)>,
}

impl MqttListener {
    /// The bound address of the listener for `transport`, if it is on.
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
    }

    /// Closes the listening sockets: a client that reconnects while the node drains is refused
    /// at once and goes to another node, instead of being accepted and holding the node's exit.
    ///
    /// Returns once every worker closed its handle (each notices on its own thread): the
    /// DISCONNECTs sent next must not reach a client that could still be accepted again.
    pub async fn stop_accepting(&self) {
        self.accepting.cancel();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while self.open_loops.load(std::sync::atomic::Ordering::Acquire) > 0
            && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stops accepting, drops the connections still open (the node drained them before), and
    /// joins the worker threads.
    pub async fn stop(self) {
        self.accepting.cancel();
        self.stop.cancel();
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// The bound MQTT listening sockets, one per transport the configuration turns on.
pub struct Listeners(Vec<(Transport, std::net::TcpListener)>);

impl Listeners {
    /// The bound address of the plain TCP listener.
    pub fn tcp_addr(&self) -> std::io::Result<SocketAddr> {
        self.addr(Transport::Tcp)
            .ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }

    /// The bound address of the `transport` listener, if it is on.
    pub fn addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.0
            .iter()
            .find(|(t, _)| *t == transport)
            .and_then(|(_, l)| l.local_addr().ok())
    }
}

/// Binds every MQTT listener of `config`; connections wait in the backlog until `start`.
pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
    config
        .mqtt_listeners()
        .into_iter()
        .map(|(transport, addr)| {
            let l = ntex::server::create_tcp_listener(addr, 1024).with_context(|| {
                format!("failed to bind the {} listener on {addr}", transport.name())
            })?;
            Ok((transport, l))
        })
        .collect::<anyhow::Result<_>>()
        .map(Listeners)
}

/// Starts the worker threads accepting on `listeners`.
///
/// RealMQ accepts connections itself rather than through ntex-server, because it needs each
/// connection's socket descriptor before ntex takes the socket over (see `linger.rs`).
pub fn start(
    broker: Arc<Broker>,
    listeners: Listeners,
    config: &Config,
    tls: Option<Arc<Tls>>,
) -> anyhow::Result<MqttListener> {
    let addrs = listeners
        .0
        .iter()
        .map(|(t, l)| Ok((*t, l.local_addr()?)))
        .collect::<std::io::Result<Vec<_>>>()?;
    let workers = match config.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let cfg = service_config();
    let (accepting, stop) = (CancellationToken::new(), CancellationToken::new());
    let open_loops = Arc::new(std::sync::atomic::AtomicUsize::new(
        workers * listeners.0.len(),
    ));
    let mut threads = Vec::with_capacity(workers);
    for i in 0..workers {
        let shared = listeners
            .0
            .iter()
            .map(|(t, l)| Ok((*t, l.try_clone()?)))
            .collect::<std::io::Result<Vec<_>>>()
            .context("failed to share the mqtt listeners")?;
        let (broker, cfg, tls) = (broker.clone(), cfg.clone(), tls.clone());
        let (accepting, stop) = (accepting.clone(), stop.clone());
        let open_loops = open_loops.clone();
        let thread = std::thread::Builder::new()
            .name(format!("mqtt:worker:{i}"))
            .spawn(move || {
                ntex::rt::System::build()
                    .name("mqtt")
                    .build(ntex::rt::DefaultRuntime)
                    .block_on(async move {
                        let preface = Rc::new(build(broker, tls));
                        for (transport, listener) in shared {
                            let accepted =
                                accept_loop(listener, transport, preface.clone(), cfg.clone());
                            let accepting = accepting.clone();
                            let open_loops = open_loops.clone();
                            ntex::rt::spawn(async move {
                                tokio::select! {
                                    () = accepting.cancelled() => {}
                                    r = accepted => if let Err(e) = r {
                                        tracing::error!(error = %e, "mqtt listener failed");
                                    },
                                }
                                // The loop, and with it this worker's socket handle, is gone.
                                open_loops.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                            });
                        }
                        // The open connections drain until `stop`.
                        stop.cancelled().await;
                    });
            })
            .context("failed to spawn an mqtt worker")?;
        threads.push(thread);
    }
    Ok(MqttListener {
        accepting,
        open_loops,
        stop,
        threads,
        addrs,
    })
}

/// One worker's accepting on one listener (until the task is dropped, which closes this
/// worker's handle of the socket), handing each connection to the preface.
async fn accept_loop(
    listener: std::net::TcpListener,
    transport: Transport,
    preface: Rc<preface::Preface>,
    cfg: SharedCfg,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors (or another passing error): wait rather than spin, and let
            // the connections that are open finish.
            Err(e) => {
                tracing::warn!(error = %e, "mqtt accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let socket = linger::Socket(stream.as_raw_fd());
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set up an mqtt connection");
            continue;
        }
        let io = ntex::io::Io::new(socket::Tcp(stream), cfg.clone());
        preface.accept(io, socket, transport);
    }
}

/// The per-worker front: v3.1.1 and v5 on one port, chosen by the CONNECT's protocol level.
fn build(broker: Arc<Broker>, tls: Option<Arc<Tls>>) -> preface::Preface {
    let wait = ntex::time::Millis(u32::from(broker.limits.connect_timeout) * 1000);
    preface::Preface { broker, wait, tls }
}

#[cfg(test)]
mod fuzz_tests;

#[cfg(test)]
mod tests {
    use super::keep_alive;

    #[test]
    fn keep_alive_table() {
        // (client, cap) -> (timeout, announced Server Keep Alive)
        for (client, cap, want) in [
            (60, 0, (90, None)),
            (60, 30, (45, Some(30))),
            (20, 30, (30, None)),
            (0, 30, (45, Some(30))),
            (0, 0, (0, None)),
            (u16::MAX, 0, (u16::MAX, None)),
        ] {
            assert_eq!(keep_alive(client, cap), want, "client {client} cap {cap}");
        }
    }
}
