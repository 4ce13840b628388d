//! Signing keys: ed25519, PKCS#8 in PEM files readable by their owner only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::Ed25519KeyPair;
use serde::Serialize;
use tough::schema::key::Key;
use tough::sign::Sign;

use crate::error::RepoError;

const PEM_TAG: &str = "PRIVATE KEY";

/// The public half of a key, as root.json lists it.
#[derive(Debug, Clone, Serialize)]
pub struct PublicKeyInfo {
    /// The TUF key id (sha256 of the key's canonical JSON), hex.
    pub key_id: String,
    pub key: Key,
}

impl PublicKeyInfo {
    pub fn of(signer: &dyn Sign) -> Result<PublicKeyInfo, RepoError> {
        let key = signer.tuf_key();
        Ok(PublicKeyInfo {
            key_id: key_id_hex(&key)?,
            key,
        })
    }
}

pub(crate) fn key_id_hex(key: &Key) -> Result<String, RepoError> {
    let id = key.key_id().map_err(|e| RepoError::Sign {
        reason: format!("key id: {e}"),
    })?;
    Ok(hex::encode(id.as_ref()))
}

/// Makes a new ed25519 key and writes it to `path` (PKCS#8 PEM, mode 0600).
/// Refuses to overwrite an existing file: a lost key cannot be recovered.
pub fn generate(path: &Path) -> Result<PublicKeyInfo, RepoError> {
    let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| RepoError::Key {
        path: path.to_path_buf(),
        reason: "the system random generator failed".into(),
    })?;
    let pair = Ed25519KeyPair::from_pkcs8(der.as_ref()).map_err(|e| RepoError::Key {
        path: path.to_path_buf(),
        reason: format!("generated key does not parse: {e}"),
    })?;
    let info = PublicKeyInfo::of(&pair)?;
    let text = pem::encode(&pem::Pem::new(PEM_TAG, der.as_ref().to_vec()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(RepoError::io(parent))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(RepoError::io(path))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(RepoError::io(path))?;
    Ok(info)
}

/// Reads a key written by [`generate`] (or any PKCS#8 PEM/DER key tough accepts).
pub fn load(path: &Path) -> Result<Box<dyn Sign>, RepoError> {
    let bytes = std::fs::read(path).map_err(RepoError::io(path))?;
    // tough's parser takes ed25519 keys as DER only; our files are PEM.
    let der = match pem::parse(&bytes) {
        Ok(p) if p.tag() == PEM_TAG => p.contents().to_vec(),
        Ok(p) => {
            return Err(RepoError::Key {
                path: path.to_path_buf(),
                reason: format!("PEM block is {:?}, expected {PEM_TAG:?}", p.tag()),
            })
        }
        Err(_) => bytes,
    };
    let signer = tough::sign::parse_keypair(&der).map_err(|e| RepoError::Key {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(Box::new(signer))
}

/// The key id of the key in `path`.
pub fn key_id(path: &Path) -> Result<String, RepoError> {
    key_id_hex(&load(path)?.tuf_key())
}
