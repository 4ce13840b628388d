//! What can go wrong with the firmware repository, as the HTTP layer maps
//! it: a refusal of what was sent (422), a missing thing (404), a
//! repository never set up (409), or the controller's own trouble (500).

use std::path::{Path, PathBuf};

use fleet_repo::RepoError;

#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    #[error("the firmware repository is not set up: run `fleet-controller firmware-init` with the release team's root.json and targets.json")]
    NotSetUp,
    #[error("the firmware repository is already set up at {0}")]
    AlreadySetUp(PathBuf),
    #[error("{0:?} is not a SHA-256 (64 lower-case hex digits)")]
    BadSha256(String),
    #[error("no stored image with sha256 {0}")]
    UnknownImage(String),
    #[error("no published target has sha256 {0}")]
    NotATarget(String),
    #[error("no delta from {from} to {to}: they are targets of different artifacts or models")]
    DeltaAcross { from: String, to: String },
    #[error("no delta from {from} to {to}: a delta goes from an older version to a newer one")]
    DeltaBackwards { from: String, to: String },
    #[error("no delta for images over {limit} bytes: fetch the full image")]
    DeltaTooLarge { limit: u64 },
    #[error("another delta is being made: fetch the full image, or ask again later")]
    DeltaBusy,
    #[error("the image is larger than firmware.max_image_bytes ({limit} bytes)")]
    TooLarge { limit: u64 },
    #[error(
        "the image's sha256 is {actual}, not {expected} as the request says; nothing was kept"
    )]
    HashMismatch { expected: String, actual: String },
    #[error("the upload was cut off after {bytes} bytes: {reason}")]
    Cut { bytes: u64, reason: String },
    /// The repository refused what it was given (signature, threshold,
    /// version, expiry, missing image, …) or failed.
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("a background task failed: {0}")]
    Task(String),
}

impl FirmwareError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FirmwareError {
        let path = path.to_owned();
        move |source| FirmwareError::Io { path, source }
    }

    /// Whether the caller sent something the repository refuses (as
    /// opposed to the controller failing).
    pub fn is_refusal(&self) -> bool {
        match self {
            FirmwareError::HashMismatch { .. } | FirmwareError::BadSha256(_) => true,
            FirmwareError::Repo(e) => !matches!(
                e,
                RepoError::Io { .. }
                    | RepoError::Sign { .. }
                    | RepoError::Key { .. }
                    | RepoError::NotInitialised { .. }
                    | RepoError::Time { .. }
                    | RepoError::Delta { .. }
            ),
            _ => false,
        }
    }
}
