//! `fleetctl firmware upload|list|root|export`: the controller's firmware
//! repository. The release team signs offline (`fleetctl release …`); these
//! commands only carry what was signed to the controller, and a copy of the
//! served repository to a directory (a USB stick) for devices with no
//! network.

use std::path::{Path, PathBuf};

use fleet_api::types::{FirmwareStatus, ImageUploaded, RootPublished, TargetsPublished};
use fleet_api::Client;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::{read_input, CommandError};
use crate::render::{to_json, Grid, Report, View};

fn bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn repo_error(e: fleet_repo::RepoError) -> CommandError {
    CommandError::Firmware(e.to_string())
}

/// What `firmware upload` did.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    pub image: ImageUploaded,
    pub targets: TargetsPublished,
}

/// Upload `image` (streamed, with a progress bar), then the signed
/// `targets` metadata that names it.
pub async fn upload(
    client: &Client,
    image: &Path,
    targets: &Path,
) -> Result<Uploaded, CommandError> {
    let signed = read_input(targets)?;
    let hashing = bar(0, "hashing  ");
    let (sha256, _) = {
        let image = image.to_owned();
        let hashing = hashing.clone();
        tokio::task::spawn_blocking(move || {
            fleet_repo::metadata::sha256_file(&image, &mut |done, total| {
                hashing.set_length(total);
                hashing.set_position(done);
            })
        })
        .await
        .map_err(|e| CommandError::Firmware(e.to_string()))?
        .map_err(repo_error)?
    };
    hashing.finish_and_clear();
    let sending = bar(0, "uploading");
    let progress = sending.clone();
    let uploaded = client
        .upload_image(&sha256, image, move |sent, total| {
            progress.set_length(total);
            progress.set_position(sent);
        })
        .await;
    sending.finish_and_clear();
    let image = uploaded?;
    let targets = client.publish_targets(signed).await?;
    Ok(Uploaded { image, targets })
}

impl Report for Uploaded {
    fn json(&self) -> Value {
        to_json(self)
    }

    fn table(&self) -> View {
        let t = &self.targets;
        View::Text(format!(
            "image {} stored ({} bytes)\ntargets version {} published (snapshot {}, timestamp {}); new: {}\n",
            self.image.sha256,
            self.image.len,
            t.targets_version,
            t.snapshot_version,
            t.timestamp_version,
            if t.added.is_empty() {
                "none".to_owned()
            } else {
                t.added.join(", ")
            }
        ))
    }
}

pub async fn list(client: &Client) -> Result<Listing, CommandError> {
    Ok(Listing(client.firmware().await?))
}

/// The repository: each role, then each target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing(pub FirmwareStatus);

impl Report for Listing {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["name", "artifact", "model", "version", "bytes", "sha256"]);
        grid.rows = self
            .0
            .targets
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.artifact.clone(),
                    t.model.clone(),
                    t.version.clone(),
                    t.len.to_string(),
                    t.sha256.clone(),
                ]
            })
            .collect();
        let roles: Vec<String> = self
            .0
            .roles
            .iter()
            .map(|r| format!("{} v{} (expires {})", r.role, r.version, r.expires))
            .collect();
        View::Grid {
            grid,
            footer: format!("{}\n", roles.join("; ")),
        }
    }
}

pub async fn root(client: &Client, file: &Path) -> Result<RootDone, CommandError> {
    Ok(RootDone(client.publish_root(read_input(file)?).await?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDone(pub RootPublished);

impl Report for RootDone {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        View::Text(format!(
            "root version {} published (timestamp {})\n",
            self.0.root_version, self.0.timestamp_version
        ))
    }
}

/// What `firmware export` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Exported {
    pub dir: PathBuf,
    pub root_version: u64,
    pub snapshot_version: u64,
    pub targets_version: u64,
    pub metadata_files: usize,
    pub target_files: usize,
    pub target_bytes: u64,
}

impl Report for Exported {
    fn json(&self) -> Value {
        to_json(self)
    }

    fn table(&self) -> View {
        View::Text(format!(
            "exported to {}: root v{}, snapshot v{}, targets v{}; {} metadata files, {} targets ({} bytes), each checked against its sha256\n",
            self.dir.display(),
            self.root_version,
            self.snapshot_version,
            self.targets_version,
            self.metadata_files,
            self.target_files,
            self.target_bytes
        ))
    }
}

fn bad_metadata(file: &str, reason: impl std::fmt::Display) -> CommandError {
    CommandError::Firmware(format!("{file} as served is not usable: {reason}"))
}

fn parse_json(file: &str, bytes: &[u8]) -> Result<Value, CommandError> {
    serde_json::from_slice(bytes).map_err(|e| bad_metadata(file, e))
}

/// `signed.meta[role].version` of a timestamp or snapshot.
fn meta_version(file: &str, v: &Value, role: &str) -> Result<u64, CommandError> {
    v["signed"]["meta"][role]["version"]
        .as_u64()
        .ok_or_else(|| bad_metadata(file, format!("no version of {role}")))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CommandError> {
    let err = |source| CommandError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    std::fs::write(path, bytes).map_err(err)
}

/// Copy the repository the controller serves into `dir`, over the public
/// TUF routes: the timestamp, the snapshot and targets it names, every
/// root from 1, and every target file (each checked against the sha256 and
/// length in the targets metadata fetched). The layout is the served one,
/// which `fleet-agent update --from DIR` reads.
pub async fn export(client: &Client, dir: &Path) -> Result<Exported, CommandError> {
    let meta = dir.join("metadata");
    let timestamp = client.tuf_metadata("timestamp.json").await?;
    let ts = parse_json("timestamp.json", &timestamp)?;
    let snapshot_version = meta_version("timestamp.json", &ts, "snapshot.json")?;
    let snapshot_file = format!("{snapshot_version}.snapshot.json");
    let snapshot = client.tuf_metadata(&snapshot_file).await?;
    let targets_version = meta_version(
        &snapshot_file,
        &parse_json(&snapshot_file, &snapshot)?,
        "targets.json",
    )?;
    let targets_file = format!("{targets_version}.targets.json");
    let targets = client.tuf_metadata(&targets_file).await?;
    let targets_json = parse_json(&targets_file, &targets)?;
    let mut written = vec![
        ("timestamp.json".to_owned(), timestamp),
        (snapshot_file, snapshot),
        (targets_file.clone(), targets),
    ];
    // Every root, 1 up to the first version not served.
    let mut root_version = 0u64;
    loop {
        let file = format!("{}.root.json", root_version + 1);
        match client.tuf_metadata(&file).await {
            Ok(bytes) => {
                root_version += 1;
                written.push((file, bytes));
            }
            Err(e) if e.status() == Some(404) && root_version > 0 => break,
            Err(e) => return Err(e.into()),
        }
    }
    let newest = written
        .iter()
        .find(|(f, _)| *f == format!("{root_version}.root.json"))
        .map(|(_, b)| b.clone())
        .expect("the newest root was just fetched");
    written.push(("root.json".to_owned(), newest));
    let metadata_files = written.len();
    for (file, bytes) in &written {
        write(&meta.join(file), bytes)?;
    }

    // The targets: name → (sha256, length).
    let mut wanted = Vec::new();
    let listed = targets_json["signed"]["targets"]
        .as_object()
        .ok_or_else(|| bad_metadata(&targets_file, "no targets"))?;
    for (name, t) in listed {
        let sha256 = t["hashes"]["sha256"]
            .as_str()
            .ok_or_else(|| bad_metadata(&targets_file, format!("{name}: no sha256")))?
            .to_owned();
        let len = t["length"]
            .as_u64()
            .ok_or_else(|| bad_metadata(&targets_file, format!("{name}: no length")))?;
        wanted.push((name.clone(), sha256, len));
    }
    let total: u64 = wanted.iter().map(|(_, _, len)| len).sum();
    let progress = bar(total, "exporting");
    let mut done = 0u64;
    for (name, sha256, len) in &wanted {
        let rel = fleet_repo::publish::target_file_path(name, sha256);
        let dest = dir.join("targets").join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| CommandError::Write {
                path: parent.to_owned(),
                source,
            })?;
        }
        let base = done;
        let shown = progress.clone();
        let got = client
            .tuf_target_to_file(&rel, &dest, &mut move |n| shown.set_position(base + n))
            .await?;
        let (actual, _) =
            fleet_repo::metadata::sha256_file(&dest, &mut |_, _| {}).map_err(repo_error)?;
        if got != *len || actual != *sha256 {
            let _ = std::fs::remove_file(&dest);
            return Err(CommandError::Firmware(format!(
                "target {name}: got {got} bytes with sha256 {actual}; the targets metadata says {len} bytes, sha256 {sha256}"
            )));
        }
        done += len;
    }
    progress.finish_and_clear();
    Ok(Exported {
        dir: dir.to_owned(),
        root_version,
        snapshot_version,
        targets_version,
        metadata_files,
        target_files: wanted.len(),
        target_bytes: total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_api::types::{FirmwareTarget, RoleStatus};

    #[test]
    fn the_listing_is_a_row_per_target_with_the_roles_below() {
        let l = Listing(FirmwareStatus {
            roles: vec![RoleStatus {
                role: "timestamp".into(),
                version: 3,
                expires: "2026-11-25T07:00:00Z".into(),
            }],
            targets: vec![FirmwareTarget {
                name: "firmware/ballot-box-v2/2.5.0.tar".into(),
                artifact: "firmware".into(),
                model: "ballot-box-v2".into(),
                version: "2.5.0".into(),
                sha256: "ab".repeat(32),
                len: 10_240,
            }],
        });
        let table = render(&l, Output::Table);
        assert!(
            table.contains("firmware/ballot-box-v2/2.5.0.tar  firmware"),
            "{table}"
        );
        assert!(
            table.contains("timestamp v3 (expires 2026-11-25T07:00:00Z)"),
            "{table}"
        );
        assert_eq!(render(&l, Output::Json).matches("\"sha256\"").count(), 1);
    }
}
