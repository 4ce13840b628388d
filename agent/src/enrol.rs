//! Enrolment: the device makes its own key (it never leaves the device),
//! sends a certificate request with its enrolment token, and receives its
//! certificate, the fleet CA and the broker address.

use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Enrol `device` with `token` at `controller` (its base URL).
pub async fn enrol(
    http: &reqwest::Client,
    controller: &str,
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
    let url = format!("{}/api/v1/enrol", controller.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .timeout(Duration::from_secs(60))
        .json(&serde_json::json!({ "device": device, "token": token.trim(), "csr": csr }))
        .send()
        .await
        .map_err(|e| {
            let mut reason = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                reason = c.to_string();
                cause = c.source();
            }
            EnrolError::Connect {
                url: url.clone(),
                reason,
            }
        })?;
    let status = resp.status();
    let body: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| EnrolError::Answer(e.to_string()))?;
    if !status.is_success() {
        return Err(EnrolError::Refused(
            body["error"]
                .as_str()
                .unwrap_or("no reason given")
                .to_owned(),
        ));
    }
    let text = |k: &str| {
        body[k]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| EnrolError::Answer(format!("no {k} in the answer")))
    };
    let broker: Broker = serde_json::from_value(body["broker"].clone())
        .map_err(|e| EnrolError::Answer(format!("broker: {e}")))?;
    Ok(Identity {
        key_pem: key.serialize_pem(),
        cert_pem: text("certificate")?,
        ca_pem: text("ca")?,
        broker,
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
