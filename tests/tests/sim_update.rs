//! Simulated devices that update for real (`fleet_sim::update`) against a
//! real controller process with a signed firmware repository: 20 with the
//! agent's directory A/B installer and 20 with the simulator's stand-in,
//! a quarter of each whose checks fail on their first trial boot and a
//! tenth that never come back from the reboot. Each is told to update
//! through `POST /api/v1/devices/{id}/update`; the controller's update
//! tracks must show committed, rolled back and timed out exactly for those
//! shares. Then the same target at attempt 1 makes the rolled-back ones
//! commit (the agent gave up attempt 0 only).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_api::types::DeviceUpdateRequest;
use fleet_protocol::ProvinceCode;
use fleet_sim::plan::{Plan, PlanConfig, MODELS};
use fleet_sim::run::{self, Api, RunConfig};
use fleet_sim::update::{InstallerChoice, Role, SimUpdate};
use fleet_tests::update::{until_firmware_reported, FirmwareController};
use fleet_tests::{eventually, within};

/// The new version of each simulated model.
const NEW: [(&str, &str); 2] = [("ballot-box-v2", "2.5.0"), ("id-laptop", "1.9.0")];

fn new_version(model: &str) -> &'static str {
    NEW.iter().find(|(m, _)| *m == model).unwrap().1
}

fn sim(installer: InstallerChoice, seed: u64) -> SimUpdate {
    SimUpdate {
        installer,
        install: Duration::from_millis(200),
        download: Duration::from_millis(100),
        reboot: Duration::from_millis(300),
        // A healthy device must reconnect and run a check within it, on a
        // loaded machine too; the controller's reboot timeout (below) stays
        // well above it, so a rolled-back device is never taken as silent.
        health_deadline: Duration::from_secs(8),
        fail_share: 0.25,
        fail_attempts: 1,
        never_return_share: 0.1,
        seed,
        dir: None,
    }
}

/// Every device's update outcome once none is running (all have one),
/// from the controller's update tracks.
async fn outcomes(
    roles: &BTreeMap<String, Role>,
    api: &Api,
    ids: &[String],
    version_of: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    eventually(
        Duration::from_secs(240),
        "every device's update to end",
        || async {
            let mut out = BTreeMap::new();
            for id in ids {
                let d = api.client.device(id).await.map_err(|e| e.to_string())?;
                let u = d.update.ok_or_else(|| format!("{id}: no update yet"))?;
                if u.version.to_string() != version_of[id] {
                    return Err(format!("{id}: update of {}", u.version));
                }
                let Some(o) = u.outcome else {
                    let events: Vec<String> = d
                        .events
                        .iter()
                        .map(|e| format!("{}:{}", e.seq, e.event))
                        .collect();
                    return Err(format!(
                        "{id} ({:?}): still {:?}; events {events:?}",
                        roles[id], u.phase
                    ));
                };
                out.insert(id.clone(), o);
            }
            Ok(out)
        },
    )
    .await
    .unwrap()
}

async fn update_all(
    api: &Api,
    ids: &[String],
    version_of: &BTreeMap<String, String>,
    attempt: u32,
) {
    for id in ids {
        api.client
            .update_device(
                id,
                &DeviceUpdateRequest {
                    artifact: "firmware".into(),
                    version: version_of[id].clone(),
                    platform: None,
                    attempt: Some(attempt),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("update {id}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn simulated_devices_commit_roll_back_or_time_out_by_their_share_and_a_new_attempt_commits_the_rolled_back(
) {
    within(900, "the simulated fleet's update", async {
        let fc = FirmwareController::start(
            &["--freshness-secs", "3600"],
            &[
                ("FLEET_CONTROLLER__UPDATES__REBOOT_TIMEOUT_SECS", "20"),
                ("FLEET_CONTROLLER__UPDATES__CHECK_SECS", "1"),
            ],
        )
        .unwrap();
        for (model, version) in NEW {
            fc.publish(model, version).unwrap();
        }
        let ctl = &fc.ctl;
        assert!(MODELS.iter().all(|(m, ..)| NEW.iter().any(|(n, _)| n == m)));

        let plan = Plan::new(&PlanConfig {
            devices: 40,
            seed: 3,
            provinces: vec![ProvinceCode::parse("IR-23").unwrap()],
            offline_share: 0.0,
            failing_share: 0.0,
            outdated_share: 0.0,
        })
        .unwrap();
        let api = Api::new(&ctl.api, &ctl.token, Some(&ctl.ca())).unwrap();
        let identities = run::enrol_fleet(&api, &plan, None, false).await.unwrap();
        let broker = run::broker_address(&api).await.unwrap();
        let cfg = |installer| RunConfig {
            controller: ctl.api.clone(),
            health_every: Duration::from_secs(60),
            keep_alive: Duration::from_secs(5),
            checks_every: Duration::from_secs(1),
            connect_rate: 200,
            backoff_max: Duration::from_secs(2),
            show_progress: false,
            update: Some(sim(installer, 11)),
        };
        let (dir_half, sim_half) = plan.devices.split_at(20);
        let mut fleets = Vec::new();
        for (devices, installer) in [
            (dir_half, InstallerChoice::Dir),
            (sim_half, InstallerChoice::Sim),
        ] {
            let part = Plan {
                devices: devices.to_vec(),
            };
            let (fleet, reported) = run::start(
                &part,
                &cfg(installer),
                &broker,
                &identities,
                Duration::from_secs(60),
            )
            .await
            .unwrap();
            assert_eq!(reported, 20);
            fleets.push(fleet);
        }
        let roles: BTreeMap<String, Role> = fleets.iter().flat_map(|f| f.roles.clone()).collect();
        let count = |r: Role| roles.values().filter(|x| **x == r).count();
        // Per half of 20: round(25%) = 5 fail, round(10%) = 2 never return.
        assert_eq!(
            (
                count(Role::FailsChecks),
                count(Role::NeverReturns),
                count(Role::Healthy)
            ),
            (10, 4, 26)
        );

        let ids: Vec<String> = plan.devices.iter().map(|d| d.id.to_string()).collect();
        let version_of: BTreeMap<String, String> = plan
            .devices
            .iter()
            .map(|d| (d.id.to_string(), new_version(d.model.as_str()).to_owned()))
            .collect();
        update_all(&api, &ids, &version_of, 0).await;
        let first = outcomes(&roles, &api, &ids, &version_of).await;
        for (id, outcome) in &first {
            let want = match roles[id] {
                Role::Healthy => "committed",
                Role::FailsChecks => "rolled-back",
                Role::NeverReturns => "timed-out",
            };
            assert_eq!(outcome, want, "{id} ({:?}): {first:?}", roles[id]);
        }
        // The committed ones report the new firmware; the rolled-back the old.
        for d in &plan.devices {
            let id = d.id.as_str();
            let want = match roles[id] {
                Role::Healthy => version_of[id].clone(),
                Role::FailsChecks => d.firmware.to_string(),
                Role::NeverReturns => continue,
            };
            until_firmware_reported(ctl, id, &want).await;
        }

        // Attempt 1 of the same target for the rolled-back devices: tried
        // again, and their checks pass this time.
        let rolled_back: Vec<String> = roles
            .iter()
            .filter(|(_, r)| **r == Role::FailsChecks)
            .map(|(id, _)| id.clone())
            .collect();
        update_all(&api, &rolled_back, &version_of, 1).await;
        let retried = eventually(
            Duration::from_secs(120),
            "the retried devices to commit",
            || async {
                let mut out = BTreeMap::new();
                for id in &rolled_back {
                    let d = api.client.device(id).await.map_err(|e| e.to_string())?;
                    let u = d.update.ok_or("no update")?;
                    let fw = d.state.map(|s| s.firmware.to_string());
                    // The state comes apart from the result: wait for both.
                    if u.outcome.as_deref() != Some("committed")
                        || fw.as_deref() != Some(version_of[id].as_str())
                    {
                        return Err(format!("{id}: {:?} {:?} {fw:?}", u.phase, u.outcome));
                    }
                    out.insert(id.clone(), fw);
                }
                Ok(out)
            },
        )
        .await
        .unwrap();
        assert_eq!(retried.len(), 10);
        for (id, fw) in &retried {
            assert_eq!(fw.as_deref(), Some(version_of[id].as_str()), "{id}");
        }

        for f in fleets {
            f.stop().await;
        }
        fc.ctl.stop().unwrap();
    })
    .await;
}
