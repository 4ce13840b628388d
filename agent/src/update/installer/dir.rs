//! The directory A/B installer, with a bootloader stand-in.
//!
//! Two slots, `a/` and `b/`, under `slots_dir`; an image (a tarball with a
//! `VERSION` file) is unpacked into the slot that is not booted. The
//! bootloader is played by three small files:
//!
//! - `primary`: the committed slot (`a` when missing);
//! - `boot-next`: a one-shot "boot this slot next", set by `install`;
//! - `booted`: the slot this run booted.
//!
//! Each agent start counts as a boot ([`Installer::boot`]): it consumes
//! `boot-next` if there is one, else boots `primary`. `mark-good` makes the
//! booted slot primary; `mark-bad` drops `boot-next`. So a start that never
//! committed falls back to the primary slot, as a real A/B bootloader does
//! after a failed boot attempt.

use std::path::{Path, PathBuf};

use fleet_protocol::Version;

use super::Installer;
use crate::update::error::InstallError;

const SLOTS: [&str; 2] = ["a", "b"];

#[derive(Debug, Clone)]
pub struct DirInstaller {
    dir: PathBuf,
}

impl DirInstaller {
    pub fn new(slots_dir: &Path) -> Self {
        Self {
            dir: slots_dir.to_owned(),
        }
    }

    pub fn slot_dir(&self, slot: &str) -> PathBuf {
        self.dir.join(slot)
    }

    fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> InstallError {
        let path = path.to_owned();
        move |source| InstallError::Io { what, path, source }
    }

    fn read(&self, name: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(name)).ok()?;
        let slot = text.trim();
        SLOTS.contains(&slot).then(|| slot.to_owned())
    }

    /// Write `name` durably (temporary file, fsync, rename, fsync the directory).
    fn write(&self, name: &str, value: &str) -> Result<(), InstallError> {
        let path = self.dir.join(name);
        crate::durable::replace(&path, value.as_bytes()).map_err(Self::io("cannot write", &path))
    }

    fn remove(&self, name: &str) -> Result<(), InstallError> {
        let path = self.dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io("cannot remove", &path)(e)),
        }
    }

    fn sync_dir(&self) -> Result<(), InstallError> {
        crate::durable::sync_dir(&self.dir).map_err(Self::io("cannot sync", &self.dir))
    }

    fn primary(&self) -> String {
        self.read("primary").unwrap_or_else(|| SLOTS[0].to_owned())
    }

    /// The slot booted by this run (after [`Installer::boot`]).
    pub fn booted(&self) -> String {
        self.read("booted").unwrap_or_else(|| self.primary())
    }

    fn unpack(image: &Path, into: &Path) -> Result<(), InstallError> {
        let file = std::fs::File::open(image).map_err(Self::io("cannot open", image))?;
        let mut archive = tar::Archive::new(std::io::BufReader::new(file));
        archive.set_preserve_permissions(true);
        // unpack refuses entries that would land outside `into` (`..`, absolute paths).
        archive.unpack(into).map_err(|e| InstallError::BadImage {
            path: image.to_owned(),
            reason: e.to_string(),
        })?;
        if !into.join("VERSION").is_file() {
            return Err(InstallError::BadImage {
                path: image.to_owned(),
                reason: "no VERSION file".into(),
            });
        }
        Ok(())
    }
}

impl Installer for DirInstaller {
    fn boot(&self) -> Result<String, InstallError> {
        std::fs::create_dir_all(&self.dir).map_err(Self::io("cannot create", &self.dir))?;
        let slot = match self.read("boot-next") {
            Some(next) => {
                self.remove("boot-next")?;
                next
            }
            None => self.primary(),
        };
        self.write("booted", &slot)?;
        Ok(slot)
    }

    fn install(&self, image: &Path) -> Result<String, InstallError> {
        let booted = self.booted();
        let slot = SLOTS
            .iter()
            .find(|s| **s != booted)
            .expect("two slots")
            .to_string();
        // Nothing boots the slot while it is rewritten.
        self.remove("boot-next")?;
        let target = self.slot_dir(&slot);
        let fresh = self.dir.join(format!(".{slot}.new"));
        for d in [&fresh, &target] {
            if d.exists() {
                std::fs::remove_dir_all(d).map_err(Self::io("cannot clear", d))?;
            }
        }
        std::fs::create_dir_all(&fresh).map_err(Self::io("cannot create", &fresh))?;
        Self::unpack(image, &fresh)?;
        std::fs::rename(&fresh, &target).map_err(Self::io("cannot rename into", &target))?;
        self.sync_dir()?;
        self.write("boot-next", &slot)?;
        Ok(slot)
    }

    fn mark_good(&self) -> Result<(), InstallError> {
        let booted = self.booted();
        self.write("primary", &booted)?;
        self.remove("boot-next")
    }

    fn mark_bad(&self) -> Result<(), InstallError> {
        self.remove("boot-next")
    }

    fn booted_version(&self) -> Option<Version> {
        let text = std::fs::read_to_string(self.slot_dir(&self.booted()).join("VERSION")).ok()?;
        Version::parse(text.trim()).ok()
    }
}
