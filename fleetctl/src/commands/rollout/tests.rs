use fleet_api::types::{PolicyView, ProvinceCounters, RolloutLogEntry, RolloutPhase, WaveView};
use serde_json::json;

use super::*;
use crate::render::{render, Output};

fn counters(total: u32, succeeded: u32, failed: u32, pending: u32, skipped: u32) -> Counters {
    Counters {
        total,
        pending,
        downloading: total - succeeded - failed - pending - skipped,
        succeeded,
        failed,
        skipped,
        ..Counters::default()
    }
}

fn province(p: &str, c: Counters) -> ProvinceCounters {
    ProvinceCounters {
        province: p.parse().unwrap(),
        counters: c,
    }
}

/// A rollout in its second wave: the canary done, Tehran and Alborz
/// running, the rest pending.
fn view() -> RolloutView {
    RolloutView {
        summary: RolloutSummary {
            id: 3,
            name: "ballot-box-v2 2.5.0".into(),
            artifact: "firmware".into(),
            model: "ballot-box-v2".into(),
            version: "2.5.0".into(),
            phase: RolloutPhase::Running,
            wave: 1,
            wave_count: 3,
            paused_reason: None,
            held: None,
            counters: counters(300, 80, 1, 180, 2),
            created_ms: 1,
        },
        target: "firmware/ballot-box-v2/2.5.0.tar".into(),
        created_by: "ops".into(),
        started_ms: Some(2),
        finished_ms: None,
        selector: RolloutSelector::default(),
        canary: Some(CanaryRequest {
            devices: Some(50),
            percent: None,
        }),
        policy: PolicyView {
            failure_threshold_pct: 2.0,
            success_threshold_pct: 95.0,
            max_downloads_per_province: 40,
            allowed_hours: Some("02:00-06:00".into()),
            utc_offset_min: 210,
            device_timeout_s: 7200,
        },
        waves: vec![
            WaveView {
                index: 0,
                name: "canary".into(),
                state: WaveState::Done,
                counters: counters(50, 49, 1, 0, 0),
                provinces: vec![province("IR-23", counters(50, 49, 1, 0, 0))],
            },
            WaveView {
                index: 1,
                name: "IR-23+IR-30".into(),
                state: WaveState::Running,
                counters: counters(70, 31, 0, 0, 2),
                provinces: vec![
                    province("IR-23", counters(40, 20, 0, 0, 0)),
                    province("IR-30", counters(30, 11, 0, 0, 2)),
                ],
            },
            WaveView {
                index: 2,
                name: "rest".into(),
                state: WaveState::Pending,
                counters: counters(180, 0, 0, 180, 0),
                provinces: vec![province("IR-02", counters(180, 0, 0, 180, 0))],
            },
        ],
        provinces: vec![
            province("IR-02", counters(180, 0, 0, 180, 0)),
            province("IR-23", counters(90, 69, 1, 0, 0)),
            province("IR-30", counters(30, 11, 0, 0, 2)),
        ],
        log: vec![RolloutLogEntry {
            // 1403-12-01 06:15 in Tehran.
            at_ms: 1_739_910_600_000 + (6 * 60 + 15) * 60_000,
            kind: "wave-done".into(),
            detail: "wave 1 (canary): 49 of 50 succeeded".into(),
        }],
    }
}

#[test]
fn the_canary_is_a_count_or_a_percentage() {
    assert_eq!(
        parse_canary("50"),
        Ok(CanaryRequest {
            devices: Some(50),
            percent: None
        })
    );
    assert_eq!(
        parse_canary("5%"),
        Ok(CanaryRequest {
            devices: None,
            percent: Some(5.0)
        })
    );
    assert_eq!(parse_canary("0.5%").unwrap().percent, Some(0.5));
    for bad in ["", "fifty", "-3", "150%", "5 %x"] {
        let e = parse_canary(bad).unwrap_err();
        assert!(e.starts_with("--canary"), "{bad}: {e}");
    }
    assert!(parse_canary("0").unwrap_err().contains("no canary"));
    assert!(parse_canary("0%").unwrap_err().contains("no canary"));
    assert!(parse_canary("150%")
        .unwrap_err()
        .contains("a percentage is 0 to 100"));
}

#[test]
fn thresholds_are_percentages_with_or_without_the_sign() {
    assert_eq!(parse_percent("2%"), Ok(2.0));
    assert_eq!(parse_percent("2.5"), Ok(2.5));
    assert_eq!(parse_percent("95%"), Ok(95.0));
    assert!(parse_percent("101%").unwrap_err().contains("0 to 100"));
    assert!(parse_percent("two").unwrap_err().contains("e.g. 2%"));
}

#[test]
fn hours_are_a_local_range_that_may_wrap_past_midnight() {
    assert_eq!(parse_hours("02:00-06:00"), Ok("02:00-06:00".into()));
    assert_eq!(parse_hours("22:30-5:00"), Ok("22:30-05:00".into()));
    assert_eq!(parse_hours("18:00-24:00"), Ok("18:00-24:00".into()));
    for (bad, why) in [
        ("02:00", "no '-'"),
        ("2-6", "is not HH:MM"),
        ("02:00-25:00", "is not a time of day"),
        ("02:60-03:00", "is not a time of day"),
        ("03:00-03:00", "the start is the end"),
        ("00:00-24:00", "leave --hours out"),
    ] {
        let e = parse_hours(bad).unwrap_err();
        assert!(e.contains(why) && e.contains("HH:MM-HH:MM"), "{bad}: {e}");
    }
}

#[test]
fn device_timeouts_take_units_and_refuse_less_than_a_minute() {
    assert_eq!(parse_timeout("2h"), Ok(7200));
    assert_eq!(parse_timeout("90m"), Ok(5400));
    assert_eq!(parse_timeout("1d"), Ok(86_400));
    assert_eq!(parse_timeout("3600"), Ok(3600));
    assert!(parse_timeout("30s")
        .unwrap_err()
        .contains("at least a minute"));
    assert!(parse_timeout("2w")
        .unwrap_err()
        .contains("--device-timeout"));
}

#[test]
fn a_wave_is_a_list_of_known_provinces() {
    assert_eq!(
        parse_wave("IR-23, IR-30"),
        Ok(vec!["IR-23".to_owned(), "IR-30".to_owned()])
    );
    assert!(parse_wave("IR-23,Tehran")
        .unwrap_err()
        .contains("\"Tehran\" is not a province code"));
    assert!(parse_wave("IR-99").unwrap_err().contains("IR-00 to IR-30"));
    assert!(parse_wave(",").unwrap_err().contains("no province"));
}

#[test]
fn the_issues_sentence_becomes_one_request() {
    // "2.5.0 on every ballot box, 50 canaries, then Tehran and Alborz, then
    // everyone else, pause above 2%, 40 downloads per province".
    let req = Create {
        model: "ballot-box-v2".into(),
        version: "2.5.0".into(),
        canary: Some(parse_canary("50").unwrap()),
        waves: vec![parse_wave("IR-23,IR-30").unwrap()],
        fail_above: Some(parse_percent("2%").unwrap()),
        max_downloads_per_province: Some(40),
        hours: Some(parse_hours("02:00-06:00").unwrap()),
        device_timeout_s: Some(parse_timeout("2h").unwrap()),
        ..Create::default()
    }
    .request()
    .unwrap();
    assert_eq!(
        serde_json::to_value(&req).unwrap(),
        json!({
            "artifact": "firmware", "model": "ballot-box-v2", "version": "2.5.0",
            "selector": {"include_new": false},
            "canary": {"devices": 50},
            "waves": [["IR-23", "IR-30"]],
            "policy": {"failure_threshold_pct": 2.0, "max_downloads_per_province": 40,
                       "allowed_hours": "02:00-06:00", "device_timeout_s": 7200},
            "draft": false
        })
    );
}

#[test]
fn a_devices_file_adds_one_id_a_line_without_comments() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("devices.txt");
    std::fs::write(
        &path,
        "BB-23-000001\n# spares\n\nBB-23-000002  # the last\n",
    )
    .unwrap();
    let req = Create {
        devices: vec!["BB-02-000009".into()],
        devices_file: Some(path),
        ..Create::default()
    }
    .request()
    .unwrap();
    assert_eq!(
        req.selector.devices,
        ["BB-02-000009", "BB-23-000001", "BB-23-000002"]
    );
}

#[test]
fn the_bars_are_succeeded_of_those_to_update_with_the_counters_as_message() {
    let b = bars(&view());
    let keys: Vec<&str> = b.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "wave/0",
            "wave/1",
            "wave/2",
            "province/IR-02",
            "province/IR-23",
            "province/IR-30"
        ]
    );
    assert_eq!(
        b[0],
        BarLine {
            key: "wave/0".into(),
            label: "wave 1 canary".into(),
            pos: 49,
            len: 50,
            message: "done 49 succeeded, 1 failed".into(),
        }
    );
    assert_eq!(b[1].label, "wave 2 IR-23+IR-30");
    assert_eq!(
        (b[1].pos, b[1].len),
        (31, 68),
        "skipped devices are not counted"
    );
    assert_eq!(
        b[1].message,
        "running 37 downloading, 31 succeeded, 2 skipped"
    );
    assert_eq!(b[2].message, "pending 180 pending");
    assert_eq!(b[5].label, "  IR-30");
    assert_eq!((b[5].pos, b[5].len), (11, 28));
}

#[test]
fn the_headline_names_the_wave_failures_and_why_it_stopped() {
    let mut v = view();
    assert_eq!(
        headline(&v),
        "rollout 3 (ballot-box-v2 2.5.0): running, wave 2 of 3; 80 of 298 succeeded, 1 failed, 0 timed out"
    );
    v.summary.phase = RolloutPhase::Paused;
    v.summary.paused_reason =
        Some("wave 1 (canary): 4 of 30 devices failed (13.3%), above the 2% threshold".into());
    v.summary.held = Some("freeze window until 1403-12-03".into());
    let h = headline(&v);
    assert!(
        h.ends_with("; paused: wave 1 (canary): 4 of 30 devices failed (13.3%), above the 2% threshold; held: freeze window until 1403-12-03"),
        "{h}"
    );
}

#[test]
fn show_renders_the_plan_waves_with_provinces_and_the_log() {
    let t = render(&Rollout(view()), Output::Table);
    let mut lines = t.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("rollout 3 (ballot-box-v2 2.5.0): running, wave 2 of 3"));
    assert_eq!(
        lines.next().unwrap(),
        "target firmware/ballot-box-v2/2.5.0.tar (firmware), created by ops"
    );
    assert_eq!(
        lines.next().unwrap(),
        "policy: pause above 2% failed, a wave is done at 95% succeeded, at most 40 downloads per province, hours 02:00-06:00, device timeout 7200 s"
    );
    assert_eq!(lines.next().unwrap(), "");
    assert_eq!(
        lines.next().unwrap(),
        "WAVE  NAME         STATE    PROVINCE  TOTAL  PENDING  DOWNLOADING  INSTALLING  REBOOTING  SUCCEEDED  FAILED  TIMED_OUT  SKIPPED"
    );
    assert_eq!(
        lines.next().unwrap(),
        "1     canary       done               50     0        0            0           0          49         1       0          0"
    );
    assert_eq!(
        lines.next().unwrap(),
        "1                           IR-23     50     0        0            0           0          49         1       0          0"
    );
    assert!(
        t.ends_with("\nlog:\n1403-12-01 06:15 (2025-02-19) +03:30  wave-done wave 1 (canary): 49 of 50 succeeded\n"),
        "{t}"
    );

    let c = render(&Rollout(view()), Output::Csv);
    assert!(c.starts_with("wave,name,state,province,total,"), "{c}");
    assert_eq!(c.lines().count(), 1 + 3 + 4, "{c}");
    let j: Value = serde_json::from_str(&render(&Rollout(view()), Output::Json)).unwrap();
    assert_eq!(j["id"], 3);
    assert_eq!(j["waves"][1]["provinces"][1]["province"], "IR-30");
}

#[test]
fn the_list_has_a_row_per_rollout_with_why_it_stopped() {
    let mut paused = view().summary;
    paused.id = 4;
    paused.phase = RolloutPhase::Paused;
    paused.paused_reason = Some("operator: checking the printers".into());
    let r = Rollouts(vec![view().summary, paused]);
    let c = render(&r, Output::Csv);
    let mut lines = c.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,name,artifact,model,version,phase,wave,why,total,pending,downloading,installing,rebooting,succeeded,failed,timed_out,skipped"
    );
    assert_eq!(
        lines.next().unwrap(),
        "3,ballot-box-v2 2.5.0,firmware,ballot-box-v2,2.5.0,running,2/3,,300,180,37,0,0,80,1,0,2"
    );
    assert!(lines
        .next()
        .unwrap()
        .contains(",paused,2/3,operator: checking the printers,"));
    assert!(render(&Rollouts(vec![]), Output::Table).ends_with("no rollout\n"));
}
