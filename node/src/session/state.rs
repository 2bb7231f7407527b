//! `SessionState`: one client's MQTT session as pure data and transitions.
//!
//! It owns the subscriptions, the outbound queue, the outbound in-flight window (QoS 1/2 messages
//! sent but not yet acknowledged, in send order) and the inbound QoS 2 packet ids awaiting PUBREL.
//! Methods return what to put on the wire (`Outgoing`) instead of doing I/O, so every QoS flow,
//! queue bound and expiry rule is unit-tested here without sockets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use crate::message::{ByteString, Delivery, QoS, SubOptions};

/// What to do when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest queued message to make room for the new one.
    #[default]
    DropOldest,
    /// Keep the queue as it is and drop the new message.
    DropNewest,
}

/// A packet the connection must send, in order.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Publish {
        /// `None` for QoS 0.
        packet_id: Option<u16>,
        dup: bool,
        delivery: Delivery,
        /// Remaining Message Expiry Interval to forward, if the message has one.
        expiry: Option<u32>,
    },
    PubRel {
        packet_id: u16,
    },
}

/// Outcome of queueing a delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// QoS 0 for a session with no connection is not stored.
    DroppedOffline,
    /// The queue was full (`max_queued` messages or `max_queued_bytes`): the new message, or
    /// as many of the oldest as it took, was dropped, per policy.
    DroppedFull,
}

/// The outbound queue, with the bytes of topics and payloads it holds.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Delivery>,
    bytes: usize,
}

fn weight(d: &Delivery) -> usize {
    d.msg.topic.len() + d.msg.payload.len()
}

impl Queue {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn front(&self) -> Option<&Delivery> {
        self.items.front()
    }

    fn iter(&self) -> impl Iterator<Item = &Delivery> {
        self.items.iter()
    }

    fn push_back(&mut self, d: Delivery) {
        self.bytes += weight(&d);
        self.items.push_back(d);
    }

    fn push_front(&mut self, d: Delivery) {
        self.bytes += weight(&d);
        self.items.push_front(d);
    }

    fn pop_front(&mut self) -> Option<Delivery> {
        let d = self.items.pop_front()?;
        self.bytes -= weight(&d);
        Some(d)
    }

    fn retain(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        self.items.retain(keep);
        self.bytes = self.items.iter().map(weight).sum();
    }

    fn drain(&mut self) -> VecDeque<Delivery> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named after the MQTT packets awaited
enum Awaiting {
    /// QoS 1 sent, waiting for PUBACK.
    PubAck,
    /// QoS 2 sent, waiting for PUBREC.
    PubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    PubComp,
}

#[derive(Debug, Clone)]
struct Inflight {
    packet_id: u16,
    phase: Awaiting,
    delivery: Delivery,
}

/// What a session holds for its client besides its subscriptions, as it moves to another node
/// on a takeover: in-flight flows keep their packet ids and phase, so the next connection
/// resumes them exactly (DUP re-sends, PUBREL), and the queue follows them in order.
#[derive(Debug, Default, Clone)]
pub struct Undelivered {
    pub inflight: Vec<InflightFlow>,
    pub queue: Vec<Delivery>,
    /// Inbound QoS 2 packet ids awaiting the client's PUBREL.
    pub inbound_qos2: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct InflightFlow {
    pub packet_id: u16,
    /// PUBREC arrived and PUBREL was sent: only PUBCOMP is awaited.
    pub released: bool,
    pub delivery: Delivery,
}

impl Undelivered {
    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty() && self.queue.is_empty() && self.inbound_qos2.is_empty()
    }
}

/// Counters the caller adds to broker metrics after a transition.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub expired: u64,
}

#[derive(Debug)]
pub struct SessionState {
    /// Filter as the client sent it (including any `$share/{group}/` prefix) -> granted options.
    pub subscriptions: HashMap<ByteString, SubOptions>,
    queue: Queue,
    inflight: VecDeque<Inflight>,
    next_packet_id: u16,
    /// Outbound in-flight quota of the current connection: min(client Receive Maximum, max_inflight).
    window: usize,
    max_queued: usize,
    max_queued_bytes: usize,
    drop_policy: DropPolicy,
    /// Inbound QoS 2 packet ids whose PUBLISH was routed and PUBREC sent, awaiting PUBREL.
    inbound_qos2: HashSet<u16>,
}

impl SessionState {
    pub fn new(max_queued: usize, drop_policy: DropPolicy) -> Self {
        SessionState {
            subscriptions: HashMap::new(),
            queue: Queue::default(),
            inflight: VecDeque::new(),
            next_packet_id: 0,
            window: 0,
            max_queued,
            max_queued_bytes: usize::MAX,
            drop_policy,
            inbound_qos2: HashSet::new(),
        }
    }

    /// Bounds the queue by bytes of topics and payloads too (`[mqtt] max_queued_bytes`).
    pub fn with_max_queued_bytes(mut self, bytes: usize) -> Self {
        self.max_queued_bytes = bytes;
        self
    }

    /// The queue fills faster than its connection drains it: three quarters full, by count or
    /// bytes. Publishers feeding it pause (`ConnLink`) rather than have it drop.
    pub fn congested(&self) -> bool {
        self.queue.len() >= self.max_queued / 4 * 3
            || self.queue.bytes >= self.max_queued_bytes / 4 * 3
    }

    /// Drained enough for paused publishers to go on: a quarter full or less.
    pub fn drained(&self) -> bool {
        self.queue.len() <= self.max_queued / 4 && self.queue.bytes <= self.max_queued_bytes / 4
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Bytes of topics and payloads queued.
    pub fn queued_bytes(&self) -> usize {
        self.queue.bytes
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Sets the send quota of the connection that now owns the session (0 while offline).
    pub fn set_window(&mut self, window: usize) {
        self.window = window;
    }

    /// Queues a delivery. QoS 0 is kept only while a connection is attached.
    pub fn push(&mut self, delivery: Delivery, online: bool) -> Pushed {
        if !online && delivery.qos == QoS::AtMostOnce {
            return Pushed::DroppedOffline;
        }
        let w = weight(&delivery);
        let (max, max_bytes) = (self.max_queued, self.max_queued_bytes);
        let full = |q: &Queue| q.len() >= max || q.bytes + w > max_bytes;
        if !full(&self.queue) {
            self.queue.push_back(delivery);
            return Pushed::Queued;
        }
        if self.drop_policy == DropPolicy::DropOldest && w <= max_bytes {
            while full(&self.queue) && self.queue.pop_front().is_some() {}
            self.queue.push_back(delivery);
        }
        Pushed::DroppedFull
    }

    /// Moves queued messages onto the wire while the in-flight window allows, in queue order.
    /// Expired messages are dropped (counted in the result); a QoS 1/2 message blocked by a full
    /// window holds back everything behind it, so per-subscriber order is preserved. At most
    /// `limit` packets are produced.
    pub fn transmit(&mut self, now: Instant, out: &mut Vec<Outgoing>, limit: usize) -> Dropped {
        let mut dropped = Dropped::default();
        let start = out.len();
        while let Some(front) = self.queue.front() {
            if out.len() - start >= limit {
                break;
            }
            let expiry = front.msg.remaining_expiry(now);
            if expiry == Some(0) {
                self.queue.pop_front();
                dropped.expired += 1;
                continue;
            }
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= self.window {
                break;
            }
            let Some(delivery) = self.queue.pop_front() else {
                break;
            };
            let packet_id = if delivery.qos == QoS::AtMostOnce {
                None
            } else {
                let id = self.alloc_packet_id();
                let phase = if delivery.qos == QoS::AtLeastOnce {
                    Awaiting::PubAck
                } else {
                    Awaiting::PubRec
                };
                self.inflight.push_back(Inflight {
                    packet_id: id,
                    phase,
                    delivery: delivery.clone(),
                });
                Some(id)
            };
            out.push(Outgoing::Publish {
                packet_id,
                dup: false,
                delivery,
                expiry,
            });
        }
        dropped
    }

    /// Packets to re-send when a connection resumes this session, in original order: unacknowledged
    /// PUBLISH with DUP set, and PUBREL for messages whose PUBREC arrived [MQTT-4.4.0-1].
    pub fn resume(&mut self, now: Instant, out: &mut Vec<Outgoing>) {
        for f in &self.inflight {
            out.push(match f.phase {
                Awaiting::PubAck | Awaiting::PubRec => Outgoing::Publish {
                    packet_id: Some(f.packet_id),
                    dup: true,
                    delivery: f.delivery.clone(),
                    expiry: f.delivery.msg.remaining_expiry(now).map(|s| s.max(1)),
                },
                Awaiting::PubComp => Outgoing::PubRel {
                    packet_id: f.packet_id,
                },
            });
        }
    }

    /// Drops what a session does not keep without a connection: queued QoS 0 messages.
    pub fn detach(&mut self) {
        self.window = 0;
        self.queue.retain(|d| d.qos != QoS::AtMostOnce);
    }

    /// PUBACK from the client; false if no QoS 1 message with that id is in flight.
    pub fn on_puback(&mut self, packet_id: u16) -> bool {
        self.complete(packet_id, Awaiting::PubAck)
    }

    /// PUBREC from the client. On success the message moves to awaiting PUBCOMP and the PUBREL to
    /// send is returned; a failure reason code (v5, >= 0x80) ends the flow without PUBREL.
    pub fn on_pubrec(&mut self, packet_id: u16, success: bool) -> Option<Outgoing> {
        let i = self
            .inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.phase == Awaiting::PubRec)?;
        if success {
            self.inflight[i].phase = Awaiting::PubComp;
            Some(Outgoing::PubRel { packet_id })
        } else {
            self.inflight.remove(i);
            None
        }
    }

    /// PUBCOMP from the client; false if no PUBREL with that id is outstanding.
    pub fn on_pubcomp(&mut self, packet_id: u16) -> bool {
        self.complete(packet_id, Awaiting::PubComp)
    }

    fn complete(&mut self, packet_id: u16, phase: Awaiting) -> bool {
        match self
            .inflight
            .iter()
            .position(|f| f.packet_id == packet_id && f.phase == phase)
        {
            Some(i) => {
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// Forgets an in-flight message the connection could not send (it exceeded the client's
    /// Maximum Packet Size): such a message counts as delivered [MQTT-3.1.2-25].
    pub fn forget(&mut self, packet_id: u16) {
        self.inflight.retain(|f| f.packet_id != packet_id);
    }

    /// Records an inbound QoS 2 PUBLISH; false if that packet id is already awaiting PUBREL, in
    /// which case the message is a re-send and must not be routed again (exactly once).
    pub fn begin_inbound_qos2(&mut self, packet_id: u16) -> bool {
        self.inbound_qos2.insert(packet_id)
    }

    /// Whether an inbound QoS 2 flow with this packet id awaits PUBREL.
    pub fn has_inbound_qos2(&self, packet_id: u16) -> bool {
        self.inbound_qos2.contains(&packet_id)
    }

    /// Inbound QoS 2 flows awaiting PUBREL (they count against the client's Receive Maximum).
    pub fn inbound_qos2(&self) -> usize {
        self.inbound_qos2.len()
    }

    /// PUBREL from the client; false if the packet id was unknown.
    pub fn release_inbound_qos2(&mut self, packet_id: u16) -> bool {
        self.inbound_qos2.remove(&packet_id)
    }

    /// A copy of everything undelivered (the session goes offline and is written to disk).
    pub fn undelivered(&self) -> Undelivered {
        Undelivered {
            inflight: self
                .inflight
                .iter()
                .map(|f| InflightFlow {
                    packet_id: f.packet_id,
                    released: f.phase == Awaiting::PubComp,
                    delivery: f.delivery.clone(),
                })
                .collect(),
            queue: self.queue.iter().cloned().collect(),
            inbound_qos2: self.inbound_qos2.iter().copied().collect(),
        }
    }

    /// Takes everything undelivered, leaving the state empty (the session moves away).
    pub fn take_undelivered(&mut self) -> Undelivered {
        Undelivered {
            inflight: self
                .inflight
                .drain(..)
                .map(|f| InflightFlow {
                    packet_id: f.packet_id,
                    released: f.phase == Awaiting::PubComp,
                    delivery: f.delivery,
                })
                .collect(),
            queue: self.queue.drain().into_iter().collect(),
            inbound_qos2: self.inbound_qos2.drain().collect(),
        }
    }

    /// Takes over what a session held on another node: its flows go before anything in flight
    /// here (there is nothing yet: this runs before CONNACK), its queue before what was queued
    /// since. A packet id already in use here is not taken twice.
    pub fn restore_undelivered(&mut self, u: Undelivered) {
        for f in u.inflight.into_iter().rev() {
            if self.inflight.iter().any(|i| i.packet_id == f.packet_id) {
                self.queue.push_front(f.delivery);
                continue;
            }
            let phase = match (f.released, f.delivery.qos) {
                (true, _) => Awaiting::PubComp,
                (false, QoS::ExactlyOnce) => Awaiting::PubRec,
                (false, _) => Awaiting::PubAck,
            };
            self.next_packet_id = self.next_packet_id.max(f.packet_id);
            self.inflight.push_front(Inflight {
                packet_id: f.packet_id,
                phase,
                delivery: f.delivery,
            });
        }
        for d in u.queue.into_iter().rev() {
            self.queue.push_front(d);
        }
        self.inbound_qos2.extend(u.inbound_qos2);
    }

    fn alloc_packet_id(&mut self) -> u16 {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
