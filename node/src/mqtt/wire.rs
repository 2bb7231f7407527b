//! `Wire`: how a connection's outbound packets are encoded into its write buffer, per protocol
//! version (PUBLISH with v5 topic aliases and properties, PUBREL, the closing DISCONNECT).

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::{NonZeroU16, NonZeroU32};

use ntex::codec::Encoder;
use ntex::io::IoRef;
use ntex_bytes::{BytePages, Bytes};
use ntex_mqtt::{v3, v5};

use crate::message::{ByteString, CloseReason, Delivery, QoS};

/// ntex-bytes copies appended data up to this size into the current page; larger `Bytes`
/// (payloads, Correlation Data) become pages of their own.
const APPEND_COPY_LIMIT: usize = 4096;

/// Encodes `item` into the write buffer. With `copy`, the packet is encoded aside and copied in:
/// ntex-net 4.0's tokio writer sends from a moved-from copy of any page short enough to be
/// stored inline, and appending a large `Bytes` right behind a lone PUBLISH header leaves the
/// header in such a page (the subscriber would receive garbage in its place).
fn encode<C: Encoder>(io: &IoRef, codec: &C, item: C::Item, copy: bool) -> bool {
    if !copy {
        return io.encode(item, codec).is_ok();
    }
    let mut scratch = BytePages::default();
    codec.encodev(item, &mut scratch).is_ok()
        && std::iter::from_fn(|| scratch.take()).all(|page| io.encode_slice(page.as_ref()).is_ok())
}

/// The version-specific encoder of outbound packets.
pub(super) enum Wire {
    V3 {
        codec: super::guard::V3Codec,
    },
    /// Boxed: the variant is several times the size of `V3`, and every 3.1.1 connection would
    /// pay for it.
    V5(Box<V5Wire>),
}

pub(super) struct V5Wire {
    /// Decodes and encodes; its outbound limit is the client's Maximum Packet Size.
    pub(super) codec: super::guard::V5Codec,
    pub(super) aliases: RefCell<OutAliases>,
    /// The CONNECT asked for a session that ends with the connection.
    pub(super) zero_expiry: bool,
}

/// Server-to-client topic aliases (v5): the first `max` distinct topics get an alias; later
/// messages to them carry the alias and an empty topic. `max` is the smaller of the client's
/// Topic Alias Maximum and the server's `max_outbound_topic_aliases`, so a client cannot make the
/// broker keep an alias table of 65,535 topics per connection.
#[derive(Default)]
pub(super) struct OutAliases {
    map: HashMap<ByteString, NonZeroU16>,
    max: u16,
}

impl OutAliases {
    pub(super) fn new(client_max: u16, server_max: u16) -> Self {
        OutAliases {
            map: HashMap::new(),
            max: client_max.min(server_max),
        }
    }

    /// Returns (alias, whether the topic must still be sent).
    pub(super) fn resolve(&mut self, topic: &ByteString) -> (Option<NonZeroU16>, bool) {
        if let Some(a) = self.map.get(topic) {
            return (Some(*a), false);
        }
        // Aliases are 1..=max and never reused: once all are taken, new topics go by name.
        let next = u16::try_from(self.map.len() + 1)
            .ok()
            .filter(|n| *n <= self.max)
            .and_then(NonZeroU16::new);
        if let Some(alias) = next {
            self.map.insert(topic.clone(), alias);
        }
        (next, true)
    }
}

fn qos3(q: QoS) -> v3::QoS {
    match q {
        QoS::AtMostOnce => v3::QoS::AtMostOnce,
        QoS::AtLeastOnce => v3::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v3::QoS::ExactlyOnce,
    }
}

impl Wire {
    /// Encodes one PUBLISH; returns its approximate size, or `None` if it exceeds the client's
    /// Maximum Packet Size and was discarded [MQTT-3.1.2-25].
    pub(super) fn publish(
        &self,
        io: &IoRef,
        packet_id: Option<u16>,
        dup: bool,
        d: &Delivery,
        expiry: Option<u32>,
    ) -> Option<usize> {
        let packet_id = packet_id.and_then(NonZeroU16::new);
        let payload = d.msg.payload.clone();
        let size = 5 + d.msg.topic.len() + payload.len();
        let ok = match self {
            Wire::V3 { codec, .. } => {
                let pkt = v3::codec::Publish {
                    dup,
                    retain: d.retain,
                    qos: qos3(d.qos),
                    topic: d.msg.topic.clone(),
                    packet_id,
                    payload_size: payload.len() as u32,
                };
                let copy = payload.len() > APPEND_COPY_LIMIT;
                encode(
                    io,
                    codec,
                    v3::codec::Encoded::Publish(pkt, Some(payload)),
                    copy,
                )
            }
            Wire::V5(w) => {
                let (codec, aliases) = (&w.codec, &w.aliases);
                let props = &d.msg.properties;
                let correlation = props.correlation_data.as_ref().map_or(0, Bytes::len);
                let (alias, with_topic) = aliases.borrow_mut().resolve(&d.msg.topic);
                let pkt = v5::codec::Publish {
                    dup,
                    retain: d.retain,
                    qos: qos3(d.qos),
                    packet_id,
                    topic: if with_topic {
                        d.msg.topic.clone()
                    } else {
                        ByteString::new()
                    },
                    payload_size: payload.len() as u32,
                    properties: v5::codec::PublishProperties {
                        topic_alias: alias,
                        correlation_data: props.correlation_data.clone(),
                        message_expiry_interval: expiry.and_then(NonZeroU32::new),
                        content_type: props.content_type.clone(),
                        user_properties: props.user_properties.clone(),
                        is_utf8_payload: props.payload_is_utf8,
                        response_topic: props.response_topic.clone(),
                        subscription_ids: d
                            .subscription_ids
                            .iter()
                            .filter_map(|i| NonZeroU32::new(*i))
                            .collect(),
                    },
                };
                let copy = payload.len().max(correlation) > APPEND_COPY_LIMIT;
                encode(
                    io,
                    codec,
                    v5::codec::Encoded::Publish(pkt, Some(payload)),
                    copy,
                )
            }
        };
        ok.then_some(size)
    }

    pub(super) fn pubrel(&self, io: &IoRef, packet_id: u16) {
        let Some(packet_id) = NonZeroU16::new(packet_id) else {
            return;
        };
        let _ = match self {
            Wire::V3 { codec, .. } => io.encode(
                v3::codec::Encoded::Packet(v3::codec::Packet::PublishRelease { packet_id }),
                codec,
            ),
            Wire::V5(w) => io.encode(
                v5::codec::Encoded::Packet(v5::codec::Packet::PublishRelease(
                    v5::codec::PublishAck2 {
                        packet_id,
                        reason_code: v5::codec::PublishAck2Reason::Success,
                        properties: Vec::new(),
                        reason_string: None,
                    },
                )),
                &w.codec,
            ),
        };
    }

    /// Closes the connection for a server-side reason (v5 sends DISCONNECT with the reason code).
    pub(super) fn close(&self, io: &IoRef, reason: CloseReason) {
        use v5::codec::DisconnectReasonCode as Dr;
        self.close_with(
            io,
            match reason {
                CloseReason::SessionTakenOver => Dr::SessionTakenOver,
                CloseReason::ServerShuttingDown => Dr::ServerShuttingDown,
                CloseReason::NotAuthorized => Dr::NotAuthorized,
                CloseReason::Kicked => Dr::AdministrativeAction,
            },
        );
    }

    /// Closes the connection; v5 clients get DISCONNECT with `code`, v3.1.1 has no such packet.
    pub(super) fn close_with(&self, io: &IoRef, code: v5::codec::DisconnectReasonCode) {
        if let Wire::V5(w) = self {
            let _ = io.encode(
                v5::codec::Packet::Disconnect(v5::codec::Disconnect::new(code)).into(),
                &w.codec,
            );
        }
        // Graceful: what is already encoded (acks, deliveries, the DISCONNECT) is written first.
        io.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_aliases_stop_at_the_smaller_maximum_and_never_repeat() {
        // The client's maximum and the server's cap, both at the protocol limit: 65,535 aliases,
        // then topics by name. Before the cap this overflowed the u16 counter.
        let mut a = OutAliases::new(u16::MAX, u16::MAX);
        let mut seen = std::collections::HashSet::new();
        for i in 0..=u32::from(u16::MAX) + 10 {
            let topic = ByteString::from(format!("t/{i}"));
            let (alias, with_topic) = a.resolve(&topic);
            assert!(with_topic, "a new topic is always sent by name");
            match alias {
                Some(n) => assert!(seen.insert(n), "alias {n} handed out twice"),
                None => assert!(i >= u32::from(u16::MAX), "alias missing at {i}"),
            }
        }
        assert_eq!(seen.len(), usize::from(u16::MAX));

        for (client, server, want) in [(10, 3, 3), (2, 64, 2), (0, 64, 0), (64, 0, 0)] {
            let mut a = OutAliases::new(client, server);
            let got = (0..100)
                .filter(|i| a.resolve(&ByteString::from(format!("x/{i}"))).0.is_some())
                .count();
            assert_eq!(got, want, "client {client} server {server}");
        }
        // A known topic goes by alias alone.
        let mut a = OutAliases::new(4, 4);
        let t = ByteString::from("a/b");
        let (first, _) = a.resolve(&t);
        assert_eq!(a.resolve(&t), (first, false));
    }
}
