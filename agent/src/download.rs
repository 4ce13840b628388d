//! Resumable HTTPS downloads (artifacts, and later firmware images) over
//! links that drop: the bytes go to `DEST.part`; after a cut, a timeout or
//! a stall the download asks again from where it stopped (`Range:
//! bytes=N-` with `If-Range` holding the server's ETag) after a backoff
//! with full jitter; `DEST` appears (fsynced, renamed, directory fsynced)
//! only once the whole file is there and its length and SHA-256 are the
//! expected ones.
//!
//! What to do with each answer is decided by [`plan`], which does no I/O
//! (unit-tested below); [`download`] carries it out. A server that ignores
//! `Range` (200 to a range request) or whose file changed (If-Range fails:
//! 200) is handled by starting again from byte 0; a `Content-Range` that
//! does not start where we asked is an error, never stitched.
//!
//! The ETag of a `.part` is kept beside it (`DEST.part.etag`), so a
//! download resumes after the agent restarts too. Without a validator the
//! bytes already there are not trusted and the download starts again.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::SeedableRng;

use crate::backoff::Backoff;

/// What the file must be; unknown parts are not checked.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub len: Option<u64>,
    /// Lower-case hexadecimal SHA-256.
    pub sha256: Option<String>,
}

/// How a download behaves on a bad link.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// The fleet CA (PEM); HTTPS trusts it and nothing else.
    pub ca_pem: Option<Vec<u8>>,
    /// Plain `http://` is refused unless this is set (insecure-dev).
    pub allow_plain_http: bool,
    /// How long a connection (TCP and TLS) may take.
    pub connect_timeout: Duration,
    /// How long the answer's headers, or the next piece of the body, may
    /// take before the request is given up and made again.
    pub stall_timeout: Duration,
    /// Backoff between attempts: from `backoff_base`, doubling to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Attempts in a row that bring no new byte before giving up.
    pub max_attempts_without_progress: u32,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            ca_pem: None,
            allow_plain_http: false,
            connect_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            max_attempts_without_progress: 10,
        }
    }
}

/// Where a download stands, given to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes in `DEST.part`.
    pub have: u64,
    /// The file's length, once the server said it.
    pub total: Option<u64>,
    /// Requests made so far.
    pub requests: u32,
}

/// A completed download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    pub len: u64,
    pub sha256: String,
    /// Requests made (1 when nothing went wrong).
    pub requests: u32,
    /// Requests that went on from a byte past 0 (206 answers).
    pub resumed: u32,
    /// Times the bytes already there were thrown away (the server ignored
    /// Range, or the file changed).
    pub restarts: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("{url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the fleet CA is not usable: {reason}")]
    BadCa { reason: String },
    #[error("the server refused the download: HTTP {status}")]
    ServerRefused { status: u16 },
    #[error("asked for bytes from {asked_from}, the server answered Content-Range {got:?}")]
    BadContentRange { asked_from: u64, got: String },
    #[error("gave up after {attempts} attempts in a row without progress, with {have} of {} bytes: {last}", total.map_or_else(|| "?".to_owned(), |t| t.to_string()))]
    Truncated {
        have: u64,
        total: Option<u64>,
        attempts: u32,
        last: String,
    },
    #[error("the file is {actual} bytes, expected {expected}")]
    LengthMismatch { expected: u64, actual: u64 },
    #[error("endless data: the server sent {received} bytes or more, past the limit of {limit}; cut off")]
    TooLong { limit: u64, received: u64 },
    #[error("the file's SHA-256 is {actual}, expected {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("no space left for {path}")]
    DiskFull { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What an answer to a request from byte `asked_from` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// 206 from where we asked: append; the file has `total` bytes.
    Append { total: u64 },
    /// 200: the whole file follows; throw away what we have.
    Restart { total: Option<u64> },
    /// 416 for a range starting exactly at the end: we have it all.
    Complete { total: u64 },
    /// 416 otherwise: what we have is not a prefix of the file; ask for it whole.
    AskWhole,
    /// A transient refusal (5xx, 408, 429): try again after the backoff.
    Retry { status: u16 },
}

/// Decide what an answer means (no I/O). `content_length` is the body's
/// length header, `content_range` the `Content-Range` header.
pub fn plan(
    asked_from: u64,
    status: u16,
    content_range: Option<&str>,
    content_length: Option<u64>,
) -> Result<Step, DownloadError> {
    let bad = || DownloadError::BadContentRange {
        asked_from,
        got: content_range.unwrap_or("").to_owned(),
    };
    match status {
        200 => Ok(Step::Restart {
            total: content_length,
        }),
        206 => {
            let (start, end, total) = parse_content_range(content_range.ok_or_else(bad)?)
                .and_then(|(r, t)| Some((r?.0, r?.1, t?)))
                .ok_or_else(bad)?;
            if start != asked_from || end + 1 != total {
                return Err(bad());
            }
            Ok(Step::Append { total })
        }
        416 => match content_range.and_then(parse_content_range) {
            Some((None, Some(total))) if total == asked_from => Ok(Step::Complete { total }),
            _ => Ok(Step::AskWhole),
        },
        408 | 429 | 500..=599 => Ok(Step::Retry { status }),
        _ => Err(DownloadError::ServerRefused { status }),
    }
}

/// A `Content-Range`: the range (`None` for `*`) and the total (`None` for `*`).
type ContentRange = (Option<(u64, u64)>, Option<u64>);

/// `bytes START-END/TOTAL` or `bytes */TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<ContentRange> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    let range = match range.trim() {
        "*" => None,
        r => {
            let (a, b) = r.split_once('-')?;
            let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
            if b < a {
                return None;
            }
            Some((a, b))
        }
    };
    Some((range, total))
}

/// `DEST.part` and `DEST.part.etag`.
pub fn part_paths(dest: &Path) -> (PathBuf, PathBuf) {
    let with = |suffix: &str| {
        let mut s = dest.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    (with(".part"), with(".part.etag"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| {
        if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(28) {
            DownloadError::DiskFull {
                path: path.to_owned(),
            }
        } else {
            DownloadError::Io {
                path: path.to_owned(),
                source,
            }
        }
    }
}

/// The HTTP client of every agent download: HTTPS trusts the fleet CA
/// (`cfg.ca_pem`) and nothing else. The TUF transport
/// ([`crate::update::tuf`]) fetches metadata through it too.
pub fn client(cfg: &DownloadConfig) -> Result<reqwest::Client, DownloadError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &cfg.ca_pem {
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| DownloadError::BadCa {
                reason: e.to_string(),
            })?;
            roots.add(c).map_err(|e| DownloadError::BadCa {
                reason: e.to_string(),
            })?;
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DownloadError::BadCa {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .connect_timeout(cfg.connect_timeout)
        .build()
        .map_err(DownloadError::Client)
}

/// The `.part` being written, with the SHA-256 of its bytes so far.
struct Part {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    hash: aws_lc_rs::digest::Context,
}

impl Part {
    /// Open (or make) the `.part`, hashing what it holds already.
    fn open(path: &Path) -> Result<Self, DownloadError> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(path)
            .map_err(io(path))?;
        let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut len = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(io(path))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            len,
            hash,
        })
    }

    fn truncate(&mut self) -> Result<(), DownloadError> {
        self.file.set_len(0).map_err(io(&self.path))?;
        self.len = 0;
        self.hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), DownloadError> {
        self.file.write_all(bytes).map_err(io(&self.path))?;
        self.hash.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn sync(&self) -> Result<(), DownloadError> {
        self.file.sync_data().map_err(io(&self.path))
    }

    fn sha256(&self) -> String {
        hex::encode(self.hash.clone().finish().as_ref())
    }
}

/// An error and its causes on one line.
pub(crate) fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The limit `have` bytes would pass: the length the server announced or
/// the expected length, whichever is smaller; `None` while within both.
fn over_limit(have: u64, announced: Option<u64>, expected: Option<u64>) -> Option<u64> {
    [announced, expected]
        .into_iter()
        .flatten()
        .min()
        .filter(|limit| have > *limit)
}

/// How one request ended.
enum Attempt {
    /// The body ended where the file does.
    Done,
    /// The connection failed, timed out or stalled; `String` says how.
    Broken(String),
    /// 416 at the end: nothing more to fetch.
    AlreadyComplete,
    /// Ask again from 0 without delay.
    Again,
}

/// Fetch `url` into `dest` (see the module's documentation).
pub async fn download(
    url: &str,
    dest: &Path,
    expected: &Expected,
    cfg: &DownloadConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Downloaded, DownloadError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| DownloadError::BadUrl {
        url: url.to_owned(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "https" if cfg.ca_pem.is_none() => {
            return Err(DownloadError::BadCa {
                reason: "HTTPS needs the fleet CA".into(),
            })
        }
        "https" => {}
        "http" if cfg.allow_plain_http => {}
        _ => {
            return Err(DownloadError::BadUrl {
                url: url.to_owned(),
                reason: "it must start with https:// (http:// only in insecure-dev)".into(),
            })
        }
    }
    let http = client(cfg)?;
    let (part_path, etag_path) = part_paths(dest);
    let mut etag = std::fs::read_to_string(&etag_path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let mut part = Part::open(&part_path)?;
    if etag.is_none() && part.len > 0 {
        // Bytes of unknown origin: not resumed.
        part.truncate()?;
    }
    let mut total: Option<u64> = None;
    let mut done = Downloaded {
        len: 0,
        sha256: String::new(),
        requests: 0,
        resumed: 0,
        restarts: 0,
    };
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
    let mut rng = rand::rngs::SmallRng::from_entropy();
    let mut fruitless = 0u32;
    loop {
        let before = part.len;
        done.requests += 1;
        let outcome = attempt(
            &http, url, &mut part, &mut etag, &etag_path, &mut total, expected, &mut done, cfg,
            progress,
        )
        .await?;
        part.sync()?;
        match outcome {
            Attempt::Done | Attempt::AlreadyComplete => break,
            Attempt::Again => continue,
            Attempt::Broken(why) => {
                if part.len > before {
                    fruitless = 0;
                    backoff.reset();
                } else {
                    fruitless += 1;
                }
                if fruitless >= cfg.max_attempts_without_progress {
                    return Err(DownloadError::Truncated {
                        have: part.len,
                        total,
                        attempts: fruitless,
                        last: why,
                    });
                }
                tracing::info!(have = part.len, ?total, reason = %why, "download interrupted; resuming");
                tokio::time::sleep(backoff.next_delay(&mut rng)).await;
            }
        }
    }
    finish(dest, &part_path, &etag_path, part, expected, done)
}

/// One request from `part.len`; appends what arrives.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    http: &reqwest::Client,
    url: &str,
    part: &mut Part,
    etag: &mut Option<String>,
    etag_path: &Path,
    total: &mut Option<u64>,
    expected: &Expected,
    done: &mut Downloaded,
    cfg: &DownloadConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Attempt, DownloadError> {
    let from = part.len;
    let mut req = http.get(url);
    if from > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={from}-"));
        if let Some(tag) = etag.as_deref() {
            req = req.header(reqwest::header::IF_RANGE, tag);
        }
    }
    let resp = match tokio::time::timeout(cfg.stall_timeout, req.send()).await {
        Err(_) => return Ok(Attempt::Broken("no answer in time".into())),
        Ok(Err(e)) => return Ok(Attempt::Broken(causes(&e.without_url()))),
        Ok(Ok(r)) => r,
    };
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_range = header(reqwest::header::CONTENT_RANGE);
    let new_etag = header(reqwest::header::ETAG);
    let step = plan(
        from,
        resp.status().as_u16(),
        content_range.as_deref(),
        resp.content_length(),
    )?;
    match step {
        Step::Retry { status } => return Ok(Attempt::Broken(format!("HTTP {status}"))),
        Step::AskWhole => {
            part.truncate()?;
            done.restarts += 1;
            return Ok(Attempt::Again);
        }
        Step::Complete { total: t } => {
            *total = Some(t);
            return Ok(Attempt::AlreadyComplete);
        }
        Step::Restart { total: t } => {
            if from > 0 {
                part.truncate()?;
                done.restarts += 1;
            }
            *total = t;
        }
        Step::Append { total: t } => {
            if total.is_some_and(|known| known != t) {
                return Err(DownloadError::LengthMismatch {
                    expected: total.unwrap_or(t),
                    actual: t,
                });
            }
            *total = Some(t);
            done.resumed += 1;
        }
    }
    if *etag != new_etag {
        *etag = new_etag;
        match etag {
            Some(tag) => std::fs::write(etag_path, tag).map_err(io(etag_path))?,
            None => {
                let _ = std::fs::remove_file(etag_path);
            }
        }
    }
    let mut resp = resp;
    loop {
        progress(Progress {
            have: part.len,
            total: *total,
            requests: done.requests,
        });
        match tokio::time::timeout(cfg.stall_timeout, resp.chunk()).await {
            Err(_) => return Ok(Attempt::Broken("the body stalled".into())),
            Ok(Err(e)) => return Ok(Attempt::Broken(causes(&e.without_url()))),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(bytes))) => {
                let after = part.len + bytes.len() as u64;
                // Endless data: a body longer than the server announced, or
                // than the expected (signed) length, is cut off here, before
                // the excess reaches the disk; a server that announces no
                // length at all is bounded by the expected one.
                if let Some(limit) = over_limit(after, *total, expected.len) {
                    let _ = part.truncate();
                    return Err(DownloadError::TooLong {
                        limit,
                        received: after,
                    });
                }
                part.write(&bytes)?;
            }
        }
    }
    match *total {
        Some(t) if part.len < t => Ok(Attempt::Broken(format!(
            "the body ended at {} of {t} bytes",
            part.len
        ))),
        _ => Ok(Attempt::Done),
    }
}

/// Check the whole `.part`; only then give it its name.
fn finish(
    dest: &Path,
    part_path: &Path,
    etag_path: &Path,
    part: Part,
    expected: &Expected,
    mut done: Downloaded,
) -> Result<Downloaded, DownloadError> {
    let discard = || {
        let _ = std::fs::remove_file(part_path);
        let _ = std::fs::remove_file(etag_path);
    };
    done.len = part.len;
    done.sha256 = part.sha256();
    if let Some(len) = expected.len.filter(|l| *l != part.len) {
        discard();
        return Err(DownloadError::LengthMismatch {
            expected: len,
            actual: part.len,
        });
    }
    if let Some(want) = &expected.sha256 {
        if !want.eq_ignore_ascii_case(&done.sha256) {
            discard();
            return Err(DownloadError::HashMismatch {
                expected: want.to_ascii_lowercase(),
                actual: done.sha256,
            });
        }
    }
    part.sync()?;
    drop(part);
    std::fs::rename(part_path, dest).map_err(io(dest))?;
    let _ = std::fs::remove_file(etag_path);
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::sync_dir(dir).map_err(io(dir))?;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_206_from_where_we_asked_is_appended() {
        assert_eq!(
            plan(100, 206, Some("bytes 100-999/1000"), Some(900)).unwrap(),
            Step::Append { total: 1000 }
        );
    }

    #[test]
    fn a_206_from_elsewhere_or_short_of_the_end_is_refused() {
        for cr in [
            "bytes 0-999/1000",
            "bytes 101-999/1000",
            "bytes 100-500/1000",
            "bytes 100-999/*",
            "bytes */1000",
            "garbage",
        ] {
            assert!(
                matches!(
                    plan(100, 206, Some(cr), None),
                    Err(DownloadError::BadContentRange {
                        asked_from: 100,
                        ..
                    })
                ),
                "{cr}"
            );
        }
        assert!(plan(100, 206, None, None).is_err());
    }

    #[test]
    fn a_200_to_a_range_request_starts_again() {
        // A server that ignores Range, or an If-Range that did not match.
        assert_eq!(
            plan(100, 200, None, Some(1000)).unwrap(),
            Step::Restart { total: Some(1000) }
        );
    }

    #[test]
    fn a_416_at_the_end_is_complete_else_ask_for_the_whole() {
        assert_eq!(
            plan(1000, 416, Some("bytes */1000"), None).unwrap(),
            Step::Complete { total: 1000 }
        );
        assert_eq!(
            plan(1200, 416, Some("bytes */1000"), None).unwrap(),
            Step::AskWhole
        );
        assert_eq!(plan(5, 416, None, None).unwrap(), Step::AskWhole);
    }

    #[test]
    fn transient_refusals_are_retried_others_are_errors() {
        for s in [408, 429, 500, 502, 503] {
            assert_eq!(plan(0, s, None, None).unwrap(), Step::Retry { status: s });
        }
        for s in [400, 401, 403, 404, 410] {
            assert!(matches!(
                plan(0, s, None, None),
                Err(DownloadError::ServerRefused { status }) if status == s
            ));
        }
    }

    #[test]
    fn a_body_past_the_announced_or_expected_length_is_over_the_limit() {
        assert_eq!(over_limit(100, Some(100), Some(100)), None);
        assert_eq!(over_limit(101, Some(100), None), Some(100));
        // A server that announces no length is bounded by the expected one.
        assert_eq!(over_limit(101, None, Some(100)), Some(100));
        // A server announcing more than the signed length is bounded by the
        // signed length, not its own claim.
        assert_eq!(over_limit(101, Some(1 << 40), Some(100)), Some(100));
        assert_eq!(over_limit(1 << 40, None, None), None);
    }

    #[test]
    fn the_part_files_sit_beside_the_destination() {
        let (p, e) = part_paths(Path::new("/var/lib/fleet/image.bin"));
        assert_eq!(p, Path::new("/var/lib/fleet/image.bin.part"));
        assert_eq!(e, Path::new("/var/lib/fleet/image.bin.part.etag"));
    }

    #[test]
    fn a_part_is_hashed_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.part");
        let mut p = Part::open(&path).unwrap();
        p.write(b"hello ").unwrap();
        drop(p);
        let mut p = Part::open(&path).unwrap();
        assert_eq!(p.len, 6);
        p.write(b"world").unwrap();
        // SHA-256("hello world")
        assert_eq!(
            p.sha256(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
    }
}
