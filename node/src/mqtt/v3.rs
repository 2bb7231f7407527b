//! MQTT 3.1.1: the packets of `driver::run` for 3.1.1 connections, with ntex-mqtt's v3 codec.
//! `connect` is CONNECT → `Broker::connect` → CONNACK; `handle` answers each later packet
//! (PUBLISH → `Conn::publish` → `Broker::publish`, the QoS acks, SUBSCRIBE, PINGREQ).

use std::rc::Rc;
use std::sync::Arc;

use ntex::io::types::PeerAddr;
use ntex::io::{Filter, Io, RecvError};
use ntex::time::Seconds;
use ntex_mqtt::v3::codec::{
    self, ConnectAck, ConnectAckReason, Decoded, Encoded, Packet, SubscribeReturnCode,
};
use ntex_mqtt::v5::codec::DisconnectReasonCode as Dr;

use super::conn::{Ack, Conn, Inbound, Partial, PubRecReply};
use super::driver::{Action, Dialect, First};
use super::guard::V3Codec;
use super::linger::Socket;
use super::wire::Wire;
use super::{qos_in, qos_out};
use crate::broker::{Broker, ConnectRefused, ConnectRequest, SubRequest, SubResult};
use crate::message::{Message, MessageProperties, Protocol, QoS, SubOptions, Will};
use crate::routing::topic::valid_topic_name;

pub(super) struct V3;

impl Dialect for V3 {
    type Codec = V3Codec;
    type Partial = Partial<codec::Publish>;

    fn codec(max_packet_size: u32) -> V3Codec {
        V3Codec::new(max_packet_size)
    }

    async fn connect<F: Filter>(
        broker: &Arc<Broker>,
        io: &Io<F>,
        socket: Socket,
        codec: V3Codec,
        first: First<V3Codec>,
    ) -> Option<(Rc<Conn>, Seconds)> {
        let Some(Ok(Some(Decoded::Packet(Packet::Connect(pkt), size)))) = first else {
            return None;
        };
        let (conn, keep_alive) = connect(broker, io, socket, codec, pkt).await?;
        conn.received(size);
        Some((conn, keep_alive))
    }

    fn wire(conn: &Conn) -> Option<&V3Codec> {
        match &conn.wire {
            Wire::V3 { codec } => Some(codec),
            Wire::V5(_) => None,
        }
    }

    fn handle(conn: &Conn, partial: &Self::Partial, packet: Decoded) -> Action<Encoded> {
        match packet {
            Decoded::Packet(Packet::Disconnect, size) => {
                conn.received(size);
                conn.clear_will();
                Action::Disconnect
            }
            packet @ (Decoded::Publish(..) | Decoded::PayloadChunk(..)) => {
                publish(conn, partial, packet).map_or(Action::Nothing, Action::Ack)
            }
            packet => {
                let subscribed = matches!(packet, Decoded::Packet(Packet::Subscribe { .. }, _));
                match handle(conn, packet) {
                    Some(reply) if subscribed => Action::Subscribed(reply),
                    Some(reply) => Action::Reply(reply),
                    None => Action::Nothing,
                }
            }
        }
    }

    fn ended(_: &Conn, why: RecvError<V3Codec>) {
        // 3.1.1 has no DISCONNECT from the server: whatever the cause, the socket just closes.
        tracing::debug!(error = ?why, "mqtt 3.1.1 connection ends");
    }
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
        socket,
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
