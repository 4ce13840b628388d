//! A full and a read-only disk: a real `fleet-agent` keeps its state
//! directory (and so its outbox) on a small tmpfs, reports to a real
//! controller over mutual TLS, and makes events through the test hook
//! (whose directory is elsewhere). (a) The tmpfs is filled while the agent
//! runs; (b) it is remounted read-only (with the agent stopped: Linux
//! refuses while the outbox is open for writing) and the agent started on
//! it, then it is made writable again. Each time the agent keeps running, one
//! `storage-fault` event arrives with the events made meanwhile, and once
//! the disk works again events are committed to disk again. Every event
//! made reaches the controller's store exactly once.
//!
//! Needs root (mount); CI runs as root. A refused mount fails the test and
//! says why.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_tests::{eventually, within, Controller, Proc};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";
const ID: &str = "BB-02-000099";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "this test needs root to mount a tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: dir.to_owned(),
        }
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a test failed with the agent running): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn hook_event(dir: &Path, name: &str) {
    let body = format!(
        r#"{{"error":{{"message":"disk-test {name} {}"}}}}"#,
        "x".repeat(600)
    );
    fleet_tests::hook_event(dir, name, &body).unwrap();
}

fn hook_events(dir: &Path, prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i:03}");
            hook_event(dir, &name);
            name
        })
        .collect()
}

/// Fill the file system at `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0x5a_u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    // The last pages: a byte at a time is not needed, tmpfs allocates pages.
    let _ = f.sync_all();
    path
}

/// Lines of `output` that say an event was committed to the outbox's file.
fn durable_commits(output: &str) -> usize {
    output
        .lines()
        .filter(|l| l.contains("event committed to the outbox") && l.contains("durable=true"))
        .count()
}

async fn wait_for_lines(agent: &mut Proc, needle: &str, n: usize, what: &str) {
    let found = eventually(Duration::from_secs(60), what, || async {
        let count = agent.output().matches(needle).count();
        (count >= n)
            .then_some(())
            .ok_or_else(|| format!("{count} of {n} \"{needle}\" lines"))
    })
    .await;
    if let Err(e) = found {
        panic!("{e}\nagent:\n{}", agent.output());
    }
}

async fn wait_for_durable(agent: &mut Proc, n: usize, what: &str) {
    let found = eventually(Duration::from_secs(60), what, || async {
        let count = durable_commits(&agent.output());
        (count >= n)
            .then_some(())
            .ok_or_else(|| format!("{count} of {n} durable commits"))
    })
    .await;
    if let Err(e) = found {
        panic!("{e}\nagent:\n{}", agent.output());
    }
}

/// The device's events in the controller's store: (kind, body) -> count.
async fn stored(pool: &sqlx::SqlitePool) -> Result<HashMap<(String, String), i64>, String> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT kind, body_json, COUNT(*) FROM events WHERE device = ?1 GROUP BY kind, boot, seq",
    )
    .bind(ID)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    let mut out: HashMap<(String, String), i64> = HashMap::new();
    for (kind, body, n) in rows {
        *out.entry((kind, body)).or_default() += n;
    }
    Ok(out)
}

fn count_made(stored: &HashMap<(String, String), i64>, name: &str) -> i64 {
    let needle = format!("disk-test {name} ");
    stored
        .iter()
        .filter(|((kind, body), _)| kind == "error" && body.contains(&needle))
        .map(|(_, n)| *n)
        .sum()
}

fn faults(stored: &HashMap<(String, String), i64>) -> i64 {
    stored
        .iter()
        .filter(|((kind, _), _)| kind == "storage-fault")
        .map(|(_, n)| *n)
        .sum()
}

async fn all_arrived(
    pool: &sqlx::SqlitePool,
    made: &[String],
    faults_expected: i64,
    what: &str,
    agent: &Proc,
) -> HashMap<(String, String), i64> {
    eventually(Duration::from_secs(60), what, || async {
        let got = stored(pool).await?;
        let missing: Vec<&String> = made.iter().filter(|n| count_made(&got, n) == 0).collect();
        if missing.is_empty() && faults(&got) >= faults_expected {
            Ok(got)
        } else {
            Err(format!(
                "{} of {} events missing (e.g. {:?}), {} storage faults",
                missing.len(),
                made.len(),
                missing.first(),
                faults(&got)
            ))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent:\n{}", agent.output()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_then_read_only_disk_is_reported_survived_and_recovered_from() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let hook = tempfile::tempdir().unwrap();
    let dev = ctl
        .enrol(
            ID,
            "IR-02",
            "IR-02-SARI",
            &format!(
                "[mqtt]\nbackoff_base_ms = 100\nbackoff_max_ms = 500\n\
                 [outbox]\ndisk_retry_ms = 300\n\
                 [test_hooks]\nevent_dir = \"{}\"\n",
                hook.path().display()
            ),
        )
        .unwrap();
    // The enrolled state directory moves to a 2 MiB tmpfs.
    let mnt = Tmpfs::mount(&dev.dir.path().join("small-disk"), "2m");
    let state = mnt.dir.join("state");
    std::fs::create_dir(&state).unwrap();
    for entry in std::fs::read_dir(dev.dir.path().join("state")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), state.join(entry.file_name())).unwrap();
    }
    let text = std::fs::read_to_string(&dev.config).unwrap();
    let old_state = dev.dir.path().join("state");
    let config = dev.dir.path().join("agent-small-disk.toml");
    std::fs::write(
        &config,
        text.replace(
            &format!("state_dir = \"{}\"", old_state.display()),
            &format!("state_dir = \"{}\"", state.display()),
        ),
    )
    .unwrap();
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains(&state.display().to_string()));

    let mut agent = Proc::spawn(
        "fleet-agent",
        &["run", "--config", config.to_str().unwrap()],
        &[("FLEET_AGENT_LOG", "info,fleet_agent::outbox=debug")],
    )
    .unwrap();
    agent
        .wait_for_line("outbox opened", Duration::from_secs(20))
        .unwrap();
    let mut made = hook_events(hook.path(), "before", 5);
    wait_for_durable(&mut agent, 6, "the boot event and 5 events on disk").await;

    let url = format!("sqlite://{}", data.path().join("fleet.db").display());
    let pool = within(10, "opening the store", sqlx::SqlitePool::connect(&url))
        .await
        .unwrap();

    // (a) The disk fills up while events keep coming: a burst that the
    // outbox's file must grow for.
    let filler = fill(&mnt.dir);
    let full = hook_events(hook.path(), "full", 60);
    made.extend(full.iter().cloned());
    wait_for_lines(
        &mut agent,
        "the outbox cannot be written",
        1,
        "the full disk noticed",
    )
    .await;
    all_arrived(
        &pool,
        &made,
        1,
        "a storage fault and the events made on a full disk",
        &agent,
    )
    .await;
    // Space again: the agent finds out on its own and writes to disk again.
    std::fs::remove_file(&filler).unwrap();
    wait_for_lines(
        &mut agent,
        "the outbox's disk works again",
        1,
        "recovery from a full disk",
    )
    .await;
    let before = durable_commits(&agent.output());
    made.extend(hook_events(hook.path(), "after-full", 5));
    wait_for_durable(
        &mut agent,
        before + 5,
        "events on disk again after the full disk",
    )
    .await;

    // (b) The disk turns read-only. Linux refuses to remount a file system
    // read-only while a file on it is open for writing (the outbox is), so
    // the agent is stopped, the disk remounted, and the agent started on
    // it: its outbox cannot be opened, and it runs in memory.
    let first_run = agent.output();
    assert!(
        first_run.contains("the outbox cannot be written"),
        "{first_run}"
    );
    agent.terminate(Duration::from_secs(30)).unwrap();
    mnt.remount("ro");
    let mut agent = Proc::spawn(
        "fleet-agent",
        &["run", "--config", config.to_str().unwrap()],
        &[("FLEET_AGENT_LOG", "info,fleet_agent::outbox=debug")],
    )
    .unwrap();
    made.extend(hook_events(hook.path(), "ro", 10));
    wait_for_lines(
        &mut agent,
        "the outbox cannot be opened",
        1,
        "the read-only disk noticed",
    )
    .await;
    all_arrived(
        &pool,
        &made,
        2,
        "a second storage fault and the events made on a read-only disk",
        &agent,
    )
    .await;
    mnt.remount("rw");
    wait_for_lines(
        &mut agent,
        "the outbox's disk works again",
        1,
        "recovery from a read-only disk",
    )
    .await;
    let before = durable_commits(&agent.output());
    made.extend(hook_events(hook.path(), "after-ro", 5));
    wait_for_durable(
        &mut agent,
        before + 5,
        "events on disk again after the read-only disk",
    )
    .await;

    let got = all_arrived(&pool, &made, 2, "every event made", &agent).await;
    let out = agent.output();
    assert!(!out.contains("panicked"), "{out}");
    for name in &made {
        assert_eq!(
            count_made(&got, name),
            1,
            "{name} stored {} times",
            count_made(&got, name)
        );
    }
    assert_eq!(faults(&got), 2, "one storage fault per episode");
    println!(
        "{} events made across a full and a read-only disk, each stored once; 2 storage faults",
        made.len()
    );
    pool.close().await;
    drop(agent);
    drop(mnt);
    ctl.stop().unwrap();
}
