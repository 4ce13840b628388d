//! A device that never comes back after "rebooting" is reported as timed
//! out (hawkBit #693). A real `fleet-controller` with its managed Mosquitto
//! and `updates.reboot_timeout_secs = 3`; two devices enrolled through the
//! real flow publish their update events over mutual TLS with their own
//! certificates:
//!
//! - A reports downloading … installing, rebooting, then nothing: its
//!   device page says outcome `timed-out` (and `fleetctl device` too), and
//!   `fleet_update_results_total{outcome="timed-out"}` counts it. When it
//!   does come back and reports committed, that replaces the time-out.
//! - B reports the same steps, then checking and committed: it is
//!   committed, never timed out.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::time::Duration;

use fleet_protocol::{
    ArtifactKind, DeviceId, Envelope, Event, EventKind, Payload, UpdateOutcome, UpdatePhase,
    Version,
};
use fleet_tests::builders::{mqtt_connect, mqtt_drive, mqtt_tls, now_ms, publish};
use fleet_tests::{eventually, metric, Controller, EnrolledDevice};
use rumqttc::AsyncClient;

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-23,IR-23-TEH,Tehran,ST-TEH-1,School 1\n";
const VERSION: &str = "2.5.0";
const TOTAL: u64 = 10_240;

/// A device's MQTT session and its event numbering.
struct Device {
    id: String,
    client: AsyncClient,
    seq: u64,
    boot: u64,
}

impl Device {
    async fn connect(ctl: &Controller, dev: &EnrolledDevice, boot: u64) -> Self {
        let opts = mqtt_tls(
            ctl.mqtt_port,
            &dev.id,
            &dev.ca,
            Some((dev.cert.as_slice(), dev.key.as_slice())),
        );
        let (client, el) = mqtt_connect(opts).await.unwrap();
        mqtt_drive(el);
        Self {
            id: dev.id.clone(),
            client,
            seq: 0,
            boot,
        }
    }

    async fn event(&mut self, kind: EventKind) {
        self.seq += 1;
        let env = Envelope::new(
            DeviceId::parse(&self.id).unwrap(),
            now_ms(),
            Payload::Event(Event {
                seq: self.seq,
                at_ms: now_ms(),
                kind,
                boot: Some(self.boot),
            }),
        );
        publish(&self.client, &env, false).await;
    }

    async fn progress(&mut self, phase: UpdatePhase, bytes: u64) {
        self.event(EventKind::UpdateProgress {
            version: Version::parse(VERSION).unwrap(),
            phase,
            bytes,
            total: TOTAL,
            artifact: ArtifactKind::Firmware,
        })
        .await;
    }

    async fn result(&mut self, outcome: UpdateOutcome, message: &str) {
        self.event(EventKind::UpdateResult {
            version: Version::parse(VERSION).unwrap(),
            ok: outcome == UpdateOutcome::Committed,
            message: message.into(),
            outcome,
            artifact: ArtifactKind::Firmware,
            retrying: false,
        })
        .await;
    }

    /// Downloading to rebooting, as an agent reports them.
    async fn up_to_rebooting(&mut self) {
        self.progress(UpdatePhase::Downloading, 0).await;
        self.progress(UpdatePhase::Downloading, TOTAL).await;
        self.progress(UpdatePhase::Verifying, TOTAL).await;
        self.progress(UpdatePhase::Installing, TOTAL).await;
        self.progress(UpdatePhase::Rebooting, TOTAL).await;
    }
}

/// The device page's update outcome (`None` while it runs), once the
/// update's last phase is `phase`.
async fn outcome_when(ctl: &Controller, id: &str, want: Option<&str>) -> serde_json::Value {
    let api = ctl.client();
    eventually(
        Duration::from_secs(30),
        &format!("{id}'s update outcome {want:?}"),
        || async {
            let d = api.device(id).await.map_err(|e| e.to_string())?;
            let u = d.update.clone().ok_or("no update yet")?;
            if u.outcome.as_deref() == want {
                Ok(serde_json::to_value(&u).unwrap())
            } else {
                Err(format!("{u:?}"))
            }
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_silent_after_rebooting_is_timed_out_and_one_that_commits_is_not() {
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_env(
        data.path(),
        &[],
        &[
            ("FLEET_CONTROLLER__UPDATES__REBOOT_TIMEOUT_SECS", "3"),
            ("FLEET_CONTROLLER__UPDATES__CHECK_SECS", "1"),
        ],
    )
    .unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let a = ctl.enrol("BB-23-SILENT", "IR-23", "IR-23-TEH", "").unwrap();
    let b = ctl.enrol("BB-23-BACK", "IR-23", "IR-23-TEH", "").unwrap();
    let mut silent = Device::connect(&ctl, &a, 11).await;
    let mut back = Device::connect(&ctl, &b, 22).await;

    silent.up_to_rebooting().await;
    back.up_to_rebooting().await;
    back.progress(UpdatePhase::Checking, TOTAL).await;
    back.result(
        UpdateOutcome::Committed,
        "booted 2.5.0, health check passed",
    )
    .await;

    let committed = outcome_when(&ctl, &b.id, Some("committed")).await;
    assert_eq!(committed["version"], VERSION);
    assert_eq!(committed["artifact"], "firmware");

    let timed_out = outcome_when(&ctl, &a.id, Some("timed-out")).await;
    assert_eq!(timed_out["phase"], "rebooting", "{timed_out}");
    assert_eq!(timed_out["bytes"], TOTAL);
    let message = timed_out["message"].as_str().unwrap();
    assert!(
        message.contains("3 s") && message.contains("rebooting"),
        "{message}"
    );
    let started = timed_out["started_ms"].as_u64().unwrap();
    let last = timed_out["last_event_ms"].as_u64().unwrap();
    assert!(started <= last, "{timed_out}");

    // B, which committed, was not timed out meanwhile (the sweeper has run
    // since: it marked A).
    let d = ctl.client().device(&b.id).await.unwrap();
    assert_eq!(d.update.unwrap().outcome.as_deref(), Some("committed"));

    let (ok, out, err) = ctl.fleetctl(&["device", &a.id]).unwrap();
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("update") && l.contains("timed-out")),
        "{out}"
    );

    let metrics = ctl.client().metrics().await.unwrap();
    assert!(
        metric(
            &metrics,
            "fleet_update_results_total",
            "outcome=\"timed-out\""
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "fleet_update_results_total",
            "outcome=\"committed\""
        ) >= 1.0,
        "{metrics}"
    );

    // A comes back late after all and commits: that is its outcome now.
    silent.progress(UpdatePhase::Checking, TOTAL).await;
    silent
        .result(UpdateOutcome::Committed, "booted 2.5.0 after a long fsck")
        .await;
    let late = outcome_when(&ctl, &a.id, Some("committed")).await;
    assert_eq!(
        late["started_ms"].as_u64(),
        Some(started),
        "the same update"
    );

    ctl.stop().unwrap();
}
