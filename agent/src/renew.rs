//! Certificate renewal at the edge (files and parsing; the decisions are
//! the core's, `core::renewal`): read a certificate's dates, make a
//! certificate request with the device's key (or a new one), keep a
//! renewed certificate beside the old one, and replace the old files only
//! once a connection with the new one succeeded.
//!
//! Files in the state directory: `device.crt`/`device.key` (in use),
//! `device.crt.new` and `device.key.new` (a renewal being tried). A new
//! key is written before its request leaves; the new certificate when it
//! arrives. After a connection with them succeeded, `device.key.new` is
//! renamed over `device.key`, then `device.crt.new` over `device.crt`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleet_protocol::DeviceId;
use rcgen::PublicKeyData;

use crate::core::CertInfo;
use crate::enrol::write_private;
use crate::tls::{client_config_pem, TlsFiles};

/// The files of a renewal being tried, beside `files`.
pub fn new_cert(files: &TlsFiles) -> PathBuf {
    with_suffix(&files.cert, ".new")
}

pub fn new_key(files: &TlsFiles) -> PathBuf {
    with_suffix(&files.key, ".new")
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The dates, serial, subject name and public key of a PEM certificate.
pub struct Parsed {
    pub info: CertInfo,
    pub common_name: String,
    pub public_key: Vec<u8>,
}

pub fn parse(pem: &[u8]) -> Result<Parsed, String> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let ms = |t: x509_parser::time::ASN1Time| u64::try_from(t.timestamp()).unwrap_or(0) * 1000;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("")
        .to_owned();
    Ok(Parsed {
        info: CertInfo {
            serial: cert.tbs_certificate.raw_serial_as_string().replace(':', ""),
            not_before_ms: ms(cert.validity().not_before),
            not_after_ms: ms(cert.validity().not_after),
        },
        common_name,
        public_key: cert.public_key().raw.to_vec(),
    })
}

/// The certificate in use.
pub fn current(files: &TlsFiles) -> Result<CertInfo, String> {
    Ok(parse(&read(&files.cert)?)?.info)
}

/// At start: finish or drop a renewal a crash interrupted. The key was
/// renamed already (no `device.key.new` left beside a `device.crt.new`
/// whose key is `device.key`): finish with the certificate. Otherwise the
/// new files were never confirmed: drop them, the old ones work.
pub fn recover(files: &TlsFiles) {
    let (cert_new, key_new) = (new_cert(files), new_key(files));
    if !cert_new.exists() {
        let _ = std::fs::remove_file(&key_new);
        return;
    }
    let key_matches = || -> Option<bool> {
        let key = std::fs::read_to_string(&files.key).ok()?;
        let key = rcgen::KeyPair::from_pem(&key).ok()?;
        let cert = parse(&std::fs::read(&cert_new).ok()?).ok()?;
        Some(key.subject_public_key_info() == cert.public_key)
    };
    if !key_new.exists() && key_matches() == Some(true) {
        let _ = std::fs::rename(&cert_new, &files.cert);
    } else {
        let _ = std::fs::remove_file(&cert_new);
        let _ = std::fs::remove_file(&key_new);
    }
}

/// A PEM certificate request for `device`, signed with its key, or with a
/// new key kept in `device.key.new` (mode 0600) if `fresh`.
pub fn make_request(files: &TlsFiles, device: &DeviceId, fresh: bool) -> Result<String, String> {
    let key = if fresh {
        let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
        let path = new_key(files);
        write_private(&path, key.serialize_pem().as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        key
    } else {
        let _ = std::fs::remove_file(new_key(files));
        let pem = String::from_utf8(read(&files.key)?).map_err(|e| e.to_string())?;
        rcgen::KeyPair::from_pem(&pem).map_err(|e| format!("unusable device key: {e}"))?
    };
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| format!("cannot make the request: {e}"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, device.as_str());
    params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| format!("cannot make the request: {e}"))
}

/// Check a renewed certificate (this device's name, the key that asked for
/// it), keep it as `device.crt.new`, and make the TLS configuration to try
/// it with. The files in use are not touched.
pub fn stage(
    files: &TlsFiles,
    device: &DeviceId,
    cert_pem: &str,
) -> Result<(Arc<rustls::ClientConfig>, CertInfo), String> {
    let parsed = parse(cert_pem.as_bytes())?;
    if parsed.common_name != device.as_str() {
        return Err(format!(
            "the certificate names {:?}, not this device",
            parsed.common_name
        ));
    }
    let key_path = if new_key(files).exists() {
        new_key(files)
    } else {
        files.key.clone()
    };
    let key_pem = read(&key_path)?;
    let key = rcgen::KeyPair::from_pem(&String::from_utf8_lossy(&key_pem))
        .map_err(|e| format!("unusable key {}: {e}", key_path.display()))?;
    if key.subject_public_key_info() != parsed.public_key {
        return Err("the certificate is not for the key that asked for it".into());
    }
    let tls = client_config_pem(&read(&files.ca)?, cert_pem.as_bytes(), &key_pem)
        .map_err(|e| e.to_string())?;
    let path = new_cert(files);
    std::fs::write(&path, cert_pem).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok((tls, parsed.info))
}

/// The new certificate worked: it (and its key) replace the old.
pub fn commit(files: &TlsFiles) -> Result<(), String> {
    let rename = |from: PathBuf, to: &Path| {
        std::fs::rename(&from, to)
            .map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))
    };
    if new_key(files).exists() {
        rename(new_key(files), &files.key)?;
    }
    rename(new_cert(files), &files.cert)
}

/// The new certificate did not work: forget it; the old files are in use.
pub fn abandon(files: &TlsFiles) {
    let _ = std::fs::remove_file(new_cert(files));
    let _ = std::fs::remove_file(new_key(files));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a certificate it signed for `name` with `key`.
    fn signed(name: &str, key: &rcgen::KeyPair) -> (String, String) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert.pem(), &ca_key).unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        (ca_cert.pem(), p.signed_by(key, &issuer).unwrap().pem())
    }

    #[test]
    fn a_renewal_is_kept_beside_until_committed_or_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path());
        let device = DeviceId::parse("BB-1").unwrap();
        let old_key = rcgen::KeyPair::generate().unwrap();
        let (ca, old) = signed("BB-1", &old_key);
        std::fs::write(&files.ca, &ca).unwrap();
        std::fs::write(&files.cert, &old).unwrap();
        std::fs::write(&files.key, old_key.serialize_pem()).unwrap();

        // A request with a new key: the key waits beside the old one.
        let csr = make_request(&files, &device, true).unwrap();
        let req = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        let fresh = std::fs::read_to_string(new_key(&files)).unwrap();
        let fresh = rcgen::KeyPair::from_pem(&fresh).unwrap();
        assert_eq!(req.public_key.der_bytes(), fresh.public_key_raw());
        // A certificate for another key or another name is refused.
        let (_, wrong_key) = signed("BB-1", &old_key);
        assert!(stage(&files, &device, &wrong_key).is_err());
        let (_, other) = signed("BB-2", &fresh);
        assert!(stage(&files, &device, &other).is_err());
        // Staged: the old files are untouched until the commit.
        let (_, renewed) = signed("BB-1", &fresh);
        stage(&files, &device, &renewed).unwrap();
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), old);
        abandon(&files);
        assert!(!new_cert(&files).exists() && !new_key(&files).exists());
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), old);

        make_request(&files, &device, true).unwrap();
        let fresh =
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(new_key(&files)).unwrap()).unwrap();
        let (_, renewed) = signed("BB-1", &fresh);
        stage(&files, &device, &renewed).unwrap();
        commit(&files).unwrap();
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), renewed);
        assert_eq!(
            std::fs::read_to_string(&files.key).unwrap(),
            fresh.serialize_pem()
        );
        assert_eq!(
            current(&files).unwrap(),
            parse(renewed.as_bytes()).unwrap().info
        );
    }

    #[test]
    fn recovery_drops_an_unconfirmed_renewal_and_finishes_a_half_done_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles::in_dir(dir.path());
        let key = rcgen::KeyPair::generate().unwrap();
        let (_, old) = signed("BB-1", &key);
        std::fs::write(&files.cert, &old).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        // Unconfirmed, with a new key: dropped.
        let fresh = rcgen::KeyPair::generate().unwrap();
        std::fs::write(new_key(&files), fresh.serialize_pem()).unwrap();
        std::fs::write(new_cert(&files), signed("BB-1", &fresh).1).unwrap();
        recover(&files);
        assert!(!new_cert(&files).exists() && !new_key(&files).exists());
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), old);
        // The key was renamed, the certificate not yet: finished.
        std::fs::write(&files.key, fresh.serialize_pem()).unwrap();
        let renewed = signed("BB-1", &fresh).1;
        std::fs::write(new_cert(&files), &renewed).unwrap();
        recover(&files);
        assert_eq!(std::fs::read_to_string(&files.cert).unwrap(), renewed);
    }
}
