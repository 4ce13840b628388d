//! Shared set-up for fleet-repo's tests: a release key set, images, and a
//! controller repository, all in one temporary directory.
#![allow(dead_code, clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fleet_protocol::firmware::TargetCustom;
use fleet_protocol::ids::{Model, Version};
use fleet_protocol::message::ArtifactKind;
use fleet_repo::publish::Repo;
use fleet_repo::release::{self, InitOptions, SignedTarget};

pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub keys: PathBuf,
    pub repo_dir: PathBuf,
}

impl Setup {
    pub fn new(opts: &InitOptions) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("release-keys");
        release::init(&keys, opts, SystemTime::now()).unwrap();
        let repo_dir = tmp.path().join("firmware").join("repo");
        Setup {
            tmp,
            keys,
            repo_dir,
        }
    }

    /// A controller repository set up from the key set's root and targets.
    pub fn controller(&self) -> Repo {
        Repo::init(
            &self.repo_dir,
            &std::fs::read(self.keys.join("root.json")).unwrap(),
            &std::fs::read(self.keys.join("targets.json")).unwrap(),
            &release::snapshot_key_path(&self.keys),
            &release::timestamp_key_path(&self.keys),
            SystemTime::now(),
        )
        .unwrap();
        self.open()
    }

    pub fn open(&self) -> Repo {
        Repo::open(
            &self.repo_dir,
            &release::snapshot_key_path(&self.keys),
            &release::timestamp_key_path(&self.keys),
        )
        .unwrap()
    }

    /// Writes an image file with deterministic content.
    pub fn image(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn sign(&self, image: &Path, model: &str, version: &str) -> SignedTarget {
        release::sign(
            &self.keys,
            image,
            &firmware(model, version),
            SystemTime::now(),
            &mut |_, _| {},
        )
        .unwrap()
    }

    pub fn targets_json(&self) -> Vec<u8> {
        std::fs::read(self.keys.join("targets.json")).unwrap()
    }
}

pub fn firmware(model: &str, version: &str) -> TargetCustom {
    TargetCustom {
        artifact: ArtifactKind::Firmware,
        model: Model::parse(model).unwrap(),
        version: Version::parse(version).unwrap(),
    }
}

pub fn payload(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// What a compromised controller can do with its two keys: serve a new
/// targets metadata listing `name` (its own image), signed with the
/// snapshot key, with a matching snapshot and timestamp. Returns the target
/// name.
pub fn controller_forges_a_publication(s: &Setup, content: &[u8]) -> String {
    use std::collections::HashMap;
    use std::num::NonZeroU64;

    use fleet_repo::publish::{target_file_path, target_file_path_spec};
    use fleet_repo::{keys, metadata};
    use tough::schema::{Hashes, Metafile, Snapshot, Targets, Timestamp};

    let meta = s.repo_dir.join("metadata");
    let (ts, _) = metadata::read::<Timestamp>(&meta.join("timestamp.json")).unwrap();
    let sv = ts.signed.meta["snapshot.json"].version;
    let (snap, _) = metadata::read::<Snapshot>(&meta.join(format!("{sv}.snapshot.json"))).unwrap();
    let tv = snap.signed.meta["targets.json"].version;
    let (targets, _) = metadata::read::<Targets>(&meta.join(format!("{tv}.targets.json"))).unwrap();

    let name = "firmware/ballot-box-v2/66.6.6.tar".to_string();
    let sha = metadata::sha256_hex(content);
    for rel in [
        target_file_path(&name, &sha),
        target_file_path_spec(&name, &sha),
    ] {
        let p = s.repo_dir.join("targets").join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let mut t = targets.signed;
    t.targets.insert(
        name.clone().try_into().unwrap(),
        release::make_target(
            &sha,
            content.len() as u64,
            &firmware("ballot-box-v2", "66.6.6"),
        )
        .unwrap(),
    );
    t.version = t.version.checked_add(1).unwrap();
    let snapshot_key = keys::load(&release::snapshot_key_path(&s.keys)).unwrap();
    let timestamp_key = keys::load(&release::timestamp_key_path(&s.keys)).unwrap();
    let metafile = |version: NonZeroU64, bytes: &[u8]| Metafile {
        length: Some(bytes.len() as u64),
        hashes: Some(Hashes {
            sha256: hex::decode(metadata::sha256_hex(bytes)).unwrap().into(),
            _extra: HashMap::new(),
        }),
        version,
        _extra: HashMap::new(),
    };

    let t_bytes =
        metadata::to_bytes(&metadata::sign_role(t.clone(), &[snapshot_key.as_ref()]).unwrap())
            .unwrap();
    std::fs::write(meta.join(format!("{}.targets.json", t.version)), &t_bytes).unwrap();
    let mut sn = snap.signed;
    sn.version = sn.version.checked_add(1).unwrap();
    sn.meta
        .insert("targets.json".into(), metafile(t.version, &t_bytes));
    let sn_bytes =
        metadata::to_bytes(&metadata::sign_role(sn.clone(), &[snapshot_key.as_ref()]).unwrap())
            .unwrap();
    std::fs::write(
        meta.join(format!("{}.snapshot.json", sn.version)),
        &sn_bytes,
    )
    .unwrap();
    let mut tsn = ts.signed;
    tsn.version = tsn.version.checked_add(1).unwrap();
    tsn.meta
        .insert("snapshot.json".into(), metafile(sn.version, &sn_bytes));
    let ts_bytes =
        metadata::to_bytes(&metadata::sign_role(tsn, &[timestamp_key.as_ref()]).unwrap()).unwrap();
    std::fs::write(meta.join("timestamp.json"), ts_bytes).unwrap();
    name
}
