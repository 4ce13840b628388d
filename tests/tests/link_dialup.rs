//! A device on the dial-up profile (issue 8, test 2): a namespaced host
//! (`fleet_tests::link::Host`) behind a 56 kbit/s link (tc tbf, both ways)
//! losing 3 % of its packets at random (nftables), talking to a real
//! `fleet-controller` process and its managed Mosquitto through the link.
//!
//! - enrolment: `fleet-agent enrol` inside the namespace, over HTTPS
//!   through the link;
//! - reports: `fleet-agent run` inside, over mutual-TLS MQTT through the
//!   link; its state and health reach the store;
//! - catching up after a day offline: needs the durable outbox (another
//!   branch); the place for it is marked below;
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

use fleet_tests::link::{enrol_through, Host};
use fleet_tests::{eventually, within, Controller};

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
    ring::digest::digest(&ring::digest::SHA256, bytes)
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
    // TODO(merge): the dial-up agent profile (`[link] profile = "dial-up"`)
    // is being written on another branch; once merged, put it here instead
    // of these plain settings.
    let dev = enrol_through(
        &ctl,
        &host,
        DEVICE,
        "IR-07",
        "IR-07-ZAHE",
        "[mqtt]\nkeep_alive_secs = 60\nbackoff_base_ms = 1000\nbackoff_max_ms = 20000\n[health]\nsample_secs = 5\nreport_secs = 30\n",
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

    // 3. Catching up after a day offline.
    // TODO(merge): needs the durable outbox (another branch): cut the link,
    // have the agent record a day's worth of events (check failures, an
    // update result) and restart it, restore the link, then check every
    // event arrives once and in order, and the bytes it took
    // (`host.bytes()`), against the 20 KB target.

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
