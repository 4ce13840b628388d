//! Warehouse enrolment (pure parts): the shipment CSV of scanned serials,
//! and whether an enrolment token may be used. The CA signs only a public
//! key taken from the device's request; every other certificate field is
//! decided by the controller.

use fleet_protocol::{CountyCode, DeviceId, IdError, Model, ProvinceCode, StationId};
use rand::RngCore;

use crate::domain::registry::{Errors, LineError};

/// At most this many devices in one shipment (a bench enrols a box of a
/// few hundred; fleet-sim sends 500); a longer file is refused.
pub const MAX_SHIPMENT_ROWS: u64 = 10_000;

/// How long an enrolment token lives unless the shipment says otherwise.
pub const DEFAULT_TOKEN_HOURS: u64 = 7 * 24;
/// A revoked certificate, as the CRL lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedCert {
    pub serial: Vec<u8>,
    pub revoked_at_ms: u64,
}

/// One scanned device of a shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShipmentLine {
    pub serial: DeviceId,
    pub model: Model,
    pub province: ProvinceCode,
    pub county: Option<CountyCode>,
    pub station: Option<StationId>,
}

/// Parse a shipment CSV: `serial,model,province[,county][,station]` with a
/// header, row by row; bad rows are reported with their line numbers (the
/// first [`MAX_ERRORS`](crate::domain::registry::MAX_ERRORS), then a count),
/// and a file with more than [`MAX_SHIPMENT_ROWS`] rows is refused at the
/// first row too many.
pub fn parse_shipment(text: &str) -> Result<Vec<ShipmentLine>, Errors<LineError>> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = rdr
        .headers()
        .cloned()
        .map_err(|e| Errors::one(1, format!("cannot read the header: {e}")))?;
    let col = |n: &str| {
        headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}').eq_ignore_ascii_case(n))
    };
    let (Some(is), Some(im), Some(ip)) = (col("serial"), col("model"), col("province")) else {
        return Err(Errors::one(
            1,
            "the header needs serial, model, province (and optionally county, station)".into(),
        ));
    };
    let (ic, ist) = (col("county"), col("station"));
    let mut out = Vec::new();
    let mut errors = Errors::default();
    let mut seen = std::collections::HashSet::new();
    for (row, record) in (1u64..).zip(rdr.records()) {
        if row > MAX_SHIPMENT_ROWS {
            errors.push(LineError {
                line: row + 1,
                message: format!(
                    "more than {MAX_SHIPMENT_ROWS} devices; split the shipment (nothing was read past this line)"
                ),
            });
            break;
        }
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                errors.push(LineError {
                    line: e.position().map_or(0, |p| p.line()),
                    message: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let get = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("").to_owned();
        let parsed = (|| -> Result<ShipmentLine, IdError> {
            let opt = |s: String| (!s.is_empty()).then_some(s);
            Ok(ShipmentLine {
                serial: DeviceId::parse(&get(Some(is)))?,
                model: Model::parse(&get(Some(im)))?,
                province: ProvinceCode::parse(&get(Some(ip)))?,
                county: opt(get(ic)).map(|c| CountyCode::parse(&c)).transpose()?,
                station: opt(get(ist)).map(|s| StationId::parse(&s)).transpose()?,
            })
        })();
        match parsed {
            Ok(l) if !seen.insert(l.serial.clone()) => errors.push(LineError {
                line,
                message: format!("serial {} appears twice", l.serial),
            }),
            Ok(l) => out.push(l),
            Err(e) => errors.push(LineError {
                line,
                message: e.to_string(),
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// A new enrolment token: 16 random bytes, in groups that survive being
/// typed from a printed sheet.
pub fn new_enrol_token() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let h = hex::encode(b);
    format!(
        "enr-{}-{}-{}-{}",
        &h[0..8],
        &h[8..16],
        &h[16..24],
        &h[24..32]
    )
}

/// A stored enrolment token as the check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenState {
    pub device: DeviceId,
    pub expires_at_ms: u64,
    pub used_at_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("unknown enrolment token")]
    Unknown,
    #[error("this enrolment token was already used; ask the warehouse for a new one")]
    Used,
    #[error("this enrolment token expired; ask the warehouse for a new one")]
    Expired,
    #[error("this enrolment token is for another device")]
    OtherDevice,
    #[error("device {0} is retired")]
    Retired(DeviceId),
}

/// Whether `token` may enrol `device` now.
pub fn check_token(
    token: Option<&TokenState>,
    device: &DeviceId,
    now_ms: u64,
) -> Result<(), Refusal> {
    let t = token.ok_or(Refusal::Unknown)?;
    if t.device != *device {
        return Err(Refusal::OtherDevice);
    }
    if t.used_at_ms.is_some() {
        return Err(Refusal::Used);
    }
    if now_ms > t.expires_at_ms {
        return Err(Refusal::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipment_csv() {
        let ok = parse_shipment("serial,model,province,county\nBB-1,ballot-box-v2,IR-02,IR-02-SARI\nBB-2,id-laptop,IR-23,\n").unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].county, None);
        let errs = parse_shipment("serial,model,province\nBB-1,ballot-box-v2,IR-02\nBB/2,ballot-box-v2,IR-02\nBB-3,Bad Model,IR-02\nBB-1,ballot-box-v2,IR-02\n").unwrap_err().into_lines();
        let lines: Vec<u64> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 4, 5]);
        assert!(
            parse_shipment("id,model\nx,y\n").unwrap_err().into_lines()[0]
                .message
                .contains("serial")
        );
    }

    #[test]
    fn a_shipment_of_bad_lines_keeps_the_first_errors_and_stops_at_the_row_limit() {
        let csv = format!("serial,model,province\n{}", "x\n".repeat(50_000));
        let errors = parse_shipment(&csv).unwrap_err();
        // every row up to the limit, then the one that says the file is too long
        assert_eq!(errors.total(), MAX_SHIPMENT_ROWS + 1);
        let lines = errors.into_lines();
        assert_eq!(lines.len(), crate::domain::registry::MAX_ERRORS + 1);
        assert_eq!(
            lines.last().unwrap().message,
            format!("… and {} more errors", MAX_SHIPMENT_ROWS + 1 - 100)
        );
        let ok = format!(
            "serial,model,province\n{}",
            (0..MAX_SHIPMENT_ROWS)
                .map(|i| format!("BB-{i},m,IR-02\n"))
                .collect::<String>()
        );
        assert_eq!(parse_shipment(&ok).unwrap().len() as u64, MAX_SHIPMENT_ROWS);
    }

    #[test]
    fn tokens_are_single_use_expiring_and_bound() {
        let dev = DeviceId::parse("BB-1").unwrap();
        let t = TokenState {
            device: DeviceId::parse("BB-1").unwrap(),
            expires_at_ms: 1000,
            used_at_ms: None,
        };
        assert_eq!(check_token(Some(&t), &dev, 999), Ok(()));
        assert_eq!(check_token(Some(&t), &dev, 1001), Err(Refusal::Expired));
        assert_eq!(
            check_token(Some(&t), &DeviceId::parse("BB-2").unwrap(), 0),
            Err(Refusal::OtherDevice)
        );
        let used = TokenState {
            used_at_ms: Some(5),
            ..t
        };
        assert_eq!(check_token(Some(&used), &dev, 0), Err(Refusal::Used));
        assert_eq!(check_token(None, &dev, 0), Err(Refusal::Unknown));
        let a = new_enrol_token();
        assert_ne!(a, new_enrol_token());
        assert_eq!(a.len(), 4 + 32 + 3);
    }
}
