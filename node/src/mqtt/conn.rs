//! `Conn`: one accepted connection on its ntex worker, the state `driver::run` and both
//! versions' packet handling share.
//!
//! The QoS flows in both directions are RealMQ's own: a broker must choose outbound packet ids
//! and DUP flags itself to resume sessions, must keep inbound QoS 2 state across reconnects, and
//! must route a PUBLISH even when the client already closed the socket behind it. Outbound
//! PUBLISH / PUBREL packets are encoded straight into the connection's write buffer from the
//! connection's loop, when `ConnLink` wakes it (deliveries are queued) and when an ack frees
//! window.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::num::NonZeroU16;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use ntex::io::IoRef;
use ntex_bytes::{Bytes, BytesMut};
use ntex_mqtt::{v3, v5};

use crate::auth::ClientInfo;
use crate::broker::{Broker, Closed, Confirm, PublishError, Published};
use crate::message::{ByteString, Message, QoS, Will};
use crate::metrics::inc;
use crate::session::{ConnLink, Outgoing, SessionCell};

use super::linger::Socket;
use super::wire::Wire;

/// Most packets one flush encodes before yielding to other connections on the worker.
const FLUSH_BATCH: usize = 256;

/// What became of an inbound PUBLISH; the adapter turns it into PUBACK / PUBREC.
pub(super) enum Inbound {
    Routed {
        /// Sessions reached here plus peers it was forwarded to.
        matched: usize,
        /// For QoS 1/2 forwarded to peers: the acknowledgement waits for this.
        confirm: Option<Confirm>,
    },
    /// A QoS 2 re-send of a flow already routed: acknowledge again, do not route twice.
    Duplicate,
    Denied,
    /// A limit refused it (the retained store is full).
    OverQuota,
}

/// A PUBACK / PUBREC and what it waits for first: the peers' confirmation of a message
/// forwarded to their subscribers. Acknowledgements leave in the order the PUBLISHes came
/// [MQTT-4.6.0-2], so one that waits holds back those behind it (`driver::run` queues them).
pub(super) struct Ack<E> {
    pub(super) packet: E,
    pub(super) after: Option<Confirm>,
}

pub(crate) struct Conn {
    pub(super) broker: Arc<Broker>,
    pub(super) session: Arc<SessionCell>,
    pub(super) link: Arc<ConnLink>,
    pub(super) client: ClientInfo,
    io: IoRef,
    pub(super) wire: Wire,
    /// Boxed: most clients set no will, and every connection would pay for its size.
    will: RefCell<Option<Box<Will>>>,
    /// Inbound topic aliases (v5) and their limit.
    aliases_in: RefCell<HashMap<u16, ByteString>>,
    alias_max: u16,
    /// Inbound QoS 1 and 2 flows the client may have open at once (v5 Receive Maximum;
    /// 0 = unlimited).
    pub(super) receive_max: u16,
    out: RefCell<Vec<Outgoing>>,
    /// A subscriber connection this connection's last PUBLISH congested: the loop reads
    /// nothing more until it drains (`driver::run`).
    pause: RefCell<Option<Arc<ConnLink>>>,
    finished: Cell<bool>,
    /// For a graceful close that the client can read its DISCONNECT from (`linger.rs`).
    socket: Socket,
}

/// How to answer a PUBREC.
pub(super) enum PubRecReply {
    /// Continue the flow with PUBREL.
    Release,
    /// Unknown packet id: v5 answers PUBREL with 0x92, v3.1.1 with a plain PUBREL.
    NotFound,
    /// The client rejected the message (v5 reason >= 0x80); the flow ends here.
    Done,
}

impl Conn {
    pub(super) fn new(
        broker: Arc<Broker>,
        accepted: crate::broker::Accepted,
        io: IoRef,
        socket: Socket,
        wire: Wire,
        will: Option<Will>,
    ) -> Rc<Conn> {
        let (alias_max, receive_max) = match wire {
            Wire::V3 { .. } => (0, 0),
            Wire::V5(_) => (
                broker.limits.topic_alias_maximum,
                broker.limits.receive_maximum,
            ),
        };
        Rc::new(Conn {
            broker,
            session: accepted.session,
            link: accepted.link,
            client: accepted.client,
            io,
            wire,
            will: RefCell::new(will.map(Box::new)),
            aliases_in: RefCell::new(HashMap::new()),
            alias_max,
            receive_max,
            out: RefCell::new(Vec::new()),
            pause: RefCell::new(None),
            finished: Cell::new(false),
            socket,
        })
    }

    /// Drops the will: the client disconnected normally.
    pub(super) fn clear_will(&self) {
        self.will.borrow_mut().take();
    }

    /// Counts an inbound packet.
    pub(super) fn received(&self, bytes: u32) {
        inc(&self.broker.metrics.bytes_received, u64::from(bytes));
    }

    /// Writes what the session has ready, within the in-flight window and a batch limit.
    pub(super) fn flush(&self) {
        if self.io.is_closed() || self.io.is_wr_backpressure() {
            return;
        }
        let mut out = self.out.borrow_mut();
        let dropped = {
            let mut inner = self.session.lock();
            let dropped = inner.state.transmit(Instant::now(), &mut out, FLUSH_BATCH);
            if self.link.is_congested() && inner.state.drained() {
                self.link.release();
            }
            dropped
        };
        if dropped.expired > 0 {
            inc(&self.broker.metrics.dropped_expired, dropped.expired);
        }
        if out.len() == FLUSH_BATCH {
            self.link.wake();
        }
        if !out.is_empty() {
            self.link.progressed();
        }
        for o in out.drain(..) {
            self.send(o);
        }
    }

    fn send(&self, o: Outgoing) {
        match o {
            Outgoing::Publish {
                packet_id,
                dup,
                delivery,
                expiry,
            } => {
                let m = &self.broker.metrics;
                match self
                    .wire
                    .publish(&self.io, packet_id, dup, &delivery, expiry)
                {
                    Some(bytes) => {
                        inc(&m.messages_sent, 1);
                        inc(&m.sent_by_qos[delivery.qos as usize], 1);
                        inc(&m.bytes_sent, bytes as u64);
                        self.broker.delivered(&self.client, &delivery);
                    }
                    None => {
                        inc(&m.dropped_too_large, 1);
                        if let Some(id) = packet_id {
                            self.session.lock().state.forget(id);
                        }
                    }
                }
            }
            Outgoing::PubRel { packet_id } => self.wire.pubrel(&self.io, packet_id),
        }
    }

    pub(super) fn on_puback(&self, packet_id: u16) {
        if !self.session.lock().state.on_puback(packet_id) {
            tracing::debug!(client_id = %self.client.client_id, packet_id, "puback for unknown packet id");
        }
        self.flush();
    }

    pub(super) fn on_pubrec(&self, packet_id: u16, success: bool) -> PubRecReply {
        let reply = {
            let mut inner = self.session.lock();
            match inner.state.on_pubrec(packet_id, success) {
                Some(_) => PubRecReply::Release,
                None if success => PubRecReply::NotFound,
                None => PubRecReply::Done,
            }
        };
        if matches!(reply, PubRecReply::Done) {
            self.flush();
        }
        reply
    }

    pub(super) fn on_pubcomp(&self, packet_id: u16) {
        if !self.session.lock().state.on_pubcomp(packet_id) {
            tracing::debug!(client_id = %self.client.client_id, packet_id, "pubcomp for unknown packet id");
        }
        self.flush();
    }

    /// Completes the inbound side of a QoS 2 flow; false if the packet id was unknown.
    pub(super) fn release_inbound(&self, packet_id: u16) -> bool {
        self.session.lock().state.release_inbound_qos2(packet_id)
    }

    /// Resolves a v5 Topic Alias: an alias with a topic defines it, an alias alone uses it.
    /// `Err` carries the DISCONNECT reason for an invalid or unknown alias [MQTT-3.3.2-7..12].
    pub(super) fn resolve_alias(
        &self,
        alias: Option<NonZeroU16>,
        topic: &mut ByteString,
    ) -> Result<(), v5::codec::DisconnectReasonCode> {
        use v5::codec::DisconnectReasonCode as Dr;
        let Some(alias) = alias else {
            return if topic.is_empty() {
                Err(Dr::ProtocolError)
            } else {
                Ok(())
            };
        };
        if alias.get() > self.alias_max {
            return Err(Dr::TopicAliasInvalid);
        }
        let mut map = self.aliases_in.borrow_mut();
        if topic.is_empty() {
            *topic = map.get(&alias.get()).cloned().ok_or(Dr::ProtocolError)?;
        } else {
            map.insert(alias.get(), topic.clone());
        }
        Ok(())
    }

    /// Checks a PUBLISH before routing; `Err` is the v5 DISCONNECT reason (v3.1.1 just closes).
    pub(super) fn admit(
        &self,
        topic: &str,
        retain: bool,
        qos: QoS,
        packet_id: Option<u16>,
    ) -> Result<(), v5::codec::DisconnectReasonCode> {
        use v5::codec::DisconnectReasonCode as Dr;
        if !crate::routing::topic::valid_topic_name(topic) {
            return Err(Dr::TopicNameInvalid);
        }
        if retain && !self.broker.limits.retain_available {
            return Err(Dr::RetainNotSupported);
        }
        if qos != QoS::AtMostOnce && packet_id.is_none() {
            return Err(Dr::MalformedPacket);
        }
        if qos == QoS::ExactlyOnce && self.receive_max > 0 {
            let inner = self.session.lock();
            let id = packet_id.unwrap_or(0);
            if !inner.state.has_inbound_qos2(id)
                && inner.state.inbound_qos2() >= usize::from(self.receive_max)
            {
                return Err(Dr::ReceiveMaximumExceeded);
            }
        }
        Ok(())
    }

    /// Routes an admitted PUBLISH. Never awaits: a QoS 0 PUBLISH with DISCONNECT right behind it
    /// (what `mosquitto_pub -q 0` sends) is routed before the DISCONNECT is looked at.
    pub(super) fn publish(&self, packet_id: Option<u16>, msg: Message) -> Inbound {
        inc(&self.broker.metrics.messages_received, 1);
        inc(&self.broker.metrics.received_by_qos[msg.qos as usize], 1);
        let qos2 = (msg.qos == QoS::ExactlyOnce).then_some(packet_id).flatten();
        if let Some(id) = qos2
            && self.session.lock().state.has_inbound_qos2(id)
        {
            return Inbound::Duplicate;
        }
        match self.broker.publish(Some(&self.client), msg) {
            Ok(Published {
                local,
                peers,
                confirm,
                congested,
            }) => {
                if congested.is_some() {
                    *self.pause.borrow_mut() = congested;
                }
                if let Some(id) = qos2 {
                    self.session.lock().state.begin_inbound_qos2(id);
                }
                Inbound::Routed {
                    matched: local + peers,
                    confirm,
                }
            }
            Err(PublishError::NotAuthorized) => Inbound::Denied,
            Err(PublishError::QuotaExceeded) => Inbound::OverQuota,
        }
    }

    /// Ends the connection for a protocol violation the middleware found.
    pub(super) fn violation(&self, code: v5::codec::DisconnectReasonCode) {
        tracing::debug!(client_id = %self.client.client_id, ?code, "closing connection: protocol violation");
        self.linger();
        self.wire.close_with(&self.io, code);
    }

    /// Prepares a server-initiated close, so the client reads the last packet before the end.
    pub(super) fn linger(&self) {
        self.socket.linger(&self.io);
    }

    /// Re-sends what a resumed session had in flight; the first write after CONNACK.
    pub(super) fn resume(&self) {
        let mut out = Vec::new();
        self.session.lock().state.resume(Instant::now(), &mut out);
        for o in out {
            self.send(o);
        }
    }

    /// The link was woken: deliveries are queued (the caller flushes) or a close was requested.
    pub(super) fn on_woken(&self) {
        if let Some(reason) = self.link.close_requested() {
            self.linger();
            self.wire.close(&self.io, reason);
        }
    }

    /// Reports the end of the connection to the broker, once.
    /// The subscriber connection to wait for before reading more, if the last PUBLISH
    /// congested one.
    pub(super) fn take_pause(&self) -> Option<Arc<ConnLink>> {
        self.pause.borrow_mut().take()
    }

    pub(super) fn finish(&self) {
        if self.finished.replace(true) {
            return;
        }
        // Publishers waiting for this connection to drain its queue go on.
        self.link.release();
        self.broker.disconnected(Closed {
            client: self.client.clone(),
            session: self.session.clone(),
            conn_id: self.link.conn_id,
            will: self.will.borrow_mut().take().map(|w| *w),
            server_reason: self.link.close_requested(),
        });
    }
}

impl Drop for Conn {
    /// Safety net for a worker torn down before the connection's loop ended.
    fn drop(&mut self) {
        self.finish();
    }
}

pub(super) trait PayloadSize {
    fn payload_size(&self) -> u32;
}

impl PayloadSize for v3::codec::Publish {
    fn payload_size(&self) -> u32 {
        self.payload_size
    }
}

impl PayloadSize for v5::codec::Publish {
    fn payload_size(&self) -> u32 {
        self.payload_size
    }
}

/// A PUBLISH whose payload is still arriving: the codec hands out the header with the bytes read
/// so far, then the rest as payload chunks (nothing else can come in between). Boxed: it lives in
/// every connection's state and is rarely used.
pub(super) struct Partial<P>(RefCell<Option<Box<(P, BytesMut)>>>);

impl<P> Default for Partial<P> {
    fn default() -> Self {
        Partial(RefCell::new(None))
    }
}

impl<P: PayloadSize> Partial<P> {
    /// A decoded PUBLISH: complete, or held until its payload chunks arrive.
    pub(super) fn start(&self, pkt: P, payload: Bytes) -> Option<(P, Bytes)> {
        let want = pkt.payload_size() as usize;
        if payload.len() >= want {
            return Some((pkt, payload));
        }
        // With `min_chunk_size` at the packet limit the codec sends the header alone and the
        // whole payload as one chunk, so usually nothing is copied here.
        let buf = if payload.is_empty() {
            BytesMut::new()
        } else {
            let mut buf = BytesMut::with_capacity(want);
            buf.extend_from_slice(&payload);
            buf
        };
        *self.0.borrow_mut() = Some(Box::new((pkt, buf)));
        None
    }

    /// A payload chunk; returns the PUBLISH once its payload is complete.
    pub(super) fn chunk(&self, conn: &Conn, chunk: Bytes, eof: bool) -> Option<(P, Bytes)> {
        let mut partial = self.0.borrow_mut();
        let Some((_, buf)) = partial.as_deref_mut() else {
            // No PUBLISH is waiting for it: the codec's contract was broken.
            conn.violation(v5::codec::DisconnectReasonCode::MalformedPacket);
            return None;
        };
        if !eof {
            buf.extend_from_slice(&chunk);
            return None;
        }
        let (pkt, buf) = *partial.take()?;
        if buf.is_empty() {
            return Some((pkt, chunk));
        }
        let mut buf = buf;
        buf.extend_from_slice(&chunk);
        Some((pkt, buf.freeze()))
    }
}
