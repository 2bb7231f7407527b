//! MQTT 3.1.1 adapter: ntex-mqtt v3 packets <-> broker calls. Same shape as `v5.rs`, without
//! properties and reason codes: the protocol's only refusals are CONNACK return codes and the
//! SUBACK failure code 0x80, and every other error closes the connection.

use std::rc::Rc;
use std::sync::Arc;

use ntex::io::types::PeerAddr;
use ntex::service::{Ctx, Service};
use ntex_mqtt::error::DispatcherError;
use ntex_mqtt::v3::codec::{self, Decoded, Encoded, Packet, SubscribeReturnCode};
use ntex_mqtt::v5::codec::DisconnectReasonCode as Dr;
use ntex_mqtt::{Control, v3};

use super::conn::{Conn, PubRecReply, SessionService, Wire};
use super::{MqttFail, qos_in, qos_out};
use crate::broker::{Broker, ConnectRefused, ConnectRequest, SubRequest, SubResult};
use crate::message::{Message, MessageProperties, Protocol, QoS, SubOptions, Will};
use crate::routing::topic::valid_topic_name;

pub(super) type Session = v3::Session<Rc<Conn>>;

pub(super) async fn connect(
    broker: &Arc<Broker>,
    hs: v3::Connect,
) -> Result<v3::ConnectAck<Rc<Conn>>, MqttFail> {
    let pkt = hs.packet();
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
        return Ok(hs.not_authorized());
    }
    let req = ConnectRequest {
        protocol: Protocol::V311,
        client_id: pkt.client_id.clone(),
        clean_start: pkt.clean_session,
        // A clean session ends with the connection; a persistent one never expires.
        session_expiry: if pkt.clean_session { 0 } else { u32::MAX },
        receive_max: u16::MAX,
        username: pkt.username.clone(),
        password: pkt.password.clone(),
        peer: hs.io().query::<PeerAddr>().get().map(|a| a.0),
    };
    let keep_alive = pkt.keep_alive;
    let accepted = match broker.connect(req).await {
        Ok(a) => a,
        Err(ConnectRefused::IdentifierRejected) => return Ok(hs.identifier_rejected()),
        Err(ConnectRefused::BadCredentials) => return Ok(hs.bad_username_or_pwd()),
        Err(ConnectRefused::NotAuthorized) => return Ok(hs.not_authorized()),
        Err(ConnectRefused::Unavailable) => return Ok(hs.service_unavailable()),
    };
    let present = accepted.present;
    let wire = Wire::V3 {
        codec: codec::Codec::default(),
        sink: hs.sink(),
    };
    let conn = Conn::new(broker.clone(), accepted, hs.io().get_ref(), wire, will);
    // 3.1.1 has no Server Keep Alive: the client's value, enforced at 1.5x [MQTT-3.1.2-24];
    // 0 turns the mechanism off.
    let timeout = match keep_alive {
        0 => 0,
        k => k.saturating_add(k / 2),
    };
    Ok(hs
        .ack(conn, present)
        .idle_timeout(ntex::time::Seconds(timeout)))
}

/// ntex's publish service; unreachable while `SessionLayer` answers every PUBLISH (see
/// `v5::publish`).
pub(super) async fn publish(_: &Session, _: v3::Publish) -> Result<(), MqttFail> {
    Err(MqttFail::Unrouted)
}

pub(super) async fn protocol(
    s: &Session,
    msg: v3::ProtocolMessage,
) -> Result<v3::ProtocolMessageAck, MqttFail> {
    let conn: &Conn = s;
    Ok(match msg {
        v3::ProtocolMessage::Ping(p) => p.ack(),
        v3::ProtocolMessage::Disconnect(d) => {
            conn.clear_will();
            d.ack()
        }
        // SessionLayer answers these itself; should one slip through, close the connection
        // rather than confirm what was not done.
        v3::ProtocolMessage::PublishRelease(_)
        | v3::ProtocolMessage::Subscribe(_)
        | v3::ProtocolMessage::Unsubscribe(_) => msg.disconnect(),
    })
}

pub(super) async fn control(
    s: &Session,
    ctl: Control<MqttFail>,
) -> Result<Option<Encoded>, MqttFail> {
    if let Control::WrBackpressure(b) = ctl
        && !b.enabled()
    {
        s.link.wake();
    }
    Ok(None)
}

type DispErr = DispatcherError<MqttFail>;

/// The v3.1.1 packets `SessionLayer` answers itself; see `v5.rs`.
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
            Decoded::Packet(Packet::PublishAck { packet_id }, size) => {
                conn.received(size);
                conn.on_puback(packet_id.get());
                Ok(None)
            }
            Decoded::Packet(Packet::PublishReceived { packet_id }, size) => {
                conn.received(size);
                Ok(match conn.on_pubrec(packet_id.get(), true) {
                    PubRecReply::Release | PubRecReply::NotFound => {
                        Some(Packet::PublishRelease { packet_id }.into())
                    }
                    PubRecReply::Done => None,
                })
            }
            Decoded::Packet(Packet::PublishComplete { packet_id }, size) => {
                conn.received(size);
                conn.on_pubcomp(packet_id.get());
                Ok(None)
            }
            Decoded::Publish(pkt, payload, size) => {
                conn.received(size);
                Ok(self
                    .publish_start(pkt, payload)
                    .and_then(|(pkt, payload)| publish_in(conn, pkt, payload)))
            }
            Decoded::PayloadChunk(chunk, eof) => Ok(self
                .publish_chunk(chunk, eof)
                .and_then(|(pkt, payload)| publish_in(conn, pkt, payload))),
            Decoded::Packet(Packet::PublishRelease { packet_id }, size) => {
                // Inbound QoS 2 state lives in the session, so this also completes flows an
                // earlier connection began; 3.1.1 always answers PUBCOMP.
                conn.received(size);
                conn.release_inbound(packet_id.get());
                Ok(Some(Packet::PublishComplete { packet_id }.into()))
            }
            Decoded::Packet(
                Packet::Subscribe {
                    packet_id,
                    topic_filters,
                },
                size,
            ) if !topic_filters.is_empty() => {
                conn.received(size);
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
                Ok(Some(Packet::SubscribeAck { packet_id, status }.into()))
            }
            Decoded::Packet(
                Packet::Unsubscribe {
                    packet_id,
                    topic_filters,
                },
                size,
            ) if !topic_filters.is_empty() => {
                conn.received(size);
                conn.broker.unsubscribe(&conn.session, &topic_filters);
                Ok(Some(Packet::UnsubscribeAck { packet_id }.into()))
            }
            // A second CONNECT [MQTT-3.1.0-2], packets only a server sends, and SUBSCRIBE /
            // UNSUBSCRIBE without filters [MQTT-3.8.3-3, MQTT-3.10.3-2] close the connection.
            Decoded::Packet(
                Packet::Connect(_)
                | Packet::ConnectAck(_)
                | Packet::SubscribeAck { .. }
                | Packet::UnsubscribeAck { .. }
                | Packet::PingResponse
                | Packet::Subscribe { .. }
                | Packet::Unsubscribe { .. },
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

/// An inbound PUBLISH: check it, route it, produce its PUBACK / PUBREC. 3.1.1 cannot refuse a
/// PUBLISH, so an unauthorized one is acknowledged and dropped.
fn publish_in(conn: &Conn, pkt: codec::Publish, payload: ntex_bytes::Bytes) -> Option<Encoded> {
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
    conn.publish(packet_id.map(|p| p.get()), msg);
    let packet_id = packet_id?;
    match qos {
        QoS::AtMostOnce => None,
        QoS::AtLeastOnce => Some(Packet::PublishAck { packet_id }.into()),
        QoS::ExactlyOnce => Some(Packet::PublishReceived { packet_id }.into()),
    }
}
