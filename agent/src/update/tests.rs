//! The update machine without I/O: each test feeds inputs and checks the
//! actions, in particular that every step is persisted before it starts
//! and that success is said only after the commit.

use std::time::Duration;

use fleet_protocol::{
    ArtifactKind, CheckResult, EventKind, FreezeWindow, TargetFirmware, UpdateOutcome, UpdatePhase,
    UpdateStatus, Version,
};

use super::machine::*;

const T0: u64 = 1_800_000_000_000;
const NAME: &str = "firmware/ballot-box-v2/2.5.0.tar";

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn cfg() -> MachineConfig {
    MachineConfig {
        firmware: v("2.4.0"),
        agent: v("0.1.0"),
        health_deadline: Duration::from_secs(300),
        max_download_bytes: 0,
        retry_after: Duration::from_secs(60),
    }
}

fn target() -> Target {
    Target {
        name: NAME.into(),
        artifact: ArtifactKind::Firmware,
        version: v("2.5.0"),
        sha256: "ab".repeat(32),
        len: 1000,
        location: "https://ctl/api/v1/tuf/targets/firmware/ballot-box-v2/abab.2.5.0.tar".into(),
    }
}

fn desired(version: &str, freeze: Vec<FreezeWindow>) -> Input {
    Input::Desired {
        firmware: Some(TargetFirmware {
            version: v(version),
            manifest: format!("firmware/ballot-box-v2/{version}.tar"),
            attempt: 0,
        }),
        agent: None,
        freeze,
    }
}

fn desired_attempt(version: &str, attempt: u32) -> Input {
    Input::Desired {
        firmware: Some(TargetFirmware {
            version: v(version),
            manifest: format!("firmware/ballot-box-v2/{version}.tar"),
            attempt,
        }),
        agent: None,
        freeze: vec![],
    }
}

fn fetches(out: &[Action]) -> bool {
    out.iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. }))
}

fn started(p: Persisted, booted: &str) -> (UpdateMachine, Vec<Action>) {
    let mut m = UpdateMachine::new(cfg(), p);
    let out = m.on(
        Input::Started {
            booted_slot: booted.into(),
        },
        T0,
    );
    (m, out)
}

fn at(step: Step) -> Persisted {
    Persisted {
        step,
        ..Persisted::default()
    }
}

fn persisted_steps(out: &[Action]) -> Vec<&'static str> {
    out.iter()
        .filter_map(|a| match a {
            Action::Persist(p) => Some(p.step.name()),
            _ => None,
        })
        .collect()
}

fn results(out: &[Action]) -> Vec<(UpdateOutcome, String)> {
    out.iter()
        .filter_map(|a| match a {
            Action::Report(EventKind::UpdateResult {
                outcome,
                message,
                ok,
                ..
            }) => {
                assert_eq!(*ok, *outcome == UpdateOutcome::Committed);
                Some((*outcome, message.clone()))
            }
            _ => None,
        })
        .collect()
}

/// Whether each result says the machine tries again by itself.
fn retrying(out: &[Action]) -> Vec<bool> {
    out.iter()
        .filter_map(|a| match a {
            Action::Report(EventKind::UpdateResult { retrying, .. }) => Some(*retrying),
            _ => None,
        })
        .collect()
}

fn phases(out: &[Action]) -> Vec<UpdatePhase> {
    out.iter()
        .filter_map(|a| match a {
            Action::Report(EventKind::UpdateProgress { phase, .. }) => Some(*phase),
            _ => None,
        })
        .collect()
}

/// The position of the first action matching `f`.
fn pos(out: &[Action], f: impl Fn(&Action) -> bool) -> usize {
    out.iter()
        .position(f)
        .unwrap_or_else(|| panic!("no such action in {out:#?}"))
}

/// `step` is persisted before the action that starts it.
fn persisted_before(out: &[Action], step: &str, starts: impl Fn(&Action) -> bool) {
    let p = pos(
        out,
        |a| matches!(a, Action::Persist(p) if p.step.name() == step),
    );
    let s = pos(out, starts);
    assert!(p < s, "{step} persisted at {p}, started at {s}: {out:#?}");
}

fn rebooting() -> Step {
    Step::Rebooting {
        target: target(),
        from_slot: "a".into(),
        to_slot: "b".into(),
    }
}

fn checking() -> Step {
    Step::Checking {
        target: target(),
        from_slot: "a".into(),
        to_slot: "b".into(),
    }
}

fn pass() -> Vec<CheckResult> {
    vec![CheckResult {
        name: "printer".into(),
        passed: true,
        message: None,
    }]
}

fn fail() -> Vec<CheckResult> {
    vec![CheckResult {
        name: "printer".into(),
        passed: false,
        message: Some("no paper".into()),
    }]
}

#[test]
fn a_whole_update_persists_each_step_before_it_starts_and_commits_last() {
    let (mut m, out) = started(Persisted::default(), "a");
    assert_eq!(out, vec![Action::Status(UpdateStatus::Idle)]);

    let out = m.on(desired("2.5.0", vec![]), T0);
    assert_eq!(
        out,
        vec![Action::FetchMetadata {
            name: NAME.into(),
            artifact: ArtifactKind::Firmware,
            version: v("2.5.0"),
        }]
    );

    let out = m.on(Input::MetadataChecked(Ok(target())), T0 + 1);
    persisted_before(&out, "downloading", |a| {
        matches!(a, Action::Download { .. })
    });
    assert!(out.contains(&Action::Status(UpdateStatus::Downloading)));
    assert_eq!(phases(&out), vec![UpdatePhase::Downloading]);

    let out = m.on(Input::Downloaded(Ok(())), T0 + 2);
    persisted_before(&out, "verifying", |a| matches!(a, Action::CheckHash { .. }));

    let out = m.on(Input::HashChecked(Ok(())), T0 + 3);
    persisted_before(&out, "installing", |a| matches!(a, Action::Install { .. }));
    assert!(matches!(m.step(), Step::Installing { from_slot, .. } if from_slot == "a"));

    let out = m.on(Input::Installed(Ok("b".into())), T0 + 4);
    persisted_before(&out, "rebooting", |a| *a == Action::Reboot);
    assert!(
        results(&out).is_empty(),
        "an install is not success: {out:#?}"
    );

    // The reboot: a new machine from what was persisted, booted into b.
    let (mut m, out) = started(m.persisted().clone(), "b");
    persisted_before(&out, "checking", |a| {
        matches!(
            a,
            Action::ArmTimer {
                timer: UpdateTimer::HealthDeadline,
                ..
            }
        )
    });
    assert!(results(&out).is_empty(), "a boot is not success: {out:#?}");

    // Checks pass before the broker is reached: not yet.
    assert!(m.on(Input::Checks(pass()), T0 + 10).is_empty());
    let out = m.on(Input::Connected(true), T0 + 11);
    assert!(out.contains(&Action::MarkGood), "{out:#?}");
    assert!(results(&out).is_empty());

    let out = m.on(Input::Committed(Ok(())), T0 + 12);
    assert_eq!(persisted_steps(&out), vec!["idle"]);
    assert!(out.contains(&Action::FirmwareCommitted(v("2.5.0"))));
    assert_eq!(
        results(&out),
        vec![(UpdateOutcome::Committed, "committed".to_string())]
    );
    assert_eq!(m.persisted().installed_sha256, Some(target().sha256));
    // The result comes after the idle step is on disk.
    assert!(
        pos(&out, |a| matches!(a, Action::Persist(_)))
            < pos(&out, |a| matches!(a, Action::Report(_)))
    );
}

#[test]
fn the_installed_version_asks_for_nothing() {
    let (mut m, _) = started(Persisted::default(), "a");
    assert!(m.on(desired("2.4.0", vec![]), T0).is_empty());
}

#[test]
fn nothing_is_fetched_before_the_machine_knows_the_booted_slot() {
    let mut m = UpdateMachine::new(cfg(), Persisted::default());
    assert!(m.on(desired("2.5.0", vec![]), T0).is_empty());
    let out = m.on(
        Input::Started {
            booted_slot: "a".into(),
        },
        T0,
    );
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::FetchMetadata { .. })),
        "{out:#?}"
    );
}

#[test]
fn an_older_version_is_refused_once_and_not_tried_again() {
    let (mut m, _) = started(Persisted::default(), "a");
    let out = m.on(desired("2.3.0", vec![]), T0);
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, UpdateOutcome::Failed);
    assert!(r[0].1.contains("older"), "{}", r[0].1);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));
    assert!(m.on(desired("2.3.0", vec![]), T0 + 1).is_empty());
}

#[test]
fn a_signed_target_older_than_installed_or_not_the_one_asked_is_refused() {
    for (t, why) in [
        (
            Target {
                version: v("2.3.0"),
                ..target()
            },
            "not the one asked",
        ),
        (
            Target {
                name: "firmware/laptop/2.5.0.tar".into(),
                ..target()
            },
            "not the one asked",
        ),
    ] {
        let (mut m, _) = started(Persisted::default(), "a");
        m.on(desired("2.5.0", vec![]), T0);
        let out = m.on(Input::MetadataChecked(Ok(t)), T0);
        let r = results(&out);
        assert_eq!(r.len(), 1, "{out:#?}");
        assert!(r[0].1.contains(why), "{}", r[0].1);
        assert!(!out.iter().any(|a| matches!(a, Action::Download { .. })));
        assert_eq!(m.persisted().given_up.as_deref(), Some(NAME));
    }
}

#[test]
fn a_target_over_the_download_cap_is_refused_before_downloading() {
    let mut m = UpdateMachine::new(
        MachineConfig {
            max_download_bytes: 999,
            ..cfg()
        },
        Persisted::default(),
    );
    m.on(
        Input::Started {
            booted_slot: "a".into(),
        },
        T0,
    );
    m.on(desired("2.5.0", vec![]), T0);
    let out = m.on(Input::MetadataChecked(Ok(target())), T0);
    assert!(!out.iter().any(|a| matches!(a, Action::Download { .. })));
    assert!(results(&out)[0].1.contains("max_download_bytes"));
}

#[test]
fn a_metadata_refusal_is_reported_permanent_ones_given_up_transient_ones_retried() {
    let (mut m, _) = started(Persisted::default(), "a");
    m.on(desired("2.5.0", vec![]), T0);
    let out = m.on(
        Input::MetadataChecked(Err(Refusal {
            reason: "connection refused".into(),
            permanent: false,
        })),
        T0,
    );
    assert_eq!(results(&out)[0].1, "connection refused");
    assert_eq!(retrying(&out), [true], "a passing cause: tried again");
    assert!(out.contains(&Action::Status(UpdateStatus::Failed)));
    assert!(out.contains(&Action::ArmTimer {
        timer: UpdateTimer::Reconsider,
        after: Duration::from_secs(60)
    }));
    let out = m.on(Input::TimerFired(UpdateTimer::Reconsider), T0 + 60_000);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));

    let out = m.on(
        Input::MetadataChecked(Err(Refusal {
            reason: "signature threshold not met".into(),
            permanent: true,
        })),
        T0,
    );
    assert_eq!(results(&out)[0].1, "signature threshold not met");
    assert_eq!(retrying(&out), [false], "given up: not tried again");
    assert_eq!(m.persisted().given_up.as_deref(), Some(NAME));
    assert!(m.on(desired("2.5.0", vec![]), T0 + 1).is_empty());
    // Another version is tried.
    let out = m.on(desired("2.6.0", vec![]), T0 + 2);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));
}

#[test]
fn download_progress_is_reported_every_five_percent_or_ten_seconds() {
    let (mut m, _) = started(at(Step::Downloading { target: target() }), "a");
    let mut reported = Vec::new();
    for (bytes, t) in [(10, 1), (30, 2), (50, 3), (60, 4), (100, 5), (101, 6)] {
        let out = m.on(Input::DownloadProgress { bytes, total: 1000 }, T0 + t);
        if !phases(&out).is_empty() {
            reported.push(bytes);
        }
    }
    assert_eq!(reported, vec![50, 100]);
    // Ten seconds later, even a small step is reported.
    let out = m.on(
        Input::DownloadProgress {
            bytes: 110,
            total: 1000,
        },
        T0 + 10_006,
    );
    assert_eq!(phases(&out), vec![UpdatePhase::Downloading]);
    let out = m.on(
        Input::DownloadProgress {
            bytes: 1000,
            total: 1000,
        },
        T0 + 10_007,
    );
    assert_eq!(phases(&out), vec![UpdatePhase::Downloading]);
}

#[test]
fn a_failed_download_or_hash_ends_failed_without_touching_a_slot_and_is_retried() {
    let (mut m, _) = started(at(Step::Downloading { target: target() }), "a");
    let out = m.on(Input::Downloaded(Err("stalled".into())), T0);
    assert_eq!(
        results(&out),
        vec![(UpdateOutcome::Failed, "stalled".into())]
    );
    assert_eq!(
        retrying(&out),
        [true],
        "the agent downloads again by itself"
    );
    assert!(out.iter().any(|a| matches!(
        a,
        Action::ArmTimer {
            timer: UpdateTimer::Reconsider,
            ..
        }
    )));
    assert_eq!(m.step(), &Step::Idle);

    let (mut m, _) = started(at(Step::Verifying { target: target() }), "a");
    let out = m.on(Input::HashChecked(Err("sha256 mismatch".into())), T0);
    assert!(out.contains(&Action::DiscardDownload));
    assert_eq!(results(&out)[0].0, UpdateOutcome::Failed);
    assert!(!out.iter().any(|a| matches!(a, Action::Install { .. })));
}

#[test]
fn a_failed_install_ends_failed() {
    let (mut m, out) = installing_again();
    assert!(out.iter().any(|a| matches!(a, Action::Install { .. })));
    let out = m.on(Input::Installed(Err("disk full".into())), T0);
    assert_eq!(results(&out)[0].0, UpdateOutcome::Failed);
    assert!(results(&out)[0].1.contains("disk full"));
}

/// A machine restarted at `installing` from slot `a`, booted from `a`,
/// past the hash check it does again: its next actions install.
fn installing_again() -> (UpdateMachine, Vec<Action>) {
    let (mut m, _) = started(
        at(Step::Installing {
            target: target(),
            from_slot: "a".into(),
        }),
        "a",
    );
    let out = m.on(Input::HashChecked(Ok(())), T0);
    (m, out)
}

#[test]
fn a_restart_at_installing_that_booted_the_new_slot_checks_it_and_never_writes_the_old_one() {
    let (_, out) = started(
        at(Step::Installing {
            target: target(),
            from_slot: "a".into(),
        }),
        "b",
    );
    assert_eq!(persisted_steps(&out), vec!["checking"]);
    assert!(!out.iter().any(|a| matches!(a, Action::Install { .. })));
}

#[test]
fn restart_at_each_step_resumes_it() {
    let (_, out) = started(at(Step::Downloading { target: target() }), "a");
    persisted_before(&out, "downloading", |a| {
        matches!(a, Action::Download { .. })
    });
    let (_, out) = started(at(Step::Verifying { target: target() }), "a");
    persisted_before(&out, "verifying", |a| matches!(a, Action::CheckHash { .. }));
    // Installing is resumed through verifying: the image is hashed again.
    let (mut m, out) = started(
        at(Step::Installing {
            target: target(),
            from_slot: "a".into(),
        }),
        "a",
    );
    persisted_before(&out, "verifying", |a| matches!(a, Action::CheckHash { .. }));
    let out = m.on(Input::HashChecked(Ok(())), T0);
    persisted_before(&out, "installing", |a| matches!(a, Action::Install { .. }));
    let (_, out) = started(at(rebooting()), "b");
    assert_eq!(persisted_steps(&out), vec!["checking"]);
    let (_, out) = started(at(checking()), "b");
    assert_eq!(persisted_steps(&out), vec!["checking"]);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::ArmTimer {
            timer: UpdateTimer::HealthDeadline,
            ..
        }
    )));
}

#[test]
fn booting_the_old_slot_after_rebooting_or_checking_means_the_bootloader_fell_back() {
    for step in [rebooting(), checking()] {
        let (m, out) = started(at(step), "a");
        let r = results(&out);
        assert_eq!(r.len(), 1, "{out:#?}");
        assert_eq!(r[0].0, UpdateOutcome::RolledBack);
        assert!(r[0].1.contains("fell back"), "{}", r[0].1);
        assert!(!out.contains(&Action::MarkGood));
        assert_eq!(m.step(), &Step::Idle);
        assert_eq!(m.persisted().given_up.as_deref(), Some(NAME));
    }
}

#[test]
fn failing_checks_at_the_deadline_roll_back_with_the_reason() {
    let (mut m, _) = started(at(checking()), "b");
    assert!(m.on(Input::Connected(true), T0).is_empty());
    assert!(m.on(Input::Checks(fail()), T0 + 1).is_empty());
    let out = m.on(Input::TimerFired(UpdateTimer::HealthDeadline), T0 + 300_000);
    persisted_before(&out, "rolling-back", |a| *a == Action::MarkBad);
    assert!(
        results(&out).is_empty(),
        "rolled back only once the old slot booted"
    );
    let out = m.on(Input::MarkedBad(Ok(())), T0 + 300_001);
    assert_eq!(out, vec![Action::Reboot]);

    let (m, out) = started(m.persisted().clone(), "a");
    let r = results(&out);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, UpdateOutcome::RolledBack);
    assert!(r[0].1.contains("printer: no paper"), "{}", r[0].1);
    assert_eq!(m.step(), &Step::Idle);
}

#[test]
fn no_broker_by_the_deadline_rolls_back() {
    let (mut m, _) = started(at(checking()), "b");
    m.on(Input::Checks(pass()), T0);
    let out = m.on(Input::TimerFired(UpdateTimer::HealthDeadline), T0 + 300_000);
    let Some(Action::Persist(p)) = out.iter().find(|a| matches!(a, Action::Persist(_))) else {
        panic!("{out:#?}")
    };
    assert!(matches!(&p.step, Step::RollingBack { reason, .. } if reason.contains("broker")));
}

#[test]
fn a_restart_while_rolling_back_on_the_new_slot_marks_bad_again() {
    let step = Step::RollingBack {
        target: target(),
        from_slot: "a".into(),
        to_slot: "b".into(),
        reason: "checks failed".into(),
    };
    let (_, out) = started(at(step), "b");
    persisted_before(&out, "rolling-back", |a| *a == Action::MarkBad);
    assert!(results(&out).is_empty());
}

#[test]
fn a_failed_reboot_rolls_back() {
    let (mut m, _) = installing_again();
    m.on(Input::Installed(Ok("b".into())), T0);
    let out = m.on(Input::RebootFailed("no reboot command".into()), T0);
    persisted_before(&out, "rolling-back", |a| *a == Action::MarkBad);
}

#[test]
fn a_freeze_window_holds_the_update_reports_frozen_once_and_ends() {
    let w = FreezeWindow {
        from_ms: T0 - 1000,
        to_ms: T0 + 3_600_000,
    };
    let (mut m, _) = started(Persisted::default(), "a");
    let out = m.on(desired("2.5.0", vec![w]), T0);
    assert_eq!(persisted_steps(&out), vec!["idle"], "the window is kept");
    assert_eq!(m.persisted().freeze, vec![w]);
    assert_eq!(phases(&out), vec![UpdatePhase::Frozen]);
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));
    assert!(out.contains(&Action::ArmTimer {
        timer: UpdateTimer::Reconsider,
        after: Duration::from_millis(3_600_000)
    }));
    // The controller asks again: still frozen, said once.
    let out = m.on(desired("2.5.0", vec![w]), T0 + 10);
    assert!(phases(&out).is_empty());
    assert!(!out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));
    // After a restart the window still holds (it was persisted).
    let (mut m2, _) = started(m.persisted().clone(), "a");
    let out = m2.on(desired("2.5.0", vec![]), T0 + 20);
    assert_eq!(
        m2.persisted().freeze,
        Vec::<FreezeWindow>::new(),
        "a new desired state replaces windows"
    );
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));
    // The window ends.
    let out = m.on(Input::TimerFired(UpdateTimer::Reconsider), w.to_ms);
    assert!(out
        .iter()
        .any(|a| matches!(a, Action::FetchMetadata { .. })));
}

#[test]
fn a_freeze_that_begins_during_the_download_stops_the_install() {
    let w = FreezeWindow {
        from_ms: T0 + 100,
        to_ms: T0 + 1000,
    };
    let mut p = at(Step::Verifying { target: target() });
    p.freeze = vec![w];
    let (mut m, _) = started(p, "a");
    let out = m.on(Input::HashChecked(Ok(())), T0 + 200);
    assert!(!out.iter().any(|a| matches!(a, Action::Install { .. })));
    assert_eq!(phases(&out), vec![UpdatePhase::Frozen]);
    let out = m.on(Input::TimerFired(UpdateTimer::Reconsider), T0 + 1000);
    persisted_before(&out, "installing", |a| matches!(a, Action::Install { .. }));
}

#[test]
fn a_held_install_goes_on_when_the_windows_are_cleared() {
    let w = FreezeWindow {
        from_ms: T0,
        to_ms: T0 + 3_600_000,
    };
    let mut p = at(Step::Verifying { target: target() });
    p.freeze = vec![w];
    let (mut m, _) = started(p, "a");
    let out = m.on(Input::HashChecked(Ok(())), T0 + 10);
    assert_eq!(phases(&out), vec![UpdatePhase::Frozen]);
    // The same window again: still held.
    let out = m.on(desired("2.5.0", vec![w]), T0 + 20);
    assert!(!out.iter().any(|a| matches!(a, Action::Install { .. })));
    // Cleared by the controller: installed now, not at the window's end.
    let out = m.on(desired("2.5.0", vec![]), T0 + 30);
    persisted_before(&out, "installing", |a| matches!(a, Action::Install { .. }));
}

#[test]
fn an_agent_binary_is_handed_over_after_verification() {
    let (mut m, _) = started(Persisted::default(), "a");
    m.on(
        Input::Desired {
            firmware: None,
            agent: Some(TargetFirmware {
                version: v("0.2.0"),
                manifest: "agent/x86-64-linux/0.2.0".into(),
                attempt: 0,
            }),
            freeze: vec![],
        },
        T0,
    );
    let t = Target {
        name: "agent/x86-64-linux/0.2.0".into(),
        artifact: ArtifactKind::Agent,
        version: v("0.2.0"),
        ..target()
    };
    let out = m.on(Input::MetadataChecked(Ok(t)), T0);
    assert!(out.iter().any(|a| matches!(
        a,
        Action::Download {
            from_sha256: None,
            ..
        }
    )));
    m.on(Input::Downloaded(Ok(())), T0);
    let out = m.on(Input::HashChecked(Ok(())), T0);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::HandOverAgent { .. })),
        "{out:#?}"
    );
    let out = m.on(Input::AgentHandedOver(Ok(())), T0);
    assert_eq!(persisted_steps(&out), vec!["idle"]);
    assert_eq!(phases(&out), vec![UpdatePhase::Rebooting]);
    assert_eq!(out.last(), Some(&Action::RestartAgent));
    assert!(results(&out).is_empty(), "the trial reports the result");
}

#[test]
fn a_delta_is_asked_for_when_the_installed_image_is_known() {
    let mut p = at(Step::Idle);
    p.installed_sha256 = Some("cd".repeat(32));
    let (mut m, _) = started(p, "a");
    m.on(desired("2.5.0", vec![]), T0);
    let out = m.on(Input::MetadataChecked(Ok(target())), T0);
    assert!(out.contains(&Action::Download {
        target: target(),
        from_sha256: Some("cd".repeat(32))
    }));
}

#[test]
fn the_state_file_round_trips_and_reads_idle_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = super::state::StateFile::in_dir(&dir.path().join("update"));
    assert_eq!(file.load().unwrap(), Persisted::default());
    let p = Persisted {
        step: checking(),
        freeze: vec![FreezeWindow {
            from_ms: 1,
            to_ms: 2,
        }],
        given_up: Some("x".into()),
        given_up_attempt: 3,
        attempt: 3,
        installed_sha256: None,
    };
    file.save(&p).unwrap();
    assert_eq!(file.load().unwrap(), p);
    std::fs::write(file.path(), "{").unwrap();
    assert!(file.load().unwrap_err().to_string().contains("damaged"));
}

fn section() -> super::UpdateSection {
    super::UpdateSection {
        enabled: true,
        repo_url: "https://ctl:8443/api/v1/tuf/".into(),
        trusted_root: "/usr/share/sandogh/root.json".into(),
        installer: "dir".into(),
        slots_dir: "".into(),
        rauc: "rauc".into(),
        hook: vec![],
        health_deadline_secs: 300,
        max_download_bytes: 0,
        delta: true,
        agent_trial_secs: 120,
        reboot_by_exit: false,
        retry_secs: 300,
    }
}

#[test]
fn the_update_section_is_checked_and_defaults_fill_in() {
    use std::path::Path;
    let state = Path::new("/var/lib/fleet-agent");
    let reboot = vec!["systemctl".to_string(), "reboot".to_string()];
    let cfg = section()
        .validate(state, &reboot, "", Path::new(""))
        .unwrap()
        .unwrap();
    assert_eq!(
        cfg.repo_url, "https://ctl:8443/api/v1/tuf",
        "no trailing slash"
    );
    assert_eq!(cfg.dir, state.join("update"));
    assert_eq!(
        cfg.installer,
        super::InstallerKind::Dir {
            slots_dir: state.join("slots")
        }
    );
    assert_eq!(cfg.hold_at, None);
    let off = super::UpdateSection {
        enabled: false,
        ..section()
    };
    assert!(off
        .validate(state, &[], "", Path::new(""))
        .unwrap()
        .is_none());

    for (bad, key) in [
        (
            super::UpdateSection {
                repo_url: "http://ctl/api/v1/tuf".into(),
                ..section()
            },
            "repo_url",
        ),
        (
            super::UpdateSection {
                trusted_root: "".into(),
                ..section()
            },
            "trusted_root",
        ),
        (
            super::UpdateSection {
                installer: "grub".into(),
                ..section()
            },
            "installer",
        ),
        (
            super::UpdateSection {
                installer: "command".into(),
                ..section()
            },
            "hook",
        ),
        (
            super::UpdateSection {
                health_deadline_secs: 0,
                ..section()
            },
            "health_deadline_secs",
        ),
    ] {
        let err = bad
            .validate(state, &reboot, "", Path::new(""))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // No way to reboot: refused.
    let err = section()
        .validate(state, &[], "", Path::new(""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("commands.reboot"), "{err}");
    // The test hook needs the event directory.
    let cfg = super::UpdateSection {
        reboot_by_exit: true,
        ..section()
    }
    .validate(state, &[], "checking", Path::new("/tmp/hooks"))
    .unwrap()
    .unwrap();
    assert_eq!(
        cfg.hold_at,
        Some(("checking".to_string(), "/tmp/hooks".into()))
    );
}

/// Takes a device from idle through an install of 2.5.0 at `attempt` to a
/// rollback (checks fail at the deadline, the old slot boots again).
fn rolled_back_at(attempt: u32) -> Persisted {
    let (mut m, _) = started(Persisted::default(), "a");
    assert!(fetches(&m.on(desired_attempt("2.5.0", attempt), T0)));
    m.on(Input::MetadataChecked(Ok(target())), T0);
    m.on(Input::Downloaded(Ok(())), T0);
    m.on(Input::HashChecked(Ok(())), T0);
    m.on(Input::Installed(Ok("b".into())), T0);
    assert!(matches!(m.step(), Step::Rebooting { .. }), "{:?}", m.step());
    // The reboot: a new machine on the persisted state, the new slot booted.
    let (mut m, _) = started(m.persisted().clone(), "b");
    m.on(Input::Connected(true), T0);
    m.on(Input::Checks(fail()), T0);
    m.on(Input::TimerFired(UpdateTimer::HealthDeadline), T0 + 300_000);
    m.on(Input::MarkedBad(Ok(())), T0 + 300_001);
    // The bootloader takes the old slot back.
    let (m, out) = started(m.persisted().clone(), "a");
    let r = results(&out);
    assert_eq!(r.len(), 1, "{out:#?}");
    assert_eq!(r[0].0, UpdateOutcome::RolledBack);
    m.persisted().clone()
}

#[test]
fn a_target_given_up_is_not_tried_again_at_the_same_attempt_but_is_at_the_next() {
    let p = rolled_back_at(0);
    assert_eq!(p.given_up.as_deref(), Some(NAME));
    assert_eq!(p.given_up_attempt, 0);
    let (mut m, _) = started(p, "a");
    assert!(!fetches(&m.on(desired_attempt("2.5.0", 0), T0)));
    assert!(m.idle());
    assert!(fetches(&m.on(desired_attempt("2.5.0", 1), T0 + 1)));
}

#[test]
fn the_attempt_given_up_is_kept_across_a_restart() {
    let p = rolled_back_at(1);
    assert_eq!(p.given_up_attempt, 1);
    // Saved and loaded like the runtime does, then a restart.
    let dir = tempfile::tempdir().unwrap();
    let file = super::state::StateFile::in_dir(&dir.path().join("update"));
    file.save(&p).unwrap();
    let (mut m, _) = started(file.load().unwrap(), "a");
    assert!(!fetches(&m.on(desired_attempt("2.5.0", 1), T0)));
    assert!(fetches(&m.on(desired_attempt("2.5.0", 2), T0 + 1)));
}

#[test]
fn a_metadata_refusal_remembers_the_attempt_it_was_refused_at() {
    let (mut m, _) = started(Persisted::default(), "a");
    m.on(desired_attempt("2.5.0", 4), T0);
    m.on(
        Input::MetadataChecked(Err(Refusal {
            reason: "bad signature".into(),
            permanent: true,
        })),
        T0,
    );
    assert_eq!(m.persisted().given_up.as_deref(), Some(NAME));
    assert_eq!(m.persisted().given_up_attempt, 4);
    assert!(!fetches(&m.on(desired_attempt("2.5.0", 4), T0 + 1)));
    assert!(fetches(&m.on(desired_attempt("2.5.0", 5), T0 + 2)));
}

#[test]
fn a_state_file_from_before_attempts_reads_as_given_up_at_attempt_zero() {
    let old = r#"{"step":{"step":"idle"},"freeze":[],"given_up":"firmware/ballot-box-v2/2.5.0.tar","installed_sha256":null}"#;
    let p: Persisted = serde_json::from_str(old).unwrap();
    assert_eq!(p.given_up.as_deref(), Some(NAME));
    assert_eq!(p.given_up_attempt, 0);
    let (mut m, _) = started(p, "a");
    assert!(!fetches(&m.on(desired_attempt("2.5.0", 0), T0)));
    assert!(fetches(&m.on(desired_attempt("2.5.0", 1), T0 + 1)));
}
