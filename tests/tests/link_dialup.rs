//! A device on the dial-up profile (issue 8, test 2): a namespaced host
//! (`fleet_tests::link::Host`) behind a 56 kbit/s link (tc tbf, both ways)
//! losing 3 % of its packets at random (nftables), talking to a real
//! `fleet-controller` process and its managed Mosquitto through the link.
//!
//! - enrolment: `fleet-agent enrol` inside the namespace, over HTTPS
//!   through the link;
//! - reports: `fleet-agent run` inside, over mutual-TLS MQTT through the
//!   link; its state and health reach the store;
//! - catching up after a day offline: the agent is stopped and the link
//!   cut; the device's outbox is given what a day without a link leaves in
//!   it on this profile (`fleet_tests::offline_day`: a health sample every
//!   `sample_secs`, coalesced by the agent's own outbox into one record per
//!   `coalesce_secs`, so 24 or 25 records; three check failures and their
//!   recoveries; an update result). Only the passage of time is
//!   simulated: the records carry timestamps spread over the 24 hours
//!   and are made in a moment through the agent library's outbox, with
//!   the calls its runtime makes while offline. The agent is started
//!   again with the link still cut, then the link returns: every event
//!   reaches the store once (none taken for a re-delivery, no gap left,
//!   although the outbox sends the update result before the events
//!   numbered before it), every health record reaches ingest, and the
//!   bytes on the wire from the link's return until then are printed
//!   (the target is 20 KB; `link-bench` measures it without loss);
//! - a 5 MB download that completes through resume after the link is cut
//!   twice mid-transfer. 5 MB at 56 kbit/s takes about 15 minutes, too
//!   long for the suite, so this part runs at 2 Mbit/s with the same 3 %
//!   loss and the same two cuts: the resume path is the same; the figure
//!   at 56 kbit/s is the size divided by the rate.
//!
//! Inside the host, `localhost` is the root side of the link, where
//! forwarders carry the API's and the broker's ports on to 127.0.0.1 (the
//! certificates name `localhost`; see `fleet_tests::link`). The controller
//! is told `broker.host = "localhost"`, so enrolment hands the device that.
//!
//! Needs root; without it the test fails and says why.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use fleet_agent::link::{LinkProfile, ProfileName};
use fleet_tests::link::{enrol_through, Host};
use fleet_tests::{eventually, metric, offline_day, within, Controller};

const REGISTRY: &str = "province,county,county_name_en,station_id,station_name\n\
    IR-07,IR-07-ZAHE,Zahedan,ST-ZAHE-1,Village school\n";
const DEVICE: &str = "BB-07-000056";
/// The dial-up profile.
const DIALUP_KBIT: u32 = 56;
const LOSS_PERCENT: u8 = 3;
/// The download part's rate (see the header).
const DOWNLOAD_KBIT: u32 = 2000;
const DOWNLOAD_BYTES: usize = 5 * 1024 * 1024;

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_device_on_dial_up_enrols_reports_and_downloads_through_two_cuts() {
    let host = Host::require();
    let data = tempfile::tempdir().unwrap();
    let ctl = Controller::start_with_env(
        data.path(),
        &["--freshness-secs", "3600"],
        &[("FLEET_CONTROLLER__BROKER__HOST", "localhost")],
    )
    .unwrap();
    ctl.import_registry(REGISTRY).unwrap();
    let api_port = port_of(&ctl.api);
    let api = host.forward(api_port).unwrap();
    let broker = host.forward(ctl.mqtt_port).unwrap();

    host.rate(DIALUP_KBIT).unwrap();
    host.loss(LOSS_PERCENT).unwrap();

    // 1. Enrolment through the dial-up link.
    let before = host.bytes().unwrap();
    // The dial-up profile as shipped; only the reconnect backoff is
    // shortened, so that the link's return is noticed within seconds.
    let dev = enrol_through(
        &ctl,
        &host,
        DEVICE,
        "IR-07",
        "IR-07-ZAHE",
        "[link]\nprofile = \"dial-up\"\n[mqtt]\nbackoff_base_ms = 1000\nbackoff_max_ms = 10000\n",
    )
    .unwrap();
    let enrol_bytes = host.bytes().unwrap().since(before);
    println!(
        "enrolment over {DIALUP_KBIT} kbit/s with {LOSS_PERCENT} % loss: {} B up, {} B down on the wire",
        enrol_bytes.from_host, enrol_bytes.to_host
    );

    // 2. Reports through the link.
    let before = host.bytes().unwrap();
    let config = dev.config.to_str().unwrap().to_owned();
    let mut agent = host
        .spawn_bin("fleet-agent", &["run", "--config", &config], &[])
        .unwrap();
    let client = ctl.client();
    let seen = eventually(
        Duration::from_secs(120),
        "the dial-up device's state and health in the store",
        || async {
            let d = client.device(DEVICE).await.map_err(|e| e.to_string())?;
            match (&d.state, &d.health) {
                (Some(_), Some(_)) => Ok(d),
                _ => Err(format!(
                    "state {:?}, health {:?}",
                    d.state.is_some(),
                    d.health.is_some()
                )),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()));
    assert_eq!(seen.device.id.as_str(), DEVICE);
    assert!(broker.connections() >= 1);
    let report_bytes = host.bytes().unwrap().since(before);
    println!(
        "connect and first reports: {} B up, {} B down on the wire",
        report_bytes.from_host, report_bytes.to_host
    );

    // 3. Catching up after a day offline (see the header).
    agent.terminate(Duration::from_secs(20)).unwrap();
    host.cut().unwrap();
    let profile = LinkProfile::of(ProfileName::DialUp);
    let day = offline_day::fill(
        &dev.state_dir(),
        DEVICE,
        profile.health_sample_secs,
        profile.coalesce_secs,
        fleet_agent::unix_ms(),
    )
    .unwrap();
    assert!(
        (24..=25).contains(&day.health_records),
        "a day of samples every {} s coalesced per {} s: {day:?}",
        profile.health_sample_secs,
        profile.coalesce_secs
    );
    assert_eq!(day.events.len(), 7, "{day:?}");
    let health = |text: &str| metric(text, "fleet_ingest_messages_total", "kind=\"health\"");
    let health_before = health(&within(20, "GET /metrics", client.metrics()).await.unwrap());
    let mut agent = host
        .spawn_bin("fleet-agent", &["run", "--config", &config], &[])
        .unwrap();
    agent
        .wait_for_line("outbox opened", Duration::from_secs(30))
        .unwrap();
    // The agent tries the cut link for a while, as it would all day.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = host.bytes().unwrap();
    host.restore().unwrap();
    let pool = within(
        10,
        "opening the store",
        sqlx::SqlitePool::connect(&format!(
            "sqlite://{}",
            data.path().join("fleet.db").display()
        )),
    )
    .await
    .unwrap();
    let arrived = eventually(
        Duration::from_secs(600),
        "the day's events in the store and its health records at ingest",
        || async {
            let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
                "SELECT boot, seq, COUNT(*) FROM events WHERE device = ?1 GROUP BY boot, seq",
            )
            .bind(DEVICE)
            .fetch_all(&pool)
            .await
            .map_err(|e| e.to_string())?;
            let stored: Vec<(u64, u64)> = rows
                .iter()
                .map(|(b, s, _)| (*b as u64, *s as u64))
                .filter(|k| day.events.contains(k))
                .collect();
            let twice: Vec<_> = rows.iter().filter(|r| r.2 != 1).collect();
            if !twice.is_empty() {
                return Err(format!("stored more than once: {twice:?}"));
            }
            let m = client.metrics().await.map_err(|e| e.to_string())?;
            let records = health(&m) - health_before;
            if stored.len() == day.events.len() && records >= day.health_records as f64 {
                Ok(records)
            } else {
                Err(format!(
                    "{} of {} events stored, {records} of {} health records received",
                    stored.len(),
                    day.events.len(),
                    day.health_records
                ))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nagent output:\n{}", agent.output()));
    let catch_up = host.bytes().unwrap().since(before);
    // Every number the day used arrived: nothing is left missing, although
    // the outbox sent the update result before the events numbered before it.
    let gaps: Vec<(i64, i64, i64)> =
        sqlx::query_as("SELECT boot, from_seq, to_seq FROM event_gaps WHERE device = ?1")
            .bind(DEVICE)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert!(gaps.is_empty(), "gaps left after the catch-up: {gaps:?}");
    println!(
        "a day offline ({} health samples in {} records, {} events, {} B in the outbox), then the link returns: \
         {arrived} health messages and every event arrived; {} B on the wire ({} up, {} down) with {LOSS_PERCENT} % loss [target <= 20480]",
        day.health_samples,
        day.health_records,
        day.events.len(),
        day.outbox_bytes,
        catch_up.total(),
        catch_up.from_host,
        catch_up.to_host
    );
    pool.close().await;
    agent.terminate(Duration::from_secs(20)).unwrap();

    // 4. A 5 MB download cut twice mid-transfer (at 2 Mbit/s; see the header).
    host.rate(DOWNLOAD_KBIT).unwrap();
    let image: Vec<u8> = (0..DOWNLOAD_BYTES)
        .map(|i| ((i as u64).wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let artifacts = data.path().join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("image-2.5.0.bin"), &image).unwrap();
    let dest = dev.dir.path().join("image-2.5.0.bin");
    let part = dev.dir.path().join("image-2.5.0.bin.part");
    let url = format!("https://localhost:{api_port}/api/v1/artifacts/image-2.5.0.bin");
    let ca = dev.state_dir().join("ca.crt");
    let args: Vec<String> = vec![
        "fetch".into(),
        url,
        dest.display().to_string(),
        "--sha256".into(),
        sha256_hex(&image),
        "--len".into(),
        image.len().to_string(),
        "--ca".into(),
        ca.display().to_string(),
        "--config".into(),
        config.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut fetch = host.spawn_bin("fleet-agent", &args, &[]).unwrap();
    let before = host.bytes().unwrap();
    for (n, at) in [(1, DOWNLOAD_BYTES / 3), (2, 2 * DOWNLOAD_BYTES / 3)] {
        eventually(
            Duration::from_secs(300),
            &format!("the download past byte {at} before cut {n}"),
            || async {
                let have = size(&part);
                if have as usize >= at {
                    Ok(())
                } else {
                    Err(format!("{have} bytes"))
                }
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\nfetch output:\n{}", fetch.output()));
        // The link goes down, and the far side forgets the connection
        // meanwhile (as a NAT or a restarted router does): when the link
        // returns, the device's connection is refused and it must resume.
        host.cut().unwrap();
        api.sever();
        tokio::time::sleep(Duration::from_secs(3)).await;
        host.restore().unwrap();
    }
    let status = within(600, "the download to finish", async {
        loop {
            if let Ok(status) = fetch.wait(Duration::from_millis(10)) {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let out = fetch.output();
    assert!(status.success(), "fetch failed:\n{out}");
    assert_eq!(std::fs::read(&dest).unwrap(), image, "the file differs");
    let line = out.lines().find(|l| l.starts_with("fetched ")).unwrap();
    let resumed: u32 = line
        .split('(')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(resumed >= 2, "expected two resumes: {line}");
    let dl = host.bytes().unwrap().since(before);
    println!(
        "5 MB over {DOWNLOAD_KBIT} kbit/s, {LOSS_PERCENT} % loss, two cuts: {line}; {} B down, {} B up on the wire",
        dl.to_host, dl.from_host
    );
    drop(host);
    ctl.stop().unwrap();
}
