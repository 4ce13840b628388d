//! `fleetctl release …`: the release team's offline work, no controller
//! involved. `keys init` makes the TUF key set and root 1, `sign` adds an
//! image to targets.json (a progress bar while it hashes), `keys rotate`
//! replaces a role's key through a new root. The results go to the
//! controller with `fleetctl firmware upload` / `firmware root`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fleet_protocol::firmware::{agent_platform, TargetCustom};
use fleet_protocol::ids::{Model, Version};
use fleet_protocol::message::ArtifactKind;
use fleet_repo::release::{self, InitOptions, InitSummary, Role, RotateSummary, SignedTarget};
use fleet_repo::RepoError;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::render::{to_json, Grid, Report, View};

/// What stops a release command.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("--model is required for a firmware image (the hardware model, e.g. ballot-box-v2)")]
    NoModel,
    #[error("--model {value:?}: {reason}")]
    BadModel { value: String, reason: String },
    #[error("--version {value:?}: {reason}")]
    BadVersion { value: String, reason: String },
}

pub fn init(keys: &Path, opts: &InitOptions) -> Result<Initialised, ReleaseError> {
    Ok(Initialised(release::init(keys, opts, SystemTime::now())?))
}

pub struct SignArgs<'a> {
    pub keys: &'a Path,
    pub image: &'a Path,
    pub model: Option<String>,
    pub version: String,
    pub agent: bool,
}

pub fn sign(args: SignArgs<'_>) -> Result<Signed, ReleaseError> {
    let (artifact, model) = match (args.agent, args.model) {
        (_, Some(m)) => (
            if args.agent {
                ArtifactKind::Agent
            } else {
                ArtifactKind::Firmware
            },
            Model::parse(&m).map_err(|e| ReleaseError::BadModel {
                value: m.clone(),
                reason: e.to_string(),
            })?,
        ),
        (true, None) => (ArtifactKind::Agent, agent_platform()),
        (false, None) => return Err(ReleaseError::NoModel),
    };
    let version = Version::parse(&args.version).map_err(|e| ReleaseError::BadVersion {
        value: args.version.clone(),
        reason: e.to_string(),
    })?;
    let custom = TargetCustom {
        artifact,
        model,
        version,
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template(
            "hashing {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let result = release::sign(
        args.keys,
        args.image,
        &custom,
        SystemTime::now(),
        &mut |done, total| {
            bar.set_length(total);
            bar.set_position(done);
        },
    );
    bar.finish_and_clear();
    Ok(Signed(result?))
}

pub fn rotate(keys: &Path, role: Role, root_keys: &[PathBuf]) -> Result<Rotated, ReleaseError> {
    Ok(Rotated(release::rotate(
        keys,
        role,
        root_keys,
        SystemTime::now(),
    )?))
}

pub struct Initialised(pub InitSummary);

impl Report for Initialised {
    fn json(&self) -> Value {
        to_json(&self.0)
    }
    fn table(&self) -> View {
        let s = &self.0;
        let mut grid = Grid::new(&["role", "key_id", "file"]);
        for (i, id) in s.root_key_ids.iter().enumerate() {
            grid.rows.push(vec![
                format!("root ({} of {})", s.root_threshold, s.root_key_ids.len()),
                id.clone(),
                release::root_key_path(&s.keys_dir, (i + 1) as u8)
                    .display()
                    .to_string(),
            ]);
        }
        for (role, id, path) in [
            (
                "targets",
                &s.targets_key_id,
                release::targets_key_path(&s.keys_dir),
            ),
            (
                "snapshot",
                &s.snapshot_key_id,
                release::snapshot_key_path(&s.keys_dir),
            ),
            (
                "timestamp",
                &s.timestamp_key_id,
                release::timestamp_key_path(&s.keys_dir),
            ),
        ] {
            grid.rows
                .push(vec![role.into(), id.clone(), path.display().to_string()]);
        }
        View::Grid {
            grid,
            footer: format!(
                "root version {} expires {}; targets version 1 expires {}\n",
                s.root_version, s.root_expires, s.targets_expires
            ),
        }
    }
    fn note(&self) -> Option<String> {
        let d = self.0.keys_dir.display();
        Some(format!(
            "Give the controller {d}/root.json, {d}/targets.json and the two keys in {d}/controller/ \
             (fleet-controller firmware-init), then delete {d}/controller/. Keep the root keys offline; \
             install {d}/root.json on every device as its trusted root."
        ))
    }
}

pub struct Signed(pub SignedTarget);

impl Report for Signed {
    fn json(&self) -> Value {
        to_json(&self.0)
    }
    fn table(&self) -> View {
        let s = &self.0;
        let mut grid = Grid::new(&[
            "target",
            "sha256",
            "length",
            "targets_version",
            "targets_expires",
        ]);
        grid.rows.push(vec![
            s.name.clone(),
            s.sha256.clone(),
            s.length.to_string(),
            s.targets_version.to_string(),
            s.targets_expires.clone(),
        ]);
        View::grid(grid)
    }
    fn note(&self) -> Option<String> {
        let s = &self.0;
        Some(if s.unchanged {
            format!(
                "{} was already signed with this image; targets.json unchanged",
                s.name
            )
        } else {
            format!(
                "signed; publish with: fleetctl firmware upload IMAGE --targets {}",
                s.targets_path.display()
            )
        })
    }
}

pub struct Rotated(pub RotateSummary);

impl Report for Rotated {
    fn json(&self) -> Value {
        to_json(&self.0)
    }
    fn table(&self) -> View {
        let s = &self.0;
        let mut grid = Grid::new(&[
            "role",
            "old_key_ids",
            "new_key_ids",
            "root_version",
            "targets_version",
        ]);
        grid.rows.push(vec![
            s.role.to_string(),
            s.old_key_ids.join(" "),
            s.new_key_ids.join(" "),
            s.root_version.to_string(),
            s.targets_version.map(|v| v.to_string()).unwrap_or_default(),
        ]);
        View::grid(grid)
    }
    fn note(&self) -> Option<String> {
        let s = &self.0;
        let mut steps = Vec::new();
        if matches!(s.role, Role::Snapshot | Role::Timestamp) {
            steps.push(format!(
                "install {} on the controller in place of its {} key",
                s.new_key_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                s.role
            ));
        }
        steps.push(format!("fleetctl firmware root {}", s.root_path.display()));
        if let Some(v) = s.targets_version {
            steps.push(format!(
                "then upload targets.json version {v} (fleetctl firmware upload … --targets)"
            ));
        }
        Some(format!("rotated; next: {}", steps.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};

    #[test]
    fn sign_names_a_missing_model_and_a_bad_version_before_touching_files() {
        let tmp = tempfile::tempdir().unwrap();
        let args = |model: Option<&str>, version: &str, agent| SignArgs {
            keys: tmp.path(),
            image: tmp.path(),
            model: model.map(str::to_string),
            version: version.into(),
            agent,
        };
        assert!(matches!(
            sign(args(None, "1.0.0", false)),
            Err(ReleaseError::NoModel)
        ));
        assert!(matches!(
            sign(args(Some("box"), "not a version", false)),
            Err(ReleaseError::BadVersion { .. })
        ));
        // With --agent the platform defaults; the missing key set is what fails.
        let err = sign(args(None, "1.0.0", true)).err().unwrap();
        assert!(err.to_string().contains("keys init"), "{err}");
    }

    #[test]
    fn init_report_lists_every_key_and_says_what_to_do_with_the_controller_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("k");
        let r = init(
            &keys,
            &InitOptions {
                root_keys: 2,
                root_threshold: 2,
                ..InitOptions::default()
            },
        )
        .unwrap();
        let t = render(&r, Output::Table);
        assert!(t.contains("root (2 of 2)"), "{t}");
        assert!(t.contains("timestamp"), "{t}");
        assert!(r.note().unwrap().contains("controller/"));
        let json: Value = serde_json::from_str(&render(&r, Output::Json)).unwrap();
        assert_eq!(json["root_key_ids"].as_array().unwrap().len(), 2);
    }
}
