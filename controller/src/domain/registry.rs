//! The operator's registry of counties and polling stations, imported from a
//! CSV (pure parsing here; the store writes it). Every bad row is reported
//! with its line number, and a file with any bad row imports nothing.
//!
//! Columns (header required, any order; names are case-insensitive):
//! `province`, `county`, `station_id` are required; `county_name_en`,
//! `county_name_fa`, `station_name` are optional.

use std::collections::BTreeMap;

use fleet_protocol::{CountyCode, ProvinceCode, StationId};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct County {
    pub code: CountyCode,
    pub province: ProvinceCode,
    pub name_en: String,
    pub name_fa: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Station {
    pub id: StationId,
    pub county: CountyCode,
    pub name: String,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Registry {
    pub counties: BTreeMap<CountyCode, County>,
    pub stations: BTreeMap<StationId, Station>,
}

/// One refused line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineError {
    pub line: u64,
    pub message: String,
}

/// At most this many errors are reported; the rest are counted.
pub const MAX_ERRORS: usize = 100;

/// At most this many rows in one registry file (the country has about
/// 55,000 polling stations); a longer file is refused.
pub const MAX_REGISTRY_ROWS: u64 = 200_000;

/// A list of errors that keeps the first [`MAX_ERRORS`] and only counts the
/// rest, so a file of a million bad lines costs a hundred messages. Shared
/// by every upload (registry, shipments, device registration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors<T> {
    kept: Vec<T>,
    total: u64,
}

impl<T> Default for Errors<T> {
    fn default() -> Self {
        Self {
            kept: Vec::new(),
            total: 0,
        }
    }
}

impl<T> Errors<T> {
    pub fn push(&mut self, e: T) {
        self.total += 1;
        if self.kept.len() < MAX_ERRORS {
            self.kept.push(e);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Every error pushed, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The kept errors, then one made by `more(n)` for the `n` not kept.
    pub fn into_list(mut self, more: impl FnOnce(u64) -> T) -> Vec<T> {
        let dropped = self.total - self.kept.len() as u64;
        if dropped > 0 {
            self.kept.push(more(dropped));
        }
        self.kept
    }
}

impl Errors<LineError> {
    /// One error, for a file refused as a whole.
    pub fn one(line: u64, message: String) -> Self {
        let mut e = Self::default();
        e.push(LineError { line, message });
        e
    }

    /// The kept line errors, then "… and N more errors" (line 0).
    pub fn into_lines(self) -> Vec<LineError> {
        self.into_list(|n| LineError {
            line: 0,
            message: format!("… and {n} more errors"),
        })
    }
}

const REQUIRED: [&str; 3] = ["province", "county", "station_id"];
const OPTIONAL: [&str; 3] = ["county_name_en", "county_name_fa", "station_name"];

/// Parse the registry file row by row; a file with more than
/// [`MAX_REGISTRY_ROWS`] rows is refused at the first row too many.
pub fn parse_csv(text: &str) -> Result<Registry, Errors<LineError>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(Errors::one(1, format!("cannot read the header: {e}"))),
    };
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(name))
    };
    let missing: Vec<&str> = REQUIRED.into_iter().filter(|c| col(c).is_none()).collect();
    if !missing.is_empty() {
        return Err(Errors::one(
            1,
            format!(
                "the header lacks the column(s) {}; required: {}, optional: {}",
                missing.join(", "),
                REQUIRED.join(", "),
                OPTIONAL.join(", ")
            ),
        ));
    }
    let idx = |name: &str| col(name).expect("checked above");
    let (ip, ic, is) = (idx("province"), idx("county"), idx("station_id"));
    let (ien, ifa, isn) = (
        col("county_name_en"),
        col("county_name_fa"),
        col("station_name"),
    );

    let mut reg = Registry::default();
    let mut errors = Errors::default();
    for (row, record) in (1u64..).zip(rdr.records()) {
        if row > MAX_REGISTRY_ROWS {
            errors.push(LineError {
                line: row + 1,
                message: format!(
                    "more than {MAX_REGISTRY_ROWS} rows; split the file (nothing was read past this line)"
                ),
            });
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(LineError {
                    line,
                    message: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").to_owned();
        let mut err = |message: String| errors.push(LineError { line, message });
        let province = match ProvinceCode::parse(&field(Some(ip))) {
            Ok(p) => p,
            Err(e) => {
                err(e.to_string());
                continue;
            }
        };
        let county = match CountyCode::parse(&field(Some(ic))) {
            Ok(c) => c,
            Err(e) => {
                err(e.to_string());
                continue;
            }
        };
        if county.province() != province {
            err(format!("county {county} is not in province {province}"));
            continue;
        }
        let station = match StationId::parse(&field(Some(is))) {
            Ok(s) => s,
            Err(e) => {
                err(e.to_string());
                continue;
            }
        };
        let c = County {
            code: county.clone(),
            province,
            name_en: field(ien),
            name_fa: field(ifa),
        };
        match reg.counties.get(&county) {
            Some(existing)
                if (existing.name_en != c.name_en && !c.name_en.is_empty())
                    || (existing.name_fa != c.name_fa && !c.name_fa.is_empty()) =>
            {
                err(format!(
                    "county {county} is named differently on an earlier line"
                ));
                continue;
            }
            Some(_) => {}
            None => {
                reg.counties.insert(county.clone(), c);
            }
        }
        if let Some(existing) = reg.stations.get(&station) {
            err(format!(
                "station {station} appears twice (first in county {})",
                existing.county
            ));
            continue;
        }
        reg.stations.insert(
            station.clone(),
            Station {
                id: station,
                county,
                name: field(isn),
            },
        );
    }
    if errors.is_empty() {
        Ok(reg)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_good_file() {
        let csv = "province,county,county_name_en,county_name_fa,station_id,station_name\n\
                   IR-02,IR-02-SARI,Sari,ساری,ST-0001,School 1\n\
                   IR-02,IR-02-SARI,Sari,ساری,ST-0002,Mosque 3\n\
                   IR-23,IR-23-TEH,Tehran,تهران,ST-0003,\n";
        let reg = parse_csv(csv).unwrap();
        assert_eq!(reg.counties.len(), 2);
        assert_eq!(reg.stations.len(), 3);
        let sari = &reg.counties[&CountyCode::parse("IR-02-SARI").unwrap()];
        assert_eq!(sari.name_fa, "ساری");
    }

    #[test]
    fn bad_rows_are_reported_with_line_numbers() {
        let csv = "station_id,county,province\n\
                   ST-1,IR-02-SARI,IR-02\n\
                   ST-2,IR-02-SARI,IR-99\n\
                   ST-3,IR-23-TEH,IR-02\n\
                   ST/4,IR-02-SARI,IR-02\n\
                   ST-1,IR-02-SARI,IR-02\n\
                   ST-6,IR-02-SARI\n";
        let errors = parse_csv(csv).unwrap_err().into_lines();
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7], "{errors:?}");
        assert!(errors[0].message.contains("IR-99"));
        assert!(errors[1].message.contains("not in province"));
        assert!(errors[3].message.contains("appears twice"));
    }

    #[test]
    fn a_file_of_bad_rows_keeps_the_first_errors_and_counts_the_rest() {
        let csv = format!("province,county,station_id\n{}", "x,y,z\n".repeat(5_000));
        let errors = parse_csv(&csv).unwrap_err();
        assert_eq!(errors.total(), 5_000);
        let lines = errors.into_lines();
        assert_eq!(lines.len(), MAX_ERRORS + 1);
        assert_eq!(lines[0].line, 2);
        assert_eq!(lines[MAX_ERRORS].message, "… and 4900 more errors");
    }

    #[test]
    fn a_file_with_too_many_rows_is_refused_at_the_first_row_too_many() {
        let mut csv = String::from("province,county,station_id\n");
        for i in 0..=MAX_REGISTRY_ROWS {
            csv.push_str(&format!("IR-02,IR-02-SARI,ST-{i}\n"));
        }
        let errors = parse_csv(&csv).unwrap_err();
        assert_eq!(errors.total(), 1);
        let lines = errors.into_lines();
        assert_eq!(lines[0].line, MAX_REGISTRY_ROWS + 2);
        assert!(lines[0].message.contains("more than"), "{lines:?}");
    }

    #[test]
    fn missing_columns_are_named() {
        let errors = parse_csv("province,station_id\nIR-02,ST-1\n")
            .unwrap_err()
            .into_lines();
        assert_eq!(errors[0].line, 1);
        assert!(errors[0].message.contains("county"), "{errors:?}");
    }
}
