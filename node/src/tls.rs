//! TLS for the MQTT listeners (MQTT over TLS, WebSocket over TLS) and the REST API: one rustls
//! `ServerConfig` built from the configured PEM files (certificate chain, private key, and the
//! CA bundle client certificates are checked against, when given).
//!
//! Certificates are renewed in place: on SIGHUP, or when one of the files changes (checked
//! every `WATCH`), the files are read again and the new configuration applies to connections
//! accepted from then on; open connections keep theirs. A reload that fails (a half-written
//! file, a key that does not match) keeps the previous configuration and says why.
//!
//! With a client CA, clients may present a certificate: one that does not chain to the CA ends
//! the handshake; one that does names its holder by its subject's common name, which the broker
//! takes as the MQTT user name (`client_identity`). Clients without a certificate are still
//! accepted and authenticate with their password.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow};
use parking_lot::{Mutex, RwLock};
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// How often the files are checked for changes.
const WATCH: Duration = Duration::from_secs(5);

/// The PEM files TLS is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

impl Files {
    fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }

    fn stamps(&self) -> Vec<Option<SystemTime>> {
        self.all()
            .into_iter()
            .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .collect()
    }
}

/// The current TLS configuration, shared by every listener that speaks TLS.
pub struct Tls {
    files: Files,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl Tls {
    /// Reads the configured files; `None` when no certificate is configured.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Arc<Tls>>> {
        if config.tls_cert.as_os_str().is_empty() {
            return Ok(None);
        }
        let files = Files {
            cert: config.tls_cert.clone(),
            key: config.tls_key.clone(),
            client_ca: (!config.tls_client_ca.as_os_str().is_empty())
                .then(|| config.tls_client_ca.clone()),
        };
        let stamps = files.stamps();
        let server = build(&files)?;
        Ok(Some(Arc::new(Tls {
            files,
            current: RwLock::new(server),
            stamps: Mutex::new(stamps),
        })))
    }

    /// The configuration a connection accepted now gets.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }

    /// Whether clients may present certificates (a client CA is configured).
    pub fn verifies_clients(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// Reads the files again; on failure the previous configuration stays.
    pub fn reload(&self, why: &str) {
        *self.stamps.lock() = self.files.stamps();
        match build(&self.files) {
            Ok(server) => {
                *self.current.write() = server;
                tracing::info!(cert = %self.files.cert.display(), why, "tls certificates reloaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), why, "tls reload failed; the previous certificates stay in use");
            }
        }
    }

    /// Reloads on SIGHUP and when a file's modification time changes, until `shutdown`.
    pub fn watch(self: &Arc<Self>, shutdown: CancellationToken) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut hup = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::hangup(),
            ) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGHUP; tls reloads on file changes only");
                    None
                }
            };
            let mut tick = tokio::time::interval(WATCH);
            loop {
                let hup_recv = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = hup_recv => tls.reload("SIGHUP"),
                    _ = tick.tick() => {
                        if tls.files.stamps() != *tls.stamps.lock() {
                            tls.reload("file changed");
                        }
                    }
                }
            }
        });
    }
}

fn build(files: &Files) -> anyhow::Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|i| i.collect::<Result<_, _>>())
        .with_context(|| format!("tls_cert {}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "tls_cert {} holds no certificate",
            files.cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("tls_key {}", files.key.display()))?;
    // ring builds with the C compiler alone, into the static image; rustls deprecated its
    // provider only for lacking post-quantum key exchange (aws-lc-rs has it).
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("tls protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("tls_client_ca {}", ca.display()))?
            {
                let cert = cert.with_context(|| format!("tls_client_ca {}", ca.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("tls_client_ca {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("tls_client_ca {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let server = builder
        .with_single_cert(certs, key)
        .context("tls_cert and tls_key do not make a certificate")?;
    Ok(Arc::new(server))
}

/// The identity a verified client certificate gives its holder: the subject's common name.
pub fn client_identity(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
