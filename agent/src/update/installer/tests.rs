//! The installers against real files and real commands: the directory
//! slots and their bootloader stand-in, the RAUC stand-in script
//! (`agent/tests/rauc-standin`) and a command hook.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use fleet_protocol::Version;

use super::command::CommandInstaller;
use super::dir::DirInstaller;
use super::rauc::{parse_status, RaucInstaller};
use super::Installer;

/// A tarball holding `files` (path, content).
fn tarball(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (p, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, content.as_bytes()).unwrap();
    }
    b.finish().unwrap();
    path
}

fn image(dir: &Path, version: &str) -> PathBuf {
    tarball(
        dir,
        &format!("{version}.tar"),
        &[("VERSION", &format!("{version}\n")), ("app/main", version)],
    )
}

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

#[test]
fn dir_an_uncommitted_slot_boots_once_then_the_bootloader_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DirInstaller::new(&tmp.path().join("slots"));
    assert_eq!(d.boot().unwrap(), "a");
    assert_eq!(d.booted_version(), None, "an empty slot has no version");

    assert_eq!(d.install(&image(tmp.path(), "2.5.0")).unwrap(), "b");
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("slots/b/app/main")).unwrap(),
        "2.5.0"
    );
    assert_eq!(d.boot().unwrap(), "b", "boot-next is taken once");
    assert_eq!(d.booted_version(), Some(v("2.5.0")));
    assert_eq!(d.boot().unwrap(), "a", "never committed: back to primary");
}

#[test]
fn dir_mark_good_makes_the_slot_primary_and_mark_bad_drops_the_try() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DirInstaller::new(&tmp.path().join("slots"));
    d.boot().unwrap();
    d.install(&image(tmp.path(), "2.5.0")).unwrap();
    assert_eq!(d.boot().unwrap(), "b");
    d.mark_good().unwrap();
    assert_eq!(d.boot().unwrap(), "b");
    assert_eq!(d.boot().unwrap(), "b", "committed: it stays");

    // The next image goes to a (the slot not booted).
    assert_eq!(d.install(&image(tmp.path(), "2.6.0")).unwrap(), "a");
    assert_eq!(d.boot().unwrap(), "a");
    assert_eq!(d.booted_version(), Some(v("2.6.0")));
    d.mark_bad().unwrap();
    assert_eq!(d.boot().unwrap(), "b", "rejected: the committed slot boots");
    assert_eq!(d.booted_version(), Some(v("2.5.0")));
}

#[test]
fn dir_an_image_without_a_version_or_escaping_its_slot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = DirInstaller::new(&tmp.path().join("slots"));
    d.boot().unwrap();
    let bad = tarball(tmp.path(), "bad.tar", &[("app/main", "x")]);
    let err = d.install(&bad).unwrap_err().to_string();
    assert!(err.contains("VERSION"), "{err}");
    assert!(!tmp.path().join("slots/boot-next").exists());

    let not_tar = tmp.path().join("junk.tar");
    std::fs::write(&not_tar, vec![7u8; 1500]).unwrap();
    assert!(d.install(&not_tar).is_err());
    assert!(!tmp.path().join("slots/boot-next").exists());
    assert_eq!(d.boot().unwrap(), "a");

    // An entry reaching outside the slot never lands outside it.
    let mut raw = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let evil = b"owned";
    h.set_size(evil.len() as u64);
    h.set_mode(0o644);
    // Written into the header by hand: the builder refuses such a path.
    let name = b"../../escaped";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    raw.append(&h, &evil[..]).unwrap();
    let mut vh = tar::Header::new_gnu();
    vh.set_size(6);
    vh.set_mode(0o644);
    vh.set_cksum();
    raw.append_data(&mut vh, "VERSION", &b"2.7.0\n"[..])
        .unwrap();
    let escaping = tmp.path().join("escaping.tar");
    std::fs::write(&escaping, raw.into_inner().unwrap()).unwrap();
    let _ = d.install(&escaping);
    assert!(!tmp.path().join("escaped").exists());
    assert!(!tmp.path().join("slots/escaped").exists());
}

/// The RAUC stand-in with its state in `state`: a wrapper script, since
/// the installer runs the configured program as it is.
fn standin(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rauc-standin");
    let wrapper = dir.join("rauc");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nRAUC_STANDIN_STATE='{}' exec '{}' \"$@\"\n",
            dir.join("state").display(),
            script.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.to_string_lossy().into_owned()
}

/// The bootloader's turn (not a RAUC command): the stand-in boots.
fn bootloader(rauc: &str) {
    let out = std::process::Command::new(rauc)
        .arg("boot")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn rauc_install_boot_commit_through_the_standin() {
    let tmp = tempfile::tempdir().unwrap();
    let rauc = standin(tmp.path());
    let r = RaucInstaller::new(&rauc);
    assert_eq!(r.boot().unwrap(), "A");
    assert_eq!(r.install(&image(tmp.path(), "2.5.0")).unwrap(), "B");
    let s = r.status().unwrap();
    assert_eq!((s.booted.as_str(), s.primary.as_deref()), ("A", Some("B")));

    bootloader(&rauc);
    assert_eq!(r.boot().unwrap(), "B");
    assert_eq!(r.booted_version(), Some(v("2.5.0")));
    r.mark_good().unwrap();
    bootloader(&rauc);
    assert_eq!(r.boot().unwrap(), "B", "committed: B stays");
}

#[test]
fn rauc_a_slot_never_marked_good_falls_back_and_mark_bad_goes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let rauc = standin(tmp.path());
    let r = RaucInstaller::new(&rauc);
    r.install(&image(tmp.path(), "2.5.0")).unwrap();
    bootloader(&rauc);
    assert_eq!(r.boot().unwrap(), "B");
    // Power cut before the commit: the next boot falls back.
    bootloader(&rauc);
    assert_eq!(r.boot().unwrap(), "A");

    r.install(&image(tmp.path(), "2.6.0")).unwrap();
    bootloader(&rauc);
    assert_eq!(r.boot().unwrap(), "B");
    r.mark_bad().unwrap();
    bootloader(&rauc);
    assert_eq!(r.boot().unwrap(), "A");
}

#[test]
fn rauc_a_failed_install_is_an_error_with_rauc_s_message() {
    let tmp = tempfile::tempdir().unwrap();
    let r = RaucInstaller::new(&standin(tmp.path()));
    let err = r
        .install(&tmp.path().join("missing.raucb"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not found"), "{err}");
    let err = RaucInstaller::new("/nonexistent/rauc")
        .boot()
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot run"), "{err}");
}

#[test]
fn rauc_status_json_is_read_as_rauc_writes_it() {
    // The shape of `rauc status --detailed --output-format=json` (trimmed).
    let json = r#"{"compatible":"box","variant":"","booted":"B","boot_primary":"rootfs.0",
      "slots":[{"rootfs.0":{"class":"rootfs","bootname":"A","state":"inactive",
                            "slot_status":{"bundle":{"version":"2.4.0"}}}},
               {"rootfs.1":{"class":"rootfs","bootname":"B","state":"booted",
                            "slot_status":{"bundle":{"version":"2.5.0"}}}}]}"#;
    let s = parse_status(json).unwrap();
    assert_eq!(s.booted, "B");
    assert_eq!(s.primary.as_deref(), Some("A"));
    assert_eq!(s.booted_version.as_deref(), Some("2.5.0"));
    assert!(parse_status("{}").unwrap_err().contains("booted"));
}

#[test]
fn command_hook_gets_each_call_and_its_answers_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("calls");
    let hook = tmp.path().join("hook");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$2\" in\n  install) echo writing; echo slot-2;;\n  booted) echo slot-1;;\n  mark-bad) echo refused >&2; exit 3;;\nesac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c =
        CommandInstaller::new(vec![hook.to_string_lossy().into_owned(), "--site".into()]).unwrap();
    assert_eq!(c.boot().unwrap(), "slot-1");
    assert_eq!(c.install(Path::new("/data/img.tar")).unwrap(), "slot-2");
    c.mark_good().unwrap();
    let err = c.mark_bad().unwrap_err().to_string();
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "--site booted\n--site install /data/img.tar\n--site mark-good\n--site mark-bad\n"
    );
    assert!(CommandInstaller::new(vec![]).is_err());
}
