//! TCP proxies carrying the cluster links, one per directed link, on a runtime of their own so
//! that a test blocking its own runtime cannot stall raft traffic between the nodes.
//!
//! A link is open (bytes forwarded, after an optional delay), or cut: connections open at the
//! cut are reset, and new ones are accepted and black-holed (read and discarded, never
//! forwarded), so the dialling node sees what a real partition looks like, requests that time
//! out, rather than a refused connection it could fail fast on. Healing resets the black-holed
//! connections so that peers reconnect at once instead of waiting for their RPC timeouts.
//!
//! A link may also hide its node's death: when the node's side of a connection ends, the
//! dialling side is neither closed nor reset but left open and silent, as when a machine or a
//! container's network goes away without a reset reaching the peers. New connections reach
//! the node as usual, so a restarted node is reachable while the old connections linger.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::NodeId;

/// Bound for reaching a node's real listener; a node that is down refuses at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LinkState {
    pub cut: bool,
    /// Added to every chunk of bytes, in each direction.
    pub delay: Duration,
    /// A connection whose node side ended stays open and silent on the dialling side.
    pub hide_death: bool,
}

/// Connections made to `addr` reach node `to`. `from` is the only node given `addr`, or `None`
/// when any node may dial it (a learner's advertised address).
struct Link {
    from: Option<NodeId>,
    to: NodeId,
    state: watch::Sender<LinkState>,
}

pub(crate) struct Proxies {
    /// `None` only during drop.
    rt: Option<Runtime>,
    links: Mutex<Vec<Link>>,
}

impl Proxies {
    pub(crate) fn new() -> Proxies {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("link-proxy")
            .enable_all()
            .build()
            .expect("failed to build the proxy runtime");
        Proxies {
            rt: Some(rt),
            links: Mutex::new(Vec::new()),
        }
    }

    /// Opens a proxy for the link `from` → `to` forwarding to `target`; returns its address.
    pub(crate) fn open(&self, from: Option<NodeId>, to: NodeId, target: SocketAddr) -> SocketAddr {
        let rt = self.rt.as_ref().expect("proxy runtime");
        let bound = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a link proxy");
        bound
            .set_nonblocking(true)
            .expect("nonblocking proxy listener");
        let addr = bound.local_addr().expect("proxy address");
        let listener = {
            let _enter = rt.enter();
            TcpListener::from_std(bound).expect("register the proxy listener")
        };
        let (state, rx) = watch::channel(LinkState::default());
        rt.spawn(accept(listener, target, rx));
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Link { from, to, state });
        addr
    }

    /// Whether `from` dials `to` through a proxy of its own.
    pub(crate) fn has_link(&self, from: NodeId, to: NodeId) -> bool {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l.from == Some(from) && l.to == to)
    }

    /// Sets every link to `state_of(from, to)`; connections on links whose state changed react
    /// at once (reset on cut, new delay for the next bytes).
    pub(crate) fn update(&self, state_of: impl Fn(Option<NodeId>, NodeId) -> LinkState) {
        for link in self.links.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let new = state_of(link.from, link.to);
            link.state.send_if_modified(|s| {
                let changed = *s != new;
                *s = new;
                changed
            });
        }
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        // Dropping a runtime inside the test's async context would panic; this does not block.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn accept(listener: TcpListener, target: SocketAddr, state: watch::Receiver<LinkState>) {
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                tokio::spawn(serve(conn, target, state.clone()));
            }
            // Out of file descriptors, most likely: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn serve(mut inbound: TcpStream, target: SocketAddr, mut state: watch::Receiver<LinkState>) {
    let _ = inbound.set_nodelay(true);
    if state.borrow_and_update().cut {
        // Until the link heals.
        return swallow(inbound, state, |s| !s.cut).await;
    }
    let mut outbound = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
    {
        Ok(Ok(s)) => s,
        // The node accepted and went at once: its end is hidden as on an older connection.
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionReset && state.borrow().hide_death => {
            return swallow(inbound, state, |s| !s.hide_death).await;
        }
        _ => {
            // The node is down: a reset is what the caller would get from a closed port.
            let _ = inbound.set_zero_linger();
            return;
        }
    };
    let _ = outbound.set_nodelay(true);
    let cut = {
        let (in_read, in_write) = inbound.split();
        let (out_read, out_write) = outbound.split();
        let (up, down) = (state.clone(), state.clone());
        let both = async {
            tokio::try_join!(
                pipe(in_read, out_write, up, false),
                pipe(out_read, in_write, down, true)
            )
        };
        tokio::select! {
            _ = both => false,
            _ = state.wait_for(|s| s.cut) => true,
        }
    };
    if cut {
        let _ = inbound.set_zero_linger();
        let _ = outbound.set_zero_linger();
    } else if state.borrow().hide_death {
        drop(outbound);
        // The node side is gone; the dialler is not told until deaths are no longer hidden.
        swallow(inbound, state, |s| !s.hide_death).await;
    }
}

/// Swallows everything the dialling side sends, answering nothing, until it gives up or
/// `released` holds for the link's state; then resets the connection, so that the dialler
/// reconnects at once.
async fn swallow(
    mut conn: TcpStream,
    mut state: watch::Receiver<LinkState>,
    released: impl Fn(&LinkState) -> bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = conn.read(&mut buf) => {
                if matches!(read, Ok(0) | Err(_)) {
                    return;
                }
            }
            _ = state.wait_for(&released) => {
                let _ = conn.set_zero_linger();
                return;
            }
        }
    }
}

/// Copies one direction until end of stream, holding each chunk back by the link's delay at
/// the time it was read. Reading runs ahead of the delayed writes, so latency is added without
/// cutting throughput to one chunk per delay. `from_node`: this direction carries the node's
/// side, whose end is not passed on while the link hides deaths.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    state: watch::Receiver<LinkState>,
    from_node: bool,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(64);
    let (hides, hidden) = (state.clone(), state.clone());
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(n) => n,
                // The node's side was reset: ends like an end of stream when hidden.
                Err(_) if from_node && hides.borrow().hide_death => 0,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            let due = Instant::now() + state.borrow().delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            to.write_all(&chunk).await?;
        }
        if from_node && hidden.borrow().hide_death {
            return Ok(());
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server standing in for a node's cluster listener.
    async fn echo() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = c.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> io::Result<Duration> {
        let start = Instant::now();
        let mut c = TcpStream::connect(addr).await?;
        c.write_all(b"ping").await?;
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_millis(500), c.read_exact(&mut got))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        assert_eq!(&got, b"ping");
        Ok(start.elapsed())
    }

    #[tokio::test]
    async fn forwards_black_holes_when_cut_and_delays() {
        let target = echo().await;
        let proxies = Proxies::new();
        let addr = proxies.open(Some(1), 2, target);
        round_trip(addr).await.expect("open link forwards");

        let mut held = TcpStream::connect(addr).await.unwrap();
        held.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        held.read_exact(&mut b).await.unwrap();
        proxies.update(|_, _| LinkState {
            cut: true,
            ..LinkState::default()
        });
        let closed = tokio::time::timeout(Duration::from_secs(2), held.read(&mut b)).await;
        assert!(
            matches!(closed, Ok(Ok(0) | Err(_))),
            "an open connection is closed by the cut: {closed:?}"
        );
        let err = round_trip(addr)
            .await
            .expect_err("a cut link answers nothing");
        assert_eq!(
            err.kind(),
            io::ErrorKind::TimedOut,
            "black-holed, not refused"
        );

        proxies.update(|_, _| LinkState {
            delay: Duration::from_millis(100),
            ..LinkState::default()
        });
        let rtt = round_trip(addr).await.expect("healed link forwards");
        assert!(
            rtt >= Duration::from_millis(200),
            "delayed both ways: {rtt:?}"
        );
    }

    /// With deaths hidden, the node closing its side leaves the dialler's connection open and
    /// silent, while a new connection reaches the node.
    #[tokio::test]
    async fn hides_a_nodes_death_from_open_connections() {
        let node = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = node.local_addr().unwrap();
        let proxies = Proxies::new();
        let addr = proxies.open(Some(1), 2, target);
        proxies.update(|_, _| LinkState {
            hide_death: true,
            ..LinkState::default()
        });

        let mut held = TcpStream::connect(addr).await.unwrap();
        let (node_side, _) = node.accept().await.unwrap();
        let _ = node_side.set_zero_linger();
        drop(node_side);
        let mut b = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(500), held.read(&mut b)).await;
        assert!(
            read.is_err(),
            "no end of stream, no reset, no data: {read:?}"
        );
        held.write_all(b"into the void")
            .await
            .expect("still writable");

        let _fresh = TcpStream::connect(addr).await.unwrap();
        let accepted = tokio::time::timeout(Duration::from_secs(2), node.accept()).await;
        assert!(accepted.is_ok(), "a new connection reaches the node");
    }
}
