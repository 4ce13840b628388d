//! Enrolment: the device makes its own key (it never leaves the device),
//! sends a certificate request with its enrolment token, and receives its
//! certificate, the fleet CA and the broker address.

use std::path::{Path, PathBuf};

use fleet_protocol::DeviceId;
use serde::{Deserialize, Serialize};

use crate::tls::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("cannot make the device key: {0}")]
    Key(String),
    #[error("cannot reach the controller at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the controller refused the enrolment: {0}")]
    Refused(String),
    #[error("unexpected answer from the controller: {0}")]
    Answer(String),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// What enrolment gives a device.
#[derive(Debug, Clone)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
    pub broker: Broker,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

/// Enrol `device` with `token` through `controller` (fleet-api's client,
/// trusting the fleet CA; no operator token).
pub async fn enrol(
    controller: &fleet_api::Client,
    device: &DeviceId,
    token: &str,
) -> Result<Identity, EnrolError> {
    let key = rcgen::KeyPair::generate().map_err(|e| EnrolError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device.as_str());
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| EnrolError::Key(e.to_string()))?;
    let request = fleet_api::types::EnrolRequest {
        device: device.to_string(),
        token: token.trim().to_owned(),
        csr,
    };
    let answer = controller.enrol(&request).await.map_err(|e| match e {
        fleet_api::ClientError::Http { message, .. } => EnrolError::Refused(message),
        fleet_api::ClientError::Connect { url, source } => {
            // The innermost cause says what went wrong (refused, TLS, DNS).
            let mut reason = source.to_string();
            let mut cause = std::error::Error::source(&source);
            while let Some(c) = cause {
                reason = c.to_string();
                cause = c.source();
            }
            EnrolError::Connect { url, reason }
        }
        other => EnrolError::Answer(other.to_string()),
    })?;
    Ok(Identity {
        key_pem: key.serialize_pem(),
        cert_pem: answer.certificate,
        ca_pem: answer.ca,
        broker: Broker {
            host: answer.broker.host,
            port: answer.broker.port,
        },
    })
}

/// Where the broker address from enrolment is kept.
pub fn broker_file(state_dir: &Path) -> PathBuf {
    state_dir.join("broker.json")
}

/// Write a new file readable by its owner only.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Save the identity under `state_dir` (the key readable by its owner only).
pub fn save(identity: &Identity, state_dir: &Path) -> Result<TlsFiles, EnrolError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let files = TlsFiles::in_dir(state_dir);
    let write = |path: &Path, data: &[u8], mode: u32| -> Result<(), EnrolError> {
        let err = |e: std::io::Error| EnrolError::Write {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(err)?;
        f.write_all(data).map_err(err)?;
        f.sync_all().map_err(err)
    };
    std::fs::create_dir_all(state_dir).map_err(|e| EnrolError::Write {
        path: state_dir.to_owned(),
        reason: e.to_string(),
    })?;
    write(&files.key, identity.key_pem.as_bytes(), 0o600)?;
    write(&files.cert, identity.cert_pem.as_bytes(), 0o644)?;
    write(&files.ca, identity.ca_pem.as_bytes(), 0o644)?;
    write(
        &broker_file(state_dir),
        serde_json::to_string(&identity.broker)
            .expect("broker serializes")
            .as_bytes(),
        0o644,
    )?;
    Ok(files)
}

/// The broker address saved at enrolment, if any.
pub fn saved_broker(state_dir: &Path) -> Option<Broker> {
    serde_json::from_slice(&std::fs::read(broker_file(state_dir)).ok()?).ok()
}
