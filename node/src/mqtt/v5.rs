//! MQTT 5.0: the packets of `driver::run` for 5.0 connections, with ntex-mqtt's v5 codec.
//! `connect` is CONNECT → `Broker::connect` → CONNACK with the server's limits; `handle`
//! answers each later packet (PUBLISH → `Conn::publish` → `Broker::publish`, the QoS acks in both
//! directions, SUBSCRIBE / UNSUBSCRIBE, PINGREQ, DISCONNECT, AUTH), and `ended` tells the
//! client why the server closes (keep-alive, a malformed or oversized packet).

use std::cell::RefCell;
use std::num::NonZeroU16;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntex::io::types::PeerAddr;
use ntex::io::{Filter, Io, RecvError};
use ntex::time::Seconds;
use ntex::util::{ByteString, Either};
use ntex_mqtt::error::DecodeError;
use ntex_mqtt::v5::codec::{self, Decoded, DisconnectReasonCode as Dr, Encoded, Packet};

use super::conn::{Ack, Conn, Inbound, Partial, PubRecReply};
use super::driver::{Action, Dialect, First};
use super::guard::V5Codec;
use super::linger::Socket;
use super::qos_in;
use super::wire::{OutAliases, V5Wire, Wire};
use crate::broker::{Broker, ConnectRefused, ConnectRequest, SubRequest, SubResult};
use crate::message::{Message, MessageProperties, Protocol, QoS, RetainHandling, SubOptions, Will};
use crate::routing::topic::valid_topic_name;

pub(super) struct V5;

impl Dialect for V5 {
    type Codec = V5Codec;
    type Partial = Partial<codec::Publish>;

    fn codec(max_packet_size: u32) -> V5Codec {
        V5Codec::new(max_packet_size)
    }

    async fn connect<F: Filter>(
        broker: &Arc<Broker>,
        io: &Io<F>,
        socket: Socket,
        codec: V5Codec,
        first: First<V5Codec>,
    ) -> Option<(Rc<Conn>, Seconds)> {
        match first? {
            Ok(Some(Decoded::Packet(Packet::Connect(pkt), size))) => {
                let (conn, keep_alive) = connect(broker, io, socket, codec, pkt).await?;
                conn.received(size);
                Some((conn, keep_alive))
            }
            // The CONNECT itself is too large or malformed: say so before closing.
            Err(Either::Left(DecodeError::MaxSizeExceeded { .. })) => {
                refuse(io, &codec, socket, codec::ConnectAckReason::PacketTooLarge)
            }
            Err(Either::Left(_)) => {
                refuse(io, &codec, socket, codec::ConnectAckReason::MalformedPacket)
            }
            _ => None,
        }
    }

    fn wire(conn: &Conn) -> Option<&V5Codec> {
        match &conn.wire {
            Wire::V5(w) => Some(&w.codec),
            Wire::V3 { .. } => None,
        }
    }

    fn handle(conn: &Conn, partial: &Self::Partial, req: Decoded) -> Action<Encoded> {
        match req {
            Decoded::Publish(pkt, payload, size) => {
                conn.received(size);
                let ack = partial
                    .start(pkt, payload)
                    .and_then(|(pkt, payload)| publish_in(conn, pkt, payload));
                ack.map_or(Action::Nothing, Action::Ack)
            }
            Decoded::PayloadChunk(chunk, eof) => {
                let ack = partial
                    .chunk(conn, chunk, eof)
                    .and_then(|(pkt, payload)| publish_in(conn, pkt, payload));
                ack.map_or(Action::Nothing, Action::Ack)
            }
            Decoded::Packet(packet, size) => {
                conn.received(size);
                handle(conn, packet)
            }
        }
    }

    fn ended(conn: &Conn, why: RecvError<V5Codec>) {
        let code = match why {
            RecvError::KeepAlive => Dr::KeepAliveTimeout,
            RecvError::Decoder(DecodeError::MaxSizeExceeded { .. }) => Dr::PacketTooLarge,
            RecvError::Decoder(_) => Dr::MalformedPacket,
            RecvError::PeerGone(_) | RecvError::WriteBackpressure => return,
        };
        conn.violation(code);
    }
}

/// CONNECT → CONNACK. `None` when refused (the CONNACK with the reason is already encoded).
async fn connect<F: Filter>(
    broker: &Arc<Broker>,
    io: &Io<F>,
    socket: Socket,
    codec: V5Codec,
    // Taken boxed and unboxed here, so the decoder's allocation is freed with the handshake
    // rather than held for the connection's life.
    pkt: Box<codec::Connect>,
) -> Option<(Rc<Conn>, Seconds)> {
    let pkt = *pkt;
    let refuse = |reason| refuse(io, &codec, socket, reason);
    if pkt.auth_method.is_some() {
        // Enhanced authentication (AUTH exchanges) is not offered.
        return refuse(codec::ConnectAckReason::BadAuthenticationMethod);
    }
    let will = pkt.last_will.as_ref().map(will_from);
    if will.as_ref().is_some_and(|w| !valid_topic_name(&w.topic)) {
        return refuse(codec::ConnectAckReason::TopicNameInvalid);
    }
    let asked_expiry = pkt.session_expiry_interval_secs;
    let req = ConnectRequest {
        protocol: Protocol::V5,
        client_id: pkt.client_id,
        clean_start: pkt.clean_start,
        session_expiry: asked_expiry,
        receive_max: pkt.receive_max.map_or(u16::MAX, NonZeroU16::get),
        keep_alive: pkt.keep_alive,
        username: pkt.username,
        password: pkt.password,
        peer: io.query::<PeerAddr>().get().map(|a| a.0),
        certified: super::certified(&io.get_ref()),
    };
    let accepted = match broker.connect(req).await {
        Ok(a) => a,
        Err(why) => {
            return refuse(match why {
                ConnectRefused::IdentifierRejected => {
                    codec::ConnectAckReason::ClientIdentifierNotValid
                }
                ConnectRefused::BadCredentials => codec::ConnectAckReason::BadUserNameOrPassword,
                ConnectRefused::NotAuthorized => codec::ConnectAckReason::NotAuthorized,
                ConnectRefused::Unavailable => codec::ConnectAckReason::ServerUnavailable,
                ConnectRefused::QuotaExceeded => codec::ConnectAckReason::QuotaExceeded,
            });
        }
    };
    let limits = &broker.limits;
    let (keep_alive, server_keep_alive) = super::keep_alive(pkt.keep_alive, limits.max_keepalive);
    let ack = codec::ConnectAck {
        session_present: accepted.present,
        assigned_client_id: accepted
            .assigned_client_id
            .then(|| ByteString::from(accepted.client.client_id.to_string())),
        server_keepalive_sec: server_keep_alive,
        session_expiry_interval_secs: (accepted.session_expiry != asked_expiry)
            .then_some(accepted.session_expiry),
        receive_max: NonZeroU16::new(limits.receive_maximum).unwrap_or(NonZeroU16::MAX),
        max_packet_size: Some(limits.max_packet_size),
        topic_alias_max: limits.topic_alias_maximum,
        retain_available: limits.retain_available,
        ..codec::ConnectAck::default()
    };
    let _ = io.encode(Packet::ConnectAck(Box::new(ack)).into(), &codec);
    // What this server sends is bounded by the client's Maximum Packet Size [MQTT-3.1.2-24].
    if let Some(max) = pkt.max_packet_size {
        codec.inner().set_max_outbound_size(max.get());
    }
    let wire = Wire::V5(Box::new(V5Wire {
        codec,
        aliases: RefCell::new(OutAliases::new(
            pkt.topic_alias_max,
            limits.max_outbound_topic_aliases,
        )),
        zero_expiry: asked_expiry == 0,
    }));
    let conn = Conn::new(broker.clone(), accepted, io.get_ref(), socket, wire, will);
    Some((conn, Seconds(keep_alive)))
}

/// Refuses the connection with a CONNACK whose reason the client must be able to read.
fn refuse<F: Filter, T>(
    io: &Io<F>,
    codec: &V5Codec,
    socket: Socket,
    reason_code: codec::ConnectAckReason,
) -> Option<T> {
    let ack = codec::ConnectAck {
        reason_code,
        ..codec::ConnectAck::default()
    };
    let _ = io.encode(Packet::ConnectAck(Box::new(ack)).into(), codec);
    socket.linger(&io.get_ref());
    None
}

/// Any packet but PUBLISH after the CONNECT.
fn handle(conn: &Conn, packet: Packet) -> Action<Encoded> {
    match packet {
        Packet::PublishAck(ack) => {
            conn.on_puback(ack.packet_id.get());
            Action::Nothing
        }
        Packet::PublishReceived(ack) => {
            let ok = u8::from(ack.reason_code) < 0x80;
            match conn.on_pubrec(ack.packet_id.get(), ok) {
                PubRecReply::Release => {
                    Action::Reply(pubrel(ack.packet_id, codec::PublishAck2Reason::Success))
                }
                PubRecReply::NotFound => Action::Reply(pubrel(
                    ack.packet_id,
                    codec::PublishAck2Reason::PacketIdNotFound,
                )),
                PubRecReply::Done => Action::Nothing,
            }
        }
        Packet::PublishComplete(ack) => {
            conn.on_pubcomp(ack.packet_id.get());
            Action::Nothing
        }
        Packet::PublishRelease(rel) => {
            // Inbound QoS 2 state lives in the session, so this also completes flows an
            // earlier connection of the session began.
            let reason_code = if conn.release_inbound(rel.packet_id.get()) {
                codec::PublishAck2Reason::Success
            } else {
                codec::PublishAck2Reason::PacketIdNotFound
            };
            Action::Reply(
                Packet::PublishComplete(codec::PublishAck2 {
                    packet_id: rel.packet_id,
                    reason_code,
                    properties: Vec::new(),
                    reason_string: None,
                })
                .into(),
            )
        }
        Packet::Subscribe(sub) if !sub.topic_filters.is_empty() => match subscribe(conn, sub) {
            Some(ack) => Action::Subscribed(Packet::SubscribeAck(ack).into()),
            None => Action::Nothing,
        },
        Packet::Unsubscribe(unsub) if !unsub.topic_filters.is_empty() => {
            Action::Reply(Packet::UnsubscribeAck(unsubscribe(conn, unsub)).into())
        }
        Packet::PingRequest => Action::Reply(Packet::PingResponse.into()),
        Packet::Disconnect(d) => disconnected(conn, &d),
        // Enhanced authentication is not offered, so there is no AUTH exchange to continue.
        Packet::Auth(_) => {
            conn.violation(Dr::BadAuthenticationMethod);
            Action::Nothing
        }
        // A second CONNECT [MQTT-3.1.0-2], packets only a server sends, and SUBSCRIBE /
        // UNSUBSCRIBE without filters [MQTT-3.8.3-2, MQTT-3.10.3-2] are protocol errors.
        Packet::Connect(_)
        | Packet::ConnectAck(_)
        | Packet::SubscribeAck(_)
        | Packet::UnsubscribeAck(_)
        | Packet::PingResponse
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_) => {
            conn.violation(Dr::ProtocolError);
            Action::Nothing
        }
    }
}

/// The client's DISCONNECT: the will goes unless it asked for it, the session expiry may change.
fn disconnected(conn: &Conn, d: &codec::Disconnect) -> Action<Encoded> {
    if let Some(expiry) = d.session_expiry_interval_secs {
        let Wire::V5(w) = &conn.wire else {
            return Action::Disconnect;
        };
        // A session that was to end with the connection cannot be made to outlive it here
        // [MQTT-3.14.2-22].
        if expiry > 0 && w.zero_expiry {
            conn.violation(Dr::ProtocolError);
            return Action::Nothing;
        }
        conn.broker.set_session_expiry(&conn.session, expiry);
    }
    // Only a normal disconnect discards the will [MQTT-3.14.4-3]; 0x04 and errors keep it.
    if d.reason_code == Dr::NormalDisconnection {
        conn.clear_will();
    }
    Action::Disconnect
}

fn will_from(w: &codec::LastWill) -> Will {
    Will {
        topic: w.topic.clone(),
        payload: w.message.clone(),
        qos: qos_in(w.qos),
        retain: w.retain,
        properties: MessageProperties {
            payload_is_utf8: w.is_utf8_payload.unwrap_or(false),
            content_type: w.content_type.clone(),
            response_topic: w.response_topic.clone(),
            correlation_data: w.correlation_data.clone(),
            user_properties: w.user_properties.clone(),
        },
        message_expiry: w.message_expiry_interval.map(|v| v.get()),
        delay: w.will_delay_interval_sec.unwrap_or(0),
    }
}

/// An inbound PUBLISH: resolve the alias, check it, route it, and produce its PUBACK / PUBREC.
fn publish_in(
    conn: &Conn,
    mut pkt: codec::Publish,
    payload: ntex_bytes::Bytes,
) -> Option<Ack<Encoded>> {
    let qos = qos_in(pkt.qos);
    let packet_id = pkt.packet_id.map(NonZeroU16::get);
    let checked = if pkt.properties.subscription_ids.is_empty() {
        conn.resolve_alias(pkt.properties.topic_alias, &mut pkt.topic)
            .and_then(|()| conn.admit(&pkt.topic, pkt.retain, qos, packet_id))
    } else {
        // Only the server may send Subscription Identifiers [MQTT-3.3.4-6].
        Err(Dr::ProtocolError)
    };
    if let Err(code) = checked {
        conn.violation(code);
        return None;
    }
    let props = pkt.properties;
    let msg = Message {
        topic: pkt.topic,
        payload,
        qos,
        retain: pkt.retain,
        properties: MessageProperties {
            payload_is_utf8: props.is_utf8_payload,
            content_type: props.content_type,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            user_properties: props.user_properties,
        },
        expires_at: props
            .message_expiry_interval
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s.get()))),
        publisher: Some(conn.client.client_id.clone()),
    };
    let (reason, after) = match conn.publish(packet_id, msg) {
        Inbound::Routed {
            matched: 0,
            confirm,
        } => (codec::PublishAckReason::NoMatchingSubscribers, confirm),
        Inbound::Routed { confirm, .. } => (codec::PublishAckReason::Success, confirm),
        Inbound::Duplicate => (codec::PublishAckReason::Success, None),
        Inbound::Denied => (codec::PublishAckReason::NotAuthorized, None),
        Inbound::OverQuota => (codec::PublishAckReason::QuotaExceeded, None),
    };
    let ack = codec::PublishAck {
        packet_id: pkt.packet_id?,
        reason_code: reason,
        properties: Vec::new(),
        reason_string: None,
    };
    let packet = match qos {
        QoS::AtMostOnce => return None,
        QoS::AtLeastOnce => Packet::PublishAck(ack).into(),
        QoS::ExactlyOnce => Packet::PublishReceived(ack).into(),
    };
    Some(Ack { packet, after })
}

fn pubrel(packet_id: NonZeroU16, reason_code: codec::PublishAck2Reason) -> Encoded {
    Packet::PublishRelease(codec::PublishAck2 {
        packet_id,
        reason_code,
        properties: Vec::new(),
        reason_string: None,
    })
    .into()
}

/// `None` when the request breaks the protocol (the connection is closing).
fn subscribe(conn: &Conn, sub: codec::Subscribe) -> Option<codec::SubscribeAck> {
    let sub_id = sub.id.map(|i| i.get());
    let mut requests = Vec::with_capacity(sub.topic_filters.len());
    for (filter, o) in sub.topic_filters {
        // No Local on a shared subscription is a protocol error [MQTT-3.8.3-4].
        if o.no_local && filter.starts_with("$share/") {
            conn.violation(Dr::ProtocolError);
            return None;
        }
        requests.push(SubRequest {
            filter,
            opts: SubOptions {
                qos: qos_in(o.qos),
                no_local: o.no_local,
                retain_as_published: o.retain_as_published,
                retain_handling: match o.retain_handling {
                    codec::RetainHandling::AtSubscribe => RetainHandling::SendAtSubscribe,
                    codec::RetainHandling::AtSubscribeNew => RetainHandling::SendIfNew,
                    codec::RetainHandling::NoAtSubscribe => RetainHandling::DoNotSend,
                },
                subscription_id: sub_id,
            },
        });
    }
    let status = conn
        .broker
        .subscribe(&conn.session, &conn.client, requests)
        .into_iter()
        .map(|r| match r {
            SubResult::Granted(QoS::AtMostOnce) => codec::SubscribeAckReason::GrantedQos0,
            SubResult::Granted(QoS::AtLeastOnce) => codec::SubscribeAckReason::GrantedQos1,
            SubResult::Granted(QoS::ExactlyOnce) => codec::SubscribeAckReason::GrantedQos2,
            SubResult::BadFilter => codec::SubscribeAckReason::TopicFilterInvalid,
            SubResult::NotAuthorized => codec::SubscribeAckReason::NotAuthorized,
            SubResult::SessionGone => codec::SubscribeAckReason::UnspecifiedError,
            SubResult::QuotaExceeded => codec::SubscribeAckReason::QuotaExceeded,
        })
        .collect();
    Some(codec::SubscribeAck {
        packet_id: sub.packet_id,
        properties: Vec::new(),
        reason_string: None,
        status,
    })
}

fn unsubscribe(conn: &Conn, unsub: codec::Unsubscribe) -> codec::UnsubscribeAck {
    let status = conn
        .broker
        .unsubscribe(&conn.session, &unsub.topic_filters)
        .into_iter()
        .zip(&unsub.topic_filters)
        .map(|(existed, f)| {
            if crate::routing::topic::parse_filter(f).is_err() {
                codec::UnsubscribeAckReason::TopicFilterInvalid
            } else if existed {
                codec::UnsubscribeAckReason::Success
            } else {
                codec::UnsubscribeAckReason::NoSubscriptionExisted
            }
        })
        .collect();
    codec::UnsubscribeAck {
        packet_id: unsub.packet_id,
        properties: Vec::new(),
        reason_string: None,
        status,
    }
}
