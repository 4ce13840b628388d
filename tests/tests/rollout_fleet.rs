//! Rollouts at fleet scale: simulated devices that update for real
//! (`fleet_sim`: the agent's own update driver and TUF client against the
//! controller's `/api/v1/tuf`, the simulator's stand-in installer) against
//! a real controller process with a signed firmware repository, its
//! managed Mosquitto over mutual TLS and its SQLite file.
//!
//! - `a_rollout_of_300_simulated_devices_in_3_waves`: 300 ballot boxes in
//!   four provinces; a canary of 30, then two provinces, then the rest.
//!   Four canary devices (the first released in each province) fail their
//!   first trial boot (rolled back), above the 5 % threshold: the rollout
//!   pauses naming the canary wave and the threshold. `fleetctl rollout
//!   retry-failed` and `resume`: they pass on attempt 1 and the rollout
//!   goes on. A freeze window added with
//!   `fleetctl freeze add` while the second wave runs holds it (nothing
//!   released, the third wave not started, `held` names the window) until
//!   `fleetctl freeze clear`. Two devices of each later wave never come
//!   back from their reboot: they end `timed-out`. The rollout completes,
//!   the model's baseline becomes 2.5.0, and the per-province download
//!   limit is never exceeded by the devices' own recorded events.
//! - `a_device_offline_for_the_whole_rollout_updates_when_it_returns`:
//!   20 devices, one never started until the rollout completed (the
//!   success threshold is 90 %); then it starts, is released as a
//!   straggler, commits, and its member is `succeeded`.
//!
//! Which devices fail or never return is decided, not drawn: the rollout
//! is created as a draft first (its waves are fixed then), and each wave's
//! devices run as a fleet of their own with that wave's shares.
//!
//! Why four canary failures and not two: the wave is done at 90 % success,
//! and the engine counts failures against the threshold only in the
//! current wave. With two failing canary devices, 27 of 30 had committed
//! (the canary done, the second wave started) before the two rolled back
//! (their health deadline), and the rollout never paused. Four failing
//! ones leave at most 26 of 30, so the canary cannot be done before they
//! fail, and the pause is certain.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use fleet_api::types::{
    CanaryRequest, Counters, MemberState, MemberView, PolicyRequest, RolloutAction, RolloutPhase,
    RolloutRequest, RolloutView,
};
use fleet_protocol::{Model, ProvinceCode, Version};
use fleet_sim::plan::{Condition, Plan, PlanConfig};
use fleet_sim::run::{self, Api, BrokerAddress, Fleet, Identities, RunConfig};
use fleet_sim::update::{InstallerChoice, Role, SimUpdate};
use fleet_tests::update::{until_firmware_reported, FirmwareController, MODEL, OLD};
use fleet_tests::{eventually, within};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};

const NEW: &str = "2.5.0";
/// `max_downloads_per_province` of the rollouts here.
const LIMIT: usize = 3;
/// A fast control loop, so the tests do not wait on ticks.
const ENV: [(&str, &str); 1] = [("FLEET_CONTROLLER__ROLLOUTS__TICK_MS", "200")];

/// A controller with a signed ballot-box-v2 2.5.0 and an enrolled (not yet
/// running) simulated fleet: `per_province` ballot boxes on 2.4.0 in each
/// of `provinces`.
struct Setup {
    fc: FirmwareController,
    api: Api,
    identities: Identities,
    broker: BrokerAddress,
    plan: Plan,
}

impl Setup {
    async fn start(provinces: &[&str], per_province: usize) -> Setup {
        let fc = FirmwareController::start(&["--freshness-secs", "3600"], &ENV).unwrap();
        fc.publish(MODEL, NEW).unwrap();
        let mut devices = Vec::new();
        for (i, p) in provinces.iter().enumerate() {
            let plan = Plan::new(&PlanConfig {
                devices: per_province,
                seed: 5 + i as u64,
                provinces: vec![ProvinceCode::parse(p).unwrap()],
                offline_share: 0.0,
                failing_share: 0.0,
                outdated_share: 0.0,
            })
            .unwrap();
            // Every device a ballot box on the old firmware (the plan puts
            // one laptop in five).
            devices.extend(plan.devices.into_iter().map(|mut d| {
                d.model = Model::parse(MODEL).unwrap();
                d.firmware = Version::parse(OLD).unwrap();
                d.condition = Condition::Healthy;
                d
            }));
        }
        let plan = Plan { devices };
        let ctl = &fc.ctl;
        let api = Api::new(&ctl.api, &ctl.token, Some(&ctl.ca())).unwrap();
        let identities = run::enrol_fleet(&api, &plan, None, false).await.unwrap();
        let broker = run::broker_address(&api).await.unwrap();
        Setup {
            fc,
            api,
            identities,
            broker,
            plan,
        }
    }

    /// Run these devices (ids) as one fleet: `fail` of them fail their
    /// first trial boot of a new image, `never` never come back from the
    /// reboot. Returns once each reported.
    async fn run(&self, ids: &BTreeSet<String>, fail: usize, never: usize, seed: u64) -> Fleet {
        let part = Plan {
            devices: self
                .plan
                .devices
                .iter()
                .filter(|d| ids.contains(d.id.as_str()))
                .cloned()
                .collect(),
        };
        let n = part.devices.len();
        assert_eq!(n, ids.len());
        // `roles` takes exactly round(share × n) of each.
        let share = |k: usize| k as f64 / n as f64;
        let cfg = RunConfig {
            controller: self.fc.ctl.api.clone(),
            health_every: Duration::from_secs(60),
            keep_alive: Duration::from_secs(5),
            checks_every: Duration::from_secs(1),
            connect_rate: 200,
            backoff_max: Duration::from_secs(2),
            show_progress: false,
            update: Some(SimUpdate {
                installer: InstallerChoice::Sim,
                install: Duration::from_millis(200),
                download: Duration::from_millis(300),
                reboot: Duration::from_millis(300),
                // Room for a healthy device on a loaded machine: one that
                // misses it counts as failed, and the counts are exact.
                health_deadline: Duration::from_secs(8),
                fail_share: share(fail),
                fail_attempts: 1,
                never_return_share: share(never),
                seed,
                dir: None,
            }),
        };
        let (fleet, reported) = run::start(
            &part,
            &cfg,
            &self.broker,
            &self.identities,
            Duration::from_secs(90),
        )
        .await
        .unwrap();
        assert_eq!(reported, n, "every device of the fleet reported");
        let count = |r: Role| fleet.roles.values().filter(|x| **x == r).count();
        assert_eq!(
            (count(Role::FailsChecks), count(Role::NeverReturns)),
            (fail, never)
        );
        fleet
    }

    fn province_of(&self) -> BTreeMap<String, ProvinceCode> {
        self.plan
            .devices
            .iter()
            .map(|d| (d.id.to_string(), d.province))
            .collect()
    }

    async fn view(&self, id: u64) -> Result<RolloutView, String> {
        self.api.client.rollout(id).await.map_err(|e| e.to_string())
    }

    async fn members(&self, id: u64) -> Vec<MemberView> {
        self.api.client.rollout_members(id, None).await.unwrap()
    }

    /// `fleetctl ARGS` must succeed; returns its output.
    fn fleetctl(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.fc.ctl.fleetctl(args).unwrap();
        assert!(ok, "fleetctl {args:?}: {out}{err}");
        out
    }
}

fn request(canary: u32, waves: Vec<Vec<String>>) -> RolloutRequest {
    RolloutRequest {
        name: Some("election firmware".into()),
        artifact: "firmware".into(),
        model: MODEL.into(),
        version: NEW.into(),
        platform: None,
        selector: Default::default(),
        canary: Some(CanaryRequest {
            devices: Some(canary),
            percent: None,
        }),
        waves,
        policy: PolicyRequest {
            failure_threshold_pct: Some(5.0),
            success_threshold_pct: Some(90.0),
            max_downloads_per_province: Some(LIMIT as u32),
            allowed_hours: None,
            utc_offset_min: None,
            device_timeout_s: Some(30),
        },
        // A draft: its waves are fixed before any device runs, so each
        // wave's devices can be given their roles.
        draft: true,
    }
}

/// The devices of each wave of a draft.
async fn waves_of(s: &Setup, id: u64, waves: usize) -> Vec<BTreeSet<String>> {
    let mut out = vec![BTreeSet::new(); waves];
    for m in s.members(id).await {
        assert_eq!(m.state, MemberState::Pending, "{m:?}");
        out[m.wave as usize].insert(m.device.to_string());
    }
    out
}

/// Released (not heard from yet) or downloading, as the counters say.
fn in_download(c: &Counters) -> u32 {
    c.downloading
}

/// Wait for the rollout to satisfy `ok`, showing its state when it does not.
async fn until(
    s: &Setup,
    id: u64,
    secs: u64,
    what: &str,
    ok: impl Fn(&RolloutView) -> bool,
) -> RolloutView {
    eventually(Duration::from_secs(secs), what, || async {
        let v = s.view(id).await?;
        if ok(&v) {
            Ok(v)
        } else {
            let waves: Vec<String> = v
                .waves
                .iter()
                .map(|w| format!("{} {:?}", w.name, w.counters))
                .collect();
            Err(format!(
                "{:?} wave {} paused {:?} held {:?}; {waves:?}; log {:?}",
                v.summary.phase,
                v.summary.wave,
                v.summary.paused_reason,
                v.summary.held,
                v.log.iter().rev().take(5).collect::<Vec<_>>()
            ))
        }
    })
    .await
    .unwrap()
}

/// The most downloads at once in each province, from the device events the
/// controller stored in its SQLite file (opened read-only).
///
/// What it measures: the engine holds a download slot from a device's
/// release until it reports `installing`; the release itself is not an
/// event, so this measures the devices' side of it. For each device, a
/// download runs from its first `update-progress` in phase `downloading`
/// (or `verifying`) to its next `update-progress` past the download
/// (`installing`, `rebooting`, `checking`, or `frozen`: the image is
/// downloaded and held by a freeze window) or its `update-result`, by the
/// events' `at_ms` (the agents' clock, the same host's here); a retried
/// device has one download per attempt. A device starts downloading only
/// after its release, and the engine releases into a slot only after it
/// heard the `installing` that freed it, so these intervals overlap at most
/// as much as the engine's slots did. The sweep counts, per province, how
/// many intervals are open at each instant (an end at the same ms as a
/// start is taken first). Returns (province -> most at once, downloads).
async fn downloads_at_once(
    db: &Path,
    province_of: &BTreeMap<String, ProvinceCode>,
) -> (BTreeMap<ProvinceCode, usize>, usize) {
    let mut conn = SqliteConnectOptions::new()
        .filename(db)
        .read_only(true)
        .connect()
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT device, at_ms, kind, body_json FROM events
         WHERE kind IN ('update-progress', 'update-result')
         ORDER BY device, at_ms, id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut open: BTreeMap<String, u64> = BTreeMap::new();
    // province -> (at_ms, +1 start | -1 end)
    let mut edges: BTreeMap<ProvinceCode, Vec<(u64, i32)>> = BTreeMap::new();
    let mut downloads = 0;
    for r in rows {
        let (device, at, kind, body): (String, i64, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let at = u64::try_from(at).unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        let province = province_of[&device];
        let phase = body[&kind]["phase"].as_str().unwrap_or_default().to_owned();
        let starts =
            kind == "update-progress" && matches!(phase.as_str(), "downloading" | "verifying");
        if starts {
            if let std::collections::btree_map::Entry::Vacant(e) = open.entry(device) {
                e.insert(at);
                edges.entry(province).or_default().push((at, 1));
                downloads += 1;
            }
        } else if open.remove(&device).is_some() {
            edges.entry(province).or_default().push((at, -1));
        }
    }
    assert!(open.is_empty(), "downloads that never ended: {open:?}");
    let most = edges
        .into_iter()
        .map(|(p, mut e)| {
            e.sort();
            let (mut now, mut most) = (0i32, 0i32);
            for (_, d) in e {
                now += d;
                most = most.max(now);
            }
            (p, most as usize)
        })
        .collect();
    (most, downloads)
}

fn fleetctl_freeze_add(s: &Setup, reason: &str) {
    let now = fleet_agent::unix_ms();
    let (from, to) = ((now - 60_000).to_string(), (now + 3_600_000).to_string());
    s.fleetctl(&[
        "freeze", "add", "--from", &from, "--to", &to, "--reason", reason,
    ]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_of_300_simulated_devices_in_3_waves() {
    within(900, "the rollout of 300 simulated devices", async {
        let s = Setup::start(&["IR-02", "IR-04", "IR-23", "IR-30"], 75).await;
        let province_of = s.province_of();

        // A canary of 30, then Mazandaran and Tehran, then the rest.
        let group = vec!["IR-02".to_owned(), "IR-23".to_owned()];
        let draft = s
            .api
            .client
            .create_rollout(&request(30, vec![group.clone()]))
            .await
            .unwrap();
        let id = draft.summary.id;
        let names: Vec<&str> = draft.waves.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["canary", "IR-02+IR-23", "rest"]);
        assert_eq!(draft.summary.phase, RolloutPhase::Draft);
        assert_eq!(draft.summary.counters.total, 300);
        let waves = waves_of(&s, id, 3).await;
        assert_eq!(waves[0].len(), 30);
        assert_eq!(waves[1].len() + waves[2].len(), 270);
        for d in &waves[1] {
            assert!(group.contains(&province_of[d].to_string()), "{d}");
        }
        // The canary covers every province.
        let canary_provinces: BTreeSet<ProvinceCode> =
            waves[0].iter().map(|d| province_of[d]).collect();
        assert_eq!(canary_provinces.len(), 4);

        // Four canary devices fail their first trial boot: the first of
        // each province (by id), so the start releases them all at once.
        // The canary cannot be done without them (26 of 30 is below 90 %),
        // so their failures pause it: 2 of 30 (6.7 %) is above 5 %. Two
        // devices of each later wave never come back: 2 of 135, below it.
        let mut first_of: BTreeMap<ProvinceCode, String> = BTreeMap::new();
        for d in &waves[0] {
            first_of.entry(province_of[d]).or_insert_with(|| d.clone());
        }
        let first: BTreeSet<String> = first_of.into_values().collect();
        let canary_rest: BTreeSet<String> = waves[0].difference(&first).cloned().collect();
        let fleets = vec![
            s.run(&first, 4, 0, 20).await,
            s.run(&canary_rest, 0, 0, 21).await,
            s.run(&waves[1], 0, 2, 22).await,
            s.run(&waves[2], 0, 2, 23).await,
        ];
        let roles: BTreeMap<String, Role> = fleets.iter().flat_map(|f| f.roles.clone()).collect();
        let with_role = |r: Role| -> BTreeSet<String> {
            roles
                .iter()
                .filter(|(_, x)| **x == r)
                .map(|(d, _)| d.clone())
                .collect()
        };
        let (failing, never) = (with_role(Role::FailsChecks), with_role(Role::NeverReturns));

        s.api
            .client
            .rollout_action(id, RolloutAction::Start, None)
            .await
            .unwrap();

        // --- the canary fails above the threshold: paused ----------------
        let paused = until(
            &s,
            id,
            120,
            "the canary's failures to pause the rollout",
            |v| v.summary.phase == RolloutPhase::Paused,
        )
        .await;
        let reason = paused.summary.paused_reason.clone().unwrap();
        assert!(
            reason.contains("wave 1 (canary)")
                && reason.contains("of 30 devices failed")
                && reason.contains("above the 5% threshold"),
            "{reason}"
        );
        assert_eq!(paused.summary.wave, 0, "paused in the canary");
        assert_eq!(
            paused.waves[1].counters.pending, paused.waves[1].counters.total,
            "nothing of the second wave released: {:?}",
            paused.waves[1]
        );
        // The four released first all fail (they are in flight at the pause).
        let failed = eventually(
            Duration::from_secs(60),
            "the four failing canary devices to fail",
            || async {
                let failed: BTreeSet<String> = s
                    .api
                    .client
                    .rollout_members(id, Some(MemberState::Failed))
                    .await
                    .map_err(|e| e.to_string())?
                    .into_iter()
                    .map(|m| m.device.to_string())
                    .collect();
                (failed.len() == 4)
                    .then_some(failed.clone())
                    .ok_or(format!("{failed:?}"))
            },
        )
        .await
        .unwrap();
        assert_eq!(
            failed, failing,
            "the failed members are the failing devices"
        );
        let v = s.view(id).await.unwrap();
        assert_eq!(v.summary.phase, RolloutPhase::Paused);
        assert_eq!(v.waves[0].counters.failed, 4, "{:?}", v.waves[0]);

        // --- retry-failed and resume (fleetctl): it goes on -----------------
        s.fleetctl(&["rollout", "retry-failed", &id.to_string()]);
        s.fleetctl(&["rollout", "resume", &id.to_string()]);
        let second = until(
            &s,
            id,
            120,
            "the canary done and the second wave running",
            |v| v.summary.phase == RolloutPhase::Running && v.summary.wave == 1,
        )
        .await;
        assert!(
            second.waves[0].counters.succeeded >= 27,
            "{:?}",
            second.waves[0]
        );

        // --- a freeze window while the second wave runs holds it ----------
        fleetctl_freeze_add(&s, "election day");
        let held = until(&s, id, 30, "the rollout held by the freeze", |v| {
            v.summary
                .held
                .as_deref()
                .is_some_and(|h| h.contains("election day"))
        })
        .await;
        assert_eq!(held.summary.wave, 1);
        let pending_when_held = held.waves[1].counters.pending;
        assert!(
            pending_when_held > 0,
            "the freeze came mid-wave: {:?}",
            held.waves[1]
        );
        // Once the downloads and installs under way have ended (finished, or
        // held on the device: `frozen`), nothing more was released and the
        // third wave did not start.
        let settled = until(
            &s,
            id,
            60,
            "the second wave's downloads and installs to settle",
            |v| {
                let c = &v.waves[1].counters;
                in_download(c) == 0 && c.installing == 0
            },
        )
        .await;
        assert_eq!(settled.summary.phase, RolloutPhase::Running);
        assert_eq!(settled.summary.wave, 1, "still on the second wave");
        assert!(
            settled
                .summary
                .held
                .as_deref()
                .is_some_and(|h| h.contains("election day")),
            "{:?}",
            settled.summary.held
        );
        assert_eq!(
            settled.waves[1].counters.pending, pending_when_held,
            "nothing released inside the window"
        );
        assert_eq!(
            settled.waves[2].counters.pending, settled.waves[2].counters.total,
            "no member of the third wave released: {:?}",
            settled.waves[2]
        );
        s.fleetctl(&["freeze", "clear"]);
        let cleared_ms = fleet_agent::unix_ms();

        // --- it completes ----------------------------------------------------
        let done = until(&s, id, 240, "the rollout to complete", |v| {
            v.summary.phase == RolloutPhase::Completed
        })
        .await;
        let third_started = done
            .log
            .iter()
            .find(|l| l.detail.contains("wave 3 (rest) started"))
            .map(|l| l.at_ms);
        assert!(
            third_started.is_some_and(|at| at >= cleared_ms - 1_000),
            "the third wave started after the window was cleared: {:?}",
            done.log
        );
        // The devices that never came back time out (the last ones may do
        // so after the completion).
        let members = eventually(
            Duration::from_secs(60),
            "the devices that never came back to time out",
            || async {
                let m = s.members(id).await;
                let timed_out: BTreeSet<String> = m
                    .iter()
                    .filter(|m| m.state == MemberState::TimedOut)
                    .map(|m| m.device.to_string())
                    .collect();
                (timed_out == never)
                    .then_some(m)
                    .ok_or(format!("{timed_out:?}"))
            },
        )
        .await
        .unwrap();
        for m in &members {
            let id = m.device.to_string();
            if never.contains(&id) {
                assert!(!m.message.is_empty(), "{m:?}");
            } else {
                assert_eq!(m.state, MemberState::Succeeded, "{m:?}");
            }
            let attempt = u32::from(failing.contains(&id));
            assert_eq!(m.attempt, attempt, "{m:?}");
        }
        let v = s.view(id).await.unwrap();
        assert_eq!(
            (v.summary.counters.succeeded, v.summary.counters.timed_out),
            (296, 4),
            "{:?}",
            v.summary.counters
        );
        for d in failing.iter().chain(waves[2].iter().take(3)) {
            until_firmware_reported(&s.fc.ctl, d, NEW).await;
        }

        // --- the model's baseline is now the version ----------------------
        let baselines = s.api.client.baselines().await.unwrap();
        assert_eq!(
            baselines
                .0
                .get(&Model::parse(MODEL).unwrap())
                .map(ToString::to_string),
            Some(NEW.to_owned())
        );

        // --- per-province concurrency, from the recorded events ----------
        let (most, downloads) =
            downloads_at_once(&s.fc.data.path().join("fleet.db"), &province_of).await;
        println!("most downloads at once per province: {most:?} ({downloads} downloads)");
        // Every device downloaded once, the two retried twice.
        assert!(downloads >= 302, "{downloads} downloads recorded");
        assert_eq!(most.len(), 4, "{most:?}");
        for (p, n) in &most {
            assert!(*n <= LIMIT, "{p}: {n} downloads at once, above {LIMIT}");
        }
        assert!(
            most.values().any(|n| *n > 1),
            "the measure sees concurrency: {most:?}"
        );

        for f in fleets {
            f.stop().await;
        }
        s.fc.ctl.stop().unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_offline_for_the_whole_rollout_updates_when_it_returns() {
    within(300, "the offline device's rollout", async {
        let s = Setup::start(&["IR-05", "IR-07"], 10).await;
        let draft = s
            .api
            .client
            .create_rollout(&request(2, vec![]))
            .await
            .unwrap();
        let id = draft.summary.id;
        let waves = waves_of(&s, id, 2).await;
        assert_eq!((waves[0].len(), waves[1].len()), (2, 18));
        // One device of the last wave stays off: 17 of 18 is 94 %, at or
        // above the 90 % that completes the wave without it.
        let late = waves[1].iter().next().unwrap().clone();
        let mut first = waves[0].clone();
        first.extend(waves[1].iter().filter(|d| **d != late).cloned());
        let fleet = s.run(&first, 0, 0, 31).await;
        s.api
            .client
            .rollout_action(id, RolloutAction::Start, None)
            .await
            .unwrap();

        let done = until(
            &s,
            id,
            180,
            "the rollout to complete without the device",
            |v| v.summary.phase == RolloutPhase::Completed,
        )
        .await;
        assert_eq!(
            (
                done.summary.counters.succeeded,
                done.summary.counters.pending
            ),
            (19, 1),
            "{:?}",
            done.summary.counters
        );
        let member =
            |m: Vec<MemberView>| m.into_iter().find(|m| m.device.as_str() == late).unwrap();
        let m = member(s.members(id).await);
        assert_eq!(m.state, MemberState::Pending, "{m:?}");
        assert_eq!(m.released_ms, None, "an offline device is not released");

        // It comes back: released as a straggler, it updates and commits.
        let back = s.run(&BTreeSet::from([late.clone()]), 0, 0, 32).await;
        let m = eventually(
            Duration::from_secs(90),
            "the returning device to succeed",
            || async {
                let m = member(s.members(id).await);
                (m.state == MemberState::Succeeded)
                    .then_some(m.clone())
                    .ok_or(format!("{m:?}"))
            },
        )
        .await
        .unwrap();
        let finished = done.finished_ms.unwrap();
        assert!(
            m.released_ms.is_some_and(|at| at >= finished),
            "released as a straggler, after the completion at {finished}: {m:?}"
        );
        until_firmware_reported(&s.fc.ctl, &late, NEW).await;
        let v = s.view(id).await.unwrap();
        assert_eq!(v.summary.phase, RolloutPhase::Completed);
        assert_eq!(v.summary.counters.succeeded, 20, "{:?}", v.summary.counters);

        fleet.stop().await;
        back.stop().await;
        s.fc.ctl.stop().unwrap();
    })
    .await;
}
