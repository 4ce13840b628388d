//! What went wrong with the outbox's file.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("cannot open the outbox {path}: {source}")]
    Open {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("cannot write the outbox {path}: {source}")]
    Write {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("cannot read the outbox {path}: {source}")]
    Read {
        path: PathBuf,
        source: Box<redb::Error>,
    },
    #[error("the outbox {path} holds a damaged record {key}")]
    Corrupt { path: PathBuf, key: u64 },
    #[error("cannot read the old sequence file {path}: {reason}")]
    LegacySeq { path: PathBuf, reason: String },
}
