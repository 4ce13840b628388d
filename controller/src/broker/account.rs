//! The account the managed Mosquitto runs as, and the files it may read.
//!
//! Started by root, Mosquitto 2.0.11 reads its config file as root, then
//! drops to the `mosquitto` user before it opens anything else: its ACL,
//! certificates, key and CRL (again at every SIGHUP), its persistence file,
//! log and pid file. So the broker's directory holds copies of the TLS files
//! (staged at every start and before every reload) readable by that user's
//! group, its `state/` subdirectory belongs to that user, and the data
//! directory above lets that group through without listing it (0710).
//! Started by anyone else, Mosquitto keeps that user, and the files are
//! theirs. See
//! docs/decisions/0014-mosquitto-runs-as-its-own-user.md.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{BrokerError, BrokerTls};

/// The user Mosquitto drops to when root starts it (Debian's package makes it).
pub const BROKER_USER: &str = "mosquitto";

/// A system account: its name, user id and primary group id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The account Mosquitto will run as if this process starts it: `None` when
/// this process is not root (Mosquitto keeps this process's user), the
/// `mosquitto` account when it is.
pub fn broker_account() -> Result<Option<Account>, BrokerError> {
    if !running_as_root() {
        return Ok(None);
    }
    lookup(BROKER_USER).map(Some)
}

/// Whether this process runs as root (read from `/proc/self/status`).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|uid| uid == "0"))
        })
        .unwrap_or(false)
}

/// Look a user up through NSS (`getent passwd`), as the system does.
fn lookup(name: &str) -> Result<Account, BrokerError> {
    let out = std::process::Command::new("getent")
        .args(["passwd", name])
        .output()
        .map_err(|e| BrokerError::NoAccount {
            user: name.to_owned(),
            why: format!("cannot run getent: {e}"),
        })?;
    parse_passwd_line(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| BrokerError::NoAccount {
        user: name.to_owned(),
        why: "no such user".to_owned(),
    })
}

/// `name:x:uid:gid:...` → the account.
pub fn parse_passwd_line(line: &str) -> Option<Account> {
    let mut f = line.trim().split(':');
    let name = f.next().filter(|n| !n.is_empty())?.to_owned();
    let _password = f.next()?;
    let uid = f.next()?.parse().ok()?;
    let gid = f.next()?.parse().ok()?;
    Some(Account { name, uid, gid })
}

/// Whether `account` may pass through a directory with this mode and owner
/// (the execute bit that applies to it).
pub fn may_traverse(mode: u32, owner: u32, group: u32, account: &Account) -> bool {
    if owner == account.uid {
        mode & 0o100 != 0
    } else if group == account.gid {
        mode & 0o010 != 0
    } else {
        mode & 0o001 != 0
    }
}

/// Fail, naming the directory, if `account` cannot reach `dir` because a
/// directory above it does not let it through.
pub fn check_reachable(dir: &Path, account: &Account) -> Result<(), BrokerError> {
    for ancestor in dir.ancestors().skip(1) {
        let Ok(meta) = std::fs::metadata(ancestor) else {
            continue;
        };
        let mode = meta.permissions().mode();
        if !may_traverse(mode, meta.uid(), meta.gid(), account) {
            return Err(BrokerError::Unreachable {
                user: account.name.clone(),
                dir: dir.to_owned(),
                blocked_by: ancestor.to_owned(),
                mode: mode & 0o7777,
            });
        }
    }
    Ok(())
}

/// The broker's own copies of its TLS files, in its directory.
pub fn staged(dir: &Path) -> BrokerTls {
    BrokerTls {
        ca: dir.join("ca.crt"),
        cert: dir.join("broker.crt"),
        key: dir.join("broker.key"),
        crl: dir.join("crl.pem"),
    }
}

/// A provincial broker's copies of its bridge's client certificate and key
/// (its CA is the staged `ca.crt`).
pub fn staged_bridge(dir: &Path) -> super::render::BridgeTls {
    super::render::BridgeTls {
        ca: dir.join("ca.crt"),
        cert: dir.join("bridge.crt"),
        key: dir.join("bridge.key"),
    }
}

/// Where Mosquitto may write: its persistence file, log and pid file.
pub fn state_dir(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// Lay out the broker's directory for `account` (`None`: this process's
/// own user). The directory itself stays this process's, readable and
/// passable by the account's group (0710), so the broker can read its
/// config and copies but not replace them (a broker that could rewrite its
/// config could write `user root` into it for its next start); `state/`
/// is the account's (0700). Files an earlier broker left at the top
/// (persistence, log: before `state/` existed) move into it.
pub fn prepare_dirs(dir: &Path, account: Option<&Account>) -> Result<(), BrokerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BrokerError::Io { path, source }
    };
    let state = state_dir(dir);
    std::fs::create_dir_all(&state).map_err(io(&state))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o710)).map_err(io(dir))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).map_err(io(&state))?;
    for legacy in ["mosquitto.db", "mosquitto.log", "mosquitto.log.1"] {
        let from = dir.join(legacy);
        if from.exists() {
            std::fs::rename(&from, state.join(legacy)).map_err(io(&from))?;
        }
    }
    let Some(a) = account else {
        return Ok(());
    };
    std::os::unix::fs::chown(dir, None, Some(a.gid)).map_err(io(dir))?;
    std::os::unix::fs::chown(&state, Some(a.uid), Some(a.gid)).map_err(io(&state))?;
    for entry in std::fs::read_dir(&state).map_err(io(&state))? {
        let path = entry.map_err(io(&state))?.path();
        std::os::unix::fs::lchown(&path, Some(a.uid), Some(a.gid)).map_err(io(&path))?;
    }
    Ok(())
}

/// Write a file the broker reads (config, ACL): replaced whole (written
/// aside, then renamed), this process's, readable by the account's group.
pub fn write_readable(
    path: &Path,
    bytes: &[u8],
    account: Option<&Account>,
) -> Result<(), BrokerError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BrokerError::Io { path, source }
    };
    let aside: PathBuf = path.with_extension("staging");
    std::fs::write(&aside, bytes).map_err(io(&aside))?;
    std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o640)).map_err(io(&aside))?;
    if let Some(a) = account {
        std::os::unix::fs::chown(&aside, None, Some(a.gid)).map_err(io(&aside))?;
    }
    std::fs::rename(&aside, path).map_err(io(path))
}

/// Copy the TLS files the broker reads into its directory (see
/// [`write_readable`]). Called at every start and before every reload, so a
/// renewed certificate or a new CRL reaches the broker.
pub fn stage_tls(
    from: &BrokerTls,
    dir: &Path,
    account: Option<&Account>,
) -> Result<BrokerTls, BrokerError> {
    let to = staged(dir);
    for (src, dst) in [
        (&from.ca, &to.ca),
        (&from.cert, &to.cert),
        (&from.key, &to.key),
        (&from.crl, &to.crl),
    ] {
        let bytes = std::fs::read(src).map_err(|source| BrokerError::Io {
            path: src.clone(),
            source,
        })?;
        write_readable(dst, &bytes, account)?;
    }
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mosquitto() -> Account {
        Account {
            name: "mosquitto".into(),
            uid: 101,
            gid: 102,
        }
    }

    #[test]
    fn passwd_lines_are_read_and_garbage_is_not() {
        assert_eq!(
            parse_passwd_line("mosquitto:x:101:102::/var/lib/mosquitto:/usr/sbin/nologin\n"),
            Some(mosquitto())
        );
        assert_eq!(parse_passwd_line(""), None);
        assert_eq!(parse_passwd_line("mosquitto:x:abc:102::/:/bin/false"), None);
        assert_eq!(parse_passwd_line(":x:1:2::/:/bin/false"), None);
    }

    #[test]
    fn the_execute_bit_that_applies_decides() {
        let m = mosquitto();
        // A root-owned 0700 directory (a temp dir): closed to the broker.
        assert!(!may_traverse(0o700, 0, 0, &m));
        // The data directory as the controller leaves it: 0710, group mosquitto.
        assert!(may_traverse(0o710, 0, m.gid, &m));
        // Group bit set, but another group: closed.
        assert!(!may_traverse(0o710, 0, 0, &m));
        // World-traversable (/var/lib, /tmp).
        assert!(may_traverse(0o755, 0, 0, &m));
        assert!(may_traverse(0o1777, 0, 0, &m));
        // Its own directory.
        assert!(may_traverse(0o700, m.uid, m.gid, &m));
        assert!(!may_traverse(0o600, m.uid, m.gid, &m));
    }

    #[test]
    fn a_closed_ancestor_is_named() {
        let top = tempfile::tempdir().unwrap();
        let closed = top.path().join("closed");
        let dir = closed.join("data/mosquitto");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        // An account that owns nothing here and is in no group here.
        let stranger = Account {
            name: "stranger".into(),
            uid: 4_000_000,
            gid: 4_000_000,
        };
        match check_reachable(&dir, &stranger) {
            Err(BrokerError::Unreachable {
                blocked_by, mode, ..
            }) => {
                assert_eq!(blocked_by, closed);
                assert_eq!(mode, 0o700);
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o711)).unwrap();
        check_reachable(&dir, &stranger).unwrap();
    }

    #[test]
    fn staged_files_are_whole_copies_readable_by_the_broker_group_only() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let from = BrokerTls {
            ca: src.path().join("ca.crt"),
            cert: src.path().join("b.crt"),
            key: src.path().join("b.key"),
            crl: src.path().join("crl.pem"),
        };
        for (p, body) in [
            (&from.ca, "CA"),
            (&from.cert, "CERT"),
            (&from.key, "KEY"),
            (&from.crl, "CRL1"),
        ] {
            std::fs::write(p, body).unwrap();
        }
        let to = stage_tls(&from, dst.path(), None).unwrap();
        assert_eq!(std::fs::read_to_string(&to.key).unwrap(), "KEY");
        // Readable by the broker's group, by no one else, and not the broker's
        // to rewrite.
        assert_eq!(
            std::fs::metadata(&to.key).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // A new CRL replaces the staged one at the next stage.
        std::fs::write(&from.crl, "CRL2").unwrap();
        stage_tls(&from, dst.path(), None).unwrap();
        assert_eq!(std::fs::read_to_string(&to.crl).unwrap(), "CRL2");
        // A missing source is an error naming it, not a silent skip.
        std::fs::remove_file(&from.cert).unwrap();
        match stage_tls(&from, dst.path(), None) {
            Err(BrokerError::Io { path, .. }) => assert_eq!(path, from.cert),
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
