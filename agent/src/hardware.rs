//! What the agent reads from the device. [`SystemHardware`] is the real
//! device (sysinfo, `/sys/class/power_supply`, check commands); `fleet-sim`
//! supplies simulated hardware through the same trait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use fleet_protocol::{CheckResult, Health, Version};
use sysinfo::{Components, Disks, MemoryRefreshKind, System};

use crate::config::CheckSpec;

pub type CheckFuture = Pin<Box<dyn Future<Output = Vec<CheckResult>> + Send + 'static>>;

pub trait Hardware: Send + 'static {
    /// The installed firmware version.
    fn firmware(&self) -> Version;
    /// One health sample (the core fills in the clock offset).
    fn sample(&mut self) -> Health;
    /// Run every configured check. The future owns what it needs, so the
    /// runtime can run it beside the MQTT session.
    fn run_checks(&mut self) -> CheckFuture;
    /// Reboot the device, or say why not.
    fn reboot(&mut self) -> Result<(), String>;
}

/// The real device.
pub struct SystemHardware {
    firmware: Version,
    system: System,
    disks: Disks,
    components: Components,
    disk_mount: PathBuf,
    checks: Vec<CheckSpec>,
    reboot: Vec<String>,
    power_supply_dir: PathBuf,
}

impl SystemHardware {
    pub fn new(
        firmware: Version,
        disk_mount: PathBuf,
        checks: Vec<CheckSpec>,
        reboot: Vec<String>,
    ) -> Self {
        Self {
            firmware,
            system: System::new(),
            disks: Disks::new_with_refreshed_list(),
            components: Components::new_with_refreshed_list(),
            disk_mount,
            checks,
            reboot,
            power_supply_dir: PathBuf::from("/sys/class/power_supply"),
        }
    }

    /// Read the firmware version file the image writes.
    pub fn read_firmware(path: &Path) -> Result<Version, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Version::parse(text.trim()).map_err(|e| e.to_string())
    }
}

fn pct(part: u64, whole: u64) -> u8 {
    if whole == 0 {
        return 0;
    }
    u8::try_from((u128::from(part) * 100 / u128::from(whole)).min(100)).unwrap_or(100)
}

/// The capacity of the first battery under `dir`, if there is one.
pub fn battery_pct(dir: &Path) -> Option<u8> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let kind = std::fs::read_to_string(path.join("type")).unwrap_or_default();
        if kind.trim() == "Battery" {
            if let Ok(cap) = std::fs::read_to_string(path.join("capacity")) {
                if let Ok(v) = cap.trim().parse::<u8>() {
                    return Some(v.min(100));
                }
            }
        }
    }
    None
}

impl Hardware for SystemHardware {
    fn firmware(&self) -> Version {
        self.firmware.clone()
    }

    fn sample(&mut self) -> Health {
        self.system.refresh_cpu_usage();
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        self.disks.refresh(true);
        self.components.refresh(false);
        // The disk whose mount point is the longest prefix of the configured one.
        let disk = self
            .disks
            .list()
            .iter()
            .filter(|d| self.disk_mount.starts_with(d.mount_point()))
            .max_by_key(|d| d.mount_point().as_os_str().len());
        let (free, total) = disk.map_or((0, 0), |d| (d.available_space(), d.total_space()));
        let temp = self
            .components
            .list()
            .iter()
            .filter_map(|c| c.temperature())
            .filter(|t| t.is_finite())
            .fold(None, |acc: Option<f32>, t| {
                Some(acc.map_or(t, |a| a.max(t)))
            });
        let cpu = self.system.global_cpu_usage();
        Health {
            cpu_pct: if cpu.is_finite() {
                cpu.clamp(0.0, 100.0) as u8
            } else {
                0
            },
            mem_used_pct: pct(self.system.used_memory(), self.system.total_memory()),
            disk_free_pct: pct(free, total),
            temp_c: temp.map(|t| t.clamp(-100.0, 200.0).round() as i16),
            battery_pct: battery_pct(&self.power_supply_dir),
            uptime_s: System::uptime(),
            clock_offset_ms: None,
            disk_free_mb: free / (1024 * 1024),
            window: None,
        }
    }

    fn run_checks(&mut self) -> CheckFuture {
        let checks = self.checks.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(checks.len());
            for spec in &checks {
                out.push(run_check(spec).await);
            }
            out
        })
    }

    fn reboot(&mut self) -> Result<(), String> {
        let Some((program, args)) = self.reboot.split_first() else {
            return Err("no reboot command is configured (commands.reboot)".into());
        };
        std::process::Command::new(program)
            .args(args)
            .spawn()
            .map(|_| ())
            .map_err(|e| format!("cannot run {program}: {e}"))
    }
}

/// Run one check command: exit 0 passes; a non-zero exit, a failure to start
/// or the timeout fails. The first line of its output is the message.
pub async fn run_check(spec: &CheckSpec) -> CheckResult {
    let fail = |message: String| CheckResult {
        name: spec.name.clone(),
        passed: false,
        message: Some(message),
    };
    let Some((program, args)) = spec.command.split_first() else {
        return fail("no command".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {program}: {e}")),
    };
    let timeout = Duration::from_secs(spec.timeout_secs.max(1));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => fail(format!("timed out after {} s", timeout.as_secs())),
        Ok(Err(e)) => fail(format!("cannot wait for {program}: {e}")),
        Ok(Ok(output)) => {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            let first = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(120)
                .collect::<String>();
            CheckResult {
                name: spec.name.clone(),
                passed: output.status.success(),
                message: if first.is_empty() {
                    (!output.status.success()).then(|| output.status.to_string())
                } else {
                    Some(first)
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, cmd: &[&str], timeout: u64) -> CheckSpec {
        CheckSpec {
            name: name.into(),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            timeout_secs: timeout,
        }
    }

    #[tokio::test]
    async fn checks_pass_fail_and_time_out() {
        fleet_tests::within(30, "the check commands", async {
            let ok = run_check(&spec("ok", &["sh", "-c", "echo paper loaded"], 5)).await;
            assert!(ok.passed);
            assert_eq!(ok.message.as_deref(), Some("paper loaded"));
            let bad = run_check(&spec("bad", &["sh", "-c", "echo jammed >&2; exit 3"], 5)).await;
            assert!(!bad.passed);
            assert_eq!(bad.message.as_deref(), Some("jammed"));
            let slow = run_check(&spec("slow", &["sleep", "30"], 1)).await;
            assert!(!slow.passed);
            assert!(slow.message.unwrap().contains("timed out"));
            let missing = run_check(&spec("missing", &["/nonexistent/check"], 1)).await;
            assert!(!missing.passed);
            assert!(missing.message.unwrap().contains("cannot start"));
        })
        .await;
    }

    #[test]
    fn battery_is_read_from_power_supply() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(battery_pct(dir.path()), None);
        let ac = dir.path().join("AC");
        std::fs::create_dir(&ac).unwrap();
        std::fs::write(ac.join("type"), "Mains\n").unwrap();
        assert_eq!(battery_pct(dir.path()), None);
        let bat = dir.path().join("BAT0");
        std::fs::create_dir(&bat).unwrap();
        std::fs::write(bat.join("type"), "Battery\n").unwrap();
        std::fs::write(bat.join("capacity"), "67\n").unwrap();
        assert_eq!(battery_pct(dir.path()), Some(67));
    }

    #[test]
    fn real_sample_is_sane() {
        let mut hw = SystemHardware::new(
            Version::parse("1.0.0").unwrap(),
            PathBuf::from("/"),
            vec![],
            vec![],
        );
        let h = hw.sample();
        assert!(h.mem_used_pct <= 100 && h.disk_free_pct <= 100);
        assert!(h.uptime_s > 0);
        assert!(hw.reboot().is_err());
    }
}
