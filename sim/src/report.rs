//! What every bench prints and keeps: a table of figures, and the same as
//! JSON under `target/bench/` (`{bench}.json`, the latest run, and
//! `{bench}-{date}.json`) with the machine (cores, memory, kernel), the
//! date and the commit, so that runs can be compared. Figures meant to be
//! compared are ratios within one run, where the machine's noise cancels.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    /// `msg/s`, `ms`, `MiB`, `KiB/device`, `ratio`, `%`, `s`, …
    pub unit: String,
    /// A goal this figure is held to, e.g. `>= 0.95` (printed beside it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal: Option<String>,
}

/// The machine a bench ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_mib: u64,
    pub kernel: String,
    pub cpu: String,
}

impl Machine {
    /// Read from `/proc` (Linux).
    pub fn here() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0);
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_default();
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mib: memory_kib / 1024,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
        }
    }
}

/// One bench run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bench: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// `git rev-parse --short HEAD` of the working directory, or
    /// `FLEET_COMMIT`, or "unknown".
    pub commit: String,
    /// The command line that produced it.
    pub command: String,
    pub machine: Machine,
    /// The bench's parameters (devices, brokers, rates, …).
    pub params: serde_json::Map<String, serde_json::Value>,
    pub figures: Vec<Figure>,
    /// Anything a reader must know to trust the figures.
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(bench: &str) -> Self {
        Self {
            bench: bench.to_owned(),
            date: utc_date(SystemTime::now()),
            commit: commit(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine: Machine::here(),
            params: serde_json::Map::new(),
            figures: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn param(&mut self, name: &str, value: impl Into<serde_json::Value>) -> &mut Self {
        self.params.insert(name.to_owned(), value.into());
        self
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            goal: None,
        });
        self
    }

    /// A figure held to a goal, e.g. `goal(">= 0.95")`.
    pub fn figure_with_goal(
        &mut self,
        name: &str,
        value: f64,
        unit: &str,
        goal: &str,
    ) -> &mut Self {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            goal: Some(goal.to_owned()),
        });
        self
    }

    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.notes.push(note.into());
        self
    }

    /// The table people read.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{} — {} · commit {} · {} cores, {} MiB\n",
            self.bench, self.date, self.commit, self.machine.cores, self.machine.memory_mib
        );
        if !self.params.is_empty() {
            let params: Vec<String> = self
                .params
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => format!("{k}={s}"),
                    v => format!("{k}={v}"),
                })
                .collect();
            out.push_str(&format!("{}\n", params.join(" ")));
        }
        let width = self.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
        for f in &self.figures {
            let goal = f
                .goal
                .as_ref()
                .map(|g| format!("  (goal {g})"))
                .unwrap_or_default();
            out.push_str(&format!(
                "  {:<width$}  {:>12} {}{goal}\n",
                f.name,
                format_value(f.value),
                f.unit
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
        out
    }

    /// Print the table and write `{dir}/{bench}.json` and
    /// `{dir}/{bench}-{date}.json`; returns the latest file's path.
    pub fn finish(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        print!("{}", self.table());
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        let latest = dir.join(format!("{}.json", self.bench));
        let dated = dir.join(format!(
            "{}-{}.json",
            self.bench,
            self.date.replace(':', "")
        ));
        for path in [&dated, &latest] {
            std::fs::write(path, &json)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
        }
        println!("written: {}", latest.display());
        Ok(latest)
    }
}

/// Where reports go unless `--out` says otherwise: `target/bench/` of the
/// workspace (`CARGO_TARGET_DIR` if set).
pub fn default_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench")
}

fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn commit() -> String {
    if let Ok(c) = std::env::var("FLEET_COMMIT") {
        return c;
    }
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// `YYYY-MM-DDTHH:MM:SSZ` (days to civil date: Howard Hinnant's algorithm).
pub fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The p-th percentile (0..=100) of `sorted` (ascending); 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_are_utc_calendar_dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2026-11-24T14:30:05Z
        let t = UNIX_EPOCH + Duration::from_secs(1_795_530_605);
        assert_eq!(utc_date(t), "2026-11-24T14:30:05Z");
        // A leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_date(t), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn percentiles_of_a_sorted_sample() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn a_report_is_written_as_json_beside_its_latest_copy() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Report::new("ingest");
        r.param("devices", 1000)
            .figure_with_goal("ratio", 0.987, "ratio", ">= 0.95")
            .figure("rate", 16.5, "msg/s");
        let latest = r.finish(dir.path()).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&latest).unwrap()).unwrap();
        assert_eq!(v["bench"], "ingest");
        assert_eq!(v["params"]["devices"], 1000);
        assert_eq!(v["figures"][0]["goal"], ">= 0.95");
        assert!(v["machine"]["cores"].as_u64().unwrap() >= 1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert!(r.table().contains("(goal >= 0.95)"));
    }
}
