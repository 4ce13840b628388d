//! The TUF attack matrix (issue 9): each attack repository is refused with a
//! reason that says what was wrong, by the agent's [`TufClient`] (over a
//! directory and over HTTP, the transport the agent uses with the fleet
//! CA) and by the `fleet-agent tuf` conformance CLI where it fits. The
//! attack repositories are built by python-tuf (`tests/tuf/make_attacks.py`),
//! an implementation independent of ours; `good` is the control that the
//! same code accepts when nothing is wrong.
//!
//! A target's bytes are downloaded by the agent with `download.rs` and the
//! signed `Expected { len, sha256 }`; the endless-data and hash-mismatch
//! cases check that path too.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::OnceLock;

use fleet_agent::download::{self, DownloadConfig, DownloadError, Expected};
use fleet_agent::update::tuf::{
    Source, TargetLocation, TufClient, TufError, Verified, VerifiedTarget,
};
use fleet_protocol::{ArtifactKind, Model};
use fleet_tests::{run_bin, within};

/// The attack repositories, made once per test run; `None` (and a loud
/// message) when python-tuf is not installed.
fn attacks() -> Option<&'static Path> {
    static DIR: OnceLock<Option<tempfile::TempDir>> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuf/make_attacks.py");
        let out = std::process::Command::new("python3")
            .arg(&script)
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(dir),
            Ok(o) => {
                let stderr = String::from_utf8_lossy(&o.stderr);
                // Under CI the matrix must run: scripts/ensure-deps installs
                // python-tuf, so its absence there is a failure, not a skip.
                if stderr.contains("ModuleNotFoundError") && std::env::var_os("CI").is_none() {
                    eprintln!(
                        "\n!!!!!!!! SKIPPED: python-tuf is not installed, the TUF attack matrix did not run.\n!!!!!!!! Install it with scripts/ensure-deps (pip install tuf).\n{stderr}"
                    );
                    None
                } else {
                    panic!("make_attacks.py failed: {stderr}");
                }
            }
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("\n!!!!!!!! SKIPPED: python3 cannot run ({e}); the TUF attack matrix did not run.");
                None
            }
            Err(e) => panic!("python3 cannot run under CI: {e}"),
        }
    })
    .as_ref()
    .map(|d| d.path())
}

fn steps(scenario: &Path) -> usize {
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(scenario.join("scenario.json")).unwrap()).unwrap();
    s["steps"].as_u64().unwrap() as usize
}

fn model() -> Model {
    Model::parse("ballot-box-v2").unwrap()
}

/// A static file server for the attack directory (plain HTTP on a free
/// loopback port), stopped when dropped.
struct StaticServer {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl StaticServer {
    fn start(root: &Path) -> Self {
        Self::start_with(root, None)
    }

    /// With `tls`, HTTPS (the certificate in it); else plain HTTP.
    fn start_with(root: &Path, tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let root = root.to_owned();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let root = root.clone();
                        let tls = tls.clone();
                        std::thread::spawn(move || {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
                                .unwrap();
                            match tls {
                                None => serve(conn, &root),
                                Some(cfg) => {
                                    let Ok(session) = rustls::ServerConnection::new(cfg) else {
                                        return;
                                    };
                                    serve(rustls::StreamOwned::new(session, conn), &root);
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn https_url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}/{path}", self.port)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }
}

impl Drop for StaticServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One request: `GET /endless` streams zeros with no length until the
/// client hangs up; any other path is a file under `root` or 404.
fn serve(mut conn: impl Read + Write, root: &Path) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        match conn.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if path == "/endless" {
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        );
        let chunk = vec![0u8; 64 * 1024];
        while conn.write_all(&chunk).is_ok() {}
        return;
    }
    let rel = percent_decode(path.trim_start_matches('/'));
    let file = root.join(&rel);
    match (rel.contains(".."), std::fs::read(&file)) {
        (false, Ok(body)) if file.is_file() => {
            let _ = conn.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nDate: {}\r\nConnection: close\r\n\r\n",
                    body.len(),
                    http_date(fleet_agent::unix_ms())
                )
                .as_bytes(),
            );
            let _ = conn.write_all(&body);
        }
        _ => {
            let _ = conn.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    }
}

/// An HTTP `Date` (IMF-fixdate) for Unix milliseconds.
fn http_date(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(m - 1) as usize];
    format!(
        "{weekday}, {d:02} {month} {y} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[derive(Clone, Copy, Debug)]
enum Via {
    Dir,
    Http,
}

/// What the download of a signed target must be: its signed length and hash.
fn signed_expected(t: &VerifiedTarget) -> Expected {
    Expected {
        len: Some(t.len),
        sha256: Some(t.sha256.clone()),
    }
}

/// Download `url` to `dest` through the agent's download path with `cfg`;
/// it must succeed with `t`'s signed length and hash.
async fn download_signed(url: &str, t: &VerifiedTarget, dest: &Path, cfg: &DownloadConfig) {
    let expected = signed_expected(t);
    within(
        30,
        "download",
        download::download(url, dest, &expected, cfg, &mut |_| {}),
    )
    .await
    .unwrap();
}

/// Refresh through every step of `name` with one datastore, as a device
/// would over time; every step before the last must be accepted. The last
/// step is checked at `now + last_step_later_ms`.
async fn through_client(
    name: &str,
    via: Via,
    server: &StaticServer,
    last_step_later_ms: u64,
) -> Result<Verified, TufError> {
    let root = attacks().expect("checked by the caller");
    let scenario = root.join(name);
    let datastore = tempfile::tempdir().unwrap();
    let n = steps(&scenario);
    let now = fleet_agent::unix_ms();
    for step in 1..=n {
        let source = match via {
            Via::Dir => Source::Dir(scenario.join(format!("steps/{step}"))),
            Via::Http => Source::PlainHttp {
                base: server.url(&format!("{name}/steps/{step}")),
            },
        };
        let client = TufClient::new(
            source,
            datastore.path().join("tuf"),
            scenario.join("root.json"),
        );
        let at = if step == n {
            now + last_step_later_ms
        } else {
            now
        };
        let result = within(30, "a TUF refresh", client.refresh(at)).await;
        if step < n {
            result.unwrap_or_else(|e| panic!("{name} via {via:?}: step {step} refused: {e}"));
        } else {
            return result;
        }
    }
    unreachable!("every scenario has a step")
}

/// The reason the client gave for refusing the last step of `name`, by
/// both sources (they must agree).
async fn client_refusal(name: &str, server: &StaticServer, later_ms: u64) -> (TufError, String) {
    let mut seen = Vec::new();
    for via in [Via::Dir, Via::Http] {
        match through_client(name, via, server, later_ms).await {
            Ok(_) => panic!("{name} via {via:?}: the attack was accepted"),
            Err(e) => seen.push(e),
        }
    }
    let http = seen.pop().unwrap();
    let dir = seen.pop().unwrap();
    let text = dir.to_string();
    eprintln!("{name}: {text}");
    assert_eq!(
        std::mem::discriminant(&dir),
        std::mem::discriminant(&http),
        "{name}: directory said {dir}, HTTP said {http}"
    );
    (dir, text)
}

/// `fleet-agent tuf`: init with the scenario's root, refresh through every
/// step over HTTP (all but the last must succeed), the last step being
/// `download` of the scenario's target when `download` is set. Returns the
/// last step's (success, stderr).
async fn through_cli(name: &str, server: &StaticServer, download: bool) -> (bool, String) {
    let root = attacks().expect("checked by the caller");
    let scenario = root.join(name);
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("metadata");
    let targets = work.path().join("targets");
    let (meta_s, targets_s) = (meta.display().to_string(), targets.display().to_string());
    let root_s = scenario.join("root.json").display().to_string();
    let (ok, _, err) = cli(&["tuf", "--metadata-dir", &meta_s, "init", &root_s]).await;
    assert!(ok, "{name}: init failed: {err}");
    let n = steps(&scenario);
    let target = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(scenario.join("scenario.json")).unwrap(),
    )
    .unwrap()["target"]
        .as_str()
        .map(str::to_owned);
    for step in 1..=n {
        let murl = server.url(&format!("{name}/steps/{step}/metadata"));
        let turl = server.url(&format!("{name}/steps/{step}/targets"));
        let mut args = vec!["tuf", "--metadata-dir", &meta_s, "--metadata-url", &murl];
        let t;
        if step == n && download {
            t = target
                .clone()
                .expect("a download scenario names its target");
            args.extend([
                "--target-name",
                &t,
                "--target-base-url",
                &turl,
                "--target-dir",
                &targets_s,
                "download",
            ]);
        } else {
            args.push("refresh");
        }
        let (ok, _, err) = cli(&args).await;
        if step < n {
            assert!(ok, "{name}: CLI step {step} failed: {err}");
        } else {
            eprintln!("{name} (CLI): {}", err.trim());
            return (ok, err);
        }
    }
    unreachable!("every scenario has a step")
}

async fn cli(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    within(
        60,
        "fleet-agent tuf",
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            run_bin("fleet-agent", &refs).unwrap()
        }),
    )
    .await
    .unwrap()
}

macro_rules! need_python_tuf {
    () => {
        match attacks() {
            Some(dir) => dir,
            None => return,
        }
    };
}

fn assert_has(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "{w:?} not in: {text}");
    }
}

/// How the CLI takes an attack's last step.
#[derive(Clone, Copy)]
enum CliStep {
    /// `refresh` (the attack is in the metadata).
    Refresh,
    /// `download` of the scenario's target.
    Download,
}

/// One attack of the matrix and the reasons it must be refused with.
struct Attack {
    name: &'static str,
    /// The last step is checked this much later (trusted time).
    later_ms: u64,
    /// The kind of error the client must give (by both sources).
    refused_as: fn(&TufError) -> bool,
    /// Words the client's reason must contain.
    reason: &'static [&'static str],
    /// How the CLI takes the last step and words its stderr must contain;
    /// `None` where the CLI does not fit the attack.
    cli: Option<(CliStep, &'static [&'static str])>,
}

/// Serve the attack repositories, refresh through [`TufClient`] over a
/// directory and over HTTP, run the CLI, and assert the reasons given.
/// Does nothing when python-tuf is not installed (`attacks` says so).
async fn assert_refused(attack: Attack) {
    let dir = need_python_tuf!();
    let name = attack.name;
    let server = StaticServer::start(dir);
    let (e, text) = client_refusal(name, &server, attack.later_ms).await;
    assert!((attack.refused_as)(&e), "{name}: {e:?}");
    assert_has(&text, attack.reason);
    if let Some((step, words)) = attack.cli {
        assert_cli_refuses(name, &server, step, words).await;
    }
}

/// The CLI refuses the last step of `name`, taken as `step`, with `words`
/// in its reason.
async fn assert_cli_refuses(name: &str, server: &StaticServer, step: CliStep, words: &[&str]) {
    let download = matches!(step, CliStep::Download);
    let (ok, err) = through_cli(name, server, download).await;
    assert!(!ok, "{name}: the CLI accepted the attack");
    assert_has(&err, words);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_repository_is_accepted_and_its_target_downloads() {
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    for via in [Via::Dir, Via::Http] {
        let v = through_client("good", via, &server, 0)
            .await
            .unwrap_or_else(|e| panic!("good via {via:?}: {e}"));
        let t = v
            .target(
                "firmware/ballot-box-v2/1.0.0.tar",
                ArtifactKind::Firmware,
                &model(),
            )
            .unwrap();
        assert_eq!(t.version.to_string(), "1.0.0");
        let bytes = match &t.location {
            TargetLocation::File(p) => std::fs::read(p).unwrap(),
            TargetLocation::Url(u) => {
                let out = tempfile::tempdir().unwrap();
                let dest = out.path().join("image");
                let cfg = DownloadConfig {
                    allow_plain_http: true,
                    ..Default::default()
                };
                download_signed(u, &t, &dest, &cfg).await;
                std::fs::read(dest).unwrap()
            }
        };
        assert_eq!(bytes.len() as u64, t.len);
        assert!(String::from_utf8_lossy(&bytes).contains("image firmware/ballot-box-v2/1.0.0.tar"));
    }
    let (ok, err) = through_cli("good", &server, true).await;
    assert!(ok, "the CLI refused the control repository: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_does_not_fetch_a_target_it_already_has() {
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("m").display().to_string();
    let tdir = work.path().join("t");
    let tdir_s = tdir.display().to_string();
    let root = dir.join("good/root.json").display().to_string();
    assert!(
        cli(&["tuf", "--metadata-dir", &meta, "init", &root])
            .await
            .0
    );
    let murl = server.url("good/steps/1/metadata");
    let turl = server.url("good/steps/1/targets");
    let name = "firmware/ballot-box-v2/1.0.0.tar";
    let download = [
        "tuf",
        "--metadata-dir",
        &meta,
        "--metadata-url",
        &murl,
        "--target-name",
        name,
        "--target-base-url",
        &turl,
        "--target-dir",
        &tdir_s,
        "download",
    ];
    let (ok, out, err) = cli(&download).await;
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("{name}: ")) && !out.contains("already"),
        "{out}"
    );
    let (ok, out, err) = cli(&download).await;
    assert!(ok, "{err}");
    assert!(out.contains("already present"), "{out}");
    // The metadata is kept under unversioned names.
    for f in [
        "root.json",
        "timestamp.json",
        "snapshot.json",
        "targets.json",
    ] {
        assert!(work.path().join("m").join(f).is_file(), "{f} missing");
    }
    // A changed file of the same name is fetched again.
    let kept = std::fs::read_dir(&tdir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&kept, b"tampered").unwrap();
    let (ok, out, err) = cli(&download).await;
    assert!(ok, "{err}");
    assert!(!out.contains("already present"), "{out}");
    assert!(String::from_utf8_lossy(&std::fs::read(&kept).unwrap()).contains("image firmware"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_rollback_is_refused() {
    assert_refused(Attack {
        name: "rollback-root",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "root"),
        reason: &["root metadata refused", "version 1 of root", "version 2"],
        cli: Some((CliStep::Refresh, &["version 1 of root"])),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_rollback_is_refused() {
    assert_refused(Attack {
        name: "rollback-timestamp",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "timestamp"),
        reason: &[
            "timestamp metadata refused",
            "version 1 of timestamp",
            "version 2",
        ],
        cli: Some((CliStep::Refresh, &["version 1 of timestamp"])),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_rollback_is_refused() {
    assert_refused(Attack {
        name: "rollback-snapshot",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { .. }),
        reason: &["Snapshot version 1 in timestamp 3 is less than 2"],
        cli: Some((
            CliStep::Refresh,
            &["Snapshot version 1 in timestamp 3 is less than 2"],
        )),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targets_rollback_is_refused() {
    assert_refused(Attack {
        name: "rollback-targets",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "snapshot"),
        reason: &["targets.json version 2 in snapshot 2 is greater than version 1 in snapshot 3"],
        cli: Some((CliStep::Refresh, &["targets.json version 2"])),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_timestamp_replayed_after_it_expired_is_refused() {
    // Accepted while fresh; two hours later (trusted time) the same
    // timestamp is a freeze attack.
    assert_refused(Attack {
        name: "freeze-replay",
        later_ms: 2 * 3_600_000,
        refused_as: |e| matches!(e, TufError::Expired { role, .. } if role == "timestamp"),
        reason: &["timestamp metadata expired at", "freeze attack"],
        cli: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_metadata_is_refused_and_not_kept() {
    let dir = need_python_tuf!();
    assert_refused(Attack {
        name: "expired-timestamp",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Expired { role, .. } if role == "timestamp"),
        reason: &["timestamp metadata expired at"],
        cli: Some((CliStep::Refresh, &["timestamp metadata expired at"])),
    })
    .await;
    // TUF: expired metadata is discarded, not kept as the trusted copy.
    let datastore = tempfile::tempdir().unwrap();
    let scenario = dir.join("expired-timestamp");
    let client = TufClient::new(
        Source::Dir(scenario.join("steps/1")),
        datastore.path().to_owned(),
        scenario.join("root.json"),
    );
    let refused = refresh_now(&client).await;
    assert!(matches!(refused, Err(TufError::Expired { .. })));
    assert!(datastore.path().join("root.json").is_file());
    assert!(!datastore.path().join("timestamp.json").exists());
    assert!(!datastore.path().join("latest_known_time.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_and_matched_metadata_is_refused() {
    assert_refused(Attack {
        name: "mix-and-match",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "targets"),
        reason: &["targets metadata version mismatch: fetched 1, expected 2"],
        cli: Some((
            CliStep::Refresh,
            &["version mismatch: fetched 1, expected 2"],
        )),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_metadata_is_cut_off() {
    assert_refused(Attack {
        name: "endless-timestamp",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "timestamp"),
        reason: &["Maximum size 65536"],
        cli: Some((CliStep::Refresh, &["Maximum size 65536"])),
    })
    .await;
}

/// The signed target of a download scenario, through the client.
async fn signed_target(name: &str, server: &StaticServer) -> VerifiedTarget {
    let v = through_client(name, Via::Http, server, 0)
        .await
        .unwrap_or_else(|e| panic!("{name}: the metadata is fine, refused: {e}"));
    v.target(
        "firmware/ballot-box-v2/1.0.0.tar",
        ArtifactKind::Firmware,
        &model(),
    )
    .unwrap()
}

async fn agent_download(
    url: &str,
    expected: &Expected,
) -> (
    Result<download::Downloaded, DownloadError>,
    tempfile::TempDir,
) {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("image");
    let cfg = DownloadConfig {
        allow_plain_http: true,
        max_attempts_without_progress: 1,
        ..Default::default()
    };
    let r = within(
        60,
        "download",
        download::download(url, &dest, expected, &cfg, &mut |_| {}),
    )
    .await;
    (r, out)
}

/// The agent's download of the signed target of `name` from its URL: it
/// must fail and leave no file. Returns (the target, what was expected of
/// the download, the error).
async fn refused_download(
    name: &str,
    server: &StaticServer,
) -> (VerifiedTarget, Expected, DownloadError) {
    let t = signed_target(name, server).await;
    let TargetLocation::Url(url) = &t.location else {
        panic!("an HTTP source gives URLs")
    };
    let expected = signed_expected(&t);
    let (r, out) = agent_download(url, &expected).await;
    let e = r.unwrap_err();
    eprintln!("{name} (download.rs): {e}");
    assert!(!out.path().join("image").exists());
    (t, expected, e)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_longer_than_signed_is_cut_off() {
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    // The server announces a megabyte more than the signed length.
    let (t, expected, e) = refused_download("endless-target", &server).await;
    assert!(
        matches!(e, DownloadError::TooLong { limit, .. } if limit == t.len),
        "{e}"
    );
    assert_has(&e.to_string(), &["endless data"]);
    // A server that announces nothing and never stops is cut off too.
    let (r, _out) = agent_download(&server.url("endless"), &expected).await;
    let e = r.unwrap_err();
    eprintln!("endless-target (download.rs): {e}");
    assert!(
        matches!(e, DownloadError::TooLong { limit, .. } if limit == t.len),
        "{e}"
    );
    // And by the CLI.
    let signed = format!("signed {} bytes", t.len);
    let words = ["endless data", &signed];
    assert_cli_refuses("endless-target", &server, CliStep::Download, &words).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_another_hash_is_refused() {
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    let (t, _, e) = refused_download("hash-mismatch", &server).await;
    assert!(
        matches!(e, DownloadError::HashMismatch { ref expected, .. } if *expected == t.sha256),
        "{e}"
    );
    let words = ["SHA-256", &t.sha256];
    assert_cli_refuses("hash-mismatch", &server, CliStep::Download, &words).await;
}

/// An attack whose targets metadata no release key signed: the client
/// refuses the targets role, the CLI's reason has `cli_words`.
fn targets_threshold_not_met(name: &'static str, cli_words: &'static [&'static str]) -> Attack {
    Attack {
        name,
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "targets"),
        reason: &["Signature threshold of 1 not met for role targets (0 valid signatures)"],
        cli: Some((CliStep::Download, cli_words)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_target_is_refused() {
    let cli_words = &["Signature threshold of 1 not met for role targets"];
    assert_refused(targets_threshold_not_met("unsigned-target", cli_words)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_signed_with_the_wrong_key_is_refused() {
    let cli_words = &["not met for role targets"];
    assert_refused(targets_threshold_not_met("wrong-key", cli_words)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_keys_alone_cannot_ship_a_target() {
    let cli_words = &["not met for role targets"];
    assert_refused(targets_threshold_not_met(
        "compromised-controller",
        cli_words,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_below_its_threshold_of_two_is_refused() {
    // Step 1 (root v2 signed by both keys) is accepted by through_client.
    assert_refused(Attack {
        name: "root-below-threshold",
        later_ms: 0,
        refused_as: |e| matches!(e, TufError::Metadata { role, .. } if role == "root"),
        reason: &["Signature threshold of 2 not met for role root (1 valid signatures)"],
        cli: Some((
            CliStep::Refresh,
            &["Signature threshold of 2 not met for role root"],
        )),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_for_another_hardware_model_is_refused() {
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    let v = through_client("other-model", Via::Dir, &server, 0)
        .await
        .unwrap();
    let e = v
        .target(
            "firmware/id-laptop/1.0.0.tar",
            ArtifactKind::Firmware,
            &model(),
        )
        .unwrap_err();
    eprintln!("other-model: {e}");
    assert!(matches!(e, TufError::WrongModel { .. }), "{e:?}");
    assert_has(
        &e.to_string(),
        &["hardware model id-laptop", "this device is ballot-box-v2"],
    );
    // Nor is it ever the newest image for this model.
    assert_eq!(
        v.latest(ArtifactKind::Firmware, &model()).unwrap().name,
        "firmware/ballot-box-v2/1.0.0.tar"
    );
}

// ---------------------------------------------------------------------------
// Repositories written by our own signer (fleet-repo: the release team's
// `release` and the controller's `publish::Repo`), read by the agent.

/// A release key set (3 root keys, threshold 2), a controller repository,
/// and two signed images: one for ballot boxes, one for identity laptops.
struct Release {
    tmp: tempfile::TempDir,
    keys: std::path::PathBuf,
    repo_dir: std::path::PathBuf,
    repo: fleet_repo::publish::Repo,
    /// The ballot box image's bytes.
    image: Vec<u8>,
}

const BOX_TARGET: &str = "firmware/ballot-box-v2/1.0.0.tar";
const LAPTOP_TARGET: &str = "firmware/id-laptop/1.0.0.tar";

fn release() -> Release {
    use fleet_protocol::firmware::TargetCustom;
    use fleet_repo::release::{self, InitOptions};
    let now = std::time::SystemTime::now();
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("release-keys");
    let opts = InitOptions {
        root_keys: 3,
        root_threshold: 2,
        ..Default::default()
    };
    release::init(&keys, &opts, now).unwrap();
    let repo_dir = tmp.path().join("controller/firmware/repo");
    fleet_repo::publish::Repo::init(
        &repo_dir,
        &std::fs::read(keys.join("root.json")).unwrap(),
        &std::fs::read(keys.join("targets.json")).unwrap(),
        &release::snapshot_key_path(&keys),
        &release::timestamp_key_path(&keys),
        now,
    )
    .unwrap();
    let repo = fleet_repo::publish::Repo::open(
        &repo_dir,
        &release::snapshot_key_path(&keys),
        &release::timestamp_key_path(&keys),
    )
    .unwrap();
    let mut box_image = Vec::new();
    for (model, fill) in [("id-laptop", b'L'), ("ballot-box-v2", b'B')] {
        let bytes: Vec<u8> = std::iter::repeat_n(fill, 50_000)
            .chain(format!("version=1.0.0 model={model}\n").into_bytes())
            .collect();
        let path = tmp.path().join(format!("{model}.tar"));
        std::fs::write(&path, &bytes).unwrap();
        let custom = TargetCustom {
            artifact: ArtifactKind::Firmware,
            model: Model::parse(model).unwrap(),
            version: fleet_protocol::Version::parse("1.0.0").unwrap(),
        };
        let signed = release::sign(&keys, &path, &custom, now, &mut |_, _| {}).unwrap();
        repo.stage_image(&signed.sha256, &path).unwrap();
        box_image = bytes;
    }
    repo.publish_targets(
        &std::fs::read(release::targets_json_path(&keys)).unwrap(),
        now,
    )
    .unwrap();
    Release {
        tmp,
        keys,
        repo_dir,
        repo,
        image: box_image,
    }
}

/// A device's client for the controller's repository directory of `r`,
/// trusting root 1 (as installed), its datastore at `datastore`.
fn device_client(r: &Release, datastore: std::path::PathBuf) -> TufClient {
    TufClient::new(
        Source::Dir(r.repo_dir.clone()),
        datastore,
        r.keys.join("1.root.json"),
    )
}

/// A refresh at the system's time, bounded.
async fn refresh_now(client: &TufClient) -> Result<Verified, TufError> {
    within(30, "refresh", client.refresh(fleet_agent::unix_ms())).await
}

/// A CA, and a server certificate for 127.0.0.1 it signed: (CA PEM, TLS config).
fn tls_pair() -> (Vec<u8>, std::sync::Arc<rustls::ServerConfig>) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem().into_bytes(), std::sync::Arc::new(cfg))
}

fn file_sha256(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_repo_release_verifies_from_the_controller_over_https_and_from_an_export() {
    let r = release();
    let datastore = r.tmp.path().join("device/update/tuf");
    let trusted_root = r.keys.join("1.root.json");
    let box_model = model();

    // Over HTTPS from the controller's repository, the fleet CA the only root.
    let (ca_pem, tls) = tls_pair();
    let server = StaticServer::start_with(&r.repo_dir, Some(tls));
    let client = TufClient::new(
        Source::Https {
            base: server.https_url(""),
            ca_pem: ca_pem.clone(),
        },
        datastore.clone(),
        trusted_root.clone(),
    );
    let v = within(
        30,
        "refresh over HTTPS",
        client.refresh(fleet_agent::unix_ms()),
    )
    .await
    .unwrap();
    assert_eq!(v.versions.root, 1);
    let t = v
        .target(BOX_TARGET, ArtifactKind::Firmware, &box_model)
        .unwrap();
    assert_eq!(t.len, r.image.len() as u64);
    assert_eq!(t.sha256, file_sha256(&r.image));
    // The controller's clock came with the answers (for the trusted clock).
    let date = client.server_date_ms().expect("a Date header was seen");
    assert!(date.abs_diff(fleet_agent::unix_ms()) < 120_000, "{date}");
    // The image downloads through the agent's download path with the CA.
    let TargetLocation::Url(url) = &t.location else {
        panic!("HTTPS gives a URL")
    };
    let dest = r.tmp.path().join("device/image");
    let cfg = DownloadConfig {
        ca_pem: Some(ca_pem),
        ..Default::default()
    };
    download_signed(url, &t, &dest, &cfg).await;
    assert_eq!(std::fs::read(&dest).unwrap(), r.image);
    // The laptop's image is signed too, but not for this device.
    let e = v
        .target(LAPTOP_TARGET, ArtifactKind::Firmware, &box_model)
        .unwrap_err();
    assert!(matches!(e, TufError::WrongModel { .. }), "{e}");
    assert_eq!(
        v.latest(ArtifactKind::Firmware, &box_model).unwrap().name,
        BOX_TARGET
    );

    // From an export (a USB stick), with no network at all.
    let usb = r.tmp.path().join("usb");
    r.repo.export(&usb, &mut |_, _| {}).unwrap();
    let offline = TufClient::new(
        Source::Dir(usb),
        r.tmp.path().join("other-device"),
        trusted_root,
    );
    let v = within(
        30,
        "refresh from an export",
        offline.refresh(fleet_agent::unix_ms()),
    )
    .await
    .unwrap();
    let t = v
        .target(BOX_TARGET, ArtifactKind::Firmware, &box_model)
        .unwrap();
    let TargetLocation::File(path) = &t.location else {
        panic!("a directory gives a file")
    };
    assert_eq!(std::fs::read(path).unwrap(), r.image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repository_server_with_a_certificate_of_another_ca_is_refused() {
    let r = release();
    let (_their_ca, tls) = tls_pair();
    let (fleet_ca, _) = tls_pair();
    let server = StaticServer::start_with(&r.repo_dir, Some(tls));
    let client = TufClient::new(
        Source::Https {
            base: server.https_url(""),
            ca_pem: fleet_ca,
        },
        r.tmp.path().join("device/tuf"),
        r.keys.join("1.root.json"),
    );
    let e = refresh_now(&client).await.unwrap_err();
    eprintln!("another CA: {e}");
    assert!(matches!(e, TufError::Unreachable { .. }), "{e:?}");
    assert_has(&e.to_string(), &["certificate"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_with_only_its_own_keys_cannot_ship_a_target() {
    let dir = need_python_tuf!();
    let _ = dir;
    let r = release();
    let datastore = r.tmp.path().join("device/tuf");
    let client = device_client(&r, datastore);
    let before = refresh_now(&client).await.unwrap();
    // The attacker: python-tuf with the controller's snapshot and
    // timestamp keys, rewriting the repository the controller serves.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tuf/controller_attack.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(&r.repo_dir)
        .arg(fleet_repo::release::snapshot_key_path(&r.keys))
        .arg(fleet_repo::release::timestamp_key_path(&r.keys))
        .args(["firmware/ballot-box-v2/6.6.6.tar", "ballot-box-v2", "6.6.6"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = refresh_now(&client).await.unwrap_err();
    eprintln!("compromised controller (fleet-repo repository): {e}");
    assert!(
        matches!(e, TufError::Metadata { ref role, .. } if role == "targets"),
        "{e:?}"
    );
    assert_has(
        &e.to_string(),
        &["Signature threshold of 1 not met for role targets (0 valid signatures)"],
    );
    // The forged targets version is one above what the device trusted.
    let forged: serde_json::Value = serde_json::from_slice(
        &std::fs::read(r.repo_dir.join(format!(
            "metadata/{}.targets.json",
            before.versions.targets + 1
        )))
        .unwrap(),
    )
    .unwrap();
    assert!(forged["signed"]["targets"]["firmware/ballot-box-v2/6.6.6.tar"].is_object());
    // A device seeing the repository for the first time refuses it too.
    let again = device_client(&r, r.tmp.path().join("fresh-device"));
    assert!(refresh_now(&again).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_follows_a_targets_key_rotation_signed_by_two_of_three_root_keys() {
    use fleet_repo::release::{self, Role};
    let r = release();
    let datastore = r.tmp.path().join("device/tuf");
    let client = device_client(&r, datastore.clone());
    refresh_now(&client).await.unwrap();
    let now = std::time::SystemTime::now();
    let two_of_three = [
        release::root_key_path(&r.keys, 1),
        release::root_key_path(&r.keys, 3),
    ];
    let rotated = release::rotate(&r.keys, Role::Targets, &two_of_three, now).unwrap();
    assert_eq!(rotated.root_version, 2);
    r.repo
        .publish_root(&std::fs::read(&rotated.root_path).unwrap(), now)
        .unwrap();
    r.repo
        .publish_targets(
            &std::fs::read(release::targets_json_path(&r.keys)).unwrap(),
            now,
        )
        .unwrap();
    let v = refresh_now(&client).await.unwrap();
    assert_eq!(v.versions.root, 2);
    assert!(v
        .target(BOX_TARGET, ArtifactKind::Firmware, &model())
        .is_ok());
    // After a restart the device starts from root 2 (kept in its datastore),
    // not from the root 1 it was installed with.
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(datastore.join("root.json")).unwrap()).unwrap();
    assert_eq!(stored["signed"]["version"], 2);
    let restarted = device_client(&r, datastore);
    let v = refresh_now(&restarted).await.unwrap();
    assert_eq!(v.versions.root, 2);
}

// ---------------------------------------------------------------------------
// Trusted time: a device whose clock is a year off.

const YEAR_MS: u64 = 365 * 86_400_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_clock_a_year_off_is_corrected_by_the_controllers_time() {
    use fleet_agent::update::clock::{ClockFile, TrustedClock};
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    let started = std::time::Instant::now();
    let mono_ms = || started.elapsed().as_millis() as u64;
    for (ahead, label) in [(true, "a year ahead"), (false, "a year behind")] {
        let system = || {
            if ahead {
                fleet_agent::unix_ms() + YEAR_MS
            } else {
                fleet_agent::unix_ms() - YEAR_MS
            }
        };
        let datastore = tempfile::tempdir().unwrap();
        let client = TufClient::new(
            Source::PlainHttp {
                base: server.url("good/steps/1"),
            },
            datastore.path().to_owned(),
            dir.join("good/root.json"),
        );
        let mut clock = TrustedClock::new(0);
        let first = within(
            30,
            "refresh",
            client.refresh(clock.now(system(), mono_ms())),
        )
        .await;
        if ahead {
            // Before the controller's time is known, a clock a year ahead
            // sees the one-day timestamp as expired.
            assert!(
                matches!(first, Err(TufError::Expired { .. })),
                "{label}: {first:?}"
            );
        }
        let controller = client
            .server_date_ms()
            .expect("the repository's answers carry a Date");
        clock.observe_controller(controller, mono_ms());
        let now = clock.now(system(), mono_ms());
        assert!(
            now.abs_diff(fleet_agent::unix_ms()) < 60_000,
            "{label}: trusted now {now} is not the controller's time"
        );
        within(30, "refresh", client.refresh(now))
            .await
            .unwrap_or_else(|e| panic!("{label}, with the controller's time: {e}"));
    }

    // After a restart, with the clock a year behind and no controller yet,
    // the persisted floor still makes a replayed, expired timestamp expired.
    let floor = {
        let mut clock = TrustedClock::new(0);
        clock.observe_controller(fleet_agent::unix_ms(), mono_ms());
        clock.now(fleet_agent::unix_ms() - YEAR_MS, mono_ms());
        clock.file()
    };
    let state = tempfile::tempdir().unwrap();
    fleet_agent::update::clock::write(&state.path().join("clock.json"), &floor).unwrap();
    let persisted: ClockFile =
        fleet_agent::update::clock::read(&state.path().join("clock.json")).unwrap();
    let mut rebooted = TrustedClock::from_file(persisted);
    let now = rebooted.now(fleet_agent::unix_ms() - YEAR_MS, 0);
    let client = TufClient::new(
        Source::Dir(dir.join("expired-timestamp/steps/1")),
        state.path().join("tuf"),
        dir.join("expired-timestamp/root.json"),
    );
    let e = within(30, "refresh", client.refresh(now))
        .await
        .unwrap_err();
    assert!(
        matches!(e, TufError::Expired { ref role, .. } if role == "timestamp"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_downloads_targets_in_order_and_stops_at_the_first_failure() {
    let dir = need_python_tuf!();
    let server = StaticServer::start(dir);
    let work = tempfile::tempdir().unwrap();
    let meta = work.path().join("m").display().to_string();
    let tdir = work.path().join("t");
    let tdir_s = tdir.display().to_string();
    // init: exit 1 for a root that cannot be read, no network either way.
    let missing = work.path().join("no-such-root.json").display().to_string();
    let (ok, _, err) = cli(&["tuf", "--metadata-dir", &meta, "init", &missing]).await;
    assert!(!ok, "init accepted a missing root");
    assert_has(&err, &["no-such-root.json"]);
    let root = dir.join("good/root.json").display().to_string();
    assert!(
        cli(&["tuf", "--metadata-dir", &meta, "init", &root])
            .await
            .0
    );
    let murl = server.url("good/steps/1/metadata");
    let turl = server.url("good/steps/1/targets");
    let download = |names: &[&str]| {
        let mut args: Vec<String> = ["tuf", "--metadata-dir", &meta, "--metadata-url", &murl]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for n in names {
            args.extend(["--target-name".to_owned(), (*n).to_owned()]);
        }
        args.extend(
            [
                "--target-base-url",
                &turl,
                "--target-dir",
                &tdir_s,
                "download",
            ]
            .iter()
            .map(|s| (*s).to_owned()),
        );
        args
    };
    let kept = |name: &str| tdir.join(fleet_agent::tuf_cli::local_name(name));
    let first_fails = download(&["firmware/ballot-box-v2/9.9.9.tar", BOX_TARGET]);
    let refs: Vec<&str> = first_fails.iter().map(String::as_str).collect();
    let (ok, _, err) = cli(&refs).await;
    assert!(!ok);
    assert_has(
        &err,
        &["no target named \"firmware/ballot-box-v2/9.9.9.tar\""],
    );
    assert!(
        !kept(BOX_TARGET).exists(),
        "a target after the failure was fetched"
    );
    let both = download(&[BOX_TARGET, LAPTOP_TARGET]);
    let refs: Vec<&str> = both.iter().map(String::as_str).collect();
    let (ok, out, err) = cli(&refs).await;
    assert!(ok, "{err}");
    let (a, b) = (
        out.find(BOX_TARGET).expect("first reported"),
        out.find(LAPTOP_TARGET).expect("second reported"),
    );
    assert!(a < b, "{out}");
    assert!(kept(BOX_TARGET).is_file() && kept(LAPTOP_TARGET).is_file());
}
