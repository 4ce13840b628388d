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
    #[error("refusing to enrol over plain http:// ({url}): the token and the certificate would cross the bench network in clear; use https:// with the fleet CA (plain HTTP only with mqtt.insecure_dev = true)")]
    Plaintext { url: String },
    #[error("the controller answered with a CA that is not the one shipped in this device's image; nothing was saved")]
    CaMismatch,
    #[error("cannot read the enrolment token from {path}: {reason}")]
    Token { path: PathBuf, reason: String },
}

/// Plain `http://` only for a development setup (`mqtt.insecure_dev`).
pub fn check_transport(controller: &str, insecure_dev: bool) -> Result<(), EnrolError> {
    if controller.starts_with("https://") || insecure_dev {
        Ok(())
    } else {
        Err(EnrolError::Plaintext {
            url: controller.to_owned(),
        })
    }
}

/// The token from a file, or from standard input for `-`; surrounding
/// white space (the newline of a scanner or an editor) is dropped.
pub fn read_token(path: &Path) -> Result<String, EnrolError> {
    let err = |reason: String| EnrolError::Token {
        path: path.to_owned(),
        reason,
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .map_err(|e| err(e.to_string()))?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?
    };
    let token = text.trim();
    if token.is_empty() {
        return Err(err("it is empty".into()));
    }
    Ok(token.to_owned())
}

/// The CA in the controller's answer must be the one the device shipped
/// with: a controller (or anyone in the middle) cannot hand a device a new
/// trust anchor at enrolment.
pub fn check_ca(shipped: &[u8], answered: &str) -> Result<(), EnrolError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let ders = |pem: &[u8]| -> Vec<Vec<u8>> {
        CertificateDer::pem_slice_iter(pem)
            .filter_map(Result::ok)
            .map(|c| c.as_ref().to_vec())
            .collect()
    };
    let shipped = ders(shipped);
    if !shipped.is_empty() && shipped == ders(answered.as_bytes()) {
        Ok(())
    } else {
        Err(EnrolError::CaMismatch)
    }
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
    shipped_ca: Option<&[u8]>,
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
    if let Some(shipped) = shipped_ca {
        check_ca(shipped, &answer.ca)?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn only_the_ca_shipped_in_the_image_is_accepted_from_the_controller() {
        let shipped = ca_pem();
        assert!(check_ca(shipped.as_bytes(), &shipped).is_ok());
        // The same certificate with other line breaks is the same CA.
        let reflowed = shipped.replace('\n', "\r\n");
        assert!(check_ca(shipped.as_bytes(), &reflowed).is_ok());
        let other = ca_pem();
        assert!(matches!(
            check_ca(shipped.as_bytes(), &other),
            Err(EnrolError::CaMismatch)
        ));
        assert!(matches!(
            check_ca(b"not a certificate", "not a certificate"),
            Err(EnrolError::CaMismatch)
        ));
    }

    #[test]
    fn plain_http_is_refused_unless_in_insecure_dev_mode() {
        let err = check_transport("http://10.0.0.5:8080", false).unwrap_err();
        assert!(err.to_string().contains("plain http://"), "{err}");
        assert!(check_transport("http://127.0.0.1:8080", true).is_ok());
        assert!(check_transport("https://10.0.0.5:8080", false).is_ok());
    }

    #[test]
    fn the_token_file_is_trimmed_and_an_empty_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  enr-abc-def\n").unwrap();
        assert_eq!(read_token(&f).unwrap(), "enr-abc-def");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token(&f).unwrap_err().to_string().contains("empty"));
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
