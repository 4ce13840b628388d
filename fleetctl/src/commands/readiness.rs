//! `fleetctl readiness`: how many devices are ready per province (or per
//! county) and why the others are not, with a total line.

use std::collections::BTreeMap;

use fleet_api::{Client, Grouping, ReadinessQuery, ReadinessRow, Reason};
use fleet_protocol::{CountyCode, ProvinceCode};
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
}

pub async fn run(
    client: &Client,
    by: By,
    province: Option<String>,
) -> Result<ReadinessReport, CommandError> {
    let grouping = match by {
        By::Province => Grouping::Province,
        By::County => Grouping::County,
    };
    let rows = client
        .readiness(&ReadinessQuery::new(grouping, province))
        .await?;
    Ok(ReadinessReport {
        rows,
        by_county: grouping == Grouping::County,
    })
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
            })
            .collect();
        to_json(&rows)
    }

    /// Every reason has its column, and the last line is the total.
    fn table(&self) -> View {
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
        View::grid(grid)
    }

    /// For scripts: counts only (no names, no percentages, no total line).
    fn csv(&self) -> View {
        let mut columns = vec!["province"];
        if self.by_county {
            columns.push("county");
        }
        columns.extend(["total", "ready"]);
        columns.extend(Reason::ALL.map(Reason::as_str));
        let mut grid = Grid::new(&columns);
        for r in &self.rows {
            let mut line = vec![r.province.to_string()];
            if self.by_county {
                line.push(county(r).unwrap_or_default());
            }
            line.extend([r.total.to_string(), r.ready.to_string()]);
            line.extend(Reason::ALL.map(|x| r.count(x).to_string()));
            grid.rows.push(line);
        }
        View::grid(grid)
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
        }
    }

    fn report(rows: Vec<ReadinessRow>) -> ReadinessReport {
        ReadinessReport {
            rows,
            by_county: false,
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
            t.starts_with(
                "PROVINCE  NAME  TOTAL  READY  READY%  NOT-ENROLLED  NEVER-SEEN  OFFLINE"
            ),
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
            "province,total,ready,not-enrolled,never-seen,offline,update-failed,updating,outdated,unhealthy"
        );
        assert_eq!(lines.next().unwrap(), "IR-23,10,7,0,0,3,0,0,0,0");
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
        assert!(csv.contains("\nIR-02,,4,1,0,3,"), "{csv}");
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
}
