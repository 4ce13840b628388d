//! `fleetctl readiness`: the headline first (per model, how many devices
//! are on the election firmware, its baseline; per province, how many are
//! not ready and why), then how many devices are ready per province (or
//! per county) and why the others are not, with a total line.
//!
//! For a province served by a provincial broker the text also says its
//! bridge link: "link up", or "link down since HH:MM (N devices)" (Tehran
//! time; N: the province's devices, whose silence the controller then
//! puts down to the link, `link-down`, not `offline`).
//!
//! The controller counts readiness; the headline's "on the firmware"
//! counts come from the device list of each model with a baseline (paged,
//! 1000 a request), since a device's readiness names only its first reason
//! (an offline device on old firmware is `offline`, not `outdated`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fleet_api::types::LinkStatus;
use fleet_api::{Client, DeviceQuery, Grouping, Lifecycle, ReadinessQuery, ReadinessRow, Reason};
use fleet_protocol::{CountyCode, Model, ProvinceCode, Version};
use serde::Serialize;
use serde_json::Value;

use super::CommandError;
use crate::cli::By;
use crate::render::{to_json, Grid, Report, View};

/// The readiness report as the controller counted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessReport {
    pub rows: Vec<ReadinessRow>,
    pub by_county: bool,
    /// Per model with a baseline: how many devices run it.
    pub headline: Vec<OnFirmware>,
}

/// One model's line of the headline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OnFirmware {
    pub model: Model,
    /// The election firmware: the model's baseline.
    pub baseline: Version,
    /// Devices (not retired) that report the baseline.
    pub on_baseline: u64,
    /// Devices of the model, not retired.
    pub total: u64,
}

/// `--by model`: the headline alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headline(pub Vec<OnFirmware>);

/// The readiness rows and the headline before them.
pub async fn run(
    client: &Client,
    by: By,
    province: Option<String>,
) -> Result<ReadinessReport, CommandError> {
    let grouping = match by {
        By::County => Grouping::County,
        By::Province | By::Model => Grouping::Province,
    };
    // The readiness first: it is what checks the province filter.
    let rows = client
        .readiness(&ReadinessQuery::new(grouping, province.clone()))
        .await?;
    let headline = headline(client, province).await?;
    Ok(ReadinessReport {
        rows,
        by_county: grouping == Grouping::County,
        headline,
    })
}

/// Per model with a baseline: devices on it of all (not retired).
pub async fn headline(
    client: &Client,
    province: Option<String>,
) -> Result<Vec<OnFirmware>, CommandError> {
    const PER_PAGE: u64 = 1000;
    let mut lines = Vec::new();
    for (model, baseline) in client.baselines().await?.0 {
        let (mut on_baseline, mut total) = (0, 0);
        for page in 1.. {
            let q = DeviceQuery {
                province: province.clone(),
                model: Some(model.to_string()),
                page: Some(page),
                per_page: Some(PER_PAGE),
                ..DeviceQuery::default()
            };
            let answer = client.devices(&q).await?;
            for d in answer
                .items
                .iter()
                .filter(|d| d.lifecycle != Lifecycle::Retired)
            {
                total += 1;
                if d.firmware.as_ref() == Some(&baseline) {
                    on_baseline += 1;
                }
            }
            if (answer.items.len() as u64) < PER_PAGE || page * PER_PAGE >= answer.total {
                break;
            }
        }
        lines.push(OnFirmware {
            model,
            baseline,
            on_baseline,
            total,
        });
    }
    Ok(lines)
}

/// "N of M devices are on the election firmware" for each model.
fn headline_text(lines: &[OnFirmware]) -> String {
    let mut out = String::new();
    if lines.is_empty() {
        out.push_str(
            "no model has a baseline (election firmware): fleetctl baseline set MODEL VERSION\n",
        );
    }
    for l in lines {
        let _ = writeln!(
            out,
            "{} of {} {} devices are on the election firmware {}",
            l.on_baseline, l.total, l.model, l.baseline
        );
    }
    out
}

/// Per province (or county) with devices not ready: how many and why.
fn not_ready_text(rows: &[ReadinessRow]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.ready < r.total) {
        let place = match county(r) {
            Some(c) => c,
            None => r.province.to_string(),
        };
        let why: Vec<String> = Reason::ALL
            .into_iter()
            .filter(|x| r.count(*x) > 0)
            .map(|x| format!("{} {x}", r.count(x)))
            .collect();
        let _ = writeln!(
            out,
            "{place}: {} of {} not ready ({})",
            r.total - r.ready,
            r.total,
            why.join(", ")
        );
    }
    out
}

/// Per tier province: its bridge link (once per province, whatever the
/// grouping; a county row carries its province's link).
fn link_text(rows: &[ReadinessRow]) -> String {
    let mut out = String::new();
    let mut devices: BTreeMap<ProvinceCode, (&LinkStatus, u32)> = BTreeMap::new();
    for r in rows {
        if let Some(link) = &r.link {
            devices.entry(r.province).or_insert((link, 0)).1 += r.total;
        }
    }
    for (province, (link, n)) in devices {
        let state = if link.up {
            "link up".to_owned()
        } else {
            format!(
                "link down since {} ({n} devices)",
                tehran_hhmm(link.since_ms)
            )
        };
        let _ = writeln!(out, "{province} ({}): {state}", link.broker);
    }
    out
}

/// Unix ms as HH:MM in Tehran (UTC+03:30 all year).
fn tehran_hhmm(ms: u64) -> String {
    let minutes = (ms / 60_000 + crate::dates::TEHRAN_OFFSET_MIN as u64) % (24 * 60);
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

impl Report for Headline {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["model", "baseline", "on_baseline", "total"]);
        grid.rows = self
            .0
            .iter()
            .map(|l| {
                vec![
                    l.model.to_string(),
                    l.baseline.to_string(),
                    l.on_baseline.to_string(),
                    l.total.to_string(),
                ]
            })
            .collect();
        View::Grid {
            grid,
            footer: String::new(),
        }
    }
}

/// The JSON contract: province, county (by county), total, ready, reasons.
#[derive(Serialize)]
struct JsonRow<'a> {
    province: &'a ProvinceCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    county: Option<Option<&'a CountyCode>>,
    total: u32,
    ready: u32,
    reasons: &'a BTreeMap<Reason, u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'a LinkStatus>,
}

fn pct(ready: u64, total: u64) -> String {
    if total == 0 {
        "-".to_string()
    } else {
        format!("{:.1}", ready as f64 * 100.0 / total as f64)
    }
}

impl Report for ReadinessReport {
    fn json(&self) -> Value {
        let rows: Vec<JsonRow> = self
            .rows
            .iter()
            .map(|r| JsonRow {
                province: &r.province,
                county: self
                    .by_county
                    .then(|| r.county.as_ref().and_then(Option::as_ref)),
                total: r.total,
                ready: r.ready,
                reasons: &r.reasons,
                link: r.link.as_ref(),
            })
            .collect();
        to_json(&rows)
    }

    /// The headline, then every reason has its column, and the last line
    /// is the total.
    fn table(&self) -> View {
        let mut title = headline_text(&self.headline);
        title.push_str(&not_ready_text(&self.rows));
        title.push_str(&link_text(&self.rows));
        title.push('\n');
        View::Titled {
            title,
            grid: self.grid(),
            footer: String::new(),
        }
    }

    /// For scripts: counts only (no names, no percentages, no total line,
    /// no headline: `--by model` gives it), then the province's link:
    /// `up`, `down` or empty (no provincial broker, or not reported yet)
    /// and since when (Unix ms).
    fn csv(&self) -> View {
        let mut columns = vec!["province"];
        if self.by_county {
            columns.push("county");
        }
        columns.extend(["total", "ready"]);
        columns.extend(Reason::ALL.map(Reason::as_str));
        columns.extend(["link", "link_since_ms"]);
        let mut grid = Grid::new(&columns);
        for r in &self.rows {
            let mut line = vec![r.province.to_string()];
            if self.by_county {
                line.push(county(r).unwrap_or_default());
            }
            line.extend([r.total.to_string(), r.ready.to_string()]);
            line.extend(Reason::ALL.map(|x| r.count(x).to_string()));
            let (link, since) = r.link.as_ref().map_or((String::new(), String::new()), |l| {
                let state = if l.up { "up" } else { "down" };
                (state.to_owned(), l.since_ms.to_string())
            });
            line.extend([link, since]);
            grid.rows.push(line);
        }
        View::grid(grid)
    }
}

impl ReadinessReport {
    /// Every reason has its column, and the last line is the total.
    fn grid(&self) -> Grid {
        let mut columns = vec!["province", "name"];
        if self.by_county {
            columns.push("county");
        }
        columns.extend(["total", "ready", "ready%"]);
        columns.extend(Reason::ALL.map(Reason::as_str));
        let mut grid = Grid::new(&columns);
        let (mut total, mut ready, mut reasons) = (0u64, 0u64, [0u64; Reason::ALL.len()]);
        for r in &self.rows {
            let mut line = vec![
                r.province.to_string(),
                r.province_name.clone().unwrap_or_default(),
            ];
            if self.by_county {
                line.push(county(r).unwrap_or_else(|| "(unassigned)".into()));
            }
            line.extend([
                r.total.to_string(),
                r.ready.to_string(),
                pct(r.ready.into(), r.total.into()),
            ]);
            total += u64::from(r.total);
            ready += u64::from(r.ready);
            for (i, reason) in Reason::ALL.into_iter().enumerate() {
                let n = r.count(reason);
                reasons[i] += u64::from(n);
                line.push(n.to_string());
            }
            grid.rows.push(line);
        }
        let mut last = vec!["TOTAL".to_string(), String::new()];
        if self.by_county {
            last.push(String::new());
        }
        last.extend([total.to_string(), ready.to_string(), pct(ready, total)]);
        last.extend(reasons.iter().map(u64::to_string));
        grid.rows.push(last);
        grid
    }
}

fn county(r: &ReadinessRow) -> Option<String> {
    r.county.clone().flatten().map(|c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};

    fn row(p: &str, total: u32, ready: u32, reasons: &[(Reason, u32)]) -> ReadinessRow {
        ReadinessRow {
            province: p.parse().unwrap(),
            province_name: Some("X".into()),
            county: None,
            total,
            ready,
            reasons: reasons.iter().copied().collect(),
            link: None,
        }
    }

    fn report(rows: Vec<ReadinessRow>) -> ReadinessReport {
        ReadinessReport {
            rows,
            by_county: false,
            headline: Vec::new(),
        }
    }

    #[test]
    fn table_has_totals() {
        let r = report(vec![
            row("IR-23", 10, 7, &[(Reason::Offline, 3)]),
            row("IR-02", 5, 5, &[]),
        ]);
        let t = render(&r, Output::Table);
        let last = t.lines().last().unwrap();
        assert!(last.starts_with("TOTAL"), "{t}");
        let cells: Vec<&str> = last.split_whitespace().collect();
        assert_eq!(&cells[1..4], ["15", "12", "80.0"], "{t}");
        assert!(
            t.lines().any(|l| {
                l.starts_with(
                "PROVINCE  NAME  TOTAL  READY  READY%  NOT-ENROLLED  NEVER-SEEN  LINK-DOWN  OFFLINE"
            )
            }),
            "{t}"
        );
    }

    #[test]
    fn csv_has_every_reason_column() {
        let r = report(vec![row("IR-23", 10, 7, &[(Reason::Offline, 3)])]);
        let c = render(&r, Output::Csv);
        let mut lines = c.lines();
        assert_eq!(
            lines.next().unwrap(),
            "province,total,ready,not-enrolled,never-seen,link-down,offline,update-failed,updating,outdated,unhealthy,link,link_since_ms"
        );
        assert_eq!(lines.next().unwrap(), "IR-23,10,7,0,0,0,3,0,0,0,0,,");
        assert_eq!(lines.next(), None, "no total line in CSV");
    }

    #[test]
    fn by_county_shows_unassigned_devices_in_the_table_and_null_in_json() {
        let mut r = row("IR-02", 4, 1, &[(Reason::NeverSeen, 3)]);
        r.county = Some(None);
        let mut sari = row("IR-02", 2, 2, &[]);
        sari.county = Some(Some("IR-02-SARI".parse().unwrap()));
        let report = ReadinessReport {
            rows: vec![sari, r],
            by_county: true,
            headline: Vec::new(),
        };
        let t = render(&report, Output::Table);
        assert!(
            t.contains("(unassigned)") && t.contains("IR-02-SARI"),
            "{t}"
        );
        let json: Vec<Value> = serde_json::from_str(&render(&report, Output::Json)).unwrap();
        assert_eq!(json.len(), 2);
        assert_eq!(json[0]["county"], "IR-02-SARI");
        assert!(json[1]["county"].is_null());
        assert_eq!(json[1]["reasons"]["never-seen"], 3);
        assert!(json[1].get("province_name").is_none(), "{json:?}");
        let csv = render(&report, Output::Csv);
        assert!(csv.starts_with("province,county,total"), "{csv}");
        assert!(csv.contains("\nIR-02,,4,1,0,3,0,"), "{csv}");
    }

    #[test]
    fn json_by_province_has_no_county_key() {
        let json: Vec<Value> = serde_json::from_str(&render(
            &report(vec![row("IR-23", 1, 1, &[])]),
            Output::Json,
        ))
        .unwrap();
        assert_eq!(json.len(), 1);
        assert!(json[0].get("county").is_none());
        assert_eq!(json[0]["province"], "IR-23");
    }

    #[test]
    fn the_table_opens_with_the_headline_and_why_each_province_is_not_ready() {
        let mut r = report(vec![
            row(
                "IR-23",
                10,
                7,
                &[(Reason::Offline, 2), (Reason::Outdated, 1)],
            ),
            row("IR-02", 5, 5, &[]),
        ]);
        r.headline = vec![OnFirmware {
            model: Model::parse("ballot-box-v2").unwrap(),
            baseline: "2.5.0".parse().unwrap(),
            on_baseline: 12,
            total: 15,
        }];
        let t = render(&r, Output::Table);
        assert!(
            t.starts_with(
                "12 of 15 ballot-box-v2 devices are on the election firmware 2.5.0\n\
                 IR-23: 3 of 10 not ready (2 offline, 1 outdated)\n\n\
                 PROVINCE  NAME"
            ),
            "{t}"
        );
        assert!(!t.contains("IR-02:"), "a ready province has no line: {t}");
        let c = render(&r, Output::Csv);
        assert!(
            c.starts_with("province,total,ready,"),
            "no headline in CSV: {c}"
        );
        let j: Vec<Value> = serde_json::from_str(&render(&r, Output::Json)).unwrap();
        assert_eq!(j.len(), 2, "JSON keeps its rows: {j:?}");
    }

    #[test]
    fn without_a_baseline_the_headline_says_how_to_set_one() {
        let t = render(&report(vec![]), Output::Table);
        assert!(t.starts_with("no model has a baseline"), "{t}");
    }

    #[test]
    fn by_model_the_headline_is_a_grid_csv_and_json() {
        let h = Headline(vec![OnFirmware {
            model: Model::parse("ballot-box-v2").unwrap(),
            baseline: "2.5.0".parse().unwrap(),
            on_baseline: 12,
            total: 15,
        }]);
        assert_eq!(
            render(&h, Output::Csv),
            "model,baseline,on_baseline,total\nballot-box-v2,2.5.0,12,15\n"
        );
        let j: Vec<Value> = serde_json::from_str(&render(&h, Output::Json)).unwrap();
        assert_eq!(j[0]["on_baseline"], 12);
        assert_eq!(j[0]["baseline"], "2.5.0");
    }

    #[test]
    fn tier_provinces_show_their_link_in_every_output() {
        let link = |up, since_ms| {
            Some(LinkStatus {
                broker: "p01".into(),
                up,
                since_ms,
            })
        };
        let mut sari = row(
            "IR-02",
            12,
            2,
            &[(Reason::LinkDown, 9), (Reason::Offline, 1)],
        );
        // 10:30 UTC is 14:00 in Tehran.
        sari.link = link(
            false,
            1_700_000_000_000 - 1_700_000_000_000 % 86_400_000 + 37_800_000,
        );
        let mut gol = row("IR-27", 3, 3, &[]);
        gol.link = link(true, 5);
        let r = report(vec![sari, gol, row("IR-23", 1, 1, &[])]);
        let t = render(&r, Output::Table);
        assert!(
            t.contains("IR-02 (p01): link down since 14:00 (12 devices)\n"),
            "{t}"
        );
        assert!(t.contains("IR-27 (p01): link up\n"), "{t}");
        assert!(!t.contains("IR-23 ("), "{t}");
        assert!(
            t.contains("IR-02: 10 of 12 not ready (9 link-down, 1 offline)"),
            "{t}"
        );
        let json: Vec<Value> = serde_json::from_str(&render(&r, Output::Json)).unwrap();
        assert_eq!(json[0]["link"]["up"], false);
        assert_eq!(json[1]["link"]["broker"], "p01");
        assert!(json[2].get("link").is_none());
        let csv = render(&r, Output::Csv);
        let lines: Vec<&str> = csv.lines().collect();
        assert!(lines[1].ends_with(",down,1699957800000"), "{csv}");
        assert!(lines[2].ends_with(",up,5"), "{csv}");
        assert!(lines[3].ends_with(",,"), "{csv}");
    }
}
