//! The agent updates its own binary: real `fleet-agent` processes (a copy
//! of the build, installed in the device's directory), a real controller
//! with its managed Mosquitto over mutual TLS.
//!
//! The "new agent" is a stand-in: a shell script that runs the current
//! build with test hooks making it report another version (and, for the bad
//! one, connect to a port where no broker listens). `fleet-agent
//! self-update` swaps the installed binary for it with a trial; the next
//! start must reach the broker within `update.agent_trial_secs`, or the
//! previous binary is put back (byte for byte) and started in place (exec,
//! same pid). Either way the controller gets an `update-result` event with
//! artifact `agent` through the outbox.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleet_tests::{bin_path, eventually, free_port, Controller, EnrolledDevice, Proc};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";
const NEW: &str = "9.9.9";

/// A controller and one enrolled device whose agent is a copy of the build
/// at `installed` (`original`: its bytes).
struct Device {
    /// `None` while stopped (and its broker with it).
    ctl: Option<Controller>,
    data: tempfile::TempDir,
    dev: EnrolledDevice,
    installed: PathBuf,
    original: Vec<u8>,
}

impl Device {
    fn new(id: &str, trial_secs: u64) -> Self {
        let data = tempfile::tempdir().unwrap();
        let ctl = Controller::start(data.path(), &[]).unwrap();
        ctl.import_registry(REGISTRY).unwrap();
        let dev = ctl
            .enrol(
                id,
                "IR-02",
                "IR-02-SARI",
                &format!(
                    "[mqtt]\nbackoff_base_ms = 100\nbackoff_max_ms = 500\n\
                     [update]\nagent_trial_secs = {trial_secs}\n"
                ),
            )
            .unwrap();
        let bin = dev.dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let installed = bin.join("fleet-agent");
        std::fs::copy(bin_path("fleet-agent").unwrap(), &installed).unwrap();
        std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
        let original = std::fs::read(&installed).unwrap();
        Self {
            ctl: Some(ctl),
            data,
            dev,
            installed,
            original,
        }
    }

    fn ctl(&self) -> &Controller {
        self.ctl.as_ref().expect("the controller runs")
    }

    fn stop_controller(&mut self) {
        self.ctl
            .take()
            .expect("the controller runs")
            .stop()
            .unwrap();
    }

    /// Start it again on the same data (and broker port).
    fn start_controller(&mut self) {
        self.ctl = Some(Controller::start(self.data.path(), &[]).unwrap());
    }

    fn update_dir(&self) -> PathBuf {
        self.dev.dir.path().join("state/update")
    }

    /// A stand-in for a rebuilt agent: the build, run with `hooks`.
    fn stand_in(&self, name: &str, hooks: &str) -> PathBuf {
        let path = self.dev.dir.path().join(name);
        let real = bin_path("fleet-agent").unwrap();
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\n\
                 # Stand-in for a rebuilt fleet-agent {NEW}, made by the self-update test;\n\
                 # not a real build. It runs the current build with test hooks that make\n\
                 # it report version {NEW}{}.\n\
                 {hooks} exec {} \"$@\"\n",
                if hooks.contains("BROKER_PORT") {
                    " and connect where no broker listens"
                } else {
                    ""
                },
                real.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A new agent that reports version [`NEW`] and reaches the broker.
    fn good_stand_in(&self) -> PathBuf {
        self.stand_in(
            "fleet-agent-new",
            &format!("FLEET_AGENT__TEST_HOOKS__AGENT_VERSION={NEW}"),
        )
    }

    /// A new agent that reports version [`NEW`] and connects to a free port
    /// where no broker listens.
    fn bad_stand_in(&self) -> PathBuf {
        self.stand_in(
            "fleet-agent-bad",
            &format!(
                "FLEET_AGENT__TEST_HOOKS__AGENT_VERSION={NEW} FLEET_AGENT__TEST_HOOKS__BROKER_PORT={}",
                free_port()
            ),
        )
    }

    /// `INSTALLED self-update --binary FILE --version VERSION`: (success, output).
    fn try_self_update(&self, binary: &Path, version: &str) -> (bool, String) {
        let out = Command::new(&self.installed)
            .args(["self-update", "--binary"])
            .arg(binary)
            .args(["--version", version, "--config"])
            .arg(&self.dev.config)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// `INSTALLED self-update --binary FILE --version NEW`, which must work.
    fn self_update(&self, binary: &Path) {
        let (ok, text) = self.try_self_update(binary, NEW);
        assert!(ok, "self-update failed: {text}");
        assert!(text.contains(&format!("installed agent {NEW}")), "{text}");
        assert_eq!(
            std::fs::read(&self.installed).unwrap(),
            std::fs::read(binary).unwrap(),
            "the new binary is in place"
        );
        assert_eq!(
            std::fs::read(self.update_dir().join("agent.prev")).unwrap(),
            self.original,
            "the previous binary is kept"
        );
        assert!(self.update_dir().join("agent-trial.json").is_file());
    }

    /// `INSTALLED run --config …`, as the service manager starts it.
    fn start(&self) -> Proc {
        let mut cmd = Command::new(&self.installed);
        cmd.args(["run", "--config"])
            .arg(&self.dev.config)
            .env("FLEET_AGENT_LOG", "info");
        Proc::from_command("fleet-agent", cmd).unwrap()
    }

    /// [`Device::start`], then wait until the agent logs `line`.
    fn start_until(&self, line: &str, secs: u64) -> Proc {
        let mut agent = self.start();
        agent
            .wait_for_line(line, Duration::from_secs(secs))
            .unwrap_or_else(|e| panic!("{e}\n{}", agent.output()));
        agent
    }

    /// The trial record's start count, as persisted.
    fn starts(&self) -> u64 {
        let text = std::fs::read(self.update_dir().join("agent-trial.json")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        v["starts"].as_u64().unwrap()
    }

    /// Wait until the controller has the agent update's result and the
    /// device reports `agent` as its version; returns the result event.
    async fn result(&self, agent: &Proc, agent_version: &str) -> serde_json::Value {
        let client = self.ctl().client();
        let id = self.dev.id.clone();
        eventually(
            Duration::from_secs(60),
            "the agent update's result and the reported agent version",
            || async {
                let d = client.device(&id).await.map_err(|e| e.to_string())?;
                let results: Vec<&serde_json::Value> = d
                    .events
                    .iter()
                    .filter(|e| e.kind == "update-result")
                    .map(|e| &e.event["update-result"])
                    .collect();
                let reported = d.state.as_ref().map(|s| s.agent.to_string());
                match (&results[..], reported) {
                    ([one], Some(v)) if v == agent_version => Ok((*one).clone()),
                    _ => Err(format!("results {results:?}, agent {:?}", d.state)),
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\nagent:\n{}", agent.output()))
    }
}

fn build_version() -> String {
    fleet_agent::agent_version().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agent_that_reaches_the_broker_is_committed() {
    let mut d = Device::new("BB-02-000301", 30);
    let good = d.good_stand_in();
    // The device runs its agent while the new one is installed.
    let mut running = d.start_until("connected to broker", 30);
    // Not newer than the running agent: refused, nothing changes.
    let (ok, text) = d.try_self_update(&good, "0.0.1");
    assert!(!ok && text.contains("not newer"), "{text}");
    assert_eq!(std::fs::read(&d.installed).unwrap(), d.original);
    assert!(!d.update_dir().join("agent-trial.json").exists());
    d.self_update(&good);
    // One trial at a time: a second install before the first is decided
    // would keep the new binary as the "previous" one.
    let (ok, text) = d.try_self_update(&good, "9.9.10");
    assert!(!ok && text.contains("on trial already"), "{text}");
    // The running agent goes on with its old binary until the service
    // restarts it; that start is the trial.
    assert!(
        !running.output().contains("agent trial"),
        "{}",
        running.output()
    );
    assert!(running
        .terminate(Duration::from_secs(20))
        .unwrap()
        .success());
    let agent = d.start_until("agent trial: committed", 60);
    let result = d.result(&agent, NEW).await;
    assert_eq!(result["outcome"], "committed", "{result}");
    assert_eq!(result["artifact"], "agent", "{result}");
    assert_eq!(result["version"], NEW, "{result}");
    assert_eq!(result["ok"], true, "{result}");
    // The new binary stays; the trial is over; the previous one is kept.
    assert_eq!(
        std::fs::read(&d.installed).unwrap(),
        std::fs::read(&good).unwrap()
    );
    assert!(!d.update_dir().join("agent-trial.json").exists());
    assert_eq!(
        std::fs::read(d.update_dir().join("agent.prev")).unwrap(),
        d.original
    );
    drop(agent);
    d.stop_controller();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agent_that_cannot_reach_the_broker_is_rolled_back_to_the_same_bytes() {
    let mut d = Device::new("BB-02-000302", 3);
    let bad = d.bad_stand_in();
    d.self_update(&bad);
    let mut agent = d.start();
    let pid = agent.pid();
    agent
        .wait_for_line("agent trial: rolled back", Duration::from_secs(60))
        .unwrap();
    // The previous agent, started in place of the new one, reaches the
    // broker and reports its own version and the rollback.
    let result = d.result(&agent, &build_version()).await;
    assert_eq!(result["outcome"], "rolled-back", "{result}");
    assert_eq!(result["artifact"], "agent", "{result}");
    assert_eq!(result["version"], NEW, "{result}");
    assert_eq!(result["ok"], false, "{result}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains("did not reach the broker within 3 s"),
        "{message}"
    );
    assert_eq!(
        std::fs::read(&d.installed).unwrap(),
        d.original,
        "the previous binary is back, byte for byte"
    );
    assert!(!d.update_dir().join("agent-trial.json").exists());
    // Same process (exec), running and connected.
    assert_eq!(agent.pid(), pid);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "{}",
        agent.output()
    );
    let client = d.ctl().client();
    let id = d.dev.id.clone();
    eventually(Duration::from_secs(30), "the device online", || async {
        let dev = client.device(&id).await.map_err(|e| e.to_string())?;
        match dev.device.presence {
            Some(fleet_protocol::PresenceStatus::Online) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
    drop(agent);
    d.stop_controller();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agent_killed_on_every_start_of_its_trial_is_rolled_back_after_three() {
    let mut d = Device::new("BB-02-000303", 120);
    let bad = d.bad_stand_in();
    d.self_update(&bad);
    for n in 1..=3 {
        let mut agent = d.start_until("agent trial: waiting for the broker", 30);
        agent.kill();
        assert_eq!(d.starts(), n, "each start is counted before it waits");
    }
    // The fourth start rolls back at once, long before the deadline.
    let agent = d.start_until("agent trial: rolled back", 30);
    let result = d.result(&agent, &build_version()).await;
    assert_eq!(result["outcome"], "rolled-back", "{result}");
    let message = result["message"].as_str().unwrap();
    assert!(message.contains("started 4 times"), "{message}");
    assert_eq!(std::fs::read(&d.installed).unwrap(), d.original);
    drop(agent);
    d.stop_controller();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agent_killed_during_its_trial_is_committed_after_its_restart() {
    let mut d = Device::new("BB-02-000304", 120);
    let good = d.good_stand_in();
    d.self_update(&good);
    // No broker while the first start waits: it is killed mid-trial.
    d.stop_controller();
    let mut agent = d.start_until("agent trial: waiting for the broker", 30);
    agent.kill();
    assert_eq!(d.starts(), 1);
    // The broker is back; the restarted trial reaches it and commits.
    d.start_controller();
    let agent = d.start_until("agent trial: committed", 60);
    let result = d.result(&agent, NEW).await;
    assert_eq!(result["outcome"], "committed", "{result}");
    assert_eq!(
        std::fs::read(&d.installed).unwrap(),
        std::fs::read(&good).unwrap()
    );
    drop(agent);
    d.stop_controller();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cut_between_the_trial_record_and_the_swap_ends_failed_on_the_previous_agent() {
    let mut d = Device::new("BB-02-000305", 120);
    let good = d.good_stand_in();
    d.self_update(&good);
    // As if the power went after the record was written and before the
    // swap: the previous binary is still installed, with a trial record.
    std::fs::write(&d.installed, &d.original).unwrap();
    let agent = d.start_until("agent trial: rolled back", 30);
    let result = d.result(&agent, &build_version()).await;
    assert_eq!(result["outcome"], "failed", "{result}");
    let message = result["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("reports {}, not {NEW}", build_version())),
        "{message}"
    );
    assert_eq!(std::fs::read(&d.installed).unwrap(), d.original);
    assert!(!d.update_dir().join("agent-trial.json").exists());
    drop(agent);
    d.stop_controller();
}
