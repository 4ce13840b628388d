//! End to end through the controller: the release team signs, `fleetctl
//! firmware upload` publishes, `fleetctl device update` sets the desired
//! state, and a real agent fetches the signed metadata and the image from
//! the controller's public TUF routes over HTTPS with the fleet CA, installs
//! into directory A/B slots, reboots (exits and is started again), checks
//! and commits. The next update comes as a delta against the committed
//! image; a freeze window set with `fleetctl freeze set` then holds the one
//! after. A new agent binary (`fleetctl device update --agent`) is
//! verified, swapped in, restarted into and committed by its trial.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::{Duration, Instant};

use fleet_tests::eventually;
use fleet_tests::update::*;

#[tokio::test(flavor = "multi_thread")]
async fn an_update_through_the_controller_over_https_commits_then_a_delta_then_a_freeze_holds() {
    let id = "BB-23-CTL-UPD";
    let setup = ControllerSetup::start(id, "").unwrap();
    let full = setup.upload("2.5.0").unwrap().length;
    let mut agent = setup.agent();
    agent.start();

    let t0 = Instant::now();
    let result = setup.update_and_wait(&mut agent, "2.5.0").await;
    let took = t0.elapsed();
    assert_outcome(&result, "committed", &agent);
    assert_eq!(booted(&setup.slots), "b");
    assert_eq!(slot_version(&setup.slots, "b"), "2.5.0");
    println!("update to 2.5.0 through the controller: {took:?} ({full} bytes, full image)");
    let api = setup.ctl.client();
    eventually(
        Duration::from_secs(20),
        "the device page's update",
        || async {
            let d = api.device(id).await.map_err(|e| e.to_string())?;
            let fw = d.state.as_ref().map(|s| s.firmware.to_string());
            let outcome = d.update.as_ref().and_then(|u| u.outcome.clone());
            (fw.as_deref() == Some("2.5.0") && outcome.as_deref() == Some("committed"))
                .then_some(())
                .ok_or(format!("{fw:?} {:?}", d.update))
        },
    )
    .await
    .unwrap();

    // The next one: a delta against the committed 2.5.0 image.
    setup.upload("2.6.0").unwrap();
    let result = setup.update_and_wait(&mut agent, "2.6.0").await;
    assert_outcome(&result, "committed", &agent);
    assert_eq!(booted(&setup.slots), "a");
    assert_eq!(slot_version(&setup.slots, "a"), "2.6.0");
    let out = agent.output();
    let line = out
        .lines()
        .find(|l| l.contains("image rebuilt from a delta"))
        .unwrap_or_else(|| panic!("no delta was used:\n{out}"));
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {line}"))
    };
    let (delta, full) = (field("delta_bytes="), field("full_bytes="));
    // The rebuilt image passed the signed hash (the update committed). The
    // patch is bidiff's raw format, uncompressed: about the image's size
    // (its add-bytes are mostly zeros); printed, not asserted.
    assert!(delta > 0, "{line}");
    println!("update to 2.6.0: delta {delta} bytes for a {full}-byte image");

    // A freeze window in effect: the next update is held, Frozen reported.
    let now_ms = fleet_agent::unix_ms();
    let (ok, out, err) = setup
        .ctl
        .fleetctl(&[
            "freeze",
            "set",
            &(now_ms - 60_000).to_string(),
            &(now_ms + 3_600_000).to_string(),
        ])
        .unwrap();
    assert!(ok, "{out}{err}");
    setup.upload("2.7.0").unwrap();
    setup.update("2.7.0").unwrap();
    let ctl = &setup.ctl;
    until_update_event(ctl, id, &mut agent, "the frozen report", 60, |k, v| {
        k == "update-progress" && v["phase"] == "frozen" && v["version"] == "2.7.0"
    })
    .await;
    assert!(!agent.reboot_if_exited(), "no reboot inside the freeze");
    assert_eq!(booted(&setup.slots), "a");
    assert_eq!(slot_version(&setup.slots, "a"), "2.6.0");
    let events = update_events(ctl, id).await.unwrap();
    assert!(
        !events
            .iter()
            .any(|(k, v)| k == "update-result" && v["version"] == "2.7.0"),
        "{events:?}"
    );
    agent.kill();
}

/// The "new agent": a script that runs this build reporting `version`
/// (the self-update tests' stand-in), signed as an agent target.
fn new_agent(dir: &std::path::Path, version: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let build = fleet_tests::bin_path("fleet-agent").unwrap();
    let path = dir.join(format!("fleet-agent-{version}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nFLEET_AGENT__TEST_HOOKS__AGENT_VERSION={version} exec '{}' \"$@\"\n",
            build.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_agent_binary_through_the_controller_is_swapped_restarted_into_and_committed() {
    use std::os::unix::fs::PermissionsExt;

    use fleet_protocol::firmware::{agent_platform, TargetCustom};
    use fleet_protocol::{ArtifactKind, Version};

    let id = "BB-23-CTL-AGENT";
    let setup = ControllerSetup::start(id, "").unwrap();
    // The device runs a copy of the build (the binary that gets replaced).
    let installed = setup.work.path().join("bin/fleet-agent");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(fleet_tests::bin_path("fleet-agent").unwrap(), &installed).unwrap();
    std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
    let original = std::fs::read(&installed).unwrap();

    let new = new_agent(setup.work.path(), "9.9.9");
    let custom = TargetCustom {
        artifact: ArtifactKind::Agent,
        model: agent_platform(),
        version: Version::parse("9.9.9").unwrap(),
    };
    setup.upload_file(&new, &custom).unwrap();
    let mut agent = setup.agent();
    agent.binary = Some(installed.clone());
    agent.start();
    setup.update_with("9.9.9", &["--agent"]).unwrap();

    // Swapped, exec'd (same process), on trial, committed by the new agent.
    let ctl = &setup.ctl;
    let result = eventually(
        Duration::from_secs(120),
        "the agent update's result",
        || async {
            let events = update_events(ctl, id).await?;
            events
                .iter()
                .find(|(k, v)| k == "update-result" && v["artifact"] == "agent")
                .map(|(_, v)| v.clone())
                .ok_or(format!("{events:?}"))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.output()));
    assert_outcome(&result, "committed", &agent);
    assert_eq!(result["version"], "9.9.9");
    assert!(
        !agent.reboot_if_exited(),
        "the agent restarted itself, in place"
    );
    assert_eq!(
        std::fs::read(&installed).unwrap(),
        std::fs::read(&new).unwrap()
    );
    assert_ne!(std::fs::read(&installed).unwrap(), original);
    let api = ctl.client();
    eventually(
        Duration::from_secs(30),
        "the new agent version reported",
        || async {
            let d = api.device(id).await.map_err(|e| e.to_string())?;
            let v = d.state.map(|s| s.agent.to_string());
            (v.as_deref() == Some("9.9.9"))
                .then_some(())
                .ok_or(format!("{v:?}"))
        },
    )
    .await
    .unwrap();
    // The progress said it was restarting into it before the result.
    until_progress(ctl, id, "rebooting", Some("agent")).await;
    agent.kill();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_delta_is_refused_and_the_full_image_is_fetched_instead() {
    let id = "BB-23-CTL-BADDELTA";
    let setup = ControllerSetup::start(id, "").unwrap();
    let from = setup.upload("2.5.0").unwrap().sha256;
    let mut agent = setup.agent();
    agent.start();
    let result = setup.update_and_wait(&mut agent, "2.5.0").await;
    assert_outcome(&result, "committed", &agent);

    // The controller's cached patch 2.5.0 -> 2.6.0 is damaged on its disk.
    let to = setup.upload("2.6.0").unwrap().sha256;
    let cached = setup
        .data
        .path()
        .join(format!("firmware/deltas/{from}/{to}.bidiff"));
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, vec![0x42u8; 4096]).unwrap();
    let result = setup.update_and_wait(&mut agent, "2.6.0").await;
    assert_outcome(&result, "committed", &agent);
    assert_eq!(slot_version(&setup.slots, &booted(&setup.slots)), "2.6.0");
    let out = agent.output();
    assert!(
        !out.contains("image rebuilt from a delta"),
        "the damaged patch was used:\n{out}"
    );
    // The fall-back is reported as an event (after the result, perhaps).
    let said = eventually(Duration::from_secs(30), "the delta error event", || async {
        let d = setup
            .ctl
            .client()
            .device(id)
            .await
            .map_err(|e| e.to_string())?;
        d.events
            .iter()
            .filter(|e| e.kind == "error")
            .filter_map(|e| e.event["error"]["message"].as_str())
            .find(|m| m.contains("delta"))
            .map(str::to_owned)
            .ok_or(format!("no delta error event: {:?}", d.events))
    })
    .await
    .unwrap();
    assert!(said.contains("full image"), "{said}");
    agent.kill();
}
