#![allow(clippy::unwrap_used)]

use super::*;

const T0: u64 = 1_700_000_000_000;
const TRIAL_MS: u64 = 120_000;

fn v(s: &str) -> Version {
    Version::parse(s).unwrap()
}

fn record() -> TrialRecord {
    TrialRecord {
        version: v("0.3.0"),
        previous_version: v("0.2.0"),
        exe: PathBuf::from("/usr/bin/fleet-agent"),
        trial_ms: TRIAL_MS,
        installed_ms: T0 - 5_000,
        started_ms: None,
        deadline_ms: None,
        starts: 0,
        decided: None,
    }
}

fn started(running: &str) -> TrialInput {
    TrialInput::Started {
        running: v(running),
    }
}

/// The result event of the last action, and the record persisted before it.
fn ended(actions: &[TrialAction]) -> (UpdateOutcome, String, TrialRecord) {
    let [TrialAction::Persist(r), last] = actions else {
        panic!("a decision is persisted, then carried out: {actions:?}");
    };
    let (TrialAction::Commit(kind) | TrialAction::RollBack(kind)) = last else {
        panic!("not a decision: {last:?}");
    };
    let EventKind::UpdateResult {
        version,
        ok,
        message,
        outcome,
        artifact,
        ..
    } = kind
    else {
        panic!("not an update result: {kind:?}");
    };
    assert_eq!(version, &v("0.3.0"));
    assert_eq!(artifact, &ArtifactKind::Agent);
    assert_eq!(*ok, *outcome == UpdateOutcome::Committed);
    assert_eq!(
        matches!(last, TrialAction::Commit(_)),
        *outcome == UpdateOutcome::Committed
    );
    let d = r.decided.clone().expect("the decision is in the record");
    assert_eq!((&d.outcome, &d.reason), (outcome, message));
    (*outcome, message.clone(), r.clone())
}

#[test]
fn the_first_start_records_the_deadline_and_waits_the_whole_trial() {
    let mut t = Trial::new(record());
    let actions = t.on(started("0.3.0"), T0);
    let mut expected = record();
    expected.starts = 1;
    expected.started_ms = Some(T0);
    expected.deadline_ms = Some(T0 + TRIAL_MS);
    assert_eq!(
        actions,
        vec![
            TrialAction::Persist(expected),
            TrialAction::Wait(Duration::from_millis(TRIAL_MS))
        ]
    );
}

#[test]
fn reaching_the_broker_commits() {
    let mut t = Trial::new(record());
    t.on(started("0.3.0"), T0);
    let (outcome, message, r) = ended(&t.on(TrialInput::Connected, T0 + 2_000));
    assert_eq!(outcome, UpdateOutcome::Committed);
    assert!(message.contains("reached the broker"), "{message}");
    assert_eq!(r.starts, 1);
    // Decided once: a late deadline changes nothing.
    assert_eq!(t.on(TrialInput::WaitOver, T0 + TRIAL_MS), vec![]);
    assert_eq!(t.on(TrialInput::Connected, T0 + TRIAL_MS), vec![]);
}

#[test]
fn the_deadline_without_a_connection_rolls_back_with_the_reason() {
    let mut t = Trial::new(record());
    t.on(started("0.3.0"), T0);
    let (outcome, message, _) = ended(&t.on(TrialInput::WaitOver, T0 + TRIAL_MS));
    assert_eq!(outcome, UpdateOutcome::RolledBack);
    assert!(
        message.contains("did not reach the broker within 120 s")
            && message.contains("0.2.0 restored"),
        "{message}"
    );
    assert_eq!(t.on(TrialInput::Connected, T0 + TRIAL_MS + 1), vec![]);
}

#[test]
fn a_restart_keeps_the_first_deadline() {
    let mut t = Trial::new(record());
    t.on(started("0.3.0"), T0);
    // Killed; the next start, 50 s later, has 70 s left.
    let mut t = Trial::new(t.record().clone());
    let actions = t.on(started("0.3.0"), T0 + 50_000);
    assert_eq!(
        actions[1],
        TrialAction::Wait(Duration::from_millis(TRIAL_MS - 50_000))
    );
    assert_eq!(t.record().starts, 2);
    assert_eq!(t.record().started_ms, Some(T0));
    // Started again past the deadline: rolled back at once.
    let mut t = Trial::new(t.record().clone());
    let (outcome, message, r) = ended(&t.on(started("0.3.0"), T0 + TRIAL_MS + 1));
    assert_eq!(outcome, UpdateOutcome::RolledBack);
    assert!(message.contains("of its first start"), "{message}");
    assert_eq!(r.starts, 3);
}

#[test]
fn a_clock_gone_back_does_not_lengthen_the_trial() {
    let mut t = Trial::new(record());
    t.on(started("0.3.0"), T0);
    let mut t = Trial::new(t.record().clone());
    let actions = t.on(started("0.3.0"), T0 - 3_600_000);
    assert_eq!(
        actions[1],
        TrialAction::Wait(Duration::from_millis(TRIAL_MS))
    );
}

#[test]
fn a_binary_that_keeps_restarting_is_rolled_back_after_three_starts() {
    let mut r = record();
    for n in 1..=MAX_STARTS {
        let mut t = Trial::new(r);
        let actions = t.on(started("0.3.0"), T0 + u64::from(n) * 1_000);
        assert!(matches!(actions[1], TrialAction::Wait(_)), "{actions:?}");
        r = t.record().clone();
    }
    let mut t = Trial::new(r);
    let (outcome, message, r) = ended(&t.on(started("0.3.0"), T0 + 5_000));
    assert_eq!(outcome, UpdateOutcome::RolledBack);
    assert!(message.contains("started 4 times"), "{message}");
    assert_eq!(r.starts, MAX_STARTS + 1);
}

#[test]
fn the_old_binary_starting_with_a_trial_record_fails_the_update() {
    // A cut between the record and the swap: the previous agent starts.
    let mut t = Trial::new(record());
    let (outcome, message, r) = ended(&t.on(started("0.2.0"), T0));
    assert_eq!(outcome, UpdateOutcome::Failed);
    assert!(message.contains("reports 0.2.0, not 0.3.0"), "{message}");
    assert_eq!(r.starts, 0, "the new binary never started");
}

#[test]
fn a_decision_found_at_start_is_carried_out_again_without_a_new_one() {
    let mut t = Trial::new(record());
    t.on(started("0.3.0"), T0);
    let decided = ended(&t.on(TrialInput::WaitOver, T0 + TRIAL_MS)).2;
    // Killed while restoring: the restored binary (0.2.0) or the new one
    // starts, finds the decision, and finishes it; nothing new is decided.
    for running in ["0.2.0", "0.3.0"] {
        let mut again = Trial::new(decided.clone());
        let actions = again.on(started(running), T0 + TRIAL_MS + 10);
        let [TrialAction::RollBack(EventKind::UpdateResult { outcome, .. })] = &actions[..] else {
            panic!("{actions:?}");
        };
        assert_eq!(*outcome, UpdateOutcome::RolledBack);
        assert_eq!(again.record(), &decided);
    }
    // The same for a commit.
    let mut t = Trial::new(record());
    t.on(started("0.3.0"), T0);
    let committed = ended(&t.on(TrialInput::Connected, T0 + 1)).2;
    let actions = Trial::new(committed).on(started("0.3.0"), T0 + 2);
    assert!(
        matches!(&actions[..], [TrialAction::Commit(_)]),
        "{actions:?}"
    );
}

#[test]
fn the_record_reads_back_and_writes_leave_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        dir: dir.path().join("update"),
    };
    assert_eq!(files.read_record().unwrap(), None);
    let mut r = record();
    r.decided = Some(Decision {
        outcome: UpdateOutcome::RolledBack,
        reason: "why".into(),
    });
    files.write_record(&r).unwrap();
    assert_eq!(files.read_record().unwrap(), Some(r));
    let names: Vec<_> = std::fs::read_dir(&files.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![OsString::from("agent-trial.json")]);
    std::fs::write(files.record(), b"{ half a rec").unwrap();
    assert!(matches!(
        files.read_record(),
        Err(AgentBinaryError::BadRecord { .. })
    ));
    files.remove_record().unwrap();
    files.remove_record().unwrap();
    assert_eq!(files.read_record().unwrap(), None);
}

#[test]
fn a_trial_that_waits_is_persisted_and_a_connection_commits_it_to_a_result_file() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        dir: dir.path().to_owned(),
    };
    assert!(
        begin(dir.path(), &v("0.3.0"), T0).is_none(),
        "no record, no trial"
    );
    files.write_record(&record()).unwrap();
    let waiting = begin(dir.path(), &v("0.3.0"), T0).expect("the trial waits");
    assert_eq!(waiting.wait, Duration::from_millis(TRIAL_MS));
    let on_disk = files.read_record().unwrap().unwrap();
    assert_eq!((on_disk.starts, on_disk.started_ms), (1, Some(T0)));
    assert!(pending_results(dir.path()).is_empty());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connected = Arc::new(Notify::new());
    let (tx, mut rx) = mpsc::channel(1);
    // Connected before the watch waits: the permit is kept.
    connected.notify_one();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), waiting.watch(connected, tx))
            .await
            .unwrap();
        rx.recv().await.expect("the runtime is told");
    });
    assert_eq!(files.read_record().unwrap(), None, "the record is gone");
    let pending = pending_results(dir.path());
    let [(file, EventKind::UpdateResult { outcome, ok, .. })] = &pending[..] else {
        panic!("{pending:?}");
    };
    assert_eq!((*outcome, *ok), (UpdateOutcome::Committed, true));
    delivered(file);
    assert!(pending_results(dir.path()).is_empty());
}

#[test]
fn a_commit_left_unfinished_is_finished_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        dir: dir.path().to_owned(),
    };
    let mut r = record();
    r.starts = 1;
    r.decided = Some(Decision {
        outcome: UpdateOutcome::Committed,
        reason: "the new agent reached the broker".into(),
    });
    files.write_record(&r).unwrap();
    // The result was written once already before the cut: same file again.
    files
        .write_result(
            r.installed_ms,
            &EventKind::Error {
                message: "x".into(),
            },
        )
        .unwrap();
    assert!(begin(dir.path(), &v("0.3.0"), T0).is_none());
    assert_eq!(files.read_record().unwrap(), None);
    let pending = pending_results(dir.path());
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert!(
        matches!(
            pending[0].1,
            EventKind::UpdateResult {
                outcome: UpdateOutcome::Committed,
                ..
            }
        ),
        "{pending:?}"
    );
}

#[test]
fn pending_results_come_oldest_first_and_skip_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    let files = Files {
        dir: dir.path().to_owned(),
    };
    let result = |version: &str| EventKind::UpdateResult {
        version: v(version),
        ok: false,
        message: "m".into(),
        outcome: UpdateOutcome::RolledBack,
        artifact: ArtifactKind::Agent,
        retrying: false,
    };
    files.write_result(T0 + 10, &result("0.4.0")).unwrap();
    files.write_result(T0, &result("0.3.0")).unwrap();
    std::fs::write(files.results().join("junk.json"), b"not json").unwrap();
    let got: Vec<EventKind> = pending_results(dir.path())
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    assert_eq!(got, vec![result("0.3.0"), result("0.4.0")]);
}

#[test]
fn durable_copies_keep_the_mode_and_replace_whole() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let dest = dir.path().join("dest");
    std::fs::write(&src, b"#!/bin/sh\necho new\n").unwrap();
    std::fs::write(&dest, b"old").unwrap();
    copy_durably(&src, &dest, 0o755).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());
    assert_eq!(mode_of(&dest).unwrap() & 0o777, 0o755);
    assert!(!crate::durable::tmp_beside(&dest).exists());
    let err = copy_durably(&dir.path().join("missing"), &dest, 0o755).unwrap_err();
    assert!(err.to_string().contains("copy to"), "{err}");
    assert_eq!(
        std::fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o755
    );
}
