//! The I/O around [`crate::shard`]: a `fleet-sim run` parent starts its
//! shards as child processes of its own binary (`fleet-sim shard --index i
//! --of N …`, the same run flags), reads their progress lines into one
//! progress bar, merges their connection files, forwards SIGTERM/SIGINT to
//! them and waits for them; a child that dies stops the others and fails
//! the run. A child stops when its parent's end of its standard input
//! closes (the parent is gone, even killed outright), so no shard outlives
//! the run.

use std::ffi::OsString;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::reconnects::Connections;
use crate::run::StartProgress;
use crate::shard::{ChildLine, FleetProgress};

#[derive(Debug, thiserror::Error)]
pub enum SuperviseError {
    #[error("cannot start shard {index} ({exe}): {source}")]
    Spawn {
        index: usize,
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("shard {index} (pid {pid}) ended with {status} while the fleet was running; the other shards were stopped")]
    ChildDied {
        index: usize,
        pid: u32,
        status: String,
    },
    #[error("cannot wait for shard {index} (pid {pid}): {source}")]
    Wait {
        index: usize,
        pid: u32,
        source: std::io::Error,
    },
}

/// Raise this process's open-files soft limit to its hard limit (rlimit):
/// every simulated device is one connection. Returns the limit in force.
pub fn raise_open_files() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => n,
        Err(e) => {
            warn!(error = %e, "cannot raise the open-files limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft)
        }
    }
}

/// The connections file of shard `index` beside the fleet's `out`.
pub fn shard_connections(out: &Path, index: usize) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(format!(".shard{index}"));
    PathBuf::from(s)
}

/// Merge the shards' connection files (those that exist yet) into one.
pub fn merge_connections(out: &Path, shards: usize) -> std::io::Result<Connections> {
    let mut all = Connections::default();
    for i in 0..shards {
        let f = shard_connections(out, i);
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let c: Connections = serde_json::from_slice(&bytes).map_err(std::io::Error::other)?;
        all.devices.extend(c.devices);
    }
    Ok(all)
}

fn write_connections(path: &Path, c: &Connections) -> std::io::Result<()> {
    let json = serde_json::to_vec(c).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(tmp, path)
}

/// A shard's side: print its progress for the parent every half second
/// until every device started, then the `running` line.
pub fn report_progress(progress: Arc<StartProgress>) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering::Relaxed;
    tokio::spawn(async move {
        loop {
            let line = ChildLine::Progress {
                started: progress.started.load(Relaxed),
                reported: progress.reported.load(Relaxed),
            };
            println!("{}", line.format());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// A shard's side: tell the parent every device is up.
pub fn report_running(reported: usize) {
    println!("{}", ChildLine::Running { reported }.format());
}

/// A shard's side: resolves when the parent's end of standard input
/// closes (the parent ended, however it ended).
pub async fn parent_gone() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 64];
        while let Ok(n) = std::io::Read::read(&mut stdin, &mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

fn signal(pid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// What the parent runs.
pub struct Sharded {
    /// This binary.
    pub exe: PathBuf,
    /// The `run` flags as given (after `run`); each child gets them, then
    /// its own `--state-dir`, `--connections-out`, `--index` and `--of`.
    pub run_args: Vec<OsString>,
    pub slices: Vec<Range<usize>>,
    /// Where the parent saved the identities.
    pub state_dir: PathBuf,
    pub connections_out: Option<PathBuf>,
    pub show_progress: bool,
}

enum FromChild {
    Line(usize, ChildLine),
    Exit(usize, std::io::Result<ExitStatus>),
}

/// Start the shards, show their progress as one, and run until `shutdown`
/// (then SIGTERM to each shard, and wait for all) or until a shard dies
/// (then the others are stopped and the run fails).
pub async fn supervise(s: Sharded, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let n = s.slices.len();
    let (tx, mut rx) = mpsc::channel::<FromChild>(1024);
    let mut pids = Vec::with_capacity(n);
    // Each child's standard input: kept open while the parent lives.
    let mut stdins = Vec::with_capacity(n);
    let stop_all = |pids: &[u32]| {
        for pid in pids {
            signal(*pid, "-TERM");
        }
    };
    for i in 0..n {
        let mut cmd = tokio::process::Command::new(&s.exe);
        cmd.arg("shard")
            .args(&s.run_args)
            .arg("--state-dir")
            .arg(&s.state_dir)
            .args(["--index", &i.to_string(), "--of", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        if let Some(out) = &s.connections_out {
            cmd.arg("--connections-out").arg(shard_connections(out, i));
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(source) => {
                stop_all(&pids);
                return Err(SuperviseError::Spawn {
                    index: i,
                    exe: s.exe.clone(),
                    source,
                }
                .into());
            }
        };
        let pid = child.id().unwrap_or(0);
        info!(shard = i, pid, devices = s.slices[i].len(), "shard started");
        pids.push(pid);
        stdins.push(child.stdin.take());
        if let Some(out) = child.stdout.take() {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    match ChildLine::parse(&l) {
                        Some(line) => {
                            if tx.send(FromChild::Line(i, line)).await.is_err() {
                                return;
                            }
                        }
                        None => println!("{l}"),
                    }
                }
            });
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = tx.send(FromChild::Exit(i, status)).await;
        });
    }
    drop(tx);

    let mut progress = FleetProgress::new(&s.slices);
    let pb = if s.show_progress {
        let pb = indicatif::ProgressBar::new(progress.devices() as u64);
        pb.set_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:40}] ({elapsed})")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut announced = false;
    let mut merge = tokio::time::interval(Duration::from_secs(2));
    tokio::pin!(shutdown);
    let failure = loop {
        tokio::select! {
            () = &mut shutdown => break None,
            msg = rx.recv() => match msg {
                Some(FromChild::Line(i, line)) => {
                    progress.on(i, line);
                    pb.set_position(progress.reported() as u64);
                    pb.set_message(progress.line());
                    if !announced && progress.all_running() {
                        announced = true;
                        pb.finish_and_clear();
                        info!(
                            devices = progress.devices(),
                            reported = progress.reported(),
                            shards = n,
                            pids = ?pids,
                            "simulated fleet running; Ctrl-C stops it"
                        );
                    }
                }
                Some(FromChild::Exit(i, status)) => {
                    let status = match status {
                        Ok(st) => st.to_string(),
                        Err(e) => format!("an error ({e})"),
                    };
                    break Some(SuperviseError::ChildDied { index: i, pid: pids[i], status });
                }
                None => break None,
            },
            _ = merge.tick() => {
                if let Some(out) = &s.connections_out {
                    match merge_connections(out, n) {
                        Ok(c) => if let Err(e) = write_connections(out, &c) {
                            warn!(error = %e, "cannot write {}", out.display());
                        },
                        Err(e) => warn!(error = %e, "cannot read the shards' connection files"),
                    }
                }
            }
        }
    };
    pb.finish_and_clear();
    if let Some(f) = &failure {
        tracing::error!(error = %f, "stopping the other shards");
    } else {
        info!(shards = n, "stopping the shards");
    }
    stop_all(&pids);
    // Wait for every shard (those still running get SIGKILL after 60 s).
    let mut left: std::collections::BTreeSet<usize> = (0..n).collect();
    if let Some(SuperviseError::ChildDied { index, .. }) = &failure {
        left.remove(index);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut first_error = None;
    while !left.is_empty() {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(FromChild::Exit(i, status))) => {
                left.remove(&i);
                if let Err(source) = status {
                    first_error.get_or_insert(SuperviseError::Wait {
                        index: i,
                        pid: pids[i],
                        source,
                    });
                }
            }
            Ok(Some(FromChild::Line(..))) => {}
            Ok(None) => break,
            Err(_) => {
                for i in &left {
                    warn!(
                        shard = i,
                        pid = pids[*i],
                        "shard did not stop within 60 s: killed"
                    );
                    signal(pids[*i], "-KILL");
                }
                deadline_passed(&mut rx, &mut left).await;
                break;
            }
        }
    }
    drop(stdins);
    if let Some(out) = &s.connections_out {
        let c = merge_connections(out, n)?;
        write_connections(out, &c)?;
    }
    match failure.or(first_error) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

async fn deadline_passed(
    rx: &mut mpsc::Receiver<FromChild>,
    left: &mut std::collections::BTreeSet<usize>,
) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !left.is_empty() {
        match tokio::time::timeout_at(end, rx.recv()).await {
            Ok(Some(FromChild::Exit(i, _))) => {
                left.remove(&i);
            }
            Ok(Some(_)) => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_connection_files_merge_into_one() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("connections.json");
        for (i, dev) in [(0, "a"), (2, "c")] {
            let r = crate::reconnects::Recorder::default();
            r.record(dev, 10 + i as u64);
            r.write(&shard_connections(&out, i)).unwrap();
        }
        assert_eq!(
            shard_connections(&out, 2),
            dir.path().join("connections.json.shard2")
        );
        let c = merge_connections(&out, 3).unwrap();
        assert_eq!(c.devices.len(), 2);
        assert_eq!(c.devices["c"], vec![12]);
    }
}
