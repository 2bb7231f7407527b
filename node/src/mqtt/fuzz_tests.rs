//! Fuzz targets for what a client sends: the preface sniffer, and the MQTT decoders behind the
//! node's guard (`crate::fuzzing` drives them).

use ntex::codec::Decoder;
use ntex_bytes::BytesMut;
use ntex_mqtt::v5;

use super::guard::{Framing, V3Codec};
use crate::config::MqttConfig;
use crate::fuzzing;

#[test]
fn fuzz_preface() {
    fuzzing::run("preface", |input| {
        let _ = super::preface::inspect(input);
    });
}

/// Every stream a client can send, through what the node runs: the guard first (a refusal ends
/// the connection), then ntex-mqtt's 3.1.1 and 5.0 decoders with the node's packet size limit.
#[test]
fn fuzz_mqtt_decoders_behind_the_guard() {
    let max = MqttConfig::default().max_packet_size;
    fuzzing::run("mqtt", |input| {
        decode_all(&V3Codec::new(max), input);
        let c5 = v5::codec::Codec::new();
        c5.set_max_inbound_size(max);
        if Framing::new(true).feed(input).is_ok() {
            decode_all(&c5, input);
        }
    });
}

/// Decodes packets from `input` until the decoder wants more or refuses; a decoder that keeps
/// producing packets without consuming input would be a hang.
fn decode_all<C: Decoder>(codec: &C, input: &[u8]) {
    let mut buf = BytesMut::copy_from_slice(input);
    for _ in 0..=input.len() {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return,
        }
    }
    panic!("the decoder produced more packets than there are bytes");
}
