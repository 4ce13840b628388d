//! Why an update step could not be carried out.

use std::path::PathBuf;

/// The persisted step could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot write the update state {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the update state {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the update state {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// An installer could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{command} said something unexpected: {reason}")]
    Output { command: String, reason: String },
    #[error("the image {path} is not a usable tarball: {reason}")]
    BadImage { path: PathBuf, reason: String },
    #[error("the installer is not configured: {0}")]
    Config(String),
}

/// The update driver's own failures (what a step reports as its reason).
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error("not enough free space for {need} bytes in {dir} ({free} free)")]
    NoSpace { dir: PathBuf, need: u64, free: u64 },
    #[error("the downloaded image has sha256 {actual}, the signed one is {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("the downloaded image is {actual} bytes, the signed length is {expected}")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("update.{key}: {reason}")]
    Config { key: &'static str, reason: String },
}
