//! Log upload for the upload-logs command: the tail of the configured log
//! files, at most `max_upload_bytes` in all, sent once with the command's
//! one-use token to the controller over HTTPS (the fleet CA). Which bytes
//! to take is decided by [`plan`] (pure); reading and sending are the I/O
//! around it, performed by the runtime as the core's `UploadLogs` action.

use std::path::{Path, PathBuf};

use fleet_protocol::{DeviceId, UploadTicket};
use serde::Deserialize;

/// `[logs]` as written in the config file.
#[derive(Debug, Clone, Deserialize)]
pub struct LogsSection {
    pub paths: Vec<PathBuf>,
    pub max_upload_bytes: u64,
    pub controller_url: String,
}

/// What an upload needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsConfig {
    /// Oldest first: the budget goes to the last file first.
    pub paths: Vec<PathBuf>,
    pub max_upload_bytes: u64,
    /// `https://HOST:PORT` of the controller (`http://` only with
    /// `mqtt.insecure_dev`); `None`: not known, uploads are refused.
    pub controller_url: Option<String>,
    /// The fleet CA (from enrolment).
    pub ca: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("no log files are configured ([logs] paths)")]
    NotConfigured,
    #[error("the controller's address is not known ([logs] controller_url, or update.repo_url)")]
    NoController,
    #[error("none of the configured log files exists: {0}")]
    NoFiles(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the fleet CA {path}: {source}")]
    Ca {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the upload ticket names {given}, not this device's upload route {expected}")]
    WrongPath { given: String, expected: String },
    #[error("upload refused or failed: {0}")]
    Client(#[from] fleet_api::ClientError),
}

impl LogsSection {
    /// `repo_url`: `[update] repo_url`, whose origin is the controller when
    /// `controller_url` is left empty. Plain `http://` only with
    /// `insecure_dev` (`mqtt.insecure_dev`): the upload carries a one-use
    /// token and the logs, neither of which may cross the network in clear.
    pub fn validate(
        &self,
        state_dir: &Path,
        repo_url: &str,
        insecure_dev: bool,
    ) -> Result<LogsConfig, String> {
        if self.max_upload_bytes == 0 {
            return Err("max_upload_bytes: at least 1".into());
        }
        let url = match self.controller_url.trim() {
            // A plaintext repository without insecure_dev leaves the
            // controller unknown: uploads are refused, saying so.
            "" => origin(repo_url).filter(|u| insecure_dev || u.starts_with("https://")),
            u if u.starts_with("https://") || (insecure_dev && u.starts_with("http://")) => {
                Some(u.trim_end_matches('/').to_owned())
            }
            u if u.starts_with("http://") => {
                return Err(format!(
                    "controller_url {u:?}: plain http:// only with mqtt.insecure_dev = true"
                ))
            }
            u => return Err(format!("controller_url {u:?}: it must start with https://")),
        };
        Ok(LogsConfig {
            paths: self.paths.clone(),
            max_upload_bytes: self.max_upload_bytes,
            controller_url: url,
            ca: state_dir.join("ca.crt"),
        })
    }
}

impl LogsConfig {
    /// `None` when no log file is configured: there is nothing to upload.
    pub fn configured(self) -> Option<Self> {
        (!self.paths.is_empty()).then_some(self)
    }
}

/// `https://host:port` of an http(s) URL.
fn origin(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .map(|r| ("https://", r))
        .or_else(|| url.strip_prefix("http://").map(|r| ("http://", r)))?;
    let host = rest.1.split('/').next().filter(|h| !h.is_empty())?;
    Some(format!("{}{host}", rest.0))
}

/// One file's share of the upload: `len` bytes from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub path: PathBuf,
    pub from: u64,
    pub len: u64,
}

/// The line before each file's bytes.
pub fn header(path: &Path) -> String {
    format!("==> {} <==\n", path.display())
}

/// Which bytes to send of `files` (path and current length, oldest first)
/// so that headers and bytes together are at most `max` bytes: the newest
/// file's tail first, then the one before, until the budget is spent. The
/// pieces come back in the files' order.
pub fn plan(files: &[(PathBuf, u64)], max: u64) -> Vec<Piece> {
    let mut left = max;
    let mut pieces = Vec::new();
    for (path, len) in files.iter().rev() {
        let head = header(path).len() as u64;
        if left <= head {
            break;
        }
        left -= head;
        let take = (*len).min(left);
        left -= take;
        pieces.push(Piece {
            path: path.clone(),
            from: len - take,
            len: take,
        });
    }
    pieces.reverse();
    pieces
}

/// Read the planned bytes of the configured files (missing files are left
/// out) into one body.
pub fn collect(cfg: &LogsConfig) -> Result<Vec<u8>, LogsError> {
    use std::io::{Read, Seek, SeekFrom};
    if cfg.paths.is_empty() {
        return Err(LogsError::NotConfigured);
    }
    let mut files = Vec::new();
    for path in &cfg.paths {
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => files.push((path.clone(), m.len())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LogsError::Read {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
    if files.is_empty() {
        let names: Vec<String> = cfg.paths.iter().map(|p| p.display().to_string()).collect();
        return Err(LogsError::NoFiles(names.join(", ")));
    }
    let mut body = Vec::new();
    for piece in plan(&files, cfg.max_upload_bytes) {
        let read = |source| LogsError::Read {
            path: piece.path.clone(),
            source,
        };
        body.extend_from_slice(header(&piece.path).as_bytes());
        let mut f = std::fs::File::open(&piece.path).map_err(read)?;
        f.seek(SeekFrom::Start(piece.from)).map_err(read)?;
        // The file may have grown since it was measured: take the planned
        // length only (it may also have shrunk: take what there is).
        f.take(piece.len).read_to_end(&mut body).map_err(read)?;
    }
    Ok(body)
}

/// Only this device's upload route for `command` takes the token: a ticket
/// naming any other path is not followed. The ticket names the route as
/// the controller serves it; a `controller_url` with a path prefix (a
/// reverse proxy) is prepended by the client when it sends.
pub fn check_ticket(
    device: &DeviceId,
    command: &str,
    ticket: &UploadTicket,
) -> Result<(), LogsError> {
    let expected = fleet_api::endpoints::UPLOAD_LOGS
        .path
        .replace("{id}", device.as_str())
        .replace("{command}", command);
    if ticket.path == expected {
        Ok(())
    } else {
        Err(LogsError::WrongPath {
            given: ticket.path.clone(),
            expected,
        })
    }
}

/// Collect and send the logs for `command` with its `ticket`; the bytes
/// the controller took.
pub async fn upload(
    cfg: &LogsConfig,
    device: &DeviceId,
    command: &str,
    ticket: &UploadTicket,
) -> Result<u64, LogsError> {
    let base = cfg
        .controller_url
        .as_deref()
        .ok_or(LogsError::NoController)?;
    let ca = if base.starts_with("https://") {
        Some(std::fs::read(&cfg.ca).map_err(|source| LogsError::Ca {
            path: cfg.ca.clone(),
            source,
        })?)
    } else {
        None
    };
    check_ticket(device, command, ticket)?;
    let client = fleet_api::Client::new(base, ca.as_deref())?;
    let body = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || collect(&cfg))
            .await
            .map_err(|e| LogsError::Read {
                path: PathBuf::new(),
                source: std::io::Error::other(e.to_string()),
            })??
    };
    let answer = client
        .upload_logs(device.as_str(), command, &ticket.token, body)
        .await?;
    Ok(answer.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn the_newest_files_tail_comes_first_and_the_whole_fits_the_budget() {
        let files = [(p("/a.1"), 1000), (p("/a"), 300)];
        let h = header(&p("/a")).len() as u64;
        assert_eq!(h, 11);
        assert_eq!(header(&p("/a.1")).len(), 13);
        // Room for everything.
        assert_eq!(
            plan(&files, 2000),
            vec![
                Piece {
                    path: p("/a.1"),
                    from: 0,
                    len: 1000
                },
                Piece {
                    path: p("/a"),
                    from: 0,
                    len: 300
                }
            ]
        );
        // The newest whole, the older's tail.
        let max = 500;
        let got = plan(&files, max);
        assert_eq!(
            got,
            vec![
                Piece {
                    path: p("/a.1"),
                    from: 824,
                    len: 176
                },
                Piece {
                    path: p("/a"),
                    from: 0,
                    len: 300
                }
            ]
        );
        let total: u64 = got
            .iter()
            .map(|x| header(&x.path).len() as u64 + x.len)
            .sum();
        assert_eq!(total, max);
        // Only the newest's tail.
        assert_eq!(
            plan(&files, 110),
            vec![Piece {
                path: p("/a"),
                from: 201,
                len: 99
            }]
        );
        // Not even a header fits.
        assert_eq!(plan(&files, 11), vec![]);
        assert_eq!(plan(&[], 100), vec![]);
    }

    #[test]
    fn collect_reads_the_tail_and_leaves_out_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let text: String = (0..100).map(|i| format!("line {i:03}\n")).collect();
        std::fs::write(&log, &text).unwrap();
        let cfg = LogsConfig {
            paths: vec![dir.path().join("missing.log"), log.clone()],
            max_upload_bytes: header(&log).len() as u64 + 18,
            controller_url: None,
            ca: dir.path().join("ca.crt"),
        };
        let body = collect(&cfg).unwrap();
        assert_eq!(
            String::from_utf8(body).unwrap(),
            format!("{}line 098\nline 099\n", header(&log))
        );
        let none = LogsConfig {
            paths: vec![],
            ..cfg.clone()
        };
        assert!(matches!(collect(&none), Err(LogsError::NotConfigured)));
        let missing = LogsConfig {
            paths: vec![dir.path().join("missing.log")],
            ..cfg
        };
        assert!(matches!(collect(&missing), Err(LogsError::NoFiles(_))));
    }

    #[test]
    fn the_controller_is_the_repositorys_origin_unless_named() {
        let s = LogsSection {
            paths: vec![],
            max_upload_bytes: 1,
            controller_url: String::new(),
        };
        let cfg = s
            .validate(Path::new("/st"), "https://ctl:8443/api/v1/tuf", false)
            .unwrap();
        assert_eq!(cfg.controller_url.as_deref(), Some("https://ctl:8443"));
        assert_eq!(cfg.ca, PathBuf::from("/st/ca.crt"));
        assert_eq!(
            s.validate(Path::new("/st"), "", false)
                .unwrap()
                .controller_url,
            None
        );
        let named = LogsSection {
            controller_url: "https://c:1/".into(),
            ..s.clone()
        };
        assert_eq!(
            named
                .validate(Path::new("/st"), "", false)
                .unwrap()
                .controller_url
                .as_deref(),
            Some("https://c:1")
        );
        let bad = LogsSection {
            controller_url: "ftp://c".into(),
            ..s.clone()
        };
        assert!(bad.validate(Path::new("/st"), "", true).is_err());
        let zero = LogsSection {
            max_upload_bytes: 0,
            ..s.clone()
        };
        assert!(zero.validate(Path::new("/st"), "", false).is_err());
    }

    #[test]
    fn only_a_ticket_for_this_devices_upload_route_is_followed() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let ticket = |path: &str| UploadTicket {
            path: path.into(),
            token: "t".into(),
        };
        let own = ticket("/api/v1/devices/BB-1/logs/cmd-0123456789abcdef");
        assert!(check_ticket(&dev, "cmd-0123456789abcdef", &own).is_ok());
        for other in [
            "/api/v1/devices/BB-2/logs/cmd-0123456789abcdef",
            "/api/v1/devices/BB-1/logs/cmd-ffffffffffffffff",
            "/api/v1/tokens",
            "https://elsewhere/api/v1/devices/BB-1/logs/cmd-0123456789abcdef",
        ] {
            assert!(
                matches!(
                    check_ticket(&dev, "cmd-0123456789abcdef", &ticket(other)),
                    Err(LogsError::WrongPath { .. })
                ),
                "{other}"
            );
        }
    }

    #[test]
    fn a_controller_behind_a_path_prefix_still_takes_the_upload() {
        // The ticket names the route as the controller serves it; the
        // client puts the configured prefix in front when it sends.
        let dev = DeviceId::parse("BB-1").unwrap();
        let cmd = "cmd-0123456789abcdef";
        let ticket = UploadTicket {
            path: "/api/v1/devices/BB-1/logs/cmd-0123456789abcdef".into(),
            token: "t".into(),
        };
        let cfg = LogsSection {
            paths: vec![],
            max_upload_bytes: 1,
            controller_url: "http://proxy:8080/fleet/".into(),
        }
        .validate(Path::new("/st"), "", true)
        .unwrap();
        let base = cfg.controller_url.unwrap();
        assert!(check_ticket(&dev, cmd, &ticket).is_ok());
        let client = fleet_api::Client::new(&base, None).unwrap();
        assert_eq!(
            client
                .url(&fleet_api::endpoints::UPLOAD_LOGS, &[dev.as_str(), cmd])
                .path(),
            "/fleet/api/v1/devices/BB-1/logs/cmd-0123456789abcdef"
        );
    }

    #[test]
    fn plain_http_is_refused_unless_insecure_dev() {
        let plain = LogsSection {
            paths: vec![],
            max_upload_bytes: 1,
            controller_url: "http://c:1".into(),
        };
        let refused = plain.validate(Path::new("/st"), "", false).unwrap_err();
        assert!(refused.contains("insecure_dev"), "{refused}");
        assert_eq!(
            plain
                .validate(Path::new("/st"), "", true)
                .unwrap()
                .controller_url
                .as_deref(),
            Some("http://c:1")
        );
        // Taken from a plaintext repository: only with insecure_dev.
        let from_repo = LogsSection {
            controller_url: String::new(),
            ..plain
        };
        let repo = "http://ctl:8080/api/v1/tuf";
        assert_eq!(
            from_repo
                .validate(Path::new("/st"), repo, false)
                .unwrap()
                .controller_url,
            None
        );
        assert_eq!(
            from_repo
                .validate(Path::new("/st"), repo, true)
                .unwrap()
                .controller_url
                .as_deref(),
            Some("http://ctl:8080")
        );
    }
}
