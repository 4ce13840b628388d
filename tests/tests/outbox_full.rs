//! Outbox full: a real `fleet-agent` with a tiny outbox is offline (its
//! controller and broker are stopped) while it coalesces health samples and
//! commits update results and a check failure. The oldest health records
//! go first; when the controller is back, the update results and the check
//! failure arrive (update results first), and so does the drop count.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use fleet_tests::{eventually, Controller, Proc};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-02,IR-02-SARI,Sari,ST-SARI-1,School 1\n";

fn hook_event(dir: &std::path::Path, name: &str, json: &str) {
    fleet_tests::hook_event(dir, name, json).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn health_goes_first_update_results_survive_and_the_drop_count_arrives() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start(data.path(), &[]).unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let hook = tempfile::tempdir().unwrap();
    let id = "BB-02-000088";
    // 1.5 KiB of outbox: about a dozen coalesced health records.
    let dev = ctl
        .enrol(
            id,
            "IR-02",
            "IR-02-SARI",
            &format!(
                "[mqtt]\nbackoff_base_ms = 100\nbackoff_max_ms = 500\n\
                 [health]\nsample_secs = 1\n[link]\ncoalesce_secs = 1\n\
                 [outbox]\nmax_bytes = 1536\n\
                 [test_hooks]\nevent_dir = \"{}\"\n",
                hook.path().display()
            ),
        )
        .unwrap();
    // The controller (and its broker) go away: the device is offline.
    ctl.stop().unwrap();
    let conf = dev.config.to_str().unwrap().to_owned();
    let mut agent = Proc::spawn(
        "fleet-agent",
        &["run", "--config", &conf],
        &[("FLEET_AGENT_LOG", "info,fleet_agent::outbox=debug")],
    )
    .unwrap();
    agent
        .wait_for_line("outbox opened", Duration::from_secs(20))
        .unwrap();
    hook_event(
        hook.path(),
        "a-update",
        r#"{"update-result":{"version":"2.5.0","ok":false,"message":"hash mismatch"}}"#,
    );
    hook_event(
        hook.path(),
        "b-check",
        r#"{"check-failed":{"name":"printer","message":"paper jam"}}"#,
    );
    agent
        .wait_for_line(
            "event committed to the outbox seq=3",
            Duration::from_secs(20),
        )
        .unwrap();
    // Health keeps coming, one record a second, until the outbox is full.
    agent
        .wait_for_line(
            "outbox full: dropped the oldest health samples",
            Duration::from_secs(60),
        )
        .unwrap();
    hook_event(
        hook.path(),
        "c-update",
        r#"{"update-result":{"version":"2.5.1","ok":true,"message":"installed"}}"#,
    );
    agent
        .wait_for_line(
            "event committed to the outbox seq=4",
            Duration::from_secs(20),
        )
        .unwrap();

    // The controller comes back on the same broker port.
    let ctl = Controller::start(data.path(), &[]).unwrap();
    let client = ctl.client();
    let events = eventually(
        Duration::from_secs(60),
        "the update results, the check failure and the drop report",
        || async {
            let d = client.device(id).await.map_err(|e| e.to_string())?;
            let kinds: Vec<String> = d.events.iter().map(|e| e.kind.clone()).collect();
            let n = |k: &str| kinds.iter().filter(|x| x.as_str() == k).count();
            // The boot event is the one droppable event here: it arrives,
            // or a drop report counts it.
            let boot_accounted =
                n("boot") == 1 || d.outbox_drops.as_ref().is_some_and(|o| o.other_events >= 1);
            if n("update-result") == 2
                && n("check-failed") == 1
                && n("outbox-dropped") >= 1
                && boot_accounted
            {
                Ok(d)
            } else {
                Err(format!("{kinds:?} drops {:?}", d.outbox_drops))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent:\n{}", agent.output()));
    let drops = events.outbox_drops.clone().unwrap();
    assert!(drops.health_samples > 0, "{drops:?}");
    let events = events.events;
    // Newest first in arrival order: the update results arrived before the
    // check failure, and that before the rest (the boot event, if kept).
    let pos = |k: &str| events.iter().rposition(|e| e.kind == k).unwrap();
    let oldest_update = pos("update-result");
    assert!(pos("check-failed") < oldest_update, "{events:?}");
    if let Some(boot) = events.iter().rposition(|e| e.kind == "boot") {
        assert!(boot < pos("check-failed"), "{events:?}");
    }
    // The versions: both update results, the failed and the good one.
    let versions: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "update-result")
        .filter_map(|e| e.event["update-result"]["version"].as_str())
        .collect();
    assert!(
        versions.contains(&"2.5.0") && versions.contains(&"2.5.1"),
        "{versions:?}"
    );
    drop(agent);
    ctl.stop().unwrap();
}
