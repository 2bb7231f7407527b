//! MQTT 3.1.1: RealMQ drives these connections itself, on ntex-io with ntex-mqtt's v3 codec.
//!
//! Why not ntex-mqtt's v3 server: it holds about 6 KB of per-connection state (service
//! pipelines, boxed call futures, its own dispatcher and sink) for a protocol whose whole
//! dispatch is the `match` in `handle`; an idle connection here is one future. Flow of one
//! connection: `serve` reads the CONNECT (the preface already saw its header) → `connect`
//! (`Broker::connect` → CONNACK) → `run`: one loop that decodes packets (`handle` → `Conn`'s QoS
//! flows and `Broker`), writes what the session has queued when `ConnLink` wakes it, and enforces
//! the keep-alive → `Conn::finish` reports the disconnect.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use ntex::io::types::PeerAddr;
use ntex::io::{Filter, Io, RecvError};
use ntex::time::{Millis, Seconds, timeout};
use ntex_mqtt::v3::codec::{
    self, ConnectAck, ConnectAckReason, Decoded, Encoded, Packet, SubscribeReturnCode,
};
use ntex_mqtt::v5::codec::DisconnectReasonCode as Dr;

use super::conn::{Ack, Conn, Inbound, Partial, PubRecReply, Wire};
use super::guard::V3Codec;
use super::linger::Socket;
use super::{qos_in, qos_out};
use crate::broker::{Broker, ConnectRefused, ConnectRequest, SubRequest, SubResult};
use crate::message::{Message, MessageProperties, Protocol, QoS, SubOptions, Will};
use crate::routing::topic::valid_topic_name;

/// Serves one 3.1.1 connection from its first byte to its end.
pub(super) async fn serve<F: Filter>(broker: Arc<Broker>, io: Io<F>, socket: Socket, wait: Millis) {
    // A PUBLISH split across reads arrives as its header plus the whole payload in one chunk,
    // which `Partial` joins before routing.
    let codec = V3Codec::new(broker.limits.max_packet_size);
    // Anything but a well-formed CONNECT first, in time, ends the connection [MQTT-3.1.0-1].
    if let Ok(Ok(Some(Decoded::Packet(Packet::Connect(pkt), size)))) =
        timeout(wait, io.recv(&codec)).await
        // Boxed so the handshake's state is freed once it is done, not held for the connection.
        && let Some((conn, keep_alive)) = Box::pin(connect(&broker, &io, socket, codec, pkt)).await
    {
        conn.received(size);
        run(&io, &conn, keep_alive).await;
        conn.finish();
    }
    let _ = io.shutdown().await;
}

/// CONNECT → CONNACK. `None` when refused (the CONNACK with the reason is already encoded).
async fn connect<F: Filter>(
    broker: &Arc<Broker>,
    io: &Io<F>,
    socket: Socket,
    codec: V3Codec,
    // Taken boxed and unboxed here, so the decoder's allocation is freed with the handshake
    // rather than held by `serve` for the connection's life.
    pkt: Box<codec::Connect>,
) -> Option<(Rc<Conn>, Seconds)> {
    let pkt = *pkt;
    let refuse = |return_code| {
        let ack = ConnectAck {
            return_code,
            session_present: false,
        };
        let _ = io.encode(Encoded::Packet(Packet::ConnectAck(ack)), &codec);
        socket.linger(&io.get_ref());
        None
    };
    let will = pkt.last_will.as_ref().map(|w| Will {
        topic: w.topic.clone(),
        payload: w.message.clone(),
        qos: qos_in(w.qos),
        retain: w.retain,
        properties: MessageProperties::default(),
        message_expiry: None,
        delay: 0,
    });
    if will.as_ref().is_some_and(|w| !valid_topic_name(&w.topic)) {
        // 3.1.1 has no return code for a bad will topic; refuse as not authorized.
        return refuse(ConnectAckReason::NotAuthorized);
    }
    let req = ConnectRequest {
        protocol: Protocol::V311,
        client_id: pkt.client_id,
        clean_start: pkt.clean_session,
        // A clean session ends with the connection; a persistent one never expires.
        session_expiry: if pkt.clean_session { 0 } else { u32::MAX },
        receive_max: u16::MAX,
        keep_alive: pkt.keep_alive,
        username: pkt.username,
        password: pkt.password,
        peer: io.query::<PeerAddr>().get().map(|a| a.0),
        certified: super::certified(&io.get_ref()),
    };
    let accepted = match broker.connect(req).await {
        Ok(a) => a,
        Err(ConnectRefused::IdentifierRejected) => {
            return refuse(ConnectAckReason::IdentifierRejected);
        }
        Err(ConnectRefused::BadCredentials) => {
            return refuse(ConnectAckReason::BadUserNameOrPassword);
        }
        Err(ConnectRefused::NotAuthorized) => return refuse(ConnectAckReason::NotAuthorized),
        Err(ConnectRefused::Unavailable | ConnectRefused::QuotaExceeded) => {
            return refuse(ConnectAckReason::ServiceUnavailable);
        }
    };
    let ack = ConnectAck {
        return_code: ConnectAckReason::ConnectionAccepted,
        session_present: accepted.present,
    };
    let _ = io.encode(Encoded::Packet(Packet::ConnectAck(ack)), &codec);
    let conn = Conn::new(
        broker.clone(),
        accepted,
        io.get_ref(),
        Some(socket),
        Wire::V3 { codec },
        will,
    );
    // 3.1.1 has no Server Keep Alive: the client's value, enforced at 1.5x [MQTT-3.1.2-24];
    // 0 turns the mechanism off.
    let keep_alive = match pkt.keep_alive {
        0 => 0,
        k => k.saturating_add(k / 2),
    };
    Some((conn, Seconds(keep_alive)))
}

/// What the socket produced next.
enum Event {
    Packet(Decoded),
    /// The write buffer is over its high-water mark: stop reading until it drains.
    Backpressure,
    /// The peer went away, sent something undecodable, or let the keep-alive expire.
    End,
}

fn next<F: Filter>(io: &Io<F>, codec: &V3Codec) -> impl Future<Output = Event> {
    poll_fn(move |cx| match io.poll_recv(codec, cx) {
        Poll::Ready(Ok(item)) => Poll::Ready(Event::Packet(item)),
        Poll::Ready(Err(RecvError::WriteBackpressure)) => Poll::Ready(Event::Backpressure),
        Poll::Ready(Err(e)) => {
            tracing::debug!(error = ?e, "mqtt 3.1.1 connection ends");
            Poll::Ready(Event::End)
        }
        Poll::Pending => Poll::Pending,
    })
}

/// The connection's one loop: inbound packets, outbound deliveries, keep-alive.
async fn run<F: Filter>(io: &Io<F>, conn: &Conn, keep_alive: Seconds) {
    let Wire::V3 { codec } = &conn.wire else {
        return;
    };
    let partial = Partial::default();
    // PUBACK / PUBREC waiting for peers to confirm a forwarded message, in arrival order.
    let mut held: VecDeque<Ack<Encoded>> = VecDeque::new();
    io.start_timer(keep_alive);
    conn.resume();
    while !io.is_closed() {
        conn.flush();
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
        match event {
            Event::Packet(Decoded::Packet(Packet::Disconnect, size)) => {
                conn.received(size);
                conn.clear_will();
                break;
            }
            Event::Packet(packet @ (Decoded::Publish(..) | Decoded::PayloadChunk(..))) => {
                io.start_timer(keep_alive);
                if let Some(ack) = publish(conn, &partial, packet) {
                    held.push_back(ack);
                    release(io, codec, &mut held);
                }
            }
            Event::Packet(packet) => {
                io.start_timer(keep_alive);
                let subscribed = matches!(packet, Decoded::Packet(Packet::Subscribe { .. }, _));
                if let Some(reply) = handle(conn, packet) {
                    // A SUBACK goes out once the other nodes know the new routes.
                    if subscribed && let Some(settled) = conn.broker.routes_settled() {
                        settled.await;
                    }
                    let _ = io.encode(reply, codec);
                }
            }
            Event::Backpressure => tokio::select! {
                flushed = io.flush(false) => if flushed.is_err() {
                    break;
                },
                () = conn.link.woken() => conn.on_woken(),
            },
            Event::End => break,
        }
    }
}

/// Resolves once the first held acknowledgement may go.
async fn confirmed(held: &mut VecDeque<Ack<Encoded>>) {
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
fn release<F: Filter>(io: &Io<F>, codec: &V3Codec, held: &mut VecDeque<Ack<Encoded>>) {
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

/// A PUBLISH (or the rest of its payload): its effect, and its acknowledgement, if any.
fn publish(conn: &Conn, partial: &Partial<codec::Publish>, req: Decoded) -> Option<Ack<Encoded>> {
    match req {
        Decoded::Publish(pkt, payload, size) => {
            conn.received(size);
            partial
                .start(pkt, payload)
                .and_then(|(pkt, payload)| publish_in(conn, pkt, payload))
        }
        Decoded::PayloadChunk(chunk, eof) => partial
            .chunk(conn, chunk, eof)
            .and_then(|(pkt, payload)| publish_in(conn, pkt, payload)),
        Decoded::Packet(..) => None,
    }
}

/// Any other decoded packet: its effect, and the reply to encode, if any.
fn handle(conn: &Conn, req: Decoded) -> Option<Encoded> {
    match req {
        Decoded::Publish(..) | Decoded::PayloadChunk(..) => None,
        Decoded::Packet(packet, size) => {
            conn.received(size);
            match packet {
                Packet::PublishAck { packet_id } => {
                    conn.on_puback(packet_id.get());
                    None
                }
                Packet::PublishReceived { packet_id } => {
                    match conn.on_pubrec(packet_id.get(), true) {
                        PubRecReply::Release | PubRecReply::NotFound => {
                            Some(Packet::PublishRelease { packet_id }.into())
                        }
                        PubRecReply::Done => None,
                    }
                }
                Packet::PublishComplete { packet_id } => {
                    conn.on_pubcomp(packet_id.get());
                    None
                }
                Packet::PublishRelease { packet_id } => {
                    // Inbound QoS 2 state lives in the session, so this also completes flows an
                    // earlier connection began; 3.1.1 always answers PUBCOMP.
                    conn.release_inbound(packet_id.get());
                    Some(Packet::PublishComplete { packet_id }.into())
                }
                Packet::Subscribe {
                    packet_id,
                    topic_filters,
                } if !topic_filters.is_empty() => {
                    let requests = topic_filters
                        .into_iter()
                        .map(|(filter, qos)| SubRequest {
                            filter,
                            opts: SubOptions {
                                qos: qos_in(qos),
                                ..SubOptions::default()
                            },
                        })
                        .collect();
                    let status = conn
                        .broker
                        .subscribe(&conn.session, &conn.client, requests)
                        .into_iter()
                        .map(|r| match r {
                            SubResult::Granted(q) => SubscribeReturnCode::Success(qos_out(q)),
                            _ => SubscribeReturnCode::Failure,
                        })
                        .collect();
                    Some(Packet::SubscribeAck { packet_id, status }.into())
                }
                Packet::Unsubscribe {
                    packet_id,
                    topic_filters,
                } if !topic_filters.is_empty() => {
                    conn.broker.unsubscribe(&conn.session, &topic_filters);
                    Some(Packet::UnsubscribeAck { packet_id }.into())
                }
                Packet::PingRequest => Some(Packet::PingResponse.into()),
                // `run` ends the connection on DISCONNECT before it gets here.
                Packet::Disconnect => None,
                // A second CONNECT [MQTT-3.1.0-2], packets only a server sends, and SUBSCRIBE /
                // UNSUBSCRIBE without filters [MQTT-3.8.3-3, MQTT-3.10.3-2] close the
                // connection.
                Packet::Connect(_)
                | Packet::ConnectAck(_)
                | Packet::SubscribeAck { .. }
                | Packet::UnsubscribeAck { .. }
                | Packet::PingResponse
                | Packet::Subscribe { .. }
                | Packet::Unsubscribe { .. } => {
                    conn.violation(Dr::ProtocolError);
                    None
                }
            }
        }
    }
}

/// An inbound PUBLISH: check it, route it, produce its PUBACK / PUBREC. 3.1.1 cannot refuse a
/// PUBLISH, so an unauthorized one is acknowledged and dropped.
fn publish_in(
    conn: &Conn,
    pkt: codec::Publish,
    payload: ntex_bytes::Bytes,
) -> Option<Ack<Encoded>> {
    let qos = qos_in(pkt.qos);
    let packet_id = pkt.packet_id;
    if let Err(code) = conn.admit(&pkt.topic, pkt.retain, qos, packet_id.map(|p| p.get())) {
        conn.violation(code);
        return None;
    }
    let msg = Message {
        topic: pkt.topic,
        payload,
        qos,
        retain: pkt.retain,
        properties: MessageProperties::default(),
        expires_at: None,
        publisher: Some(conn.client.client_id.clone()),
    };
    let after = match conn.publish(packet_id.map(|p| p.get()), msg) {
        Inbound::Routed { confirm, .. } => confirm,
        Inbound::Duplicate | Inbound::Denied | Inbound::OverQuota => None,
    };
    let packet_id = packet_id?;
    let packet = match qos {
        QoS::AtMostOnce => return None,
        QoS::AtLeastOnce => Packet::PublishAck { packet_id }.into(),
        QoS::ExactlyOnce => Packet::PublishReceived { packet_id }.into(),
    };
    Some(Ack { packet, after })
}
