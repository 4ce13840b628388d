//! The device's TLS identity: its key and certificate from enrolment and
//! the fleet CA, turned into a rustls client configuration (ring, the
//! workspace's one provider) for the mutual-TLS MQTT connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("{path} holds no certificate")]
    Empty { path: PathBuf },
}

/// Where enrolment put the device's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files under the agent's state directory.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.crt"),
            cert: dir.join("device.crt"),
            key: dir.join("device.key"),
        }
    }

    pub fn exist(&self) -> bool {
        self.ca.is_file() && self.cert.is_file() && self.key.is_file()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// A client configuration from PEM text: trust only `ca`, present
/// `cert` with `key`.
pub fn client_config_pem(
    ca: &[u8],
    cert: &[u8],
    key: &[u8],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| TlsError::Read {
        path: PathBuf::from(what),
        reason: e.to_string(),
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca) {
        roots
            .add(c.map_err(|e| bad("CA", &e))?)
            .map_err(TlsError::Config)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Empty {
            path: PathBuf::from("CA"),
        });
    }
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", &e))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("key", &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(Arc::new(cfg))
}

/// `cfg` with TLS session resumption on (rustls's in-memory session cache,
/// the default: a reconnect resumes instead of a full handshake, as long as
/// the same configuration is used for every connection) or off.
pub fn with_resumption(cfg: Arc<rustls::ClientConfig>, on: bool) -> Arc<rustls::ClientConfig> {
    if on {
        return cfg;
    }
    let mut c = (*cfg).clone();
    c.resumption = rustls::client::Resumption::disabled();
    Arc::new(c)
}

/// A client configuration from the files.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    client_config_pem(&read(&files.ca)?, &read(&files.cert)?, &read(&files.key)?)
}
