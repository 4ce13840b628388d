//! The persisted step (`STATE/update/state.json`): JSON, written to a
//! temporary file, fsynced, renamed over the old one and the directory
//! fsynced, so a power cut leaves either the old step or the new one.

use std::path::{Path, PathBuf};

use super::error::StateError;
use super::machine::Persisted;

/// The state file of an update directory.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn in_dir(update_dir: &Path) -> Self {
        Self {
            path: update_dir.join("state.json"),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted state; the default (idle) when there is none yet.
    pub fn load(&self) -> Result<Persisted, StateError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Damaged {
                path: self.path.clone(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(source) => Err(StateError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replace the state durably (fsync the file, rename, fsync the directory).
    pub fn save(&self, state: &Persisted) -> Result<(), StateError> {
        let err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(state).expect("the update state always serialises");
        crate::durable::replace(&self.path, &json).map_err(err)?;
        Ok(())
    }
}
