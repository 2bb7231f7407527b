//! Fuzz targets for the bytes a client sends first: the preface sniffer (`crate::fuzzing`
//! drives them).

use crate::fuzzing;

#[test]
fn fuzz_preface() {
    fuzzing::run("preface", |input| {
        let _ = super::preface::inspect(input);
    });
}

// The MQTT decoders are not targets yet: this fuzzer found that ntex-mqtt 9.0.0 subtracts a
// PUBLISH's variable header (3.1.1: the topic; 5.0: the properties) from its remaining length
// unchecked (v3/codec/codec.rs:120, v5/codec/codec.rs:191), which panics in debug builds and
// wraps in release. The inputs are in fuzz/findings/; the decoders become targets (with the
// mqtt corpus) together with the node-side guard that refuses such a PUBLISH first.
