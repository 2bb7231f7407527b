//! The connection loop both protocol versions run, on ntex-io with ntex-mqtt's codecs.
//!
//! Why not ntex-mqtt's servers: they hold 6-9 KB of per-connection state (service pipelines,
//! boxed call futures, their own dispatcher, sink and writer task) for a protocol whose whole
//! dispatch is one `match`; here an idle connection is one future. Flow of one connection:
//! `serve` reads the CONNECT (the preface already saw its header) → the version's `connect`
//! (`Broker::connect` → CONNACK) → `run`: one loop that decodes packets (the version's `handle`
//! → `Conn`'s QoS flows and `Broker`), writes what the session has queued when `ConnLink` wakes
//! it, holds acknowledgements that wait for peers, and enforces the keep-alive →
//! `Conn::finish` reports the disconnect.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use ntex::codec::{Decoder, Encoder};
use ntex::io::{Filter, Io, RecvError};
use ntex::time::{Millis, Seconds, timeout};
use ntex::util::Either;
use ntex_mqtt::error::DecodeError;
use ntex_mqtt::v5::codec::DisconnectReasonCode as Dr;

use super::conn::{Ack, Conn};
use super::linger::Socket;
use crate::broker::Broker;

/// The first packet of a connection as `Io::recv` gave it: `None` when nothing came in time.
pub(super) type First<C> =
    Option<Result<Option<<C as Decoder>::Item>, Either<DecodeError, std::io::Error>>>;

/// One protocol version: its codec, handshake and packet handling.
pub(super) trait Dialect {
    type Codec: Decoder<Error = DecodeError> + Encoder;

    fn codec(max_packet_size: u32) -> Self::Codec;

    /// CONNECT → CONNACK; `None` when refused (the refusal is already encoded) or when the first
    /// packet was not a CONNECT.
    async fn connect<F: Filter>(
        broker: &Arc<Broker>,
        io: &Io<F>,
        socket: Socket,
        codec: Self::Codec,
        first: First<Self::Codec>,
    ) -> Option<(Rc<Conn>, Seconds)>;

    /// The connection's codec, which `connect` moved into its `Conn`.
    fn wire(conn: &Conn) -> Option<&Self::Codec>;

    /// The per-connection state of a PUBLISH whose payload is still arriving.
    type Partial: Default;

    /// One decoded packet after the CONNECT: its effect, and what to answer.
    fn handle(
        conn: &Conn,
        partial: &Self::Partial,
        packet: <Self::Codec as Decoder>::Item,
    ) -> Action<<Self::Codec as Encoder>::Item>;

    /// The socket failed, the keep-alive expired or the client sent something undecodable.
    fn ended(conn: &Conn, why: RecvError<Self::Codec>);
}

/// What a packet asks of the loop.
pub(super) enum Action<E> {
    Nothing,
    /// Send this now.
    Reply(E),
    /// A SUBACK, sent once the other nodes know the new routes.
    Subscribed(E),
    /// A PUBACK / PUBREC, sent in arrival order once what it waits for is confirmed.
    Ack(Ack<E>),
    /// The client said DISCONNECT: the connection ends.
    Disconnect,
}

/// Serves one connection from its first byte to its end.
pub(super) async fn serve<D: Dialect, F: Filter>(
    broker: Arc<Broker>,
    io: Io<F>,
    socket: Socket,
    wait: Millis,
) {
    // Each phase is boxed, so the task holds only the one it is in: the handshake's state (3.4 KB
    // for 5.0: its codec, the CONNECT) is freed once it is done, and the loop's (264 B) is all
    // an open connection keeps. Unboxed, the task measured 1.6 KB for 5.0, 0.8 KB for 3.1.1.
    let handshake = Box::pin(handshake::<D, F>(&broker, &io, socket, wait));
    let connected = handshake.await;
    if let Some((conn, keep_alive)) = connected {
        let running = Box::pin(run::<D, F>(&io, &conn, keep_alive));
        running.await;
        conn.finish();
    }
    let shutdown = Box::pin(io.shutdown());
    let _ = shutdown.await;
}

/// Reads the CONNECT and answers it: the connection and its keep-alive, or `None`.
async fn handshake<D: Dialect, F: Filter>(
    broker: &Arc<Broker>,
    io: &Io<F>,
    socket: Socket,
    wait: Millis,
) -> Option<(Rc<Conn>, Seconds)> {
    let codec = D::codec(broker.limits.max_packet_size);
    // Anything but a well-formed CONNECT first, in time, ends the connection [MQTT-3.1.0-1].
    let first = timeout(wait, io.recv(&codec)).await.ok();
    D::connect(broker, io, socket, codec, first).await
}

/// What the socket produced next.
enum Event<C: Decoder> {
    Packet(C::Item),
    /// The write buffer is over its high-water mark: stop reading until it drains.
    Backpressure,
    End(RecvError<C>),
}

fn next<'a, F: Filter, C: Decoder>(io: &'a Io<F>, codec: &'a C) -> impl Future<Output = Event<C>> {
    poll_fn(move |cx| match io.poll_recv(codec, cx) {
        Poll::Ready(Ok(item)) => Poll::Ready(Event::Packet(item)),
        Poll::Ready(Err(RecvError::WriteBackpressure)) => Poll::Ready(Event::Backpressure),
        Poll::Ready(Err(e)) => Poll::Ready(Event::End(e)),
        Poll::Pending => Poll::Pending,
    })
}

/// What the loop does after an event.
enum Next<I> {
    Packet(I),
    /// The write buffer is over its high-water mark.
    Backpressure,
    Stop,
}

/// Takes the event whole, so that no packet is held while the loop waits afterwards.
fn next_step<D: Dialect>(conn: &Conn, event: Event<D::Codec>) -> Next<<D::Codec as Decoder>::Item> {
    match event {
        Event::Packet(packet) => Next::Packet(packet),
        Event::Backpressure => Next::Backpressure,
        Event::End(why) => {
            D::ended(conn, why);
            Next::Stop
        }
    }
}

/// The connection's one loop: inbound packets, outbound deliveries, keep-alive.
///
/// Its state is what an idle connection costs, so it holds no packet across a wait: waits that
/// would (a SUBACK for the routes to settle, a pause for a congested subscriber) are boxed, and
/// an event is taken apart before anything is awaited.
async fn run<D: Dialect, F: Filter>(io: &Io<F>, conn: &Conn, keep_alive: Seconds) {
    let Some(codec) = D::wire(conn) else {
        return;
    };
    let partial = D::Partial::default();
    // PUBACK / PUBREC waiting for peers to confirm a forwarded message, in arrival order.
    let mut held: VecDeque<Ack<<D::Codec as Encoder>::Item>> = VecDeque::new();
    // A SUBACK sent once the other nodes know the new routes; nothing is read meanwhile.
    let mut suback: Option<std::pin::Pin<Box<dyn Future<Output = ()> + '_>>> = None;
    let mut backpressure = false;
    io.start_timer(keep_alive);
    conn.resume();
    while !io.is_closed() {
        if let Some(sent) = suback.take() {
            sent.await;
        }
        conn.flush();
        if std::mem::take(&mut backpressure) {
            tokio::select! {
                flushed = io.flush(false) => if flushed.is_err() {
                    break;
                },
                () = conn.link.woken() => conn.on_woken(),
            }
            continue;
        }
        let event = tokio::select! {
            event = next(io, codec) => event,
            () = conn.link.woken() => {
                conn.on_woken();
                continue;
            }
            () = confirmed(&mut held), if !held.is_empty() => {
                release(io, codec, &mut held);
                continue;
            }
        };
        let packet = match next_step::<D>(conn, event) {
            Next::Packet(packet) => packet,
            Next::Backpressure => {
                backpressure = true;
                continue;
            }
            Next::Stop => break,
        };
        io.start_timer(keep_alive);
        match D::handle(conn, &partial, packet) {
            Action::Nothing => {}
            Action::Reply(reply) => {
                let _ = io.encode(reply, codec);
            }
            Action::Subscribed(reply) => match conn.broker.routes_settled() {
                Some(settled) => {
                    suback = Some(Box::pin(async move {
                        settled.await;
                        let _ = io.encode(reply, codec);
                    }));
                }
                None => {
                    let _ = io.encode(reply, codec);
                }
            },
            Action::Ack(ack) => {
                held.push_back(ack);
                release(io, codec, &mut held);
                // Only acknowledgements waiting for peers stay held; more of them than the
                // Receive Maximum means the client sent more than it may [MQTT-3.3.4-9].
                if conn.receive_max > 0 && held.len() > usize::from(conn.receive_max) {
                    conn.violation(Dr::ReceiveMaximumExceeded);
                }
            }
            Action::Disconnect => break,
        }
        if let Some(congested) = conn.take_pause() {
            crate::metrics::inc(&conn.broker.metrics.publisher_pauses, 1);
            // Boxed: its timer and waiters are no part of an idle connection's state.
            let paused = Box::pin(pause(conn, &congested));
            paused.await;
        }
    }
}

/// Backpressure: a PUBLISH filled a subscriber's queue, so this connection reads nothing more
/// until that queue drains (at most `MAX_PAUSE`; see `ConnLink::until_drained`). Its own
/// deliveries go on meanwhile. Reading stops, ntex stops reading the socket once its buffer is
/// full, and TCP makes the publisher wait: a saturated broker takes in what it can deliver
/// instead of reading messages only to drop them. Publishers that feed no congested subscriber
/// never wait.
async fn pause(conn: &Conn, congested: &crate::session::ConnLink) {
    let drained = congested.until_drained();
    tokio::pin!(drained);
    loop {
        conn.flush();
        tokio::select! {
            () = &mut drained => return,
            () = conn.link.woken() => conn.on_woken(),
        }
    }
}

/// Resolves once the first held acknowledgement may go.
async fn confirmed<E>(held: &mut VecDeque<Ack<E>>) {
    if let Some(Ack {
        after: after @ Some(_),
        ..
    }) = held.front_mut()
    {
        if let Some(confirm) = after.as_mut() {
            confirm.await;
        }
        *after = None;
    }
}

/// Writes the held acknowledgements from the front whose confirmations are in.
fn release<F: Filter, C: Encoder>(io: &Io<F>, codec: &C, held: &mut VecDeque<Ack<C::Item>>) {
    while let Some(front) = held.front_mut() {
        if let Some(confirm) = front.after.as_mut() {
            if futures::FutureExt::now_or_never(confirm).is_none() {
                return;
            }
            front.after = None;
        }
        if let Some(ack) = held.pop_front() {
            let _ = io.encode(ack.packet, codec);
        }
    }
}
