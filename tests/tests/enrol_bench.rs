//! Enrolment on an untrusted bench network: no plain HTTP, no token on the
//! command line needed.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use fleet_tests::run_bin;

#[test]
fn fleet_agent_enrol_refuses_plain_http_outside_insecure_dev() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    let fw = dir.path().join("fw");
    std::fs::write(&fw, "2.4.0\n").unwrap();
    std::fs::write(
        &config,
        format!(
            "[device]\nid = \"BB-1\"\nmodel = \"ballot-box-v2\"\nfirmware_version_file = \"{}\"\nstate_dir = \"{}\"\n",
            fw.display(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "enr-aaaa-bbbb\n").unwrap();
    let (ok, _, err) = run_bin(
        "fleet-agent",
        &[
            "enrol",
            "--controller",
            "http://192.0.2.10:8080",
            "--token-file",
            token.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .unwrap();
    assert!(!ok);
    assert!(
        err.contains("refusing to enrol over plain http://"),
        "{err}"
    );
    assert!(
        !dir.path().join("state/device.key").exists(),
        "nothing may be made before refusing"
    );
}
