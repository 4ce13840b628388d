//! After the controller is SIGKILLed, no orphaned broker goes on serving
//! stale state: the next start stops it and takes its port back, whichever
//! brokers it is configured with now. A start that fails half-way stops
//! the brokers it started.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleet_tests::{init_data_dir, Controller, Proc};

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn a_killed_controllers_broker_is_stopped_by_the_next_start_which_keeps_its_port() {
    let data = tempfile::tempdir().unwrap();
    let mut first = Controller::start(data.path(), &[]).unwrap();
    let port = first.mqtt_port;
    let pid_file = data.path().join("mosquitto/state/mosquitto.pid");
    let orphan: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    first.proc.kill();
    assert!(
        alive(orphan),
        "the broker died with the controller: nothing to test"
    );

    let second = Controller::start(data.path(), &[]).unwrap();
    assert!(
        !alive(orphan),
        "the orphaned broker (pid {orphan}) still runs"
    );
    assert_eq!(second.mqtt_port, port, "the devices' port was not kept");
    let log = second.stop().unwrap();
    assert!(log.contains("still running"), "{log}");
}

/// The Mosquittos running with a config under `data` (the temporary data
/// directory is unique: nobody else's), by pid and config.
fn mosquittos_of(data: &Path) -> Vec<(u32, String)> {
    let needle = data.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("mosquitto") && cmdline.contains(&needle) && alive(pid))
                .then_some((pid, cmdline))
        })
        .collect()
}

/// Kills what a failed test leaves of the Mosquittos it caused to start.
struct KillLeftovers(PathBuf);

impl Drop for KillLeftovers {
    fn drop(&mut self) {
        for (pid, _) in mosquittos_of(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

fn pid_of(data: &Path, dir: &str) -> u32 {
    std::fs::read_to_string(data.join(dir).join("state/mosquitto.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_smaller_tier_after_a_kill_stops_the_provincial_broker_no_longer_configured() {
    let data = tempfile::tempdir().unwrap();
    let _leftovers = KillLeftovers(data.path().to_owned());
    let mut first = Controller::start(data.path(), &["--provincial-brokers", "3"]).unwrap();
    let p03 = pid_of(data.path(), "mosquitto-p03");
    first.proc.kill();
    assert!(alive(p03), "p03 died with the controller: nothing to test");

    let second = Controller::start(data.path(), &["--provincial-brokers", "2"]).unwrap();
    assert!(
        !alive(p03),
        "the orphaned provincial broker p03 (pid {p03}) still runs and bridges"
    );
    let running: Vec<String> = mosquittos_of(data.path())
        .into_iter()
        .map(|(_, cmd)| cmd)
        .collect();
    assert_eq!(running.len(), 3, "central, p01 and p02: {running:?}");
    assert!(
        running.iter().all(|c| !c.contains("mosquitto-p03")),
        "{running:?}"
    );
    second.stop().unwrap();
    assert!(mosquittos_of(data.path()).is_empty());
}

#[test]
fn a_provincial_broker_that_cannot_start_stops_the_brokers_started_before_it() {
    let data = tempfile::tempdir().unwrap();
    let _leftovers = KillLeftovers(data.path().to_owned());
    init_data_dir(data.path()).unwrap();
    // p02's directory cannot be made: p02 fails after the central broker
    // and p01 have started.
    std::fs::write(data.path().join("mosquitto-p02"), b"in the way").unwrap();
    let mut ctl = Proc::spawn(
        "fleet-controller",
        &[
            "serve",
            "--data-dir",
            data.path().to_str().unwrap(),
            "--http",
            "127.0.0.1:0",
            "--provincial-brokers",
            "2",
        ],
        &[("FLEET_LOG", "info")],
    )
    .unwrap();
    let status = ctl.wait(Duration::from_secs(60)).unwrap();
    assert!(!status.success(), "started: {}", ctl.output());
    assert!(
        ctl.output().contains("cannot start provincial broker p02"),
        "{}",
        ctl.output()
    );
    assert!(
        mosquittos_of(data.path()).is_empty(),
        "brokers left running: {:?}",
        mosquittos_of(data.path())
    );
    // Stopped with SIGTERM, not killed with the process: each saved its
    // persistence file on the way out (the first autosave is 30 s away).
    for dir in ["mosquitto", "mosquitto-p01"] {
        let state = data.path().join(dir).join("state");
        assert!(
            state.join("mosquitto.db").exists(),
            "{dir} was not stopped cleanly: {:?}",
            std::fs::read_dir(&state)
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect::<Vec<_>>()
        );
    }
}
