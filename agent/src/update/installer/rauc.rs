//! The RAUC installer: drives RAUC's command line. `rauc install BUNDLE`
//! writes the inactive slot and makes it primary (the bootloader tries it
//! once); `rauc status --detailed --output-format=json` says which slot
//! booted (`booted`, a boot name) and which is primary; `rauc status
//! mark-good|mark-bad` commits or rejects the booted slot. Slots are named
//! by their boot name (`A`, `B`).
//!
//! Tested against `agent/tests/rauc-standin`, a script that implements
//! these commands over state files (RAUC itself needs a real bootloader).

use std::path::Path;

use fleet_protocol::Version;
use serde_json::Value;

use super::{run, Installer};
use crate::update::error::InstallError;

#[derive(Debug, Clone)]
pub struct RaucInstaller {
    rauc: String,
}

/// What `rauc status` says that the agent needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaucStatus {
    /// The booted slot's boot name.
    pub booted: String,
    /// The primary slot's boot name (what boots next).
    pub primary: Option<String>,
    /// The bundle version installed in the booted slot.
    pub booted_version: Option<String>,
}

impl RaucInstaller {
    pub fn new(rauc: &str) -> Self {
        Self {
            rauc: rauc.to_owned(),
        }
    }

    pub fn status(&self) -> Result<RaucStatus, InstallError> {
        let out = run(
            &self.rauc,
            &["status", "--detailed", "--output-format=json"],
        )?;
        parse_status(&out).map_err(|reason| InstallError::Output {
            command: format!("{} status --detailed --output-format=json", self.rauc),
            reason,
        })
    }
}

/// Read RAUC's JSON status: `booted` (boot name), `boot_primary` (slot
/// name), `slots: [{NAME: {bootname, slot_status: {bundle: {version}}}}]`.
pub fn parse_status(json: &str) -> Result<RaucStatus, String> {
    let v: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let booted = v
        .get("booted")
        .and_then(Value::as_str)
        .ok_or("no \"booted\" field")?
        .to_owned();
    let slots: Vec<(&String, &Value)> = v
        .get("slots")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).flatten().collect())
        .unwrap_or_default();
    let bootname = |slot: &Value| {
        slot.get("bootname")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let primary = v
        .get("boot_primary")
        .and_then(Value::as_str)
        .and_then(|name| slots.iter().find(|(n, _)| n.as_str() == name))
        .and_then(|(_, s)| bootname(s));
    let booted_version = slots
        .iter()
        .find(|(_, s)| bootname(s).as_deref() == Some(booted.as_str()))
        .and_then(|(_, s)| s.pointer("/slot_status/bundle/version"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(RaucStatus {
        booted,
        primary,
        booted_version,
    })
}

impl Installer for RaucInstaller {
    fn boot(&self) -> Result<String, InstallError> {
        Ok(self.status()?.booted)
    }

    fn install(&self, image: &Path) -> Result<String, InstallError> {
        run(&self.rauc, &["install", &image.to_string_lossy()])?;
        let status = self.status()?;
        match status.primary {
            Some(p) if p != status.booted => Ok(p),
            other => Err(InstallError::Output {
                command: format!("{} install", self.rauc),
                reason: format!(
                    "after the install the primary slot is {other:?}, still the booted {}",
                    status.booted
                ),
            }),
        }
    }

    fn mark_good(&self) -> Result<(), InstallError> {
        run(&self.rauc, &["status", "mark-good"]).map(drop)
    }

    fn mark_bad(&self) -> Result<(), InstallError> {
        run(&self.rauc, &["status", "mark-bad"]).map(drop)
    }

    fn booted_version(&self) -> Option<Version> {
        let v = self.status().ok()?.booted_version?;
        Version::parse(&v).ok()
    }
}
