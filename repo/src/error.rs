//! One error enum for the crate: each variant says what was refused and why.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A signature did not verify, or the metadata could not be checked at all.
    #[error("{role} metadata: bad signature: {reason}")]
    BadSignature { role: String, reason: String },
    /// Fewer valid signatures from the role's keys than its threshold.
    #[error("{role} metadata: {have} valid signature(s) from {role} keys, {need} required")]
    BelowThreshold { role: String, have: u64, need: u64 },
    #[error("{role} metadata: version {offered} is not newer than the current {current}")]
    VersionNotNewer {
        role: String,
        current: u64,
        offered: u64,
    },
    /// Root versions go one at a time: N+1 after N.
    #[error("{role} metadata: version {offered} does not follow the current {current}")]
    VersionGap {
        role: String,
        current: u64,
        offered: u64,
    },
    #[error("{role} metadata expired at {at}")]
    Expired { role: String, at: String },
    #[error("target {name}: no staged image with sha256 {sha256}")]
    ImageMissing { name: String, sha256: String },
    #[error("target {name}: the staged image is {actual} bytes, the metadata says {expected}")]
    LengthMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
    #[error("sha256 mismatch: expected {expected}, got {actual}")]
    HashMismatch { expected: String, actual: String },
    #[error("target {name} is already signed with other content (sha256 {existing_sha256})")]
    NameTaken {
        name: String,
        existing_sha256: String,
    },
    /// A target whose `custom` is missing or does not match its name.
    #[error("target {name}: {reason}")]
    BadTarget { name: String, reason: String },
    #[error("{what}: not valid metadata: {reason}")]
    Malformed { what: String, reason: String },
    #[error("key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    /// A key that must belong to a role in root.json does not.
    #[error("the {role} key {key_id} is not one of root's {role} keys")]
    KeyNotInRoot { role: String, key_id: String },
    #[error("signing failed: {reason}")]
    Sign { reason: String },
    #[error("{path} already holds a release key set (root.json exists)")]
    AlreadyInitialised { path: PathBuf },
    #[error("{path} is not an initialised {what}")]
    NotInitialised { path: PathBuf, what: &'static str },
    #[error("invalid options: {reason}")]
    InvalidOptions { reason: String },
    #[error("time {what} out of range")]
    Time { what: String },
    #[error("delta: {reason}")]
    Delta { reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl RepoError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RepoError {
        let path = path.into();
        move |source| RepoError::Io { path, source }
    }
}
