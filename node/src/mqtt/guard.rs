//! A check in front of the MQTT decoders: ntex-mqtt 9.0.0 computes a PUBLISH's payload length
//! as its remaining length minus its variable header (3.1.1: the topic and packet id; 5.0:
//! those and the properties) without checking that the header fits, which overflows (a panic
//! with overflow checks, a wrapped length without) for a PUBLISH that claims less than its
//! header takes (found by the fuzzer; the inputs are in `fuzz/corpus/mqtt/`). `Framing` follows
//! the packet framing of everything the client sends and ends the connection on such a PUBLISH
//! before the decoder sees it. Both drivers decode through `Guarded`, which runs it inside the
//! codec (a few bytes per connection), without holding bytes back or copying them.

use std::cell::Cell;
use std::io;

use ntex::codec::{Decoder, Encoder};
use ntex_bytes::{BytePages, BytesMut};
use ntex_mqtt::error::{DecodeError, EncodeError};
use ntex_mqtt::v3::codec as v3;
use ntex_mqtt::v5::codec as v5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The first byte of a packet.
    Type,
    /// The remaining length's bytes so far.
    Length {
        publish: Option<u8>,
        value: u32,
        shift: u32,
    },
    /// Inside a PUBLISH's variable header: `field` says what is being read.
    Publish {
        qos: u8,
        left: u32,
        used: u32,
        field: Field,
    },
    /// Payload or any other packet's body: bytes to pass without looking.
    Skip(u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    TopicLen { got: u8, len: u32 },
    Topic(u32),
    PacketId(u8),
    PropsLen { value: u32, shift: u32 },
}

/// Follows the framing; `Err` on the first PUBLISH whose variable header runs past its
/// remaining length, or a malformed remaining length.
#[derive(Clone, Copy, Debug)]
pub(super) struct Framing {
    v5: bool,
    step: Step,
}

fn malformed(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

impl Framing {
    pub(super) fn new(v5: bool) -> Framing {
        Framing {
            v5,
            step: Step::Type,
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            self.step = match self.step {
                Step::Type => Step::Length {
                    publish: (b >> 4 == 3).then_some((b >> 1) & 3),
                    value: 0,
                    shift: 0,
                },
                Step::Length {
                    publish,
                    value,
                    shift,
                } => {
                    if shift > 21 {
                        return Err(malformed("remaining length over 4 bytes"));
                    }
                    let value = value | (u32::from(b & 0x7f) << shift);
                    if b & 0x80 != 0 {
                        Step::Length {
                            publish,
                            value,
                            shift: shift + 7,
                        }
                    } else {
                        match publish {
                            Some(qos) => self.begin_publish(qos, value)?,
                            None => skip(value),
                        }
                    }
                }
                // The topic's bytes but its last, in bulk too (its length was checked).
                Step::Publish {
                    qos,
                    left,
                    used,
                    field: Field::Topic(n),
                } if n > 1 => {
                    let take = ((n - 1) as usize).min(bytes.len() - i);
                    i += take;
                    let (n, used) = (n - take as u32, used + take as u32);
                    self.step = Step::Publish {
                        qos,
                        left,
                        used,
                        field: Field::Topic(n),
                    };
                    continue;
                }
                Step::Publish {
                    qos,
                    left,
                    used,
                    field,
                } => self.publish_byte(qos, left, used, field, b)?,
                Step::Skip(n) => {
                    // Skip as much as this chunk holds at once.
                    let take = (n as usize).min(bytes.len() - i);
                    i += take;
                    self.step = skip(n - take as u32);
                    continue;
                }
            };
            i += 1;
        }
        Ok(())
    }

    fn begin_publish(&self, qos: u8, remaining: u32) -> io::Result<Step> {
        if remaining < 2 {
            return Err(malformed("PUBLISH shorter than its topic length"));
        }
        Ok(Step::Publish {
            qos,
            left: remaining,
            used: 0,
            field: Field::TopicLen { got: 0, len: 0 },
        })
    }

    /// One byte of a PUBLISH's variable header; checks each part fits in `left`.
    fn publish_byte(&self, qos: u8, left: u32, used: u32, field: Field, b: u8) -> io::Result<Step> {
        let used = used + 1;
        let fits = |n: u32| used + n <= left;
        let next = match field {
            Field::TopicLen { got: 0, .. } => Field::TopicLen {
                got: 1,
                len: u32::from(b) << 8,
            },
            Field::TopicLen { len, .. } => {
                let len = len | u32::from(b);
                if !fits(len) {
                    return Err(malformed("PUBLISH topic past its remaining length"));
                }
                Field::Topic(len)
            }
            Field::Topic(n) => Field::Topic(n - 1),
            Field::PacketId(got) => Field::PacketId(got + 1),
            Field::PropsLen { value, shift } => {
                if shift > 21 {
                    return Err(malformed("property length over 4 bytes"));
                }
                let value = value | (u32::from(b & 0x7f) << shift);
                if b & 0x80 != 0 {
                    Field::PropsLen {
                        value,
                        shift: shift + 7,
                    }
                } else if !fits(value) {
                    return Err(malformed("PUBLISH properties past its remaining length"));
                } else {
                    // The header fits: the rest (properties, payload) passes unexamined.
                    return Ok(skip(left - used));
                }
            }
        };
        // What comes after the part just finished.
        let next = match next {
            Field::Topic(0) if qos > 0 => {
                if !fits(2) {
                    return Err(malformed("PUBLISH packet id past its remaining length"));
                }
                Field::PacketId(0)
            }
            Field::Topic(0) | Field::PacketId(2) => {
                if !self.v5 {
                    return Ok(skip(left - used));
                }
                if !fits(1) {
                    return Err(malformed("PUBLISH properties past its remaining length"));
                }
                Field::PropsLen { value: 0, shift: 0 }
            }
            other => other,
        };
        Ok(Step::Publish {
            qos,
            left,
            used,
            field: next,
        })
    }
}

fn skip(n: u32) -> Step {
    if n == 0 { Step::Type } else { Step::Skip(n) }
}

/// An ntex-mqtt codec with `Framing` run over every byte before its decoder sees it.
pub(super) struct Guarded<C> {
    inner: C,
    /// `None` once the stream was refused.
    framing: Cell<Option<Framing>>,
    /// How many bytes at the front of the read buffer `framing` has already followed: ntex keeps
    /// what the decoder left and appends what it reads next, so the new bytes are the rest.
    seen: Cell<usize>,
}

/// The 3.1.1 driver's codec.
pub(super) type V3Codec = Guarded<v3::Codec>;
/// The 5.0 driver's codec.
pub(super) type V5Codec = Guarded<v5::Codec>;

impl<C> Guarded<C> {
    fn wrap(inner: C, v5: bool) -> Self {
        Guarded {
            inner,
            framing: Cell::new(Some(Framing::new(v5))),
            seen: Cell::new(0),
        }
    }

    pub(super) fn inner(&self) -> &C {
        &self.inner
    }
}

impl V3Codec {
    /// A codec refusing packets over `max_size` bytes; a PUBLISH split across reads is
    /// decoded as its header plus the whole payload in one chunk.
    pub(super) fn new(max_size: u32) -> V3Codec {
        let inner = v3::Codec::new();
        inner.set_max_size(max_size);
        inner.set_min_chunk_size(max_size);
        Guarded::wrap(inner, false)
    }
}

impl V5Codec {
    /// As `V3Codec::new`, for 5.0.
    pub(super) fn new(max_size: u32) -> V5Codec {
        let inner = v5::Codec::new();
        inner.set_max_inbound_size(max_size);
        inner.set_min_chunk_size(max_size);
        Guarded::wrap(inner, true)
    }
}

impl<C: Decoder<Error = DecodeError>> Decoder for Guarded<C> {
    type Item = C::Item;
    type Error = DecodeError;

    fn decode(&self, src: &mut BytesMut) -> Result<Option<C::Item>, DecodeError> {
        let mut framing = self.framing.take().ok_or(DecodeError::MalformedPacket)?;
        let seen = self.seen.get().min(src.len());
        framing
            .feed(&src[seen..])
            .map_err(|_| DecodeError::MalformedPacket)?;
        self.framing.set(Some(framing));
        let decoded = self.inner.decode(src);
        self.seen.set(src.len());
        decoded
    }
}

impl<C: Encoder<Error = EncodeError>> Encoder for Guarded<C> {
    type Item = C::Item;
    type Error = EncodeError;

    fn encodev(&self, item: C::Item, dst: &mut BytePages) -> Result<(), EncodeError> {
        self.inner.encodev(item, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(v5: bool, bytes: &[u8]) -> io::Result<()> {
        Framing::new(v5).feed(bytes)
    }

    #[test]
    fn framing_table() {
        let connect = b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x".to_vec();
        let cases: &[(&str, bool, Vec<u8>, bool)] = &[
            ("connect", false, connect.clone(), true),
            ("publish qos0", false, b"\x30\x05\x00\x01tab".to_vec(), true),
            (
                "publish qos1",
                false,
                b"\x32\x06\x00\x01t\x00\x07x".to_vec(),
                true,
            ),
            (
                "topic past the length",
                false,
                b"\x30\x03\x00\x05abcde".to_vec(),
                false,
            ),
            (
                "packet id past the length",
                false,
                b"\x32\x03\x00\x01t\x00\x07".to_vec(),
                false,
            ),
            (
                "v5 no props",
                true,
                b"\x30\x05\x00\x01t\x00a".to_vec(),
                true,
            ),
            (
                "v5 props past the length",
                true,
                b"\x30\x05\x00\x01t\x09abcdefghi".to_vec(),
                false,
            ),
            (
                "v5 header just fits",
                true,
                b"\x30\x04\x00\x01t\x00".to_vec(),
                true,
            ),
            (
                "length over 4 bytes",
                false,
                b"\x30\xff\xff\xff\xff\x01".to_vec(),
                false,
            ),
            (
                "two packets",
                true,
                [connect.clone(), b"\x30\x04\x00\x01t\x00\xc0\x00".to_vec()].concat(),
                true,
            ),
        ];
        for (what, v5, bytes, ok) in cases {
            assert_eq!(feed(*v5, bytes).is_ok(), *ok, "{what}");
            // Byte by byte, the same verdict.
            let mut f = Framing::new(*v5);
            let split = bytes.iter().try_for_each(|b| f.feed(&[*b]));
            assert_eq!(split.is_ok(), *ok, "{what}, fed byte by byte");
        }
    }

    #[test]
    fn the_fuzzer_findings_are_refused() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/mqtt");
        for (file, v5) in [
            (
                "ntex-mqtt-v3-publish-topic-past-remaining-length.bin",
                false,
            ),
            (
                "ntex-mqtt-v5-publish-properties-past-remaining-length.bin",
                true,
            ),
        ] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            assert!(feed(v5, &bytes).is_err(), "{file}");
            let mut buf = BytesMut::copy_from_slice(&bytes);
            let refused = if v5 {
                decode_all(&V5Codec::new(1 << 20), &mut buf).is_err()
            } else {
                decode_all(&V3Codec::new(1 << 20), &mut buf).is_err()
            };
            assert!(refused, "{file} through the driver's codec");
        }
    }

    /// The packets decoded, without the payload chunks of a PUBLISH split across reads.
    fn decode_all<C>(codec: &Guarded<C>, buf: &mut BytesMut) -> Result<Vec<String>, DecodeError>
    where
        C: Decoder<Error = DecodeError>,
        C::Item: std::fmt::Debug + 'static,
    {
        let mut out = Vec::new();
        while let Some(p) = codec.decode(buf)? {
            let any: &dyn std::any::Any = &p;
            let chunk = matches!(any.downcast_ref(), Some(v3::Decoded::PayloadChunk(..)))
                || matches!(any.downcast_ref(), Some(v5::Decoded::PayloadChunk(..)));
            if !chunk {
                out.push(format!("{p:?}"));
            }
        }
        Ok(out)
    }

    /// However the stream is cut into reads, `V3Codec` decodes what the plain codec decodes, and
    /// refuses a bad PUBLISH arriving after good packets in the same or a later read.
    #[test]
    fn v3_codec_follows_reads_of_any_size() {
        let good = [
            &b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01x"[..],
            b"\x30\x05\x00\x01tab",
            b"\x32\x08\x00\x01t\x00\x07xyz",
            b"\x82\x06\x00\x01\x00\x01a\x00",
            b"\xc0\x00",
        ]
        .concat();
        let plain = v3::Codec::new();
        let mut all = BytesMut::copy_from_slice(&good);
        let mut want = Vec::new();
        while let Some(p) = plain.decode(&mut all).unwrap() {
            want.push(format!("{p:?}"));
        }
        assert_eq!(want.len(), 5);
        let bad = [&good[..], b"\x30\x03\x00\x05abcde"].concat();
        for chunk in 1..=bad.len() {
            let codec = V3Codec::new(1 << 20);
            let mut buf = BytesMut::new();
            let (mut got, mut refused) = (Vec::new(), false);
            for piece in bad.chunks(chunk) {
                buf.extend_from_slice(piece);
                match decode_all(&codec, &mut buf) {
                    Ok(p) => got.extend(p),
                    Err(_) => {
                        refused = true;
                        break;
                    }
                }
            }
            assert!(refused, "reads of {chunk}: the bad PUBLISH was refused");
            assert!(
                got.len() <= want.len() && got == want[..got.len()],
                "reads of {chunk}: {got:#?} vs {want:#?}"
            );
            // Only a read holding both good and bad bytes may end before all the good packets.
            if chunk <= 2 {
                assert_eq!(got, want, "reads of {chunk}");
            }
        }
    }
}
