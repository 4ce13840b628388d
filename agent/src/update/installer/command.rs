//! The command-hook installer: a site's own program, called as
//! `HOOK… install IMAGE` (prints the slot written as its last line),
//! `HOOK… booted` (prints the booted slot), `HOOK… mark-good`,
//! `HOOK… mark-bad`. `HOOK…` is `update.hook`, a program and its first
//! arguments.

use std::path::Path;

use fleet_protocol::Version;

use super::{run, Installer};
use crate::update::error::InstallError;

#[derive(Debug, Clone)]
pub struct CommandInstaller {
    hook: Vec<String>,
}

impl CommandInstaller {
    pub fn new(hook: Vec<String>) -> Result<Self, InstallError> {
        if hook.is_empty() {
            return Err(InstallError::Config(
                "update.installer = \"command\" needs update.hook".into(),
            ));
        }
        Ok(Self { hook })
    }

    fn call(&self, args: &[&str]) -> Result<String, InstallError> {
        let mut all: Vec<&str> = self.hook[1..].iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        run(&self.hook[0], &all)
    }

    fn last_line(&self, out: &str, what: &str) -> Result<String, InstallError> {
        out.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| InstallError::Output {
                command: format!("{} {what}", self.hook.join(" ")),
                reason: "printed no slot name".into(),
            })
    }
}

impl Installer for CommandInstaller {
    fn boot(&self) -> Result<String, InstallError> {
        let out = self.call(&["booted"])?;
        self.last_line(&out, "booted")
    }

    fn install(&self, image: &Path) -> Result<String, InstallError> {
        let out = self.call(&["install", &image.to_string_lossy()])?;
        self.last_line(&out, "install")
    }

    fn mark_good(&self) -> Result<(), InstallError> {
        self.call(&["mark-good"]).map(drop)
    }

    fn mark_bad(&self) -> Result<(), InstallError> {
        self.call(&["mark-bad"]).map(drop)
    }

    fn booted_version(&self) -> Option<Version> {
        None
    }
}
