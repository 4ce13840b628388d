//! `fleetctl pki status`: when the CA, the service certificates and the
//! devices' certificates expire. Dates are UTC, as the certificates carry them.

use fleet_api::{Client, PkiStatus};
use serde_json::Value;

use super::CommandError;
use crate::render::{to_json, Grid, Report, View};

pub async fn status(client: &Client) -> Result<Status, CommandError> {
    Ok(Status(client.pki().await?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status(pub PkiStatus);

fn date(ms: u64) -> String {
    i64::try_from(ms / 1000)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        })
        .unwrap_or_else(|| ms.to_string())
}

impl Report for Status {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["certificate", "serial", "not_before", "not_after"]);
        grid.rows = self
            .0
            .certificates
            .iter()
            .map(|c| {
                vec![
                    c.kind.clone(),
                    c.serial.clone(),
                    date(c.not_before_ms),
                    date(c.not_after_ms),
                ]
            })
            .chain(self.0.devices_expiring_first.iter().map(|d| {
                vec![
                    format!("device {}", d.device),
                    d.serial.clone(),
                    String::new(),
                    date(d.not_after_ms),
                ]
            }))
            .collect();
        View::grid(grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_api::{CertExpiry, DeviceCertExpiry};

    #[test]
    fn status_lists_service_certificates_then_devices_with_utc_dates() {
        let s = Status(PkiStatus {
            certificates: vec![CertExpiry {
                kind: "broker".into(),
                serial: "0a1b".into(),
                not_before_ms: 1_790_000_000_000,
                not_after_ms: 1_853_072_000_000,
            }],
            devices_expiring_first: vec![DeviceCertExpiry {
                device: fleet_protocol::DeviceId::parse("BB-1").unwrap(),
                serial: "ff".into(),
                not_after_ms: 1_821_536_000_000,
            }],
        });
        let t = render(&s, Output::Table);
        assert!(t.contains("broker"), "{t}");
        assert!(t.contains("2028-09-20T"), "{t}");
        assert!(t.contains("device BB-1"), "{t}");
        let csv = render(&s, Output::Csv);
        assert!(
            csv.starts_with("certificate,serial,not_before,not_after"),
            "{csv}"
        );
        let json: Value = serde_json::from_str(&render(&s, Output::Json)).unwrap();
        assert_eq!(json["devices_expiring_first"][0]["device"], "BB-1");
    }
}
