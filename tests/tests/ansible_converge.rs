//! The Ansible deployment (`ansible/`), converged for real on this machine:
//! `ansible-playbook -i tests/inventory site.yml --connection=local` with
//! one central host and two provincial brokers (Mazandaran; Tehran, shared
//! with Alborz) and a laptop, each under its own directory prefix with its
//! own loopback ports, services run by the test-mode runner (there is no
//! systemd here). Then a laptop installed by the agent role and a ballot
//! box enrolled from the image directory report through Mazandaran's
//! broker and its bridge to the controller, `fleetctl readiness` shows
//! them, a second converge changes nothing, the backup unit backs up, and
//! a retirement reaches every broker through the CRL hook.
//!
//! Ansible comes from PyPI (ansible/requirements.txt) into
//! target/ansible-venv, which scripts/ensure-deps makes; without it the
//! tests fail under CI and are skipped elsewhere.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fleet_tests::{free_port, run_command, Proc};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// An Ansible command from target/ansible-venv (scripts/ensure-deps), else
/// from PATH; `None` (the test is skipped) only outside CI.
fn ansible(name: &str) -> Option<PathBuf> {
    let venv = repo().join("target/ansible-venv/bin").join(name);
    if venv.is_file() {
        return Some(venv);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if on_path.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: scripts/ensure-deps installs it into target/ansible-venv"
        );
        eprintln!("skipped: {name} is missing (scripts/ensure-deps installs it)");
    }
    on_path
}

/// (success, stdout and stderr together).
fn run(cmd: &mut Command) -> (bool, String) {
    let (ok, stdout, stderr) = run_command(cmd).unwrap();
    (ok, format!("{stdout}{stderr}"))
}

/// The PLAY RECAP lines: host -> (ok, changed, failed).
fn recap(output: &str) -> Vec<(String, u64, u64, u64)> {
    let tail = output
        .rsplit_once("PLAY RECAP")
        .map(|(_, t)| t)
        .unwrap_or("");
    tail.lines()
        .filter(|l| l.contains("ok=") && l.contains(':'))
        .map(|l| {
            let (host, rest) = l.split_once(':').unwrap();
            let field = |k: &str| -> u64 {
                rest.split_whitespace()
                    .find_map(|f| f.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .unwrap()
            };
            (
                host.trim().to_owned(),
                field("ok="),
                field("changed="),
                field("failed="),
            )
        })
        .collect()
}

const HOSTS: [&str; 4] = ["central", "mazandaran", "tehran", "laptop-mzn-1"];

/// Stops every service the runner started under the test's root, whatever
/// happens to the test.
struct Deployment {
    root: tempfile::TempDir,
}

impl Deployment {
    fn host(&self, h: &str) -> PathBuf {
        self.root.path().join(h)
    }
    fn runner(&self, h: &str, args: &[&str]) -> (bool, String) {
        let host = self.host(h);
        run(
            Command::new(host.join("usr/local/lib/sandogh/sandogh-runner"))
                .arg("--state")
                .arg(host.join("run/sandogh"))
                .args(args),
        )
    }
    fn unit(&self, h: &str, name: &str) -> String {
        self.host(h)
            .join("etc/systemd/system")
            .join(name)
            .display()
            .to_string()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for h in HOSTS {
            if self
                .host(h)
                .join("usr/local/lib/sandogh/sandogh-runner")
                .is_file()
            {
                let _ = self.runner(h, &["stop-all"]);
            }
        }
    }
}

/// `systemd-analyze verify` (Debian's systemd package; it needs no running
/// systemd) on every unit the roles rendered, but the image's: its paths
/// are the ballot box's, not this machine's (the laptop's unit comes from
/// the same template).
fn verify_units(d: &Deployment) {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        eprintln!("systemd-analyze is missing: the rendered units were not verified");
        return;
    };
    let mut units = Vec::new();
    for h in HOSTS {
        let dir = d.host(h).join("etc/systemd/system");
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_file() {
                units.push(p);
            }
        }
    }
    let names: Vec<String> = units
        .iter()
        .map(|u| u.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "fleet-controller.service",
        "fleet-controller-backup.service",
        "fleet-controller-backup.timer",
        "sandogh-broker.service",
        "fleet-agent.service",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let (ok, out) = run(Command::new(analyze).arg("verify").args(&units));
    assert!(ok && out.trim().is_empty(), "systemd-analyze verify: {out}");
}

fn playbook(bin: &Path, vars: &Path, extra: &[&str]) -> (bool, String, Duration) {
    let vault_pass = vars.with_file_name("secrets").join("vault-pass");
    let start = Instant::now();
    let (ok, out) = run(Command::new(bin)
        .current_dir(repo().join("ansible"))
        .env("ANSIBLE_CONFIG", repo().join("ansible/ansible.cfg"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .args(["-i", "tests/inventory", "site.yml", "--connection=local"])
        .arg(format!("-e@{}", vars.display()))
        .arg("--vault-password-file")
        .arg(&vault_pass)
        .args(extra));
    (ok, out, start.elapsed())
}

#[test]
fn every_playbook_passes_syntax_check_and_ansible_lint() {
    let (Some(playbook), Some(lint)) = (ansible("ansible-playbook"), ansible("ansible-lint"))
    else {
        return;
    };
    let dir = repo().join("ansible");
    let playbooks: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    assert!(
        playbooks.iter().any(|p| p.ends_with("site.yml")),
        "{playbooks:?}"
    );
    for p in &playbooks {
        for inventory in ["inventory/example/hosts.yml", "tests/inventory"] {
            let (ok, out) = run(Command::new(&playbook)
                .current_dir(&dir)
                .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
                .args(["--syntax-check", "-i", inventory])
                .arg(p));
            assert!(ok, "{} with {inventory}: {out}", p.display());
        }
    }
    let (ok, out) = run(Command::new(&lint)
        .current_dir(&dir)
        .env("ANSIBLE_CONFIG", dir.join("ansible.cfg"))
        .env("NO_COLOR", "1")
        .args(["--offline", "-q"]));
    assert!(ok, "ansible-lint: {out}");
}

#[test]
fn a_converged_country_reports_through_its_provincial_broker_and_converges_again_with_no_change() {
    let Some(bin) = ansible("ansible-playbook") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    // Mosquitto drops to its own user: it must get through to its files.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let d = Deployment { root };
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();

    // The fleet CA is made elsewhere (an offline machine); its key comes
    // to the controller from a file encrypted with Ansible Vault, beside
    // the inventory, never in the repository.
    let elsewhere = d.root.path().join("ca-ceremony");
    fleet_tests::init_data_dir(&elsewhere).unwrap();
    let secrets = d.root.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::copy(elsewhere.join("pki/ca.crt"), secrets.join("fleet-ca.crt")).unwrap();
    std::fs::copy(elsewhere.join("pki/ca.key"), secrets.join("fleet-ca.key")).unwrap();
    let vault_pass = secrets.join("vault-pass");
    std::fs::write(&vault_pass, "not-a-real-secret\n").unwrap();
    let (ok, out) = run(Command::new(bin.with_file_name("ansible-vault"))
        .arg("encrypt")
        .arg("--vault-password-file")
        .arg(&vault_pass)
        .arg(secrets.join("fleet-ca.key")));
    assert!(ok, "ansible-vault: {out}");
    assert!(std::fs::read_to_string(secrets.join("fleet-ca.key"))
        .unwrap()
        .starts_with("$ANSIBLE_VAULT;"));

    let vars = d.root.path().join("vars.json");
    std::fs::write(
        &vars,
        serde_json::json!({
            "sandogh_test_root": d.root.path(),
            "sandogh_bin_src": fleet_tests::bin_path("fleet-controller").unwrap().parent().unwrap(),
            "sandogh_ca_cert_file": secrets.join("fleet-ca.crt"),
            "sandogh_ca_key_file": secrets.join("fleet-ca.key"),
            "sandogh_test_ports": {
                "http": ports[0], "central": ports[1], "mazandaran": ports[2], "tehran": ports[3],
            },
        })
        .to_string(),
    )
    .unwrap();

    // The first converge: everything from nothing.
    let (ok, out, took) = playbook(&bin, &vars, &[]);
    assert!(ok, "the first converge failed:\n{out}");
    let first = recap(&out);
    eprintln!(
        "first converge: {:.1} s; recap {first:?}",
        took.as_secs_f64()
    );
    assert_eq!(first.len(), HOSTS.len(), "{out}");
    assert!(first
        .iter()
        .all(|(_, _, changed, failed)| *changed > 0 && *failed == 0));

    verify_units(&d);
    // A province's group variables reach its broker only.
    let conf = |h: &str| {
        std::fs::read_to_string(d.host(h).join("etc/mosquitto/fleet/mosquitto.conf")).unwrap()
    };
    assert!(conf("mazandaran").contains("max_queued_messages 4000000"));
    assert!(!conf("tehran").contains("max_queued_messages 4000000"));
    assert!(conf("tehran").contains("bridge.tehran"));

    let data = d.host("central").join("var/lib/fleet-controller");
    let ca = data.join("pki/ca.crt");
    // The controller signs with the CA made elsewhere, and the staged
    // copies of it are gone.
    assert_eq!(
        std::fs::read(&ca).unwrap(),
        std::fs::read(elsewhere.join("pki/ca.crt")).unwrap()
    );
    assert_eq!(
        std::fs::read(data.join("pki/ca.key")).unwrap(),
        std::fs::read(elsewhere.join("pki/ca.key")).unwrap()
    );
    assert!(!data.join("import-ca.key").exists() && !data.join("import-ca.crt").exists());
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let api = format!("https://127.0.0.1:{}", ports[0]);
    // (success, stdout; stderr appended when it failed).
    let fleetctl = |args: &[&str]| -> (bool, String) {
        let (ok, stdout, stderr) = run_command(
            Command::new(d.host("central").join("usr/local/bin/fleetctl"))
                .args(["--controller", &api, "--token", token.trim(), "--ca"])
                .arg(&ca)
                .args(args)
                .env("NO_COLOR", "1"),
        )
        .unwrap();
        if ok {
            (ok, stdout)
        } else {
            (ok, format!("{stdout}{stderr}"))
        }
    };
    // The controller knows the tier from the inventory.
    let deadline = Instant::now() + Duration::from_secs(60);
    let brokers = loop {
        let (ok, out) = fleetctl(&["brokers", "--output", "json"]);
        if ok {
            break out;
        }
        assert!(Instant::now() < deadline, "no controller at {api}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let b: serde_json::Value = serde_json::from_str(&brokers).unwrap();
    let tier: Vec<(String, String)> = b["provincial"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["provinces"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(","),
            )
        })
        .collect();
    assert_eq!(
        tier,
        [
            ("mazandaran".to_owned(), "IR-02".to_owned()),
            ("tehran".to_owned(), "IR-23,IR-30".to_owned())
        ],
        "{brokers}"
    );

    // The bench: a laptop and a ballot box of Mazandaran, registered with
    // their tokens.
    let bench = d.root.path().join("bench");
    std::fs::create_dir_all(&bench).unwrap();
    std::fs::write(
        bench.join("stations.csv"),
        "province,county,station_id\nIR-02,IR-02-SARI,ST-02-1\n",
    )
    .unwrap();
    let (ok, out) = fleetctl(&[
        "registry",
        "import",
        bench.join("stations.csv").to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    std::fs::write(
        bench.join("shipment.csv"),
        "serial,model,province,county\n\
         LT-02-000001,id-laptop-v1,IR-02,IR-02-SARI\n\
         BB-02-000001,ballot-box-v2,IR-02,IR-02-SARI\n",
    )
    .unwrap();
    let (ok, out) = fleetctl(&[
        "enrol",
        "batch",
        bench.join("shipment.csv").to_str().unwrap(),
        "--output",
        "json",
        "--sheet-dir",
        bench.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let batch: serde_json::Value = serde_json::from_str(&out[out.find('{').unwrap()..]).unwrap();
    let token_of = |id: &str| -> PathBuf {
        let t = batch["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["device"] == id || x["serial"] == id || x["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {batch}"))["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let f = bench.join(format!("{id}.token"));
        std::fs::write(&f, format!("{t}\n")).unwrap();
        f
    };

    // The laptop: installed by the agent role (host mode), enrolled with
    // its token, then its service starts (the unit waited for enrolment).
    let laptop = d.host("laptop-mzn-1");
    assert_eq!(
        std::fs::read_to_string(laptop.join("etc/sandogh-firmware-version")).unwrap(),
        "2.4.0\n"
    );
    // `fleet-agent enrol` as installed under `root` (a host or the image),
    // with the files the agent role put there.
    let enrol = |root: &Path, id: &str| -> Command {
        let mut cmd = Command::new(root.join("usr/local/bin/fleet-agent"));
        cmd.args(["enrol", "--controller", &api, "--token-file"])
            .arg(token_of(id))
            .arg("--config")
            .arg(root.join("etc/fleet-agent/agent.toml"))
            .arg("--ca")
            .arg(root.join("etc/fleet-agent/ca.crt"));
        cmd
    };
    let (ok, out) = run(&mut enrol(&laptop, "LT-02-000001"));
    assert!(ok, "laptop enrolment: {out}");
    let (ok, out) = d.runner(
        "laptop-mzn-1",
        &["start", &d.unit("laptop-mzn-1", "fleet-agent.service")],
    );
    assert!(ok && out.trim() == "started", "{out}");

    // The ballot box: the image directory the agent role prepared, as the
    // bench flashes it (its id in device.env; here its root is a directory).
    let image = d
        .host("central")
        .join("var/lib/sandogh-images/ballot-box-v2");
    for f in [
        "usr/local/bin/fleet-agent",
        "etc/fleet-agent/agent.toml",
        "etc/fleet-agent/ca.crt",
        "etc/systemd/system/fleet-agent.service",
        "etc/systemd/system/multi-user.target.wants/fleet-agent.service",
    ] {
        assert!(image.join(f).exists(), "the image lacks {f}");
    }
    assert_eq!(
        std::fs::read(image.join("etc/fleet-agent/ca.crt")).unwrap(),
        std::fs::read(&ca).unwrap()
    );
    let unit =
        std::fs::read_to_string(image.join("etc/systemd/system/fleet-agent.service")).unwrap();
    assert!(
        unit.contains(
            "ExecStart=/usr/local/bin/fleet-agent run --config /etc/fleet-agent/agent.toml"
        ),
        "{unit}"
    );
    let boxroot = d.root.path().join("ballot-box");
    std::fs::create_dir_all(&boxroot).unwrap();
    std::fs::write(boxroot.join("firmware-version"), "2.4.0\n").unwrap();
    let device_env = [
        ("FLEET_AGENT__DEVICE__ID", "BB-02-000001".to_owned()),
        (
            "FLEET_AGENT__DEVICE__STATE_DIR",
            boxroot.join("state").display().to_string(),
        ),
        (
            "FLEET_AGENT__DEVICE__FIRMWARE_VERSION_FILE",
            boxroot.join("firmware-version").display().to_string(),
        ),
    ];
    let (ok, out) =
        run(enrol(&image, "BB-02-000001").envs(device_env.iter().map(|(k, v)| (*k, v.as_str()))));
    assert!(ok, "ballot box enrolment: {out}");
    let mut cmd = Command::new(image.join("usr/local/bin/fleet-agent"));
    cmd.arg("run")
        .arg("--config")
        .arg(image.join("etc/fleet-agent/agent.toml"))
        .envs(device_env.iter().map(|(k, v)| (*k, v.as_str())));
    let mut ballot_box = Proc::from_command("fleet-agent (ballot box)", cmd).unwrap();

    // Both report through Mazandaran's broker and its bridge: readiness
    // counts them in IR-02, ready, behind a link that is up.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, out) = fleetctl(&["readiness", "--output", "json"]);
        assert!(ok, "{out}");
        let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
        let mzn = rows
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["province"] == "IR-02")
            .unwrap()
            .clone();
        if mzn["total"] == 2 && mzn["ready"] == 2 {
            assert_eq!(mzn["link"]["broker"], "mazandaran", "{mzn}");
            assert_eq!(mzn["link"]["up"], true, "{mzn}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "IR-02 is not 2 of 2 ready: {mzn}\nlaptop: {}\nballot box: {}",
            std::fs::read_to_string(
                d.host("laptop-mzn-1")
                    .join("run/sandogh/fleet-agent.service.log")
            )
            .unwrap_or_default(),
            ballot_box.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (ok, table) = fleetctl(&["readiness"]);
    assert!(ok, "{table}");
    eprintln!("fleetctl readiness:\n{table}");
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("IR-02 ") && l.contains("Mazandaran"))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[2..4], ["2", "2"], "IR-02: total 2, ready 2: {row:?}");
    assert!(table.contains("IR-02 (mazandaran): link up"), "{table}");
    // They connected to Mazandaran's broker, not to the central one.
    let broker_log = |h: &str| {
        std::fs::read_to_string(d.host(h).join("var/lib/sandogh-broker/mosquitto.log"))
            .unwrap_or_default()
    };
    for id in ["LT-02-000001", "BB-02-000001"] {
        assert!(
            broker_log("mazandaran").contains(&format!("as {id} ")),
            "{id} never connected to mazandaran"
        );
        assert!(!broker_log("central").contains(&format!("as {id} ")));
        assert!(!broker_log("tehran").contains(&format!("as {id} ")));
    }

    // The second converge changes nothing (the laptop's agent, started
    // after enrolment, stays as it is).
    let (ok, out, took) = playbook(&bin, &vars, &[]);
    assert!(ok, "the second converge failed:\n{out}");
    let second = recap(&out);
    let recap_text = out.rsplit_once("PLAY RECAP").map(|(_, t)| t).unwrap_or("");
    eprintln!(
        "second converge: {:.1} s\nPLAY RECAP{recap_text}",
        took.as_secs_f64()
    );
    assert_eq!(second.len(), HOSTS.len(), "{out}");
    for (host, _, changed, failed) in &second {
        assert_eq!((*changed, *failed), (0, 0), "{host} changed:\n{out}");
    }

    // `--limit province_IR_02` touches Mazandaran's hosts only.
    let (ok, out, _) = playbook(&bin, &vars, &["--limit", "province_IR_02"]);
    assert!(ok, "{out}");
    let mut limited: Vec<String> = recap(&out).into_iter().map(|r| r.0).collect();
    limited.sort();
    assert_eq!(limited, ["laptop-mzn-1", "mazandaran"], "{out}");

    // The backup unit: a copy of the database and its audit head.
    let (ok, out) = d.runner(
        "central",
        &["run", &d.unit("central", "fleet-controller-backup.service")],
    );
    assert!(ok, "backup: {out}");
    let backups: Vec<String> =
        std::fs::read_dir(d.host("central").join("var/backups/fleet-controller"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert!(
        backups.iter().any(|f| f.ends_with(".db")) && backups.iter().any(|f| f.ends_with(".head")),
        "{backups:?}"
    );

    // Retiring the laptop reaches the brokers through the CRL hook: its
    // certificate is refused from then on, and the ballot box's is taken.
    let (ok, out) = fleetctl(&["device", "retire", "LT-02-000001"]);
    assert!(ok, "retire: {out}");
    let crl = std::fs::read(data.join("pki/ca.crl")).unwrap();
    for h in ["central", "mazandaran", "tehran"] {
        assert_eq!(
            std::fs::read(d.host(h).join("etc/mosquitto/fleet/crl.pem")).unwrap(),
            crl,
            "{h}'s broker has not the new CRL"
        );
    }
    // The retired laptop's certificate is refused by Mazandaran's broker,
    // while the ballot box's is still taken (the same client, the same
    // broker: only the certificate differs).
    let connect = |id: &str, state: &Path| -> (bool, String) {
        run(Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &ports[2].to_string(),
                "-i",
                id,
                "-q",
                "0",
            ])
            .args(["-t", &format!("fleet/v1/dev/{id}/health"), "-n"])
            .arg("--cafile")
            .arg(&ca)
            .arg("--cert")
            .arg(state.join("device.crt"))
            .arg("--key")
            .arg(state.join("device.key")))
    };
    // The hook restarts each broker right after copying the CRL, so the
    // first connection may meet a broker still starting; and the agent is
    // stopped first, or its own reconnection would take the client id over
    // from mosquitto_pub's.
    ballot_box.kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = connect("BB-02-000001", &boxroot.join("state"));
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the ballot box's certificate was refused: {out}\nballot box: {}",
            ballot_box.output()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The same broker is up, so a refusal now is the certificate's.
    let (ok, out) = connect("LT-02-000001", &laptop.join("var/lib/fleet-agent"));
    assert!(!ok, "the retired laptop's certificate was taken: {out}");
}
