//! `realmq-bench null`: the "null broker" that shows the generator's own ceiling.
//!
//! It does the least an MQTT server can: it frames what clients send without decoding it,
//! answers CONNECT, SUBSCRIBE and the QoS 1/2 PUBLISH flow with fixed packets, discards every
//! PUBLISH, and floods each subscriber with copies of one 64-byte QoS 0 PUBLISH as fast as the
//! subscriber reads. Run in place of a broker, the generator's `sent_per_s` is how fast its
//! publishers can send and `received_per_s` how fast its subscribers can receive on this machine;
//! a broker's figure far below both was not limited by the generator. With a certificate it
//! serves MQTT over TLS on a second port, for the TLS scenarios' ceiling.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves until killed: plain MQTT on `listen`, and MQTT over TLS on `tls` with the PEM
/// certificate chain and key given.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<(SocketAddr, &Path, &Path)>,
) -> anyhow::Result<()> {
    if let Some((addr, cert, key)) = tls {
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config(cert, key)?);
        let listener = TcpListener::bind(addr).await?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = stream.set_nodelay(true);
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let (rd, wr) = tokio::io::split(tls);
                        let _ = connection(rd, wr).await;
                    }
                });
            }
        });
    }
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (rd, wr) = stream.into_split();
            let _ = connection(rd, wr).await;
        });
    }
}

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)?;
    // The broker's provider (see node/src/tls.rs).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

/// One packet's fixed header: its type byte and where its body lies in the buffer.
fn frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 0..4 {
        let b = *buf.get(1 + i)?;
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let start = 2 + i;
            return (buf.len() >= start + len).then_some((buf[0], start, start + len));
        }
    }
    None
}

async fn connection<R, W>(mut rd: R, mut wr: W) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut v5 = false;
    loop {
        let n = rd.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut used = 0;
        let mut flood = false;
        while let Some((kind, start, end)) = frame(&buf[used..]) {
            let body = &buf[used + start..used + end];
            match kind >> 4 {
                // CONNECT: the protocol level follows the 6-byte protocol name.
                1 => {
                    v5 = body.get(6) == Some(&5);
                    out.extend_from_slice(if v5 {
                        &[0x20, 3, 0, 0, 0]
                    } else {
                        &[0x20, 2, 0, 0]
                    });
                }
                // PUBLISH: QoS 1 gets PUBACK, QoS 2 PUBREC, with the packet id after the topic.
                3 => {
                    let qos = (kind >> 1) & 3;
                    let topic = body
                        .get(..2)
                        .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
                    if let (1 | 2, Some(id)) = (qos, body.get(2 + topic..4 + topic)) {
                        out.extend_from_slice(&[
                            if qos == 1 { 0x40 } else { 0x50 },
                            2,
                            id[0],
                            id[1],
                        ]);
                    }
                }
                // PUBREL → PUBCOMP.
                6 if body.len() >= 2 => out.extend_from_slice(&[0x70, 2, body[0], body[1]]),
                // SUBSCRIBE → SUBACK granting QoS 0, then the flood starts.
                8 if body.len() >= 2 => {
                    if v5 {
                        out.extend_from_slice(&[0x90, 4, body[0], body[1], 0, 0]);
                    } else {
                        out.extend_from_slice(&[0x90, 3, body[0], body[1], 0]);
                    }
                    flood = true;
                }
                // PINGREQ → PINGRESP.
                12 => out.extend_from_slice(&[0xd0, 0]),
                _ => {}
            }
            used += end;
        }
        buf.drain(..used);
        wr.write_all(&out).await?;
        if flood {
            tokio::spawn(flood_subscriber(wr, v5));
            // The subscriber sends nothing the flood must answer; read and discard to the end.
            while rd.read(&mut chunk).await? > 0 {}
            return Ok(());
        }
    }
}

/// Writes QoS 0 PUBLISH packets on `bench/t` (64-byte payloads) until the subscriber goes away.
async fn flood_subscriber<W: AsyncWrite + Unpin>(mut wr: W, v5: bool) {
    let topic = b"bench/t";
    let mut packet = vec![0x30, 0];
    packet.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    packet.extend_from_slice(topic);
    if v5 {
        packet.push(0);
    }
    packet.extend_from_slice(&[0u8; 64]);
    packet[1] = (packet.len() - 2) as u8;
    let batch = packet.repeat(64 * 1024 / packet.len());
    while wr.write_all(&batch).await.is_ok() {}
}
