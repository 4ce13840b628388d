//! HTTPS for the API: the server configuration and the handshake deadline.
//! The accept loop that completes handshakes (each in its connection's own
//! task, so a slow client holds up nobody) is [`super::serve`]. The server
//! certificate is the one `init` made for 127.0.0.1 and localhost, signed by
//! the fleet CA.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A client that has not finished its TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's address, as handlers and the audit log see it (in each
/// request's extensions as `ConnectInfo<Peer>`).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A server configuration (ring) from PEM files. The files are read again
/// when the certificate file changes (the controller renews it), so a
/// running API presents the renewed certificate from its next handshake.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let resolver = ReloadingCert::new(cert, key, Arc::clone(&provider))?;
    Ok(Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver)),
    ))
}

/// The API's certificate, read again when its file's modification time
/// changes; a file that does not load keeps the one loaded before.
#[derive(Debug)]
struct ReloadingCert {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    loaded: std::sync::RwLock<(
        Option<std::time::SystemTime>,
        Arc<rustls::sign::CertifiedKey>,
    )>,
}

impl ReloadingCert {
    fn new(
        cert: &Path,
        key: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let loaded = load(cert, key, &provider)?;
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            provider,
            loaded: std::sync::RwLock::new((modified(cert), Arc::new(loaded))),
        })
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        let now = modified(&self.cert);
        {
            let held = self
                .loaded
                .read()
                .expect("certificate lock is never poisoned");
            if held.0 == now {
                return Arc::clone(&held.1);
            }
        }
        let mut held = self
            .loaded
            .write()
            .expect("certificate lock is never poisoned");
        match load(&self.cert, &self.key, &self.provider) {
            Ok(k) => {
                tracing::info!(cert = %self.cert.display(), "the API presents its renewed certificate");
                *held = (now, Arc::new(k));
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the API's renewed certificate; the one loaded is kept")
            }
        }
        Arc::clone(&held.1)
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<rustls::sign::CertifiedKey> {
    use anyhow::Context;
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("cannot read {}", key.display()))?;
    let key = provider.key_provider.load_private_key(key)?;
    Ok(rustls::sign::CertifiedKey::new(chain, key))
}
