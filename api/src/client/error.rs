//! What can go wrong when calling the controller, each with what the user
//! can do about it.

use std::path::PathBuf;

use crate::types::InvalidItem;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url:?} is not a controller URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the controller speaks HTTPS with the fleet's own CA: pass --ca DATA/pki/ca.crt or set FLEETCTL_CA")]
    NoCa,
    #[error("cannot read {path}: {source}")]
    CaRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    FileRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    FileWrite {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the fleet CA is not usable: {reason}")]
    CaInvalid { reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    Setup(#[source] reqwest::Error),
    #[error("refusing to send a token over plain http:// to {url}: use https:// (plain HTTP is only for a development controller on this machine)")]
    PlaintextSecret { url: String },
    #[error("no token: pass --token or set FLEETCTL_TOKEN (fleet-controller init printed the first admin token and wrote it to DATA/admin.token)")]
    NoToken,
    #[error("cannot reach the controller at {url}: {}\n(is `fleet-controller serve` running? set --controller or FLEETCTL_CONTROLLER)", innermost(source))]
    Connect { url: String, source: reqwest::Error },
    /// The controller refused; `message` is its `error`, `errors` the bad
    /// items of a 422.
    #[error("{message} (HTTP {status}){}", details(errors))]
    Http {
        status: u16,
        message: String,
        errors: Vec<InvalidItem>,
    },
    #[error("the answer from {url} was cut off: {}", innermost(source))]
    Read { url: String, source: reqwest::Error },
    #[error("unexpected answer from the controller to {what}: {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The innermost cause says what happened ("Connection refused").
fn innermost(e: &reqwest::Error) -> String {
    let mut reason = e.to_string();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cause {
        reason = c.to_string();
        cause = c.source();
    }
    reason
}

/// One line per bad item, by line (CSV) or by id (JSON batches).
fn details(errors: &[InvalidItem]) -> String {
    errors
        .iter()
        .map(|e| match (e.line, &e.id) {
            (Some(line), _) => format!("\n  line {line}: {}", e.message),
            (None, Some(id)) => format!("\n  {id}: {}", e.message),
            (None, None) => format!("\n  {}", e.message),
        })
        .collect()
}
