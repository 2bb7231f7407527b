//! A lean MQTT 3.1.1 / 5.0 client for load generation: tokio sockets, ntex-mqtt's codecs, and
//! writes batched into one buffer per connection so the generator, not the broker, stays cheap.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use ntex::codec::{Decoder, Encoder};
use ntex_bytes::{BytePages, ByteString, Bytes, BytesMut};
use ntex_mqtt::{v3, v5};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Version {
    #[value(name = "3")]
    V3,
    #[value(name = "5")]
    V5,
}

/// What the generator reacts to.
#[derive(Debug)]
pub enum Incoming {
    Publish {
        qos: u8,
        packet_id: Option<u16>,
        payload: Bytes,
    },
    PubAck,
    PubRec(u16),
    PubRel(u16),
    PubComp,
    SubAck,
    Other,
}

#[derive(Clone)]
pub enum Codec {
    V3(v3::codec::Codec),
    V5(v5::codec::Codec),
}

fn qos3(q: u8) -> v3::QoS {
    match q {
        0 => v3::QoS::AtMostOnce,
        1 => v3::QoS::AtLeastOnce,
        _ => v3::QoS::ExactlyOnce,
    }
}

fn pid(id: u16) -> NonZeroU16 {
    NonZeroU16::new(id).unwrap_or(NonZeroU16::MIN)
}

impl Codec {
    fn new(v: Version) -> Codec {
        match v {
            Version::V3 => {
                let c = v3::codec::Codec::default();
                c.set_min_chunk_size(u32::MAX);
                Codec::V3(c)
            }
            Version::V5 => {
                let c = v5::codec::Codec::new();
                c.set_min_chunk_size(u32::MAX);
                Codec::V5(c)
            }
        }
    }

    pub fn publish(
        &self,
        out: &mut BytePages,
        topic: &ByteString,
        qos: u8,
        packet_id: u16,
        payload: Bytes,
    ) {
        let packet_id = (qos > 0).then(|| pid(packet_id));
        let size = payload.len() as u32;
        let _ = match self {
            Codec::V3(c) => c.encodev(
                v3::codec::Encoded::Publish(
                    v3::codec::Publish {
                        dup: false,
                        retain: false,
                        qos: qos3(qos),
                        topic: topic.clone(),
                        packet_id,
                        payload_size: size,
                    },
                    Some(payload),
                ),
                out,
            ),
            Codec::V5(c) => c.encodev(
                v5::codec::Encoded::Publish(
                    v5::codec::Publish {
                        dup: false,
                        retain: false,
                        qos: qos3(qos),
                        packet_id,
                        topic: topic.clone(),
                        payload_size: size,
                        properties: Default::default(),
                    },
                    Some(payload),
                ),
                out,
            ),
        };
    }

    /// The acknowledgement a received message needs (PUBACK, PUBREC), or PUBREL for a PUBREC.
    pub fn ack(&self, out: &mut BytePages, kind: u8, id: u16) {
        let id = pid(id);
        let _ = match self {
            Codec::V3(c) => {
                let p = match kind {
                    1 => v3::codec::Packet::PublishAck { packet_id: id },
                    2 => v3::codec::Packet::PublishReceived { packet_id: id },
                    3 => v3::codec::Packet::PublishRelease { packet_id: id },
                    _ => v3::codec::Packet::PublishComplete { packet_id: id },
                };
                c.encodev(v3::codec::Encoded::Packet(p), out)
            }
            Codec::V5(c) => {
                let a = v5::codec::PublishAck {
                    packet_id: id,
                    reason_code: v5::codec::PublishAckReason::Success,
                    properties: Vec::new(),
                    reason_string: None,
                };
                let a2 = v5::codec::PublishAck2 {
                    packet_id: id,
                    reason_code: v5::codec::PublishAck2Reason::Success,
                    properties: Vec::new(),
                    reason_string: None,
                };
                let p = match kind {
                    1 => v5::codec::Packet::PublishAck(a),
                    2 => v5::codec::Packet::PublishReceived(a),
                    3 => v5::codec::Packet::PublishRelease(a2),
                    _ => v5::codec::Packet::PublishComplete(a2),
                };
                c.encodev(v5::codec::Encoded::Packet(p), out)
            }
        };
    }

    fn decode(&self, buf: &mut BytesMut) -> anyhow::Result<Option<Incoming>> {
        Ok(match self {
            Codec::V3(c) => c
                .decode(buf)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .map(|d| match d {
                    v3::codec::Decoded::Publish(p, payload, _) => Incoming::Publish {
                        qos: p.qos as u8,
                        packet_id: p.packet_id.map(|i| i.get()),
                        payload,
                    },
                    v3::codec::Decoded::Packet(v3::codec::Packet::PublishAck { .. }, _) => {
                        Incoming::PubAck
                    }
                    v3::codec::Decoded::Packet(
                        v3::codec::Packet::PublishReceived { packet_id },
                        _,
                    ) => Incoming::PubRec(packet_id.get()),
                    v3::codec::Decoded::Packet(
                        v3::codec::Packet::PublishRelease { packet_id },
                        _,
                    ) => Incoming::PubRel(packet_id.get()),
                    v3::codec::Decoded::Packet(v3::codec::Packet::PublishComplete { .. }, _) => {
                        Incoming::PubComp
                    }
                    v3::codec::Decoded::Packet(v3::codec::Packet::SubscribeAck { .. }, _) => {
                        Incoming::SubAck
                    }
                    _ => Incoming::Other,
                }),
            Codec::V5(c) => c
                .decode(buf)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
                .map(|d| match d {
                    v5::codec::Decoded::Publish(p, payload, _) => Incoming::Publish {
                        qos: p.qos as u8,
                        packet_id: p.packet_id.map(|i| i.get()),
                        payload,
                    },
                    v5::codec::Decoded::Packet(v5::codec::Packet::PublishAck(_), _) => {
                        Incoming::PubAck
                    }
                    v5::codec::Decoded::Packet(v5::codec::Packet::PublishReceived(a), _) => {
                        Incoming::PubRec(a.packet_id.get())
                    }
                    v5::codec::Decoded::Packet(v5::codec::Packet::PublishRelease(a), _) => {
                        Incoming::PubRel(a.packet_id.get())
                    }
                    v5::codec::Decoded::Packet(v5::codec::Packet::PublishComplete(_), _) => {
                        Incoming::PubComp
                    }
                    v5::codec::Decoded::Packet(v5::codec::Packet::SubscribeAck(_), _) => {
                        Incoming::SubAck
                    }
                    _ => Incoming::Other,
                }),
        })
    }
}

/// Who connects, and how.
#[derive(Debug, Clone)]
pub struct Login {
    pub version: Version,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: u16,
    /// 3.1.1 Clean Session / 5.0 Clean Start; without it (3.1.1) the session persists.
    pub clean: bool,
    /// MQTT over TLS, verifying the broker against this configuration's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A TLS client configuration trusting the CA certificates in the PEM file `ca`.
pub fn tls_config(ca: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("reading the CA file")? {
        roots.add(cert?)?;
    }
    // The broker's provider (see node/src/tls.rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The read side of a connection, plain TCP or TLS (reads are batched, so the indirection
/// costs nothing measurable).
type Rd = Box<dyn AsyncRead + Unpin + Send>;
type Wr = Box<dyn AsyncWrite + Unpin + Send>;

pub struct Reader {
    rd: Rd,
    buf: BytesMut,
    codec: Codec,
}

impl Reader {
    /// Whether bytes are buffered that the next `next()` may decode without reading.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next packet; `None` when the broker closed the connection.
    pub async fn next(&mut self) -> anyhow::Result<Option<Incoming>> {
        loop {
            if let Some(item) = self.codec.decode(&mut self.buf)? {
                return Ok(Some(item));
            }
            self.buf.reserve(16 * 1024);
            let mut chunk = [0u8; 16 * 1024];
            let n = self.rd.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

pub struct Writer {
    wr: Wr,
    pub out: BytePages,
    pub codec: Codec,
}

impl Writer {
    /// Sends everything encoded so far in one write.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let bytes = Bytes::from(std::mem::take(&mut self.out));
        self.wr.write_all(&bytes).await?;
        Ok(())
    }

    pub async fn subscribe(&mut self, filter: &str, qos: u8) -> anyhow::Result<()> {
        let filter = ByteString::from(filter.to_string());
        let _ = match &self.codec {
            Codec::V3(c) => c.encodev(
                v3::codec::Encoded::Packet(v3::codec::Packet::Subscribe {
                    packet_id: pid(1),
                    topic_filters: vec![(filter, qos3(qos))],
                }),
                &mut self.out,
            ),
            Codec::V5(c) => c.encodev(
                v5::codec::Encoded::Packet(v5::codec::Packet::Subscribe(v5::codec::Subscribe {
                    packet_id: pid(1),
                    id: None,
                    user_properties: Vec::new(),
                    topic_filters: vec![(
                        filter,
                        v5::codec::SubscriptionOptions {
                            qos: qos3(qos),
                            ..Default::default()
                        },
                    )],
                })),
                &mut self.out,
            ),
        };
        self.flush().await
    }
}

/// Connects (from `local` if given, to open more than 64k connections), sends CONNECT and
/// waits for a successful CONNACK.
pub async fn connect(
    addr: SocketAddr,
    local: Option<IpAddr>,
    login: &Login,
) -> anyhow::Result<(Reader, Writer)> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket
            .bind(SocketAddr::new(ip, 0))
            .with_context(|| format!("bind {ip}"))?;
    }
    let stream = socket.connect(addr).await.context("tcp connect")?;
    stream.set_nodelay(true)?;
    let (rd, wr): (Rd, Wr) = match &login.tls {
        None => {
            let (rd, wr) = stream.into_split();
            (Box::new(rd), Box::new(wr))
        }
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, stream)
                .await
                .context("tls handshake")?;
            let (rd, wr) = tokio::io::split(tls);
            (Box::new(rd), Box::new(wr))
        }
    };
    let codec = Codec::new(login.version);
    let mut writer = Writer {
        wr,
        out: BytePages::default(),
        codec: codec.clone(),
    };
    let username = login.username.clone().map(ByteString::from);
    let password = login.password.clone().map(|p| Bytes::from(p.into_bytes()));
    let _ = match &codec {
        Codec::V3(c) => c.encodev(
            v3::codec::Encoded::Packet(v3::codec::Packet::Connect(Box::new(v3::codec::Connect {
                clean_session: login.clean,
                keep_alive: login.keep_alive,
                last_will: None,
                client_id: ByteString::from(login.client_id.clone()),
                username,
                password,
            }))),
            &mut writer.out,
        ),
        Codec::V5(c) => c.encodev(
            v5::codec::Encoded::Packet(v5::codec::Packet::Connect(Box::new(v5::codec::Connect {
                clean_start: login.clean,
                keep_alive: login.keep_alive,
                client_id: ByteString::from(login.client_id.clone()),
                username,
                password,
                // Let the broker send as fast as the window it would give any client.
                receive_max: NonZeroU16::new(u16::MAX),
                ..Default::default()
            }))),
            &mut writer.out,
        ),
    };
    writer.flush().await?;
    let mut reader = Reader {
        rd,
        buf: BytesMut::new(),
        codec,
    };
    // CONNACK: decode it through the version's codec and check the code.
    loop {
        let decoded_ok = match &reader.codec {
            Codec::V3(c) => match c
                .decode(&mut reader.buf)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
            {
                Some(v3::codec::Decoded::Packet(v3::codec::Packet::ConnectAck(a), _)) => {
                    Some(a.return_code == v3::codec::ConnectAckReason::ConnectionAccepted)
                }
                Some(_) => Some(false),
                None => None,
            },
            Codec::V5(c) => match c
                .decode(&mut reader.buf)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?
            {
                Some(v5::codec::Decoded::Packet(v5::codec::Packet::ConnectAck(a), _)) => {
                    Some(a.reason_code == v5::codec::ConnectAckReason::Success)
                }
                Some(_) => Some(false),
                None => None,
            },
        };
        match decoded_ok {
            Some(true) => return Ok((reader, writer)),
            Some(false) => bail!("connect refused"),
            None => {
                let mut chunk = [0u8; 1024];
                let n = reader.rd.read(&mut chunk).await?;
                if n == 0 {
                    bail!("connection closed before CONNACK");
                }
                reader.buf.extend_from_slice(&chunk[..n]);
            }
        }
    }
}
