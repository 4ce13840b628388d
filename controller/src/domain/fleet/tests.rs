use fleet_protocol::*;

use super::*;

const FRESH: u64 = 60_000;

fn reg(id: &str, province: &str, county: Option<&str>) -> Registration {
    Registration {
        id: DeviceId::parse(id).unwrap(),
        model: Model::parse("ballot-box-v2").unwrap(),
        province: ProvinceCode::parse(province).unwrap(),
        county: county.map(|c| CountyCode::parse(c).unwrap()),
        station: None,
        lifecycle: Lifecycle::Enrolled,
        registered_at_ms: 0,
    }
}

/// An envelope sent "now" by the device: each one later than the last.
fn env(id: &str, payload: Payload) -> Envelope {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CLOCK: AtomicU64 = AtomicU64::new(1_000_000);
    Envelope::new(
        DeviceId::parse(id).unwrap(),
        CLOCK.fetch_add(1, Ordering::Relaxed),
        payload,
    )
}

fn env_at(id: &str, sent_at_ms: u64, payload: Payload) -> Envelope {
    Envelope::new(DeviceId::parse(id).unwrap(), sent_at_ms, payload)
}

fn state(fw: &str, checks_ok: bool) -> Payload {
    Payload::State(State {
        model: Model::parse("ballot-box-v2").unwrap(),
        firmware: Version::parse(fw).unwrap(),
        agent: Version::parse("0.1.0").unwrap(),
        update: UpdateStatus::Idle,
        checks: vec![CheckResult {
            name: "printer".into(),
            passed: checks_ok,
            message: None,
        }],
        config_rev: 0,
    })
}

fn presence(online: bool) -> Payload {
    Payload::Presence(Presence {
        status: if online {
            PresenceStatus::Online
        } else {
            PresenceStatus::Offline
        },
        agent: Version::parse("0.1.0").unwrap(),
        session: None,
    })
}

fn presence_in(online: bool, session: u64) -> Payload {
    Payload::Presence(Presence {
        status: if online {
            PresenceStatus::Online
        } else {
            PresenceStatus::Offline
        },
        agent: Version::parse("0.1.0").unwrap(),
        session: Some(session),
    })
}

/// The incremental counts always equal a recount from scratch.
fn assert_consistent(f: &Fleet) {
    for p in ProvinceCode::all() {
        let mut want = Counts::default();
        for d in f.devices.values().filter(|d| d.reg.province == p) {
            want.add(d.reason);
        }
        assert_eq!(f.province_counts(p), want, "{p}");
    }
    let total: u32 = f.county_counts(None).map(|(_, c)| c.total).sum();
    assert_eq!(total as usize, f.len());
}

#[test]
fn lifecycle_of_readiness() {
    let mut f = Fleet::new(FRESH);
    let teh = ProvinceCode::parse("IR-23").unwrap();
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    f.upsert(reg("B", "IR-23", None), Status::default(), 0);
    assert_eq!(f.province_counts(teh).reason(Reason::NeverSeen), 1);
    assert_eq!(f.province_counts(teh).reason(Reason::NotEnrolled), 1);

    let o = f.observe(&env("A", presence(true)), 1_000).unwrap();
    assert!(o.came_online);
    // online but no state yet: still never-seen
    assert_eq!(
        f.get(&DeviceId::parse("A").unwrap()).unwrap().reason,
        Some(Reason::NeverSeen)
    );
    f.observe(&env("A", state("2.4.0", true)), 2_000).unwrap();
    assert_eq!(f.province_counts(teh).ready, 1);

    f.set_baseline(
        Model::parse("ballot-box-v2").unwrap(),
        Version::parse("2.5.0").unwrap(),
        3_000,
    );
    assert_eq!(f.province_counts(teh).reason(Reason::Outdated), 1);
    f.observe(&env("A", state("2.5.0", false)), 4_000).unwrap();
    assert_eq!(f.province_counts(teh).reason(Reason::Unhealthy), 1);
    f.observe(&env("A", presence(false)), 5_000).unwrap();
    assert_eq!(f.province_counts(teh).reason(Reason::Offline), 1);
    assert_consistent(&f);
}

#[test]
fn freshness_window_expires_on_tick() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-02", Some("IR-02-SARI")), Status::default(), 0);
    f.observe(&env("A", state("1.0.0", true)), 1_000).unwrap();
    assert_eq!(f.tick(1_000 + FRESH), 0);
    assert_eq!(f.tick(1_001 + FRESH), 1);
    let p = ProvinceCode::parse("IR-02").unwrap();
    assert_eq!(f.province_counts(p).reason(Reason::Offline), 1);
    // any message makes it fresh again
    f.observe(&env("A", Payload::Health(Health::default())), 2_000 + FRESH)
        .unwrap();
    assert_eq!(f.province_counts(p).ready, 1);
    assert_consistent(&f);
}

#[test]
fn unknown_devices_are_refused() {
    let mut f = Fleet::new(FRESH);
    assert_eq!(
        f.observe(&env("GHOST", presence(true)), 0),
        Err(UnknownDevice(DeviceId::parse("GHOST").unwrap()))
    );
    assert!(f.is_empty());
}

#[test]
fn moving_a_device_moves_its_count() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    f.observe(&env("A", state("1.0.0", true)), 0).unwrap();
    f.register(reg("A", "IR-10", Some("IR-10-ISF")), 0);
    let isf = ProvinceCode::parse("IR-10").unwrap();
    assert_eq!(
        f.province_counts(isf).ready,
        1,
        "status kept across re-registration"
    );
    assert_eq!(
        f.province_counts(ProvinceCode::parse("IR-23").unwrap())
            .total,
        0
    );
    assert_eq!(f.county_counts(None).count(), 1);
    assert_consistent(&f);
}

#[test]
fn filters() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    f.upsert(reg("B", "IR-23", Some("IR-23-RAY")), Status::default(), 0);
    f.upsert(reg("C", "IR-10", Some("IR-10-ISF")), Status::default(), 0);
    f.observe(&env("B", state("1.0.0", true)), 0).unwrap();
    let by = |filter: DeviceFilter| -> Vec<String> {
        f.devices(&filter).map(|d| d.reg.id.to_string()).collect()
    };
    assert_eq!(by(DeviceFilter::default()), ["A", "B", "C"]);
    assert_eq!(
        by(DeviceFilter {
            province: Some(ProvinceCode::parse("IR-23").unwrap()),
            ..Default::default()
        }),
        ["A", "B"]
    );
    assert_eq!(
        by(DeviceFilter {
            readiness: Some(Readiness::Ready),
            ..Default::default()
        }),
        ["B"]
    );
    assert_eq!(
        by(DeviceFilter {
            readiness: Some("never-seen".parse().unwrap()),
            ..Default::default()
        }),
        ["A", "C"]
    );
    assert_eq!(
        by(DeviceFilter {
            county: Some(CountyCode::parse("IR-10-ISF").unwrap()),
            ..Default::default()
        }),
        ["C"]
    );
}

#[test]
fn a_late_will_from_an_older_connection_is_ignored() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    let a = DeviceId::parse("A").unwrap();
    f.observe(&env("A", presence_in(true, 100)), 0).unwrap();
    f.observe(&env("A", state("1.0.0", true)), 0).unwrap();
    // reconnected: a new session
    f.observe(&env("A", presence_in(true, 200)), 10).unwrap();
    // the broker delivers the old connection's will late
    let o = f.observe(&env("A", presence_in(false, 100)), 20).unwrap();
    assert!(o.stale);
    assert_eq!(f.get(&a).unwrap().reason, None);
    // the current connection's will is believed
    f.observe(&env("A", presence_in(false, 200)), 30).unwrap();
    assert_eq!(f.get(&a).unwrap().reason, Some(Reason::Offline));
}

#[test]
fn redelivered_messages_do_not_undo_newer_ones() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    let a = DeviceId::parse("A").unwrap();
    f.observe(&env_at("A", 100, presence_in(true, 100)), 0)
        .unwrap();
    f.observe(&env_at("A", 101, state("1.0.0", false)), 0)
        .unwrap();
    f.observe(&env_at("A", 102, state("1.0.0", true)), 0)
        .unwrap();
    f.observe(&env_at("A", 103, presence_in(false, 100)), 0)
        .unwrap();
    // QoS 1 redelivery after a controller restart: the old online and the
    // older state arrive again.
    assert!(
        f.observe(&env_at("A", 100, presence_in(true, 100)), 5)
            .unwrap()
            .stale
    );
    assert!(
        f.observe(&env_at("A", 101, state("1.0.0", false)), 5)
            .unwrap()
            .stale
    );
    let d = f.get(&a).unwrap();
    assert_eq!(d.reason, Some(Reason::Offline));
    assert!(d.status.state.as_ref().unwrap().all_checks_pass());
    // An exact duplicate is not news either.
    assert!(
        f.observe(&env_at("A", 103, presence_in(false, 100)), 5)
            .unwrap()
            .stale
    );
    assert!(
        f.observe(&env_at("A", 102, state("1.0.0", true)), 5)
            .unwrap()
            .stale
    );
    assert_eq!(
        f.get(&a).unwrap().status.last_seen_ms,
        Some(0),
        "stale messages are not a sign of life"
    );
    // A device whose clock went back is believed again from its next connection.
    f.observe(&env_at("A", 50, presence_in(true, 200)), 6)
        .unwrap();
    f.observe(&env_at("A", 51, state("1.0.0", true)), 6)
        .unwrap();
    assert_eq!(f.get(&a).unwrap().reason, None);
}

#[test]
fn lifecycle_moves() {
    use Lifecycle::*;
    assert!(Enrolled.check_move(Shipped).is_ok());
    assert!(Shipped.check_move(Deployed).is_ok());
    assert!(Deployed.check_move(Shipped).is_ok());
    for from in [Registered, Enrolled, Shipped, Deployed] {
        assert!(from.check_move(Retired).is_ok());
    }
    let err = Retired.check_move(Shipped).unwrap_err().to_string();
    assert!(err.contains("nothing leaves retired"), "{err}");
    assert!(Registered
        .check_move(Shipped)
        .unwrap_err()
        .to_string()
        .contains("not enrolled yet"));
    assert!(Shipped
        .check_move(Enrolled)
        .unwrap_err()
        .to_string()
        .contains("only through enrolment"));
    assert!(Deployed
        .check_move(Registered)
        .unwrap_err()
        .to_string()
        .contains("un-enrolled"));
    assert!(Enrolled
        .check_move(Deployed)
        .unwrap_err()
        .to_string()
        .contains("allowed from enrolled: shipped, retired"));
    assert!(Shipped.is_enrolled() && Deployed.is_enrolled() && !Retired.is_enrolled());
}

/// A device reboots with its clock behind the last connection's: its new
/// connection is believed, and a late will of the old one is not.
#[test]
fn a_reboot_with_the_clock_behind_is_believed() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    let a = DeviceId::parse("A").unwrap();
    f.observe(&env_at("A", 1000, presence_in(true, 1000)), 0)
        .unwrap();
    f.observe(&env_at("A", 1001, state("1.0.0", true)), 0)
        .unwrap();
    f.observe(&env_at("A", 1002, presence_in(false, 1000)), 0)
        .unwrap();
    assert_eq!(f.get(&a).unwrap().reason, Some(Reason::Offline));
    // rebooted, clock at 500
    assert!(
        !f.observe(&env_at("A", 500, presence_in(true, 500)), 1)
            .unwrap()
            .stale
    );
    assert!(
        !f.observe(&env_at("A", 501, state("1.0.0", false)), 1)
            .unwrap()
            .stale
    );
    assert_eq!(f.get(&a).unwrap().reason, Some(Reason::Unhealthy));
    // the old connection's will arrives again, late: not news
    assert!(
        f.observe(&env_at("A", 1000, presence_in(false, 1000)), 2)
            .unwrap()
            .stale
    );
    assert_eq!(f.get(&a).unwrap().reason, Some(Reason::Unhealthy));
}

/// A state sent with the device's clock an hour ahead, then the device's
/// clock is put right: its later states are applied, not frozen out until
/// the clock catches up with the lie.
#[test]
fn a_state_from_a_clock_an_hour_ahead_does_not_freeze_later_states() {
    const HOUR: u64 = 3_600_000;
    let t = 1_800_000_000_000;
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), t);
    let a = DeviceId::parse("A").unwrap();
    f.observe(&env_at("A", t, presence_in(true, t)), t).unwrap();
    let o = f
        .observe(&env_at("A", t + HOUR, state("6.6.6", true)), t + 10)
        .unwrap();
    assert!(!o.stale, "the lying state itself is news");
    let firmware = |f: &Fleet| {
        f.get(&a)
            .unwrap()
            .status
            .state
            .as_ref()
            .unwrap()
            .firmware
            .to_string()
    };
    assert_eq!(firmware(&f), "6.6.6");
    // Within MAX_CLOCK_AHEAD_MS of its arrival, a state sent "before" it is
    // still taken for an older one (the price of tolerating a clock a little ahead).
    assert!(
        f.observe(&env_at("A", t + 1_000, state("1.0.0", true)), t + 1_010)
            .unwrap()
            .stale
    );
    // Ten seconds later, with the clock right: applied.
    let o = f
        .observe(&env_at("A", t + 10_000, state("2.4.0", true)), t + 10_010)
        .unwrap();
    assert!(!o.stale, "a later state was frozen out by the clock ahead");
    assert_eq!(firmware(&f), "2.4.0");
    // And its order holds: a redelivery of it is not news.
    assert!(
        f.observe(&env_at("A", t + 10_000, state("2.4.0", true)), t + 10_020)
            .unwrap()
            .stale
    );
}

#[test]
fn the_device_clock_is_believed_up_to_a_few_seconds_ahead_of_ours() {
    assert_eq!(
        order_key(1_000, 50_000),
        1_000,
        "a clock behind is believed"
    );
    assert_eq!(
        order_key(52_000, 50_000),
        52_000,
        "a little ahead is believed"
    );
    assert_eq!(
        order_key(50_000 + 3_600_000, 50_000),
        50_000 + MAX_CLOCK_AHEAD_MS
    );
    assert_eq!(order_key(u64::MAX, u64::MAX), u64::MAX, "no overflow");
}

fn health_with(cpu: u8, window: Option<(u64, u64)>) -> Payload {
    Payload::Health(Health {
        cpu_pct: cpu,
        window: window.map(|(from_ms, to_ms)| HealthWindow {
            from_ms,
            to_ms,
            samples: 10,
            ..HealthWindow::default()
        }),
        ..Health::default()
    })
}

#[test]
fn samples_coalesced_offline_arriving_late_do_not_replace_a_newer_health() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", None), Status::default(), 0);
    let id = DeviceId::parse("A").unwrap();
    let now = 10_000_000;
    // A live sample at 9,000,000 (device clock), then the outbox delivers
    // samples coalesced while offline, from 1,000,000 to 8,000,000.
    f.observe(&env_at("A", 9_000_000, health_with(11, None)), now)
        .unwrap();
    let o = f
        .observe(
            &env_at(
                "A",
                9_000_100,
                health_with(99, Some((1_000_000, 8_000_000))),
            ),
            now + 1,
        )
        .unwrap();
    assert!(o.stale);
    assert_eq!(
        f.get(&id).unwrap().status.health.as_ref().unwrap().cpu_pct,
        11
    );
    // A coalesced window newer than the health held replaces it.
    f.observe(
        &env_at(
            "A",
            9_500_000,
            health_with(55, Some((9_100_000, 9_400_000))),
        ),
        now + 2,
    )
    .unwrap();
    assert_eq!(
        f.get(&id).unwrap().status.health.as_ref().unwrap().cpu_pct,
        55
    );
    // A live sample always replaces, even from a clock set back.
    f.observe(&env_at("A", 5, health_with(7, None)), now + 3)
        .unwrap();
    assert_eq!(
        f.get(&id).unwrap().status.health.as_ref().unwrap().cpu_pct,
        7
    );
}

#[test]
fn the_desired_state_stays_with_the_device_through_re_registration() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", None), Status::default(), 0);
    f.upsert(reg("B", "IR-23", None), Status::default(), 0);
    let a = DeviceId::parse("A").unwrap();
    let d = Desired {
        config_rev: 4,
        firmware: None,
        agent: None,
        freeze: Vec::new(),
    };
    f.set_desired(&a, d.clone(), 0);
    f.register(reg("A", "IR-23", Some("IR-23-TEH")), 1);
    assert_eq!(f.get(&a).unwrap().desired, Some(d.clone()));
    assert_eq!(f.stored_desired(), [(a.clone(), d)]);
    f.set_lifecycle(&a, Lifecycle::Retired, 2);
    assert!(
        f.stored_desired().is_empty(),
        "a retired device is sent nothing"
    );
}

#[test]
fn readiness_follows_the_update_track_of_the_desired_target() {
    use crate::domain::updates::{Outcome, Track};
    let mut f = Fleet::new(FRESH);
    let teh = ProvinceCode::parse("IR-23").unwrap();
    let a = DeviceId::parse("A").unwrap();
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    f.observe(&env("A", presence(true)), 1_000).unwrap();
    f.observe(&env("A", state("2.4.0", true)), 1_000).unwrap();
    let reason = |f: &Fleet| f.get(&a).unwrap().reason;
    let track = |version: &str, phase: Option<UpdatePhase>, outcome: Option<Outcome>| Track {
        artifact: ArtifactKind::Firmware,
        version: Version::parse(version).unwrap(),
        phase,
        bytes: 0,
        total: 0,
        outcome,
        message: String::new(),
        started_ms: 1_000,
        last_event_ms: 1_000,
        last_at_ms: 1_000,
    };
    // A running track with no desired target for it changes nothing.
    f.set_track(
        &a,
        track("2.5.0", Some(UpdatePhase::Downloading), None),
        2_000,
    );
    assert_eq!(reason(&f), None);
    f.set_desired(
        &a,
        Desired {
            firmware: Some(TargetFirmware {
                version: Version::parse("2.5.0").unwrap(),
                manifest: "firmware/ballot-box-v2/2.5.0.tar".into(),
                attempt: 0,
            }),
            ..Default::default()
        },
        2_000,
    );
    f.set_track(
        &a,
        track("2.5.0", Some(UpdatePhase::Downloading), None),
        2_000,
    );
    assert_eq!(
        reason(&f),
        Some(Reason::Updating),
        "the device still says idle"
    );
    // Held by a freeze window on the device: not updating.
    f.set_track(&a, track("2.5.0", Some(UpdatePhase::Frozen), None), 3_000);
    assert_eq!(reason(&f), None);
    // Rolled back, still on 2.4.0: update-failed.
    let failed = track(
        "2.5.0",
        Some(UpdatePhase::Checking),
        Some(Outcome::RolledBack),
    );
    f.set_track(&a, failed.clone(), 4_000);
    assert_eq!(reason(&f), Some(Reason::UpdateFailed));
    assert_eq!(f.province_counts(teh).reason(Reason::UpdateFailed), 1);
    // An agent update afterwards does not hide the failed firmware.
    let mut agent = track("1.3.0", Some(UpdatePhase::Installing), None);
    agent.artifact = ArtifactKind::Agent;
    f.set_track(&a, agent, 4_100);
    assert_eq!(reason(&f), Some(Reason::UpdateFailed));
    // A new desired target is judged at once: the failed track is of
    // another version, the device is only outdated-or-ready again.
    f.set_desired(
        &a,
        Desired {
            firmware: Some(TargetFirmware {
                version: Version::parse("2.5.1").unwrap(),
                manifest: "firmware/ballot-box-v2/2.5.1.tar".into(),
                attempt: 0,
            }),
            ..Default::default()
        },
        4_200,
    );
    assert_ne!(reason(&f), Some(Reason::UpdateFailed));
    assert_eq!(f.province_counts(teh).reason(Reason::UpdateFailed), 0);
    f.set_desired(
        &a,
        Desired {
            firmware: Some(TargetFirmware {
                version: Version::parse("2.5.0").unwrap(),
                manifest: "firmware/ballot-box-v2/2.5.0.tar".into(),
                attempt: 1,
            }),
            ..Default::default()
        },
        4_300,
    );
    assert_eq!(reason(&f), Some(Reason::UpdateFailed));
    // Timed out by the controller, but the device does run 2.5.0: not failed.
    f.observe(&env("A", state("2.5.0", true)), 5_000).unwrap();
    f.set_track(
        &a,
        track(
            "2.5.0",
            Some(UpdatePhase::Rebooting),
            Some(Outcome::TimedOut),
        ),
        5_000,
    );
    assert_eq!(reason(&f), None);
    assert_consistent(&f);
}

#[test]
fn a_link_change_judges_again_the_devices_behind_it_and_no_other() {
    let mut f = Fleet::new(FRESH);
    f.set_tier([(
        "p01".to_owned(),
        vec![
            ProvinceCode::parse("IR-02").unwrap(),
            ProvinceCode::parse("IR-27").unwrap(),
        ],
    )]);
    let (sari, gol, teh) = (
        ProvinceCode::parse("IR-02").unwrap(),
        ProvinceCode::parse("IR-27").unwrap(),
        ProvinceCode::parse("IR-23").unwrap(),
    );
    let id = |s: &str| DeviceId::parse(s).unwrap();
    for (d, p, c) in [
        ("A", "IR-02", "IR-02-SARI"),
        ("B", "IR-02", "IR-02-SARI"),
        ("C", "IR-27", "IR-27-GORG"),
        ("T", "IR-23", "IR-23-TEH"),
    ] {
        f.upsert(reg(d, p, Some(c)), Status::default(), 0);
    }
    f.observe(&env("T", state("2.4.0", true)), 10_000).unwrap();
    for d in ["A", "B", "C"] {
        f.observe(&env(d, state("2.4.0", true)), 50_000).unwrap();
    }
    f.observe(&env("B", presence(false)), 50_001).unwrap();
    assert_eq!(
        f.link_report("p01", true, 60_000),
        (
            LinkReport::Changed {
                up: true,
                provinces: vec![sari, gol]
            },
            0
        )
    );
    assert_eq!(f.link_report("p09", false, 60_000).0, LinkReport::NotInTier);

    // The link drops at 100 s. T (Tehran, stale by now, not ticked yet)
    // is not judged again; A, still fresh, stays ready.
    let (report, changed) = f.link_report("p01", false, 100_000);
    assert!(matches!(report, LinkReport::Changed { up: false, .. }));
    assert_eq!(changed, 0);
    assert_eq!(f.get(&id("T")).unwrap().reason, None, "not behind the link");
    assert_eq!(f.get(&id("A")).unwrap().reason, None);
    let (broker, link) = f.link_of(sari).unwrap();
    assert_eq!((broker, link.up, link.since_ms), ("p01", false, 100_000));
    assert!(f.link_of(teh).is_none());

    // A window later the silent devices behind the link are link-down; B
    // said goodbye before the cut and T is in no tier: offline.
    assert_eq!(f.tick(120_000), 3);
    assert_eq!(f.get(&id("A")).unwrap().reason, Some(Reason::LinkDown));
    assert_eq!(f.get(&id("B")).unwrap().reason, Some(Reason::Offline));
    assert_eq!(f.get(&id("C")).unwrap().reason, Some(Reason::LinkDown));
    assert_eq!(f.get(&id("T")).unwrap().reason, Some(Reason::Offline));
    assert_eq!(f.province_counts(sari).reason(Reason::LinkDown), 1);
    assert_eq!(f.province_counts(sari).reason(Reason::Offline), 1);
    assert_eq!(f.province_counts(gol).reason(Reason::LinkDown), 1);
    let county_link_down: u32 = f
        .county_counts(Some(sari))
        .map(|(_, c)| c.reason(Reason::LinkDown))
        .sum();
    assert_eq!(county_link_down, 1);
    assert_consistent(&f);

    // The link is back: no one is judged offline for the outage before
    // speaking; A speaks and is ready, C says nothing for a whole window
    // and is offline then.
    assert_eq!(f.link_report("p01", true, 200_000).1, 0);
    assert_eq!(f.get(&id("C")).unwrap().reason, Some(Reason::LinkDown));
    f.observe(&env("A", Payload::Health(Health::default())), 210_000)
        .unwrap();
    assert_eq!(f.get(&id("A")).unwrap().reason, None);
    assert_eq!(f.tick(200_000 + FRESH), 0);
    assert_eq!(f.tick(200_001 + FRESH), 1);
    assert_eq!(f.get(&id("C")).unwrap().reason, Some(Reason::Offline));
    assert_eq!(f.province_counts(gol).reason(Reason::LinkDown), 0);
    assert_consistent(&f);

    // The link drops again: C and A (last heard at 210 s, stale by 300 s
    // but not ticked since) were silent for a window before the cut:
    // offline, and judged so by the link change itself.
    assert_eq!(f.link_report("p01", false, 300_000).1, 1);
    assert_eq!(f.get(&id("C")).unwrap().reason, Some(Reason::Offline));
    assert_eq!(f.get(&id("A")).unwrap().reason, Some(Reason::Offline));
    assert_consistent(&f);
    // A ready device when the link drops stays ready until its report is
    // older than the window, then is link-down.
    let mut g = Fleet::new(FRESH);
    g.set_tier([("p01".to_owned(), vec![sari])]);
    g.upsert(reg("A", "IR-02", Some("IR-02-SARI")), Status::default(), 0);
    g.observe(&env("A", state("2.4.0", true)), 1_000).unwrap();
    assert_eq!(g.link_report("p01", false, 30_000).1, 0);
    assert_eq!(g.tick(1_001 + FRESH), 1);
    assert_eq!(g.province_counts(sari).reason(Reason::LinkDown), 1);
    assert_consistent(&g);
}

#[test]
fn a_device_is_reached_the_way_its_last_newer_message_came() {
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-02", None), Status::default(), 0);
    let heard = |f: &Fleet| f.get(&DeviceId::parse("A").unwrap()).unwrap().reach();
    assert_eq!(
        heard(&f),
        Reach::province(ProvinceCode::parse("IR-02").unwrap()),
        "not heard since the start"
    );
    f.observe_via(
        &env_at("A", 5_000, state("1.0.0", true)),
        Some("bridge.p01"),
        5_000,
    )
    .unwrap();
    assert_eq!(heard(&f).heard, Some(Some("bridge.p01".to_owned())));
    // Directly on the central broker now.
    f.observe_via(&env_at("A", 6_000, state("1.0.1", true)), None, 6_000)
        .unwrap();
    assert_eq!(heard(&f).heard, Some(None));
    // An older state arriving late through the bridge (a flush after an
    // outage) says nothing about where the device is now.
    let o = f
        .observe_via(
            &env_at("A", 5_500, state("1.0.0", true)),
            Some("bridge.p01"),
            7_000,
        )
        .unwrap();
    assert!(o.stale);
    assert_eq!(heard(&f).heard, Some(None));
    // Re-registration (a move to another county) keeps it.
    f.register(reg("A", "IR-02", Some("IR-02-AAA")), 8_000);
    assert_eq!(heard(&f).heard, Some(None));
}

#[test]
fn a_restart_during_an_outage_keeps_the_silent_devices_link_down() {
    // Restarted during p01's outage: the fleet is loaded from the store
    // (last seen at 100 s and 110 s, and one silent long before), then the
    // retained "0" arrives, well past a freshness window later.
    let mut f = Fleet::new(FRESH);
    f.set_tier([(
        "p01".to_owned(),
        vec![ProvinceCode::parse("IR-02").unwrap()],
    )]);
    let seen_at = |at: u64| Status {
        last_seen_ms: Some(at),
        state: match state("1.0.0", true) {
            Payload::State(s) => Some(s),
            _ => unreachable!(),
        },
        ..Status::default()
    };
    let now = 110_000 + 10 * FRESH;
    f.upsert(reg("A", "IR-02", Some("IR-02-AAA")), seen_at(100_000), now);
    f.upsert(reg("B", "IR-02", Some("IR-02-AAA")), seen_at(110_000), now);
    f.upsert(reg("OLD", "IR-02", Some("IR-02-AAA")), seen_at(1_000), now);
    f.upsert(
        reg("ELSE", "IR-23", Some("IR-23-TEH")),
        seen_at(500_000),
        now,
    );
    f.link_report("p01", false, now);
    let reason = |id: &str| f.get(&DeviceId::parse(id).unwrap()).unwrap().reason;
    assert_eq!(reason("A"), Some(Reason::LinkDown));
    assert_eq!(reason("B"), Some(Reason::LinkDown));
    // Silent long before the link went down: offline of its own.
    assert_eq!(reason("OLD"), Some(Reason::Offline));
    let (_, link) = f.link_of(ProvinceCode::parse("IR-02").unwrap()).unwrap();
    assert_eq!((link.up, link.since_ms), (false, 110_000));
}

#[test]
fn a_flush_of_retained_copies_after_an_outage_changes_nothing_but_the_news() {
    // Mosquitto 2.0.11 queues one copy of every retained report of the
    // province on each reconnect attempt of the bridge: after the outage
    // the controller gets copies of the presence and state it holds, the
    // device's real reports of the outage, then copies of the new ones.
    let mut f = Fleet::new(FRESH);
    f.upsert(reg("A", "IR-23", Some("IR-23-TEH")), Status::default(), 0);
    let a = DeviceId::parse("A").unwrap();
    let held = [
        env_at("A", 100, presence_in(true, 100)),
        env_at("A", 101, state("1.0.0", false)),
    ];
    for e in &held {
        assert!(!f.observe(e, 1_000).unwrap().stale);
    }
    let news = [
        env_at("A", 150, presence_in(false, 100)),
        env_at("A", 200, presence_in(true, 200)),
        env_at("A", 201, state("1.0.1", true)),
    ];
    let mut flush = vec![];
    for _ in 0..5 {
        flush.extend(held.iter().map(|e| (e, true)));
    }
    flush.extend(news.iter().map(|e| (e, false)));
    for _ in 0..5 {
        flush.extend(news[1..].iter().map(|e| (e, true)));
    }
    for (i, (e, copy)) in flush.into_iter().enumerate() {
        assert_eq!(
            f.observe_via(e, Some("bridge.p01"), 2_000 + i as u64)
                .unwrap()
                .stale,
            copy,
            "message {i}: {e:?}"
        );
    }
    let d = f.get(&a).unwrap();
    assert_eq!(d.status.presence, Some(PresenceStatus::Online));
    assert_eq!(d.status.session, Some(200));
    assert_eq!(
        d.status.state.as_ref().unwrap().firmware,
        Version::parse("1.0.1").unwrap()
    );
    assert_eq!(d.reason, None);
}

/// Seen at 100,000 and 10,000 simulated devices: a device that connected,
/// reported and said goodbye ended `online` when the goodbye of its new
/// connection reached the controller before that connection's "online"
/// (or a copy of the "online" came later). An "online" of a connection
/// already over is not news.
#[test]
fn an_online_of_a_connection_already_over_is_stale() {
    let mut f = Fleet::new(FRESH);
    let id = DeviceId::parse("A").unwrap();
    f.upsert(reg("A", "IR-02", Some("IR-02-SARI")), Status::default(), 0);
    f.observe(&env("A", presence_in(true, 100)), 1_000).unwrap();
    f.observe(&env("A", state("2.4.0", true)), 1_001).unwrap();
    f.observe(&env("A", presence_in(false, 100)), 1_002)
        .unwrap();
    assert_eq!(f.get(&id).unwrap().reason, Some(Reason::Offline));

    // A new connection's goodbye first, then its "online".
    let o = f
        .observe(&env("A", presence_in(false, 200)), 2_000)
        .unwrap();
    assert!(o.stale, "not the connection held");
    let o = f.observe(&env("A", presence_in(true, 200)), 2_001).unwrap();
    assert!(o.stale, "connection 200 is over");
    assert!(!o.came_online);
    let d = f.get(&id).unwrap();
    assert_eq!(d.status.presence, Some(PresenceStatus::Offline));
    assert_eq!(d.reason, Some(Reason::Offline));

    // A later connection is news as always, and its goodbye ends it.
    let o = f.observe(&env("A", presence_in(true, 300)), 3_000).unwrap();
    assert!(o.came_online);
    assert_eq!(f.get(&id).unwrap().reason, None);
    // A late copy of the ended connection's "online" changes nothing.
    let o = f.observe(&env("A", presence_in(true, 200)), 3_001).unwrap();
    assert!(o.stale);
    f.observe(&env("A", presence_in(false, 300)), 3_002)
        .unwrap();
    assert_eq!(f.get(&id).unwrap().reason, Some(Reason::Offline));
    assert_consistent(&f);
}
