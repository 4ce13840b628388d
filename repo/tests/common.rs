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
