//! After the controller is SIGKILLed, no orphaned broker goes on serving
//! stale state: the next start stops it and takes its port back.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;

use fleet_tests::Controller;

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
