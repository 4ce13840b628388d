//! `fleetctl rollout create|list|show|start|pause|resume|abort|retry-failed`:
//! put a signed target on a selection of devices in waves, and watch it.
//!
//! The flags' small languages (`--canary 50|5%`, `--fail-above 2%`,
//! `--hours 02:00-06:00`, `--device-timeout 2h`, `--wave IR-23,IR-30`) are
//! parsed here, before anything is sent, each with an error that says what
//! was expected. `show --watch` draws one bar per wave and one per province
//! (succeeded of total, the counters as the message); [`bars`] computes
//! them from a view, so what they say is unit-tested without a terminal.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use fleet_api::types::{
    CanaryRequest, Counters, MemberState, MemberView, PolicyRequest, RolloutAction, RolloutPhase,
    RolloutRequest, RolloutSelector, RolloutSummary, RolloutView, WaveState,
};
use fleet_api::Client;
use fleet_protocol::ProvinceCode;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use super::{read_text, CommandError};
use crate::render::{cell, printable, to_json, Grid, Report, View};

/// How often `--watch` asks again.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

/// `--canary 50` (devices) or `--canary 5%` (of the selected devices that
/// can take the update).
pub fn parse_canary(s: &str) -> Result<CanaryRequest, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let pct = percent_value(p)
            .map_err(|why| format!("--canary {s:?}: {why}; e.g. 5% or 50 (devices)"))?;
        if pct == 0.0 {
            return Err(format!(
                "--canary {s:?}: 0% is no canary; leave --canary out"
            ));
        }
        return Ok(CanaryRequest {
            devices: None,
            percent: Some(pct),
        });
    }
    match t.parse::<u32>() {
        Ok(0) => Err(format!(
            "--canary {s:?}: 0 devices is no canary; leave --canary out"
        )),
        Ok(n) => Ok(CanaryRequest {
            devices: Some(n),
            percent: None,
        }),
        Err(_) => Err(format!(
            "--canary {s:?}: expected a number of devices (50) or a percentage (5%)"
        )),
    }
}

/// `2%` or `2` (percent), 0 to 100.
pub fn parse_percent(s: &str) -> Result<f64, String> {
    percent_value(s.trim().strip_suffix('%').unwrap_or(s.trim()))
        .map_err(|why| format!("{s:?}: {why}; e.g. 2%"))
}

fn percent_value(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| "expected a percentage".to_owned())?;
    if !(0.0..=100.0).contains(&v) {
        return Err("a percentage is 0 to 100".to_owned());
    }
    Ok(v)
}

/// `--hours 02:00-06:00`: local hours when devices may be released (wraps
/// past midnight when the end is before the start: `22:00-05:00`).
pub fn parse_hours(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("--hours {s:?}: {why}; expected HH:MM-HH:MM, e.g. 02:00-06:00");
    let (from, to) = s.trim().split_once('-').ok_or_else(|| bad("no '-'"))?;
    let minute = |t: &str| -> Result<u16, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| bad(&format!("{t:?} is not HH:MM")))?;
        let (h, m): (u16, u16) = match (h.parse(), m.parse()) {
            (Ok(hh), Ok(mm)) if h.trim().len() <= 2 && m.len() == 2 => (hh, mm),
            _ => return Err(bad(&format!("{t:?} is not HH:MM"))),
        };
        if h > 24 || m > 59 || (h == 24 && m != 0) {
            return Err(bad(&format!("{t:?} is not a time of day")));
        }
        Ok(h * 60 + m)
    };
    let (a, b) = (minute(from)?, minute(to)?);
    if a % (24 * 60) == b % (24 * 60) {
        return Err(bad(
            "the start is the end (no hours, or the whole day: then leave --hours out)",
        ));
    }
    Ok(format!(
        "{:02}:{:02}-{:02}:{:02}",
        a / 60,
        a % 60,
        b / 60,
        b % 60
    ))
}

/// `--device-timeout 2h` (or 90m, 3600s, 1d) in seconds, at least a minute.
pub fn parse_timeout(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let secs = match t.strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(86_400))
            .ok_or_else(|| format!("--device-timeout {s:?}: expected e.g. 2h, 90m or 1d")),
        None => super::device::parse_duration(t)
            .map_err(|e| format!("--device-timeout {e}; or d for days")),
    }?;
    if secs < 60 {
        return Err(format!(
            "--device-timeout {s:?}: at least a minute (a device needs time to download and reboot)"
        ));
    }
    Ok(secs)
}

/// `--wave IR-23,IR-30`: one group of provinces.
pub fn parse_wave(s: &str) -> Result<Vec<String>, String> {
    let mut group = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let code = ProvinceCode::parse(p)
            .map_err(|_| format!("--wave {s:?}: {p:?} is not a province code (IR-00 to IR-30)"))?;
        group.push(code.to_string());
    }
    if group.is_empty() {
        return Err(format!("--wave {s:?}: no province in it"));
    }
    Ok(group)
}

/// Every flag of `rollout create`, parsed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Create {
    pub name: Option<String>,
    pub model: String,
    pub version: String,
    pub agent: bool,
    pub platform: Option<String>,
    pub provinces: Vec<String>,
    pub counties: Vec<String>,
    pub stations: Vec<String>,
    pub devices: Vec<String>,
    pub devices_file: Option<PathBuf>,
    pub include_new: bool,
    pub canary: Option<CanaryRequest>,
    pub waves: Vec<Vec<String>>,
    pub fail_above: Option<f64>,
    pub advance_at: Option<f64>,
    pub max_downloads_per_province: Option<u32>,
    pub hours: Option<String>,
    pub utc_offset_min: Option<i32>,
    pub device_timeout_s: Option<u64>,
    pub draft: bool,
}

impl Create {
    /// The API request (the devices file read: one id a line, `#` comments).
    pub fn request(self) -> Result<RolloutRequest, CommandError> {
        let mut devices = self.devices;
        if let Some(path) = &self.devices_file {
            let text = read_text(path)?;
            devices.extend(
                text.lines()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned),
            );
        }
        Ok(RolloutRequest {
            name: self.name,
            artifact: if self.agent { "agent" } else { "firmware" }.to_owned(),
            model: self.model,
            version: self.version,
            platform: self.platform,
            selector: RolloutSelector {
                provinces: self.provinces,
                counties: self.counties,
                stations: self.stations,
                devices,
                include_new: self.include_new,
            },
            canary: self.canary,
            waves: self.waves,
            policy: PolicyRequest {
                failure_threshold_pct: self.fail_above,
                success_threshold_pct: self.advance_at,
                max_downloads_per_province: self.max_downloads_per_province,
                allowed_hours: self.hours,
                utc_offset_min: self.utc_offset_min,
                device_timeout_s: self.device_timeout_s,
            },
            draft: self.draft,
        })
    }
}

pub async fn create(client: &Client, args: Create) -> Result<Rollout, CommandError> {
    let req = args.request()?;
    Ok(Rollout(client.create_rollout(&req).await?))
}

pub async fn list(client: &Client) -> Result<Rollouts, CommandError> {
    Ok(Rollouts(client.rollouts().await?))
}

pub async fn show(client: &Client, id: u64) -> Result<Rollout, CommandError> {
    Ok(Rollout(client.rollout(id).await?))
}

pub async fn members(
    client: &Client,
    id: u64,
    state: Option<MemberState>,
) -> Result<Members, CommandError> {
    Ok(Members(client.rollout_members(id, state).await?))
}

pub async fn action(
    client: &Client,
    id: u64,
    action: RolloutAction,
    reason: Option<String>,
) -> Result<Rollout, CommandError> {
    Ok(Rollout(
        client.rollout_action(id, action, reason.as_deref()).await?,
    ))
}

/// `rollout show ID --watch`: bars (on a terminal) or a line per refresh
/// (otherwise: on stdout, or on stderr when `lines_to_stderr`, so that
/// JSON or CSV output stays whole) every 2 s until the rollout is
/// completed, aborted or paused (then an operator must act: a line on
/// stderr says how); the last view is the result.
pub async fn watch(
    client: &Client,
    id: u64,
    lines_to_stderr: bool,
) -> Result<Rollout, CommandError> {
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::with_draw_target(if tty {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    let style = ProgressStyle::with_template("{prefix:<24} [{bar:30}] {pos}/{len} {msg}")
        .expect("a valid template")
        .progress_chars("=> ");
    let head = multi.add(
        ProgressBar::new(0)
            .with_style(ProgressStyle::with_template("{msg}").expect("a valid template")),
    );
    let mut shown: Vec<(String, ProgressBar)> = Vec::new();
    loop {
        let view = client.rollout(id).await?;
        if tty {
            head.set_message(headline(&view));
            for line in bars(&view) {
                let bar = match shown.iter().find(|(k, _)| *k == line.key) {
                    Some((_, bar)) => bar.clone(),
                    None => {
                        let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                        bar.set_prefix(line.label.clone());
                        shown.push((line.key.clone(), bar.clone()));
                        bar
                    }
                };
                bar.set_length(u64::from(line.len));
                bar.set_position(u64::from(line.pos));
                bar.set_message(line.message);
            }
        } else if lines_to_stderr {
            eprintln!("{}", headline(&view));
        } else {
            println!("{}", headline(&view));
        }
        let paused = view.summary.phase == RolloutPhase::Paused;
        if view.summary.phase.is_final() || paused {
            head.finish();
            for (_, bar) in &shown {
                bar.finish();
            }
            if paused {
                eprintln!(
                    "rollout {id} is paused: `fleetctl rollout show {id} --members failed` says which devices failed and why; \
                     `fleetctl rollout retry-failed {id}` tries them again, `fleetctl rollout resume {id}` goes on"
                );
            }
            return Ok(Rollout(view));
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// One progress bar of `--watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BarLine {
    /// Stable across refreshes (`wave/1`, `province/IR-23`).
    pub key: String,
    pub label: String,
    /// Succeeded …
    pub pos: u32,
    /// … of this many (skipped devices left out: they take no update).
    pub len: u32,
    /// The counters.
    pub message: String,
}

/// The bars of a view: one per wave, then one per province.
pub fn bars(view: &RolloutView) -> Vec<BarLine> {
    let mut out = Vec::new();
    for w in &view.waves {
        out.push(BarLine {
            key: format!("wave/{}", w.index),
            label: format!("wave {} {}", w.index + 1, w.name),
            pos: w.counters.succeeded,
            len: w.counters.total - w.counters.skipped,
            message: format!("{} {}", wave_state(w.state), counters_text(&w.counters)),
        });
    }
    for p in &view.provinces {
        out.push(BarLine {
            key: format!("province/{}", p.province),
            label: format!("  {}", p.province),
            pos: p.counters.succeeded,
            len: p.counters.total - p.counters.skipped,
            message: counters_text(&p.counters),
        });
    }
    out
}

fn wave_state(s: WaveState) -> &'static str {
    match s {
        WaveState::Pending => "pending",
        WaveState::Running => "running",
        WaveState::Done => "done",
    }
}

/// The counters that are not zero, Mender's names, in its order:
/// `2 pending, 40 downloading, 1 failed`.
pub fn counters_text(c: &Counters) -> String {
    let parts: Vec<String> = [
        ("pending", c.pending),
        ("downloading", c.downloading),
        ("installing", c.installing),
        ("rebooting", c.rebooting),
        ("succeeded", c.succeeded),
        ("failed", c.failed),
        ("timed out", c.timed_out),
        ("skipped", c.skipped),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{n} {name}"))
    .collect();
    if parts.is_empty() {
        "no devices".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `rollout 3 (ballot-box-v2 2.5.0): running, wave 2 of 3 …` on one line.
pub fn headline(view: &RolloutView) -> String {
    let s = &view.summary;
    let mut line = format!(
        "rollout {} ({}): {}, wave {} of {}; {} of {} succeeded",
        s.id,
        printable(&s.name),
        s.phase,
        (s.wave + 1).min(s.wave_count.max(1)),
        s.wave_count,
        s.counters.succeeded,
        s.counters.total - s.counters.skipped,
    );
    if s.counters.failed + s.counters.timed_out > 0 {
        let _ = write!(
            line,
            ", {} failed, {} timed out",
            s.counters.failed, s.counters.timed_out
        );
    }
    if let Some(r) = &s.paused_reason {
        let _ = write!(line, "; paused: {}", printable(r));
    }
    if let Some(h) = &s.held {
        let _ = write!(line, "; held: {}", printable(h));
    }
    line
}

/// One rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout(pub RolloutView);

const COUNTER_COLUMNS: [&str; 9] = [
    "total",
    "pending",
    "downloading",
    "installing",
    "rebooting",
    "succeeded",
    "failed",
    "timed_out",
    "skipped",
];

fn counter_cells(c: &Counters) -> [String; 9] {
    [
        c.total,
        c.pending,
        c.downloading,
        c.installing,
        c.rebooting,
        c.succeeded,
        c.failed,
        c.timed_out,
        c.skipped,
    ]
    .map(|n| n.to_string())
}

impl Rollout {
    /// A row per wave, then a row per province of each wave.
    fn grid(&self) -> Grid {
        let mut columns = vec!["wave", "name", "state", "province"];
        columns.extend(COUNTER_COLUMNS);
        let mut grid = Grid::new(&columns);
        for w in &self.0.waves {
            let mut row = vec![
                (w.index + 1).to_string(),
                w.name.clone(),
                wave_state(w.state).to_owned(),
                String::new(),
            ];
            row.extend(counter_cells(&w.counters));
            grid.rows.push(row);
            for p in &w.provinces {
                let mut row = vec![
                    (w.index + 1).to_string(),
                    String::new(),
                    String::new(),
                    p.province.to_string(),
                ];
                row.extend(counter_cells(&p.counters));
                grid.rows.push(row);
            }
        }
        grid
    }
}

impl Report for Rollout {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    /// The headline, the plan, the waves with their provinces, the log
    /// (its times local at the policy's offset, in both calendars).
    fn table(&self) -> View {
        let v = &self.0;
        let p = &v.policy;
        let mut title = headline(v);
        title.push('\n');
        let _ = writeln!(
            title,
            "target {} ({}), created by {}",
            v.target,
            v.summary.artifact,
            printable(&v.created_by)
        );
        let _ = writeln!(
            title,
            "policy: pause above {}% failed, a wave is done at {}% succeeded, {} downloads per province, hours {}, device timeout {} s",
            p.failure_threshold_pct,
            p.success_threshold_pct,
            if p.max_downloads_per_province == 0 {
                "no limit on".to_owned()
            } else {
                format!("at most {}", p.max_downloads_per_province)
            },
            p.allowed_hours.as_deref().unwrap_or("any"),
            p.device_timeout_s
        );
        title.push('\n');
        let mut footer = String::new();
        if !v.log.is_empty() {
            footer.push_str("\nlog:\n");
            for e in &v.log {
                let _ = writeln!(
                    footer,
                    "{}  {} {}",
                    crate::dates::show(e.at_ms, p.utc_offset_min),
                    e.kind,
                    printable(&e.detail)
                );
            }
        }
        View::Titled {
            title,
            grid: self.grid(),
            footer,
        }
    }
}

/// Every rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollouts(pub Vec<RolloutSummary>);

impl Report for Rollouts {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut columns = vec![
            "id", "name", "artifact", "model", "version", "phase", "wave", "why",
        ];
        columns.extend(COUNTER_COLUMNS);
        let mut grid = Grid::new(&columns);
        for s in &self.0 {
            let mut row = vec![
                s.id.to_string(),
                s.name.clone(),
                s.artifact.clone(),
                s.model.clone(),
                s.version.clone(),
                s.phase.to_string(),
                format!("{}/{}", (s.wave + 1).min(s.wave_count.max(1)), s.wave_count),
                s.paused_reason
                    .clone()
                    .or_else(|| s.held.clone())
                    .unwrap_or_default(),
            ];
            row.extend(counter_cells(&s.counters));
            grid.rows.push(row);
        }
        let footer = if self.0.is_empty() {
            "no rollout\n".to_owned()
        } else {
            String::new()
        };
        View::Grid { grid, footer }
    }
}

/// A rollout's devices (`show ID --members STATE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members(pub Vec<MemberView>);

impl Report for Members {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&[
            "device",
            "province",
            "wave",
            "state",
            "attempt",
            "released_ms",
            "message",
        ]);
        grid.rows = self
            .0
            .iter()
            .map(|m| {
                vec![
                    m.device.to_string(),
                    m.province.to_string(),
                    (m.wave + 1).to_string(),
                    m.state.to_string(),
                    m.attempt.to_string(),
                    cell(&m.released_ms),
                    m.message.clone(),
                ]
            })
            .collect();
        let footer = format!("{} devices\n", self.0.len());
        View::Grid { grid, footer }
    }
}

#[cfg(test)]
mod tests;
