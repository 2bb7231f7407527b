//! MQTT 5.0 adapter: ntex-mqtt v5 packets <-> broker calls.
//!
//! Flow of one connection: `connect` (CONNECT → `Broker::connect` → CONNACK) → `SessionLayer`,
//! which sees every decoded packet first and answers PUBLISH (→ `Conn::publish` →
//! `Broker::publish`), the QoS acks in both directions and SUBSCRIBE / UNSUBSCRIBE itself → ntex's
//! dispatcher for the rest → `protocol` (PINGREQ, DISCONNECT, AUTH) → `control` (how the
//! connection ends).

use std::num::NonZeroU16;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ntex::io::types::PeerAddr;
use ntex::service::{Ctx, Service};
use ntex_mqtt::error::{DecodeError, DispatcherError, MqttProtocolError};
use ntex_mqtt::v5::codec::{self, Decoded, DisconnectReasonCode as Dr, Encoded, Packet};
use ntex_mqtt::{Control, Reason, v5};

use super::conn::{Ack, Conn, Inbound, OutAliases, PubRecReply, SessionService, V5Wire, Wire};
use super::linger;
use super::{MqttFail, qos_in};
use crate::broker::{Broker, ConnectRefused, ConnectRequest, SubRequest, SubResult};
use crate::message::{Message, MessageProperties, Protocol, QoS, RetainHandling, SubOptions, Will};
use crate::routing::topic::valid_topic_name;

pub(super) type Session = v5::Session<Rc<Conn>>;

pub(super) async fn connect(
    broker: &Arc<Broker>,
    hs: v5::Connect,
) -> Result<v5::ConnectAck<Rc<Conn>>, MqttFail> {
    let socket = linger::take(&hs.io().get_ref());
    // Every refusal below is a CONNACK with a reason the client must be able to read.
    let refuse = |hs: v5::Connect, reason| {
        if let Some(socket) = socket {
            socket.linger(&hs.io().get_ref());
        }
        Ok(hs.failed(reason))
    };
    let pkt = hs.packet();
    if pkt.auth_method.is_some() {
        // Enhanced authentication (AUTH exchanges) is not offered.
        return refuse(hs, codec::ConnectAckReason::BadAuthenticationMethod);
    }
    let will = pkt.last_will.as_ref().map(will_from);
    if will.as_ref().is_some_and(|w| !valid_topic_name(&w.topic)) {
        return refuse(hs, codec::ConnectAckReason::TopicNameInvalid);
    }
    let req = ConnectRequest {
        protocol: Protocol::V5,
        client_id: pkt.client_id.clone(),
        clean_start: pkt.clean_start,
        session_expiry: pkt.session_expiry_interval_secs,
        receive_max: pkt.receive_max.map_or(u16::MAX, NonZeroU16::get),
        keep_alive: pkt.keep_alive,
        username: pkt.username.clone(),
        password: pkt.password.clone(),
        peer: hs.io().query::<PeerAddr>().get().map(|a| a.0),
        certified: super::certified(&hs.io().get_ref()),
    };
    let (keep_alive, alias_max, max_packet) =
        (pkt.keep_alive, pkt.topic_alias_max, pkt.max_packet_size);
    let asked_expiry = pkt.session_expiry_interval_secs;

    let accepted = match broker.connect(req).await {
        Ok(a) => a,
        Err(why) => {
            return refuse(
                hs,
                match why {
                    ConnectRefused::IdentifierRejected => {
                        codec::ConnectAckReason::ClientIdentifierNotValid
                    }
                    ConnectRefused::BadCredentials => {
                        codec::ConnectAckReason::BadUserNameOrPassword
                    }
                    ConnectRefused::NotAuthorized => codec::ConnectAckReason::NotAuthorized,
                    ConnectRefused::Unavailable => codec::ConnectAckReason::ServerUnavailable,
                    ConnectRefused::QuotaExceeded => codec::ConnectAckReason::QuotaExceeded,
                },
            );
        }
    };
    let present = accepted.present;
    let assigned = accepted
        .assigned_client_id
        .then(|| accepted.client.client_id.to_string());
    let expiry = accepted.session_expiry;

    let out_codec = codec::Codec::new();
    if let Some(max) = max_packet {
        out_codec.set_max_outbound_size(max.get());
    }
    let wire = Wire::V5(Box::new(V5Wire {
        codec: out_codec,
        sink: hs.sink(),
        aliases: std::cell::RefCell::new(OutAliases::new(
            alias_max,
            broker.limits.max_outbound_topic_aliases,
        )),
    }));
    let conn = Conn::new(
        broker.clone(),
        accepted,
        hs.io().get_ref(),
        socket,
        wire,
        will,
    );
    let (timeout, server_keep_alive) = super::keep_alive(keep_alive, broker.limits.max_keepalive);
    let retain = broker.limits.retain_available;
    Ok(hs.ack(conn).keep_alive(timeout).with(|ack| {
        ack.session_present = present;
        ack.assigned_client_id = assigned.map(Into::into);
        ack.server_keepalive_sec = server_keep_alive;
        ack.retain_available = retain;
        if expiry != asked_expiry {
            ack.session_expiry_interval_secs = Some(expiry);
        }
    }))
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

/// ntex's publish service. `SessionLayer` answers every PUBLISH before ntex's dispatcher sees
/// it, so this only runs if that invariant breaks, and then it ends the connection rather than
/// acknowledge a message nobody routed.
pub(super) async fn publish(_: &Session, _: v5::Publish) -> Result<v5::PublishAck, MqttFail> {
    Err(MqttFail::Unrouted)
}

/// PINGREQ, DISCONNECT and AUTH (everything `SessionLayer` passes on).
pub(super) async fn protocol(
    s: &Session,
    msg: v5::ProtocolMessage,
) -> Result<v5::ProtocolMessageAck, MqttFail> {
    let conn: &Conn = s;
    Ok(match msg {
        v5::ProtocolMessage::Ping(p) => p.ack(),
        v5::ProtocolMessage::Disconnect(d) => {
            let pkt = d.packet();
            // Only a normal disconnect discards the will [MQTT-3.14.4-3]; 0x04 and errors keep it.
            if pkt.reason_code == Dr::NormalDisconnection {
                conn.clear_will();
            }
            if let Some(expiry) = pkt.session_expiry_interval_secs {
                conn.broker.set_session_expiry(&conn.session, expiry);
            }
            d.ack()
        }
        v5::ProtocolMessage::Auth(_) => {
            msg.disconnect_with(codec::Disconnect::new(Dr::BadAuthenticationMethod))
        }
        // SessionLayer answers these itself; should one slip through, nothing is confirmed, so
        // the client sees failures rather than a false success.
        v5::ProtocolMessage::PublishRelease(_)
        | v5::ProtocolMessage::Subscribe(_)
        | v5::ProtocolMessage::Unsubscribe(_) => {
            msg.disconnect_with(codec::Disconnect::new(Dr::ImplementationSpecificError))
        }
    })
}

/// How the connection ends: the DISCONNECT reason the client gets.
pub(super) async fn control(
    s: &Session,
    ctl: Control<MqttFail>,
) -> Result<Option<Encoded>, MqttFail> {
    Ok(match ctl {
        Control::WrBackpressure(b) => {
            if !b.enabled() {
                s.link.wake();
            }
            None
        }
        Control::Stop(Reason::Protocol(e)) => {
            s.linger();
            Some(disconnect(protocol_reason(e.get_ref())))
        }
        Control::Stop(Reason::Error(_)) => {
            s.linger();
            Some(disconnect(Dr::ImplementationSpecificError))
        }
        Control::Stop(Reason::PeerGone(_)) => None,
    })
}

fn disconnect(code: Dr) -> Encoded {
    Packet::Disconnect(codec::Disconnect::new(code)).into()
}

fn protocol_reason(e: &MqttProtocolError) -> Dr {
    match e {
        MqttProtocolError::Decode(DecodeError::MaxSizeExceeded { .. }) => Dr::PacketTooLarge,
        MqttProtocolError::Decode(_) => Dr::MalformedPacket,
        MqttProtocolError::ProtocolViolation(v) => v.reason(),
        MqttProtocolError::KeepAliveTimeout | MqttProtocolError::ReadTimeout => {
            Dr::KeepAliveTimeout
        }
        _ => Dr::ImplementationSpecificError,
    }
}

type DispErr = DispatcherError<MqttFail>;

/// The v5 packets `SessionLayer` answers itself; see the module docs.
impl<S, St> Service<St, Decoded> for SessionService<S, codec::Publish>
where
    S: Service<St, Decoded, Res = Option<Encoded>, Error = DispErr>,
{
    type Res = Option<Encoded>;
    type Error = DispErr;

    ntex::forward_ready!(St, inner);
    ntex::forward_shutdown!(St, inner);

    async fn call(&self, req: Decoded, ctx: Ctx<'_, Self, St>) -> Result<Self::Res, Self::Error> {
        let conn = &self.conn;
        match req {
            Decoded::Packet(Packet::PublishAck(ack), size) => {
                conn.received(size);
                conn.on_puback(ack.packet_id.get());
                Ok(None)
            }
            Decoded::Packet(Packet::PublishReceived(ack), size) => {
                conn.received(size);
                let ok = u8::from(ack.reason_code) < 0x80;
                Ok(match conn.on_pubrec(ack.packet_id.get(), ok) {
                    PubRecReply::Release => {
                        Some(pubrel(ack.packet_id, codec::PublishAck2Reason::Success))
                    }
                    PubRecReply::NotFound => Some(pubrel(
                        ack.packet_id,
                        codec::PublishAck2Reason::PacketIdNotFound,
                    )),
                    PubRecReply::Done => None,
                })
            }
            Decoded::Packet(Packet::PublishComplete(ack), size) => {
                conn.received(size);
                conn.on_pubcomp(ack.packet_id.get());
                Ok(None)
            }
            Decoded::Publish(pkt, payload, size) => {
                conn.received(size);
                let ack = self
                    .partial
                    .start(pkt, payload)
                    .and_then(|(pkt, payload)| publish_in(conn, pkt, payload));
                Ok(acknowledge(ack).await)
            }
            Decoded::PayloadChunk(chunk, eof) => {
                let ack = self
                    .partial
                    .chunk(conn, chunk, eof)
                    .and_then(|(pkt, payload)| publish_in(conn, pkt, payload));
                Ok(acknowledge(ack).await)
            }
            Decoded::Packet(Packet::PublishRelease(rel), size) => {
                // Inbound QoS 2 state lives in the session, so this also completes flows an
                // earlier connection of the session began.
                conn.received(size);
                let reason = if conn.release_inbound(rel.packet_id.get()) {
                    codec::PublishAck2Reason::Success
                } else {
                    codec::PublishAck2Reason::PacketIdNotFound
                };
                Ok(Some(
                    Packet::PublishComplete(codec::PublishAck2 {
                        packet_id: rel.packet_id,
                        reason_code: reason,
                        properties: Vec::new(),
                        reason_string: None,
                    })
                    .into(),
                ))
            }
            Decoded::Packet(Packet::Subscribe(sub), size) if !sub.topic_filters.is_empty() => {
                conn.received(size);
                let ack = subscribe(conn, sub)?;
                // A SUBACK goes out once the other nodes know the new routes.
                if let Some(settled) = conn.broker.routes_settled() {
                    settled.await;
                }
                Ok(Some(Packet::SubscribeAck(ack).into()))
            }
            Decoded::Packet(Packet::Unsubscribe(unsub), size)
                if !unsub.topic_filters.is_empty() =>
            {
                conn.received(size);
                Ok(Some(
                    Packet::UnsubscribeAck(unsubscribe(conn, unsub)).into(),
                ))
            }
            // A second CONNECT [MQTT-3.1.0-2], packets only a server sends, and SUBSCRIBE /
            // UNSUBSCRIBE without filters [MQTT-3.8.3-2, MQTT-3.10.3-2] are protocol errors.
            Decoded::Packet(
                Packet::Connect(_)
                | Packet::ConnectAck(_)
                | Packet::SubscribeAck(_)
                | Packet::UnsubscribeAck(_)
                | Packet::PingResponse
                | Packet::Subscribe(_)
                | Packet::Unsubscribe(_),
                size,
            ) => {
                conn.received(size);
                conn.violation(Dr::ProtocolError);
                Ok(None)
            }
            Decoded::Packet(_, size) => {
                conn.received(size);
                ctx.call(&self.inner, req).await
            }
        }
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

/// The reply to a PUBLISH, once the peers it was forwarded to confirmed it; ntex's dispatcher
/// answers calls in order, so later replies wait behind it.
async fn acknowledge(ack: Option<Ack<Encoded>>) -> Option<Encoded> {
    let ack = ack?;
    if let Some(confirm) = ack.after {
        confirm.await;
    }
    Some(ack.packet)
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

fn subscribe(conn: &Conn, sub: codec::Subscribe) -> Result<codec::SubscribeAck, DispErr> {
    let sub_id = sub.id.map(|i| i.get());
    let mut requests = Vec::with_capacity(sub.topic_filters.len());
    for (filter, o) in sub.topic_filters {
        if o.no_local && filter.starts_with("$share/") {
            return Err(DispatcherError::Protocol(
                MqttProtocolError::generic_violation(
                    "No Local set on a shared subscription [MQTT-3.8.3-4]",
                ),
            ));
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
    Ok(codec::SubscribeAck {
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
