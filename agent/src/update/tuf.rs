//! The agent's TUF client: fetch and verify the firmware repository's
//! metadata (tough), then answer which signed target to install.
//!
//! - Transport: the repository is the controller's public TUF routes over
//!   HTTPS with the fleet CA as the only root ([`Source::Https`], through
//!   the same reqwest client as [`crate::download`]), an exported directory
//!   on a USB stick ([`Source::Dir`], tough's `FilesystemTransport`), or
//!   plain HTTP for the `fleet-agent tuf` conformance subcommand only
//!   ([`Source::PlainHttp`]).
//! - Persistence: tough's datastore (`STATE/update/tuf`) keeps the newest
//!   trusted root, timestamp, snapshot and targets across restarts, so a
//!   version going down is refused after a reboot too. The newest root is
//!   taken from there (or from the installed trusted root, whichever is
//!   newer): tough itself always starts from the root it is given.
//! - Time: tough is loaded with `ExpirationEnforcement::Unsafe`, and every
//!   role's `expires` is checked here against the agent's trusted clock
//!   ([`super::clock`]) instead. tough compares against the raw system
//!   clock and refuses to load at all once that clock stepped back; a
//!   ballot box's real-time clock is neither right nor monotonic.
//! - Targets: [`Verified::target`] checks the name, the artifact kind and
//!   the hardware model from the signed `custom` object
//!   ([`fleet_protocol::firmware::TargetCustom`]); [`refuse_rollback`]
//!   refuses an older version. The image itself is downloaded by the
//!   engine with [`crate::download`] and `Expected { len, sha256 }` from the
//!   [`VerifiedTarget`]; that download is cut off past the signed length.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleet_protocol::firmware::{target_name, TargetCustom};
use fleet_protocol::{ArtifactKind, Model, Version};
use reqwest::Url;
use tough::schema::RoleType;
use tough::{
    ExpirationEnforcement, FilesystemTransport, Limits, RepositoryLoader, Transport,
    TransportError, TransportErrorKind, TransportStream,
};

/// tough's record of the last system time it saw. Removed before every
/// load: our trusted clock replaces it (see the module's documentation).
const LATEST_KNOWN_TIME: &str = "latest_known_time.json";

/// The metadata files tough keeps in its datastore, under unversioned names.
const ROLE_FILES: [&str; 4] = [
    "root.json",
    "timestamp.json",
    "snapshot.json",
    "targets.json",
];

/// How large metadata may be before it is refused (endless data on
/// metadata). Targets metadata is bounded by the length the snapshot signs
/// when it gives one, else by `max_targets_size`.
pub fn limits() -> Limits {
    Limits {
        max_root_size: 512 * 1024,
        max_targets_size: 4 * 1024 * 1024,
        max_timestamp_size: 64 * 1024,
        max_snapshot_size: 1024 * 1024,
        max_root_updates: 256,
    }
}

/// Where the repository is.
#[derive(Debug, Clone)]
pub enum Source {
    /// `https://HOST:PORT/api/v1/tuf`: metadata at `BASE/metadata/`, targets
    /// at `BASE/targets/`; the server must hold a certificate of the fleet CA.
    Https { base: String, ca_pem: Vec<u8> },
    /// An exported repository (`DIR/metadata`, `DIR/targets`), e.g. a USB stick.
    Dir(PathBuf),
    /// Plain HTTP, for test repositories on loopback (`fleet-agent tuf` only).
    PlainHttp { base: String },
}

/// Where a verified target's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetLocation {
    /// Download it (with [`crate::download`]).
    Url(String),
    /// Read it from the exported directory.
    File(PathBuf),
}

/// A target the signed metadata lists, checked for this device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTarget {
    pub name: String,
    pub artifact: ArtifactKind,
    pub model: Model,
    pub version: Version,
    /// The signed length in bytes.
    pub len: u64,
    /// The signed SHA-256, lower-case hexadecimal.
    pub sha256: String,
    pub location: TargetLocation,
}

#[derive(Debug, thiserror::Error)]
pub enum TufError {
    #[error("the trusted root {path} is unusable: {reason}")]
    TrustedRoot { path: PathBuf, reason: String },
    #[error("the TUF datastore {path}: {source}")]
    Datastore {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad repository address {url:?}: {reason}")]
    BadSource { url: String, reason: String },
    /// The repository could not be reached, or did not have a file; try
    /// again later. Nothing was trusted.
    #[error("the repository is unreachable ({url}): {reason}")]
    Unreachable { url: String, reason: String },
    /// tough refused the metadata: a signature, a threshold, a version
    /// going down, a snapshot or timestamp that does not match what it
    /// lists (mix-and-match), a length or hash.
    #[error("{role} metadata refused: {reason}")]
    Metadata { role: String, reason: String },
    /// A freeze attack, or metadata nobody re-signed in time.
    #[error("{role} metadata expired at {} (trusted time is {}): possible freeze attack", fmt_ms(*expired_at_ms), fmt_ms(*now_ms))]
    Expired {
        role: String,
        expired_at_ms: u64,
        now_ms: u64,
    },
    #[error("no target named {name:?} in the signed targets metadata")]
    NoSuchTarget { name: String },
    #[error("target {name:?} is for hardware model {offered}, this device is {expected}")]
    WrongModel {
        name: String,
        expected: Model,
        offered: Model,
    },
    #[error("target {name:?} is {offered} software, {expected} was asked for")]
    WrongArtifact {
        name: String,
        expected: &'static str,
        offered: &'static str,
    },
    #[error("target {name:?} has unusable signed custom metadata: {reason}")]
    BadCustom { name: String, reason: String },
    #[error("refusing to go back from version {installed} to {offered}")]
    Rollback {
        installed: Version,
        offered: Version,
    },
    #[error("target {name:?}: the SHA-256 is {actual}, the signed one is {expected}")]
    HashMismatch {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("target {name:?}: endless data, more than the signed {limit} bytes; cut off")]
    TooLong { name: String, limit: u64 },
    #[error("target {name:?} is {actual} bytes, the signed length is {expected}")]
    LengthMismatch {
        name: String,
        expected: u64,
        actual: u64,
    },
}

/// Unix milliseconds as RFC 3339 (UTC), for messages.
fn fmt_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Refuse an offered version older than the installed one. The same
/// version is allowed: re-installing it is how a device repairs a slot.
pub fn refuse_rollback(installed: &Version, offered: &Version) -> Result<(), TufError> {
    if offered < installed {
        return Err(TufError::Rollback {
            installed: installed.clone(),
            offered: offered.clone(),
        });
    }
    Ok(())
}

/// Where tough reads from: the two base URLs and the transport.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    pub metadata: Url,
    pub targets: Url,
    /// `Some` for a directory: targets are files there.
    pub targets_dir: Option<PathBuf>,
    pub transport: AnyTransport,
    pub layout: TargetLayout,
}

/// A base URL as a directory (with a trailing slash), for `Url::join`.
fn dir_url(s: &str) -> Result<Url, TufError> {
    let with_slash = if s.ends_with('/') {
        s.to_owned()
    } else {
        format!("{s}/")
    };
    Url::parse(&with_slash).map_err(|e| TufError::BadSource {
        url: s.to_owned(),
        reason: e.to_string(),
    })
}

impl Endpoints {
    pub(crate) fn for_source(source: &Source) -> Result<Self, TufError> {
        match source {
            Source::Https { base, ca_pem } => {
                let base = dir_url(base)?;
                if base.scheme() != "https" {
                    return Err(TufError::BadSource {
                        url: base.to_string(),
                        reason: "the repository must be https://".into(),
                    });
                }
                if ca_pem.is_empty() {
                    return Err(TufError::BadSource {
                        url: base.to_string(),
                        reason: "HTTPS needs the fleet CA, and none was given".into(),
                    });
                }
                Self::http(&base, Some(ca_pem.clone()), false)
            }
            Source::PlainHttp { base } => {
                let base = dir_url(base)?;
                Self::http(&base, None, true)
            }
            Source::Dir(dir) => {
                let abs = std::path::absolute(dir).map_err(|source| TufError::Datastore {
                    path: dir.clone(),
                    source,
                })?;
                let base = Url::from_directory_path(&abs).map_err(|()| TufError::BadSource {
                    url: abs.display().to_string(),
                    reason: "not an absolute directory path".into(),
                })?;
                Ok(Self {
                    metadata: join_dir(&base, "metadata")?,
                    targets: join_dir(&base, "targets")?,
                    targets_dir: Some(abs.join("targets")),
                    transport: AnyTransport::File(FilesystemTransport),
                    layout: TargetLayout::HashPrefixedName,
                })
            }
        }
    }

    fn http(base: &Url, ca_pem: Option<Vec<u8>>, allow_plain: bool) -> Result<Self, TufError> {
        Ok(Self {
            metadata: join_dir(base, "metadata")?,
            targets: join_dir(base, "targets")?,
            targets_dir: None,
            transport: AnyTransport::Http(HttpsTransport::new(ca_pem, allow_plain)?),
            layout: TargetLayout::HashPrefixedName,
        })
    }

    /// Separate metadata and targets URLs (the conformance subcommand).
    pub(crate) fn urls(
        metadata: &str,
        targets: Option<&str>,
        ca_pem: Option<Vec<u8>>,
    ) -> Result<Self, TufError> {
        let metadata = dir_url(metadata)?;
        let targets = match targets {
            Some(t) => dir_url(t)?,
            None => metadata.clone(),
        };
        let transport = match metadata.scheme() {
            "file" => AnyTransport::File(FilesystemTransport),
            _ => AnyTransport::Http(HttpsTransport::new(ca_pem, true)?),
        };
        let targets_dir = match targets.scheme() {
            "file" => targets.to_file_path().ok(),
            _ => None,
        };
        Ok(Self {
            metadata,
            targets,
            targets_dir,
            transport,
            layout: TargetLayout::HashPrefixedBasename,
        })
    }
}

impl Endpoints {
    /// The HTTP client of an HTTP repository (for its targets).
    pub(crate) fn http_client(&self) -> Option<&reqwest::Client> {
        match &self.transport {
            AnyTransport::Http(t) => Some(&t.http),
            AnyTransport::File(_) => None,
        }
    }
}

fn join_dir(base: &Url, name: &str) -> Result<Url, TufError> {
    base.join(&format!("{name}/"))
        .map_err(|e| TufError::BadSource {
            url: base.to_string(),
            reason: e.to_string(),
        })
}

/// tough's [`Transport`] over the agent's own HTTP client: HTTPS trusts the
/// fleet CA only (tough's own `HttpTransport` would use the platform's
/// trust store and cannot present the fleet's CA). It also remembers the
/// `Date` of the last answer: over HTTPS that is the controller's clock,
/// which the trusted clock may take ([`TufClient::server_date_ms`]).
#[derive(Debug, Clone)]
pub(crate) struct HttpsTransport {
    http: reqwest::Client,
    allow_plain: bool,
    stall: Duration,
    last_date_ms: Arc<Mutex<Option<u64>>>,
}

impl HttpsTransport {
    fn new(ca_pem: Option<Vec<u8>>, allow_plain: bool) -> Result<Self, TufError> {
        let cfg = crate::download::DownloadConfig {
            ca_pem,
            allow_plain_http: allow_plain,
            connect_timeout: Duration::from_secs(30),
            ..Default::default()
        };
        let http = crate::download::client(&cfg).map_err(|e| TufError::BadSource {
            url: String::new(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            http,
            allow_plain,
            stall: cfg.stall_timeout,
            last_date_ms: Arc::new(Mutex::new(None)),
        })
    }
}

/// Unix ms from an HTTP `Date` (IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`).
pub(crate) fn parse_http_date(v: &str) -> Option<u64> {
    let mut it = v.split_whitespace();
    let _weekday = it.next()?;
    let day: u64 = it.next()?.parse().ok()?;
    let month = match it.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let (h, mi, s): (u64, u64, u64) = (
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
        hms.next()?.parse().ok()?,
    );
    if it.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    Some(secs * 1000)
}

#[tough::async_trait]
impl Transport for HttpsTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_plain => {}
            _ => {
                return Err(TransportError::new(
                    TransportErrorKind::UnsupportedUrlScheme,
                    url,
                ))
            }
        }
        let other = |e: Box<dyn std::error::Error + Send + Sync>| {
            TransportError::new_with_cause(TransportErrorKind::Other, url.as_str(), e)
        };
        let resp = tokio::time::timeout(self.stall, self.http.get(url.clone()).send())
            .await
            .map_err(|_| other("no answer in time".into()))?
            // reqwest's own message is only "error sending request": the
            // causes (refused, certificate, …) are what a reader needs.
            .map_err(|e| other(crate::download::causes(&e.without_url()).into()))?;
        if let Some(ms) = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_http_date)
        {
            if let Ok(mut last) = self.last_date_ms.lock() {
                *last = Some(ms);
            }
        }
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::FORBIDDEN {
            return Err(TransportError::new(TransportErrorKind::FileNotFound, url));
        }
        if !status.is_success() {
            return Err(other(format!("HTTP {}", status.as_u16()).into()));
        }
        // The body as a stream of chunks, each within the stall timeout.
        // tough bounds it (its size and hash adapters) and stops reading
        // when the bound is passed: endless data never reaches the memory.
        let stall = self.stall;
        let url_s = url.to_string();
        let stream = futures_util::stream::unfold(Some(resp), move |resp| {
            let url_s = url_s.clone();
            async move {
                let mut resp = resp?;
                match tokio::time::timeout(stall, resp.chunk()).await {
                    Err(_) => Some((
                        Err(TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            &url_s,
                            "the body stalled",
                        )),
                        None,
                    )),
                    Ok(Err(e)) => Some((
                        Err(TransportError::new_with_cause(
                            TransportErrorKind::Other,
                            &url_s,
                            crate::download::causes(&e.without_url()),
                        )),
                        None,
                    )),
                    Ok(Ok(None)) => None,
                    Ok(Ok(Some(bytes))) => Some((Ok(bytes), Some(resp))),
                }
            }
        });
        Ok(Box::pin(stream))
    }
}

/// One of our transports (tough wants a concrete, cloneable type).
#[derive(Debug, Clone)]
pub(crate) enum AnyTransport {
    Http(HttpsTransport),
    File(FilesystemTransport),
}

#[tough::async_trait]
impl Transport for AnyTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        match self {
            AnyTransport::Http(t) => t.fetch(url).await,
            AnyTransport::File(t) => t.fetch(url).await,
        }
    }
}

/// The agent's TUF client (see the module's documentation).
#[derive(Debug, Clone)]
pub struct TufClient {
    source: Source,
    datastore: PathBuf,
    trusted_root: PathBuf,
    last_date_ms: Arc<Mutex<Option<u64>>>,
}

impl TufClient {
    /// `datastore` is kept across restarts (`STATE/update/tuf`);
    /// `trusted_root` is the release team's root installed with the device.
    pub fn new(source: Source, datastore: PathBuf, trusted_root: PathBuf) -> Self {
        Self {
            source,
            datastore,
            trusted_root,
            last_date_ms: Arc::new(Mutex::new(None)),
        }
    }

    /// Fetch and verify the repository's top-level metadata; check each
    /// role's expiry against `trusted_now_ms` (the trusted clock).
    pub async fn refresh(&self, trusted_now_ms: u64) -> Result<Verified, TufError> {
        let mut endpoints = Endpoints::for_source(&self.source)?;
        if let AnyTransport::Http(t) = &mut endpoints.transport {
            // The transport records the Date of each answer here.
            t.last_date_ms = self.last_date_ms.clone();
        }
        load(
            &endpoints,
            &self.datastore,
            &self.trusted_root,
            trusted_now_ms,
        )
        .await
    }

    /// The `Date` of the last HTTPS answer from the repository (the
    /// controller's clock, over a connection authenticated by the fleet
    /// CA), for [`super::clock::TrustedClock::observe_controller`].
    pub fn server_date_ms(&self) -> Option<u64> {
        self.last_date_ms.lock().ok().and_then(|d| *d)
    }
}

/// The `signed.version` of a metadata file, if it parses.
fn metadata_version(bytes: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    v.get("signed")?.get("version")?.as_u64()
}

/// The datastore's timestamp, snapshot and targets as they are, to put
/// back if the new ones are refused after tough accepted them (expired).
/// Not the root: a root update that verified stands (TUF 5.3.8), even when
/// a later step fails.
fn snapshot_datastore(dir: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    ROLE_FILES[1..]
        .iter()
        .map(|f| {
            let p = dir.join(f);
            let bytes = std::fs::read(&p).ok();
            (p, bytes)
        })
        .collect()
}

fn restore_datastore(saved: Vec<(PathBuf, Option<Vec<u8>>)>) {
    for (path, bytes) in saved {
        let _ = match bytes {
            Some(b) => std::fs::write(&path, b),
            None => std::fs::remove_file(&path).or(Ok(())),
        };
    }
}

/// Load the repository through tough into `datastore`, then check expiry.
pub(crate) async fn load(
    endpoints: &Endpoints,
    datastore: &Path,
    trusted_root: &Path,
    now_ms: u64,
) -> Result<Verified, TufError> {
    let ds_err = |source| TufError::Datastore {
        path: datastore.to_owned(),
        source,
    };
    std::fs::create_dir_all(datastore).map_err(ds_err)?;
    // Our trusted clock replaces tough's record of the system time: tough
    // refuses to load at all once the system clock is behind that record
    // (SystemTimeSteppedBackward), which a ballot box whose RTC was reset
    // would hit forever. Expiry is checked below against the trusted clock;
    // rollback protection is unaffected (it rests on the stored versions).
    match std::fs::remove_file(datastore.join(LATEST_KNOWN_TIME)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ds_err(e)),
    }
    let installed = std::fs::read(trusted_root).map_err(|e| TufError::TrustedRoot {
        path: trusted_root.to_owned(),
        reason: e.to_string(),
    })?;
    // tough starts from the root it is given and walks N+1.root.json up;
    // it does not read the datastore's. Start from the newer of the two, so
    // a root version going down is refused after a restart too.
    let stored = std::fs::read(datastore.join("root.json")).ok();
    let root = match (&stored, metadata_version(&installed)) {
        (Some(s), Some(iv)) if metadata_version(s).is_some_and(|sv| sv > iv) => s.clone(),
        (_, Some(_)) => installed,
        (_, None) => {
            return Err(TufError::TrustedRoot {
                path: trusted_root.to_owned(),
                reason: "not TUF root metadata (no signed.version)".into(),
            })
        }
    };
    let saved = snapshot_datastore(datastore);
    let loaded =
        RepositoryLoader::new(&root, endpoints.metadata.clone(), endpoints.targets.clone())
            .transport(endpoints.transport.clone())
            .datastore(datastore)
            .limits(limits())
            .expiration_enforcement(ExpirationEnforcement::Unsafe)
            .load()
            .await;
    let _ = std::fs::remove_file(datastore.join(LATEST_KNOWN_TIME));
    let repo = loaded.map_err(|e| map_tough_error(&e, trusted_root))?;
    let expiries = [
        ("root", ms(repo.root().signed.expires.as_millisecond())),
        (
            "timestamp",
            ms(repo.timestamp().signed.expires.as_millisecond()),
        ),
        (
            "snapshot",
            ms(repo.snapshot().signed.expires.as_millisecond()),
        ),
        (
            "targets",
            ms(repo.targets().signed.expires.as_millisecond()),
        ),
    ];
    if let Some((role, at)) = expiries.iter().find(|(_, at)| *at <= now_ms) {
        // TUF: an expired file is discarded; do not keep it as trusted.
        restore_datastore(saved);
        return Err(TufError::Expired {
            role: (*role).to_owned(),
            expired_at_ms: *at,
            now_ms,
        });
    }
    // tough writes its files without fsync; the versions in them are the
    // rollback protection, so make them durable before acting on them.
    sync_datastore(datastore).map_err(ds_err)?;
    let consistent = repo.root().signed.consistent_snapshot;
    let targets = repo
        .all_targets()
        .map(|(name, t)| SignedTarget {
            name: name.raw().to_owned(),
            len: t.length,
            sha256: hex::encode(t.hashes.sha256.as_ref() as &[u8]),
            custom: serde_json::Value::Object(
                t.custom
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        })
        .collect();
    Ok(Verified {
        versions: RoleVersions {
            root: repo.root().signed.version.get(),
            timestamp: repo.timestamp().signed.version.get(),
            snapshot: repo.snapshot().signed.version.get(),
            targets: repo.targets().signed.version.get(),
        },
        expires_ms: RoleVersions {
            root: expiries[0].1,
            timestamp: expiries[1].1,
            snapshot: expiries[2].1,
            targets: expiries[3].1,
        },
        consistent_snapshot: consistent,
        layout: endpoints.layout,
        targets,
        targets_url: endpoints.targets.clone(),
        targets_dir: endpoints.targets_dir.clone(),
    })
}

fn sync_datastore(dir: &Path) -> std::io::Result<()> {
    for f in ROLE_FILES {
        match std::fs::File::open(dir.join(f)) {
            Ok(file) => file.sync_all()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    crate::durable::sync_dir(dir)
}

fn ms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The role a metadata file name (`3.root.json`, `timestamp.json`) is.
fn role_of_url(url: &str) -> String {
    let file = url.rsplit('/').next().unwrap_or(url);
    for role in ["root", "timestamp", "snapshot", "targets"] {
        if file.ends_with(&format!("{role}.json")) {
            return role.to_owned();
        }
    }
    file.to_owned()
}

fn role_name(role: RoleType) -> String {
    role.to_string()
}

/// Map tough's error to ours, naming the role and keeping tough's words
/// (they say which check failed).
fn map_tough_error(e: &tough::error::Error, trusted_root: &Path) -> TufError {
    use tough::error::Error as E;
    let reason = e.to_string();
    let metadata = |role: String| TufError::Metadata {
        role,
        reason: reason.clone(),
    };
    match e {
        E::ParseTrustedMetadata { .. } | E::VerifyTrustedMetadata { .. } => TufError::TrustedRoot {
            path: trusted_root.to_owned(),
            reason,
        },
        E::VerifyMetadata { role, .. }
        | E::OlderMetadata { role, .. }
        | E::VersionMismatch { role, .. }
        | E::ParseMetadata { role, .. }
        | E::ExpiredMetadata { role, .. } => metadata(role_name(*role)),
        E::MetaMissing { file, .. } => metadata(role_of_url(file)),
        E::MaxUpdatesExceeded { .. } => metadata("root".into()),
        E::OlderSnapshotInTimestamp { .. }
        | E::TimestampMetaLength { .. }
        | E::MissingSnapshotMeta { .. } => metadata("timestamp".into()),
        E::SnapshotTargetsMetaMissing { .. }
        | E::SnapshotRoleMissing { .. }
        | E::SnapshotRoleRollback { .. } => metadata("snapshot".into()),
        E::Transport { url, source, .. } => {
            // A hash or size check of tough's own (on the stream) is a
            // refusal; anything else is the network or a missing file.
            let mut cause: Option<&(dyn std::error::Error + 'static)> =
                std::error::Error::source(source);
            while let Some(c) = cause {
                if c.downcast_ref::<tough::error::Error>().is_some() {
                    return metadata(role_of_url(url.as_str()));
                }
                cause = c.source();
            }
            TufError::Unreachable {
                url: url.to_string(),
                reason,
            }
        }
        E::DatastoreCreate { path, .. }
        | E::DatastoreOpen { path, .. }
        | E::DatastoreRemove { path, .. } => TufError::Datastore {
            path: path.clone(),
            source: std::io::Error::other(reason),
        },
        _ => metadata("repository".into()),
    }
}

/// Role versions (or expiries, Unix ms) of the verified metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleVersions {
    pub root: u64,
    pub timestamp: u64,
    pub snapshot: u64,
    pub targets: u64,
}

#[derive(Debug, Clone)]
struct SignedTarget {
    name: String,
    len: u64,
    sha256: String,
    custom: serde_json::Value,
}

/// Metadata that passed every check: signatures and thresholds, versions,
/// snapshot and timestamp consistency, expiry against the trusted clock.
#[derive(Debug, Clone)]
pub struct Verified {
    pub versions: RoleVersions,
    pub expires_ms: RoleVersions,
    consistent_snapshot: bool,
    layout: TargetLayout,
    targets: Vec<SignedTarget>,
    targets_url: Url,
    targets_dir: Option<PathBuf>,
}

impl Verified {
    /// The signed target `name`, checked to be `artifact` software for
    /// `model`, its name matching its signed custom fields.
    pub fn target(
        &self,
        name: &str,
        artifact: ArtifactKind,
        model: &Model,
    ) -> Result<VerifiedTarget, TufError> {
        let t = self
            .targets
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| TufError::NoSuchTarget {
                name: name.to_owned(),
            })?;
        let v = self.check(t)?;
        if v.artifact != artifact {
            return Err(TufError::WrongArtifact {
                name: name.to_owned(),
                expected: artifact.as_str(),
                offered: v.artifact.as_str(),
            });
        }
        if &v.model != model {
            return Err(TufError::WrongModel {
                name: name.to_owned(),
                expected: model.clone(),
                offered: v.model,
            });
        }
        Ok(v)
    }

    /// The newest signed `artifact` for `model`, if any.
    pub fn latest(&self, artifact: ArtifactKind, model: &Model) -> Option<VerifiedTarget> {
        self.targets
            .iter()
            .filter_map(|t| self.check(t).ok())
            .filter(|v| v.artifact == artifact && &v.model == model)
            .max_by(|a, b| a.version.cmp(&b.version))
    }

    /// Every signed target name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.name.as_str())
    }

    /// A signed target's length, SHA-256 and location, whatever its custom
    /// metadata (the conformance subcommand downloads any target).
    pub(crate) fn raw(&self, name: &str) -> Option<(u64, String, TargetLocation)> {
        let t = self.targets.iter().find(|t| t.name == name)?;
        Some((t.len, t.sha256.clone(), self.location(&t.name, &t.sha256)))
    }

    fn check(&self, t: &SignedTarget) -> Result<VerifiedTarget, TufError> {
        let bad = |reason: String| TufError::BadCustom {
            name: t.name.clone(),
            reason,
        };
        let custom: TargetCustom =
            serde_json::from_value(t.custom.clone()).map_err(|e| bad(e.to_string()))?;
        let expected = target_name(custom.artifact, &custom.model, &custom.version);
        if expected != t.name {
            return Err(bad(format!(
                "its custom fields name it {expected:?}, not {:?}",
                t.name
            )));
        }
        Ok(VerifiedTarget {
            name: t.name.clone(),
            artifact: custom.artifact,
            model: custom.model,
            version: custom.version,
            len: t.len,
            sha256: t.sha256.clone(),
            location: self.location(&t.name, &t.sha256),
        })
    }

    /// Where a target's file is. With consistent snapshots the SHA-256
    /// prefixes the file name, in one of two layouts ([`TargetLayout`]).
    fn location(&self, name: &str, sha256: &str) -> TargetLocation {
        let file = match (self.consistent_snapshot, self.layout) {
            (false, _) => name.to_owned(),
            (true, TargetLayout::HashPrefixedName) => format!("{sha256}.{name}"),
            (true, TargetLayout::HashPrefixedBasename) => match name.rsplit_once('/') {
                Some((dir, base)) => format!("{dir}/{sha256}.{base}"),
                None => format!("{sha256}.{name}"),
            },
        };
        match &self.targets_dir {
            Some(dir) => TargetLocation::File(dir.join(&file)),
            None => {
                let encoded: Vec<String> = file.split('/').map(percent_encode_segment).collect();
                TargetLocation::Url(format!("{}{}", self.targets_url, encoded.join("/")))
            }
        }
    }
}

/// Where a consistent-snapshot repository keeps a target's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetLayout {
    /// `targets/SHA256.firmware/MODEL/VERSION.tar`: tough's, and so
    /// fleet-repo's (`publish::target_file_path`), the controller's and an
    /// export's. The agent's updates read this one.
    HashPrefixedName,
    /// `targets/firmware/MODEL/SHA256.VERSION.tar`: the TUF specification's
    /// (python-tuf, the conformance suite); `fleet-agent tuf` reads this one.
    HashPrefixedBasename,
}

/// Percent-encode a URL path segment (RFC 3986 unreserved characters stay).
fn percent_encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for b in seg.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_version_is_a_rollback_the_same_or_newer_is_not() {
        let v = |s| Version::parse(s).unwrap();
        assert!(matches!(
            refuse_rollback(&v("1.4.0"), &v("1.3.9")),
            Err(TufError::Rollback { .. })
        ));
        assert!(matches!(
            refuse_rollback(&v("1.4.0"), &v("1.4.0-rc.1")),
            Err(TufError::Rollback { .. })
        ));
        assert!(refuse_rollback(&v("1.4.0"), &v("1.4.0")).is_ok());
        assert!(refuse_rollback(&v("1.4.0"), &v("1.10.0")).is_ok());
    }

    #[test]
    fn http_dates_read_as_unix_milliseconds() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777_000)
        );
        assert_eq!(
            parse_http_date("Tue, 24 Nov 2026 07:05:19 GMT"),
            Some(1_795_503_919_000)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST"), None);
    }

    #[test]
    fn milliseconds_print_as_rfc3339() {
        assert_eq!(fmt_ms(784_111_777_000), "1994-11-06T08:49:37Z");
        assert_eq!(fmt_ms(0), "1970-01-01T00:00:00Z");
    }

    fn signed(name: &str, artifact: &str, model: &str, version: &str) -> SignedTarget {
        SignedTarget {
            name: name.to_owned(),
            len: 10,
            sha256: "ab".repeat(32),
            custom: serde_json::json!({"artifact": artifact, "model": model, "version": version}),
        }
    }

    fn verified(layout: TargetLayout, targets: Vec<SignedTarget>) -> Verified {
        let v = RoleVersions {
            root: 1,
            timestamp: 1,
            snapshot: 1,
            targets: 1,
        };
        Verified {
            versions: v,
            expires_ms: v,
            consistent_snapshot: true,
            layout,
            targets,
            targets_url: Url::parse("https://ctl:8443/api/v1/tuf/targets/").unwrap(),
            targets_dir: None,
        }
    }

    #[test]
    fn a_target_is_checked_against_the_devices_model_and_artifact() {
        let box2 = Model::parse("ballot-box-v2").unwrap();
        let laptop = Model::parse("id-laptop").unwrap();
        let v = verified(
            TargetLayout::HashPrefixedName,
            vec![
                signed(
                    "firmware/ballot-box-v2/1.4.0.tar",
                    "firmware",
                    "ballot-box-v2",
                    "1.4.0",
                ),
                // Signed, but its custom fields say another name.
                signed(
                    "firmware/ballot-box-v2/9.9.9.tar",
                    "firmware",
                    "ballot-box-v2",
                    "1.0.0",
                ),
            ],
        );
        let t = v
            .target(
                "firmware/ballot-box-v2/1.4.0.tar",
                ArtifactKind::Firmware,
                &box2,
            )
            .unwrap();
        assert_eq!(t.version, Version::parse("1.4.0").unwrap());
        assert_eq!(t.len, 10);
        assert_eq!(
            t.location,
            TargetLocation::Url(format!(
                "https://ctl:8443/api/v1/tuf/targets/{}.firmware/ballot-box-v2/1.4.0.tar",
                "ab".repeat(32)
            ))
        );
        let err = v
            .target(
                "firmware/ballot-box-v2/1.4.0.tar",
                ArtifactKind::Firmware,
                &laptop,
            )
            .unwrap_err();
        assert!(matches!(err, TufError::WrongModel { .. }), "{err}");
        assert!(
            err.to_string().contains("hardware model ballot-box-v2"),
            "{err}"
        );
        let err = v
            .target(
                "firmware/ballot-box-v2/1.4.0.tar",
                ArtifactKind::Agent,
                &box2,
            )
            .unwrap_err();
        assert!(matches!(err, TufError::WrongArtifact { .. }), "{err}");
        let err = v
            .target(
                "firmware/ballot-box-v2/9.9.9.tar",
                ArtifactKind::Firmware,
                &box2,
            )
            .unwrap_err();
        assert!(matches!(err, TufError::BadCustom { .. }), "{err}");
        let err = v
            .target(
                "firmware/ballot-box-v2/2.0.0.tar",
                ArtifactKind::Firmware,
                &box2,
            )
            .unwrap_err();
        assert!(matches!(err, TufError::NoSuchTarget { .. }), "{err}");
    }

    #[test]
    fn latest_is_the_newest_version_for_the_model() {
        let box2 = Model::parse("ballot-box-v2").unwrap();
        let v = verified(
            TargetLayout::HashPrefixedBasename,
            vec![
                signed(
                    "firmware/ballot-box-v2/1.10.0.tar",
                    "firmware",
                    "ballot-box-v2",
                    "1.10.0",
                ),
                signed(
                    "firmware/ballot-box-v2/1.9.0.tar",
                    "firmware",
                    "ballot-box-v2",
                    "1.9.0",
                ),
                signed(
                    "firmware/id-laptop/7.0.0.tar",
                    "firmware",
                    "id-laptop",
                    "7.0.0",
                ),
                signed(
                    "agent/ballot-box-v2/8.0.0",
                    "agent",
                    "ballot-box-v2",
                    "8.0.0",
                ),
            ],
        );
        let t = v.latest(ArtifactKind::Firmware, &box2).unwrap();
        assert_eq!(t.name, "firmware/ballot-box-v2/1.10.0.tar");
        // The TUF specification's layout: the hash prefixes the base name.
        assert_eq!(
            t.location,
            TargetLocation::Url(format!(
                "https://ctl:8443/api/v1/tuf/targets/firmware/ballot-box-v2/{}.1.10.0.tar",
                "ab".repeat(32)
            ))
        );
        assert!(v
            .latest(ArtifactKind::Firmware, &Model::parse("other").unwrap())
            .is_none());
    }

    #[test]
    fn https_without_the_fleet_ca_or_over_http_is_refused_before_any_request() {
        let e = Endpoints::for_source(&Source::Https {
            base: "https://ctl:8443/api/v1/tuf".into(),
            ca_pem: Vec::new(),
        })
        .unwrap_err();
        assert!(matches!(e, TufError::BadSource { .. }), "{e}");
        let e = Endpoints::for_source(&Source::Https {
            base: "http://ctl:8080/api/v1/tuf".into(),
            ca_pem: b"-----BEGIN CERTIFICATE-----".to_vec(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("must be https://"), "{e}");
    }

    #[test]
    fn metadata_file_names_name_their_role() {
        assert_eq!(role_of_url("http://h/metadata/3.root.json"), "root");
        assert_eq!(
            role_of_url("file:///r/metadata/timestamp.json"),
            "timestamp"
        );
        assert_eq!(role_of_url("http://h/m/12.snapshot.json"), "snapshot");
        assert_eq!(role_of_url("http://h/m/2.targets.json"), "targets");
    }
}
