//! `fleet-agent tuf …`: the agent's TUF verifier behind the public TUF
//! conformance client protocol (tuf-conformance's `CLIENT-CLI.md`), so that
//! independent suites can test it:
//!
//! - `--metadata-dir D init ROOT`: trust ROOT (copied to `D/root.json`);
//!   no network.
//! - `--metadata-dir D --metadata-url U refresh`: the TUF client workflow
//!   for the top-level roles (the same code as the agent's updates:
//!   [`crate::update::tuf`]), the trusted metadata kept in `D` under
//!   unversioned names (`root.json`, `timestamp.json`, …).
//! - `… --target-name P [--target-name P2 …] --target-base-url T
//!   --target-dir TD download`: refresh, then each target in order,
//!   stopping at the first failure; one already in `TD` with the signed
//!   length and SHA-256 is not fetched again. A target is read at most to
//!   its signed length (endless data is cut off) and kept only if its hash
//!   is the signed one. Files in `TD` are named by the target path,
//!   percent-encoded into one file name.
//!
//! Exit code 0 when everything succeeded, 1 otherwise (the reason on
//! standard error). Plain `http://` is allowed here only, for test
//! repositories on loopback; the agent's own updates use HTTPS with the
//! fleet CA or a directory. Expiry is checked against the system clock.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::update::tuf::{load, Endpoints, TargetLocation, TufError};

#[derive(Debug, clap::Args)]
pub struct TufArgs {
    /// Where the trusted metadata is kept (unversioned names).
    #[arg(long)]
    pub metadata_dir: PathBuf,
    /// The repository's metadata URL (http://, https:// or file://).
    #[arg(long)]
    pub metadata_url: Option<String>,
    /// A target path to download (repeat for several, processed in order).
    #[arg(long = "target-name")]
    pub target_names: Vec<String>,
    /// The repository's targets URL.
    #[arg(long)]
    pub target_base_url: Option<String>,
    /// Where downloaded, verified targets are kept.
    #[arg(long)]
    pub target_dir: Option<PathBuf>,
    /// The CA (PEM) an https:// repository's certificate must come from.
    #[arg(long)]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: TufCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum TufCommand {
    /// Trust this root metadata file (no network).
    Init { trusted_root: PathBuf },
    /// Update the top-level metadata from --metadata-url.
    Refresh,
    /// Refresh, then download each --target-name into --target-dir.
    Download,
}

#[derive(Debug, thiserror::Error)]
pub enum TufCliError {
    #[error("{what} is required for this command")]
    Missing { what: &'static str },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON metadata: {reason}")]
    NotMetadata { path: PathBuf, reason: String },
    #[error(transparent)]
    Tuf(#[from] TufError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TufCliError + '_ {
    move |source| TufCliError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Run one command; `now_ms` is the time expiry is checked against. Returns
/// what to print on success.
pub async fn run(args: &TufArgs, now_ms: u64) -> Result<String, TufCliError> {
    match &args.command {
        TufCommand::Init { trusted_root } => init(&args.metadata_dir, trusted_root),
        TufCommand::Refresh => {
            let url = args.metadata_url.as_deref().ok_or(TufCliError::Missing {
                what: "--metadata-url",
            })?;
            let endpoints = Endpoints::urls(url, None, ca_pem(args)?)?;
            let v = load(
                &endpoints,
                &args.metadata_dir,
                &args.metadata_dir.join("root.json"),
                now_ms,
            )
            .await?;
            Ok(format!(
                "refreshed: root v{}, timestamp v{}, snapshot v{}, targets v{}",
                v.versions.root, v.versions.timestamp, v.versions.snapshot, v.versions.targets
            ))
        }
        TufCommand::Download => download(args, now_ms).await,
    }
}

fn ca_pem(args: &TufArgs) -> Result<Option<Vec<u8>>, TufCliError> {
    args.ca
        .as_ref()
        .map(|p| std::fs::read(p).map_err(io(p)))
        .transpose()
}

fn init(dir: &Path, trusted_root: &Path) -> Result<String, TufCliError> {
    let bytes = std::fs::read(trusted_root).map_err(io(trusted_root))?;
    serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| TufCliError::NotMetadata {
        path: trusted_root.to_owned(),
        reason: e.to_string(),
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dest = dir.join("root.json");
    std::fs::write(&dest, &bytes).map_err(io(&dest))?;
    Ok(format!(
        "initialised {} with {}",
        dir.display(),
        trusted_root.display()
    ))
}

/// The file a target is kept in: its path percent-encoded into one name
/// (`/` included), so no target path reaches outside the target directory.
pub fn local_name(target: &str) -> String {
    let mut out = String::with_capacity(target.len());
    for (i, b) in target.bytes().enumerate() {
        // A leading dot is encoded too: "." and ".." are no file names.
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') || (b == b'.' && i > 0) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn download(args: &TufArgs, now_ms: u64) -> Result<String, TufCliError> {
    let url = args.metadata_url.as_deref().ok_or(TufCliError::Missing {
        what: "--metadata-url",
    })?;
    let base = args
        .target_base_url
        .as_deref()
        .ok_or(TufCliError::Missing {
            what: "--target-base-url",
        })?;
    let dir = args.target_dir.as_deref().ok_or(TufCliError::Missing {
        what: "--target-dir",
    })?;
    if args.target_names.is_empty() {
        return Err(TufCliError::Missing {
            what: "--target-name",
        });
    }
    let endpoints = Endpoints::urls(url, Some(base), ca_pem(args)?)?;
    let verified = load(
        &endpoints,
        &args.metadata_dir,
        &args.metadata_dir.join("root.json"),
        now_ms,
    )
    .await?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut report = Vec::new();
    for name in &args.target_names {
        let (len, sha256, location) = verified
            .raw(name)
            .ok_or_else(|| TufError::NoSuchTarget { name: name.clone() })?;
        let dest = dir.join(local_name(name));
        if already_there(&dest, len, &sha256) {
            report.push(format!("{name}: already present"));
            continue;
        }
        fetch_target(&endpoints, name, &location, len, &sha256, &dest).await?;
        report.push(format!("{name}: {len} bytes"));
    }
    Ok(report.join("\n"))
}

fn sha256_file(path: &Path) -> Option<(u64, String)> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).ok()?;
        if n == 0 {
            break;
        }
        len += n as u64;
        hash.update(&buf[..n]);
    }
    Some((len, hex::encode(hash.finish().as_ref())))
}

fn already_there(dest: &Path, len: u64, sha256: &str) -> bool {
    sha256_file(dest).is_some_and(|(l, h)| l == len && h.eq_ignore_ascii_case(sha256))
}

/// A target's bytes, at most `len` of them (more is endless data), into
/// `DEST.part`, then checked and renamed.
async fn fetch_target(
    endpoints: &Endpoints,
    name: &str,
    location: &TargetLocation,
    len: u64,
    sha256: &str,
    dest: &Path,
) -> Result<(), TufCliError> {
    let mut part_name = dest.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let mut file = std::fs::File::create(&part).map_err(io(&part))?;
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut have = 0u64;
    let mut take = |bytes: &[u8]| -> Result<(), TufCliError> {
        have += bytes.len() as u64;
        if have > len {
            return Err(TufError::TooLong {
                name: name.to_owned(),
                limit: len,
            }
            .into());
        }
        hash.update(bytes);
        file.write_all(bytes).map_err(io(&part))
    };
    let fetched = match location {
        TargetLocation::File(path) => read_file_bounded(path, len, &mut take),
        TargetLocation::Url(url) => read_url_bounded(endpoints, url, &mut take).await,
    };
    let checked = fetched.and_then(|()| {
        if have != len {
            return Err(TufError::LengthMismatch {
                name: name.to_owned(),
                expected: len,
                actual: have,
            }
            .into());
        }
        let actual = hex::encode(hash.clone().finish().as_ref());
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(TufError::HashMismatch {
                name: name.to_owned(),
                expected: sha256.to_ascii_lowercase(),
                actual,
            }
            .into());
        }
        Ok(())
    });
    if let Err(e) = checked {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, dest).map_err(io(dest))
}

fn read_file_bounded(
    path: &Path,
    len: u64,
    take: &mut dyn FnMut(&[u8]) -> Result<(), TufCliError>,
) -> Result<(), TufCliError> {
    let f = std::fs::File::open(path).map_err(io(path))?;
    // One byte more than signed: enough to see that there is more.
    let mut f = std::io::Read::take(f, len.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = std::io::Read::read(&mut f, &mut buf).map_err(io(path))?;
        if n == 0 {
            return Ok(());
        }
        take(&buf[..n])?;
    }
}

async fn read_url_bounded(
    endpoints: &Endpoints,
    url: &str,
    take: &mut dyn FnMut(&[u8]) -> Result<(), TufCliError>,
) -> Result<(), TufCliError> {
    let http = endpoints.http_client().ok_or_else(|| TufError::BadSource {
        url: url.to_owned(),
        reason: "targets over HTTP need an HTTP metadata URL".into(),
    })?;
    let unreachable = |reason: String| TufError::Unreachable {
        url: url.to_owned(),
        reason,
    };
    let mut resp = http
        .get(url)
        .send()
        .await
        .map_err(|e| unreachable(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(unreachable(format!("HTTP {}", resp.status().as_u16())).into());
    }
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| unreachable(e.without_url().to_string()))?
    {
        take(&chunk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_path_is_one_file_name() {
        assert_eq!(
            local_name("firmware/ballot-box-v2/1.4.0.tar"),
            "firmware%2Fballot-box-v2%2F1.4.0.tar"
        );
        assert_eq!(local_name("../x"), "%2E.%2Fx");
        assert_eq!(local_name(".."), "%2E.");
        assert_eq!(local_name("a b"), "a%20b");
    }
}
