//! `fleetctl enrol batch|status`: a warehouse shipment of scanned serials
//! becomes registered devices with one single-use token each (and the
//! printable sheets, written now since the tokens are shown only now);
//! which of a shipment's devices are enrolled and ready to ship.

use std::path::{Path, PathBuf};

use fleet_api::{Client, EnrolBatch, EnrolBatchQuery, ShipmentDevice, ShipmentStatus};
use serde_json::Value;

use super::{read_text, CommandError};
use crate::render::{cell, to_json, Grid, Report, View};
use crate::sheet::{self, SheetDevice};

/// What `enrol batch` was given.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The shipment CSV (`-` for stdin).
    pub file: &'a Path,
    pub expires_hours: u64,
    pub sheet_dir: &'a Path,
    /// The controller's address, as the devices will be told it.
    pub controller: &'a str,
}

pub async fn batch(client: &Client, b: Batch<'_>) -> Result<Enrolled, CommandError> {
    let csv = read_text(b.file)?;
    let q = EnrolBatchQuery {
        expires_hours: Some(b.expires_hours),
    };
    let batch = client.enrol_batch(csv, &q).await?;
    check_shipment_id(&batch.shipment)?;
    let devices: Vec<SheetDevice> = batch
        .devices
        .iter()
        .map(|d| SheetDevice {
            device: d.device.to_string(),
            token: d.token.clone(),
        })
        .collect();
    let (shipment, expires) = (batch.shipment.as_str(), batch.expires_at_ms);
    let html = write_new(
        b.sheet_dir,
        shipment,
        "html",
        sheet::render_html(shipment, b.controller, expires, &devices).as_bytes(),
    )?;
    let pdf = write_new(
        b.sheet_dir,
        shipment,
        "pdf",
        &sheet::render_pdf(shipment, b.controller, expires, &devices),
    )?;
    Ok(Enrolled {
        batch,
        sheets: [html, pdf],
    })
}

/// A shipment id as the controller makes them (`shipment-` and 8 lower-case
/// hexadecimal digits), checked before it becomes a file name or a path.
pub fn check_shipment_id(id: &str) -> Result<&str, CommandError> {
    match id.strip_prefix("shipment-") {
        Some(hex)
            if hex.len() == 8
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(id)
        }
        _ => Err(CommandError::BadShipment(id.to_owned())),
    }
}

/// `DIR/SHIPMENT.EXT`, created mode 0600 and never over an existing file:
/// the sheets hold the tokens. A shipment id unlike the controller's never
/// becomes a file name.
fn write_new(dir: &Path, shipment: &str, ext: &str, data: &[u8]) -> Result<PathBuf, CommandError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let shipment = check_shipment_id(shipment)?;
    let path = dir.join(format!("{shipment}.{ext}"));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|source| CommandError::Write {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// A registered shipment with its tokens, and where its sheets went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub batch: EnrolBatch,
    /// The HTML and the PDF sheet.
    pub sheets: [PathBuf; 2],
}

impl Report for Enrolled {
    fn json(&self) -> Value {
        to_json(&self.batch)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["device", "token"]);
        grid.rows = self
            .batch
            .devices
            .iter()
            .map(|d| vec![d.device.to_string(), d.token.clone()])
            .collect();
        View::Grid {
            grid,
            footer: format!(
                "{} devices in {}; tokens expire at {} (unix ms) and are shown only now\n",
                self.batch.devices.len(),
                self.batch.shipment,
                self.batch.expires_at_ms
            ),
        }
    }

    fn note(&self) -> Option<String> {
        Some(format!(
            "printable sheets: {} and {}",
            self.sheets[0].display(),
            self.sheets[1].display()
        ))
    }
}

pub async fn status(client: &Client, shipment: &str) -> Result<Shipment, CommandError> {
    Ok(Shipment(
        client.shipment(check_shipment_id(shipment)?).await?,
    ))
}

/// A shipment's devices on the warehouse bench.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipment(pub ShipmentStatus);

fn cells(d: &ShipmentDevice) -> Vec<String> {
    vec![
        d.device.to_string(),
        d.lifecycle.to_string(),
        cell(&d.enrolled_at_ms),
        cell(&d.self_test),
        d.ready_to_ship.to_string(),
    ]
}

impl Report for Shipment {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&[
            "device",
            "lifecycle",
            "enrolled_at_ms",
            "self_test",
            "ready_to_ship",
        ]);
        grid.rows = self.0.devices.iter().map(cells).collect();
        View::grid(grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_api::{EnrolToken, Lifecycle, SelfTest};

    #[test]
    fn batch_table_lists_tokens_and_says_they_are_shown_once() {
        let e = Enrolled {
            batch: EnrolBatch {
                shipment: "shipment-0a1b2c3d".into(),
                expires_at_ms: 42,
                devices: vec![EnrolToken {
                    device: "BB-1".parse().unwrap(),
                    token: "enr-1".into(),
                }],
            },
            sheets: ["s.html".into(), "s.pdf".into()],
        };
        assert_eq!(
            render(&e, Output::Table),
            "DEVICE  TOKEN\nBB-1    enr-1\n1 devices in shipment-0a1b2c3d; tokens expire at 42 (unix ms) and are shown only now\n"
        );
        assert_eq!(render(&e, Output::Csv), "device,token\nBB-1,enr-1\n");
        assert_eq!(e.note().unwrap(), "printable sheets: s.html and s.pdf");
    }

    #[test]
    fn status_shows_self_test_as_the_controller_words_it() {
        let s = Shipment(ShipmentStatus {
            shipment: "shipment-1".into(),
            devices: vec![ShipmentDevice {
                device: "BB-1".parse().unwrap(),
                lifecycle: Lifecycle::Registered,
                enrolled_at_ms: None,
                token_expires_at_ms: 9,
                self_test: SelfTest::NotYet,
                ready_to_ship: false,
            }],
        });
        assert_eq!(
            render(&s, Output::Csv),
            "device,lifecycle,enrolled_at_ms,self_test,ready_to_ship\nBB-1,registered,,not yet,false\n"
        );
    }

    #[test]
    fn sheets_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("fleetctl-sheet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = write_new(&dir, "shipment-0a1b2c3d", "html", b"tokens").unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = write_new(&dir, "shipment-0a1b2c3d", "html", b"other");
        assert!(
            matches!(again, Err(CommandError::Write { .. })),
            "{again:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"tokens");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_shipment_id_that_is_not_the_controllers_is_never_a_file_name() {
        let dir = std::env::temp_dir().join(format!("fleetctl-bad-id-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for bad in [
            "../escape",
            "sub/shipment-0a1b2c3d",
            "/tmp/x",
            "shipment-0A1B2C3D",
            "shipment-0a1b2c3",
            "",
        ] {
            let r = write_new(&dir.join("sub"), bad, "html", b"tokens");
            assert!(
                matches!(r, Err(CommandError::BadShipment(_))),
                "{bad:?}: {r:?}"
            );
        }
        assert!(check_shipment_id("shipment-0a1b2c3d").is_ok());
        assert!(!dir.join("escape.html").exists());
        assert!(!dir.join("sub/sub").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
