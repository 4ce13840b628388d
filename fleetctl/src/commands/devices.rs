//! `fleetctl devices`: the device list, filtered and paged.

use fleet_api::{Client, DevicePage, DeviceQuery, DeviceSummary};
use serde_json::Value;

use super::CommandError;
use crate::render::{cell, to_json, Grid, Report, View};

/// The filters and the page, as given on the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub province: Option<String>,
    pub county: Option<String>,
    pub station: Option<String>,
    pub model: Option<String>,
    pub readiness: Option<String>,
    pub page: usize,
    pub per_page: usize,
}

pub async fn run(client: &Client, f: Filter) -> Result<Devices, CommandError> {
    let q = DeviceQuery {
        province: f.province,
        county: f.county,
        station: f.station,
        model: f.model,
        readiness: f.readiness,
        page: Some(f.page as u64),
        per_page: Some(f.per_page as u64),
    };
    Ok(Devices(client.devices(&q).await?))
}

/// One page of devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Devices(pub DevicePage);

const COLUMNS: [&str; 8] = [
    "id",
    "model",
    "province",
    "county",
    "readiness",
    "presence",
    "firmware",
    "last_seen_ms",
];

fn cells(d: &DeviceSummary) -> Vec<String> {
    vec![
        d.id.to_string(),
        d.model.to_string(),
        d.province.to_string(),
        cell(&d.county),
        d.readiness.to_string(),
        cell(&d.presence),
        cell(&d.firmware),
        cell(&d.last_seen_ms),
    ]
}

impl Report for Devices {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&COLUMNS);
        grid.rows = self.0.items.iter().map(cells).collect();
        View::Grid {
            grid,
            footer: format!(
                "page {} of {} devices ({} per page)\n",
                self.0.page, self.0.total, self.0.per_page
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};

    fn page() -> Devices {
        let item: DeviceSummary = serde_json::from_value(serde_json::json!({
            "id": "BB-02-000001", "model": "ballot-box-v2", "province": "IR-02",
            "county": null, "station": null, "lifecycle": "enrolled",
            "readiness": "never-seen", "presence": null, "firmware": null,
            "last_seen_ms": null
        }))
        .unwrap();
        Devices(DevicePage {
            total: 1,
            page: 1,
            per_page: 100,
            items: vec![item],
        })
    }

    #[test]
    fn table_lists_devices_then_the_page_line() {
        let t = render(&page(), Output::Table);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(lines[0].starts_with("ID            MODEL"), "{t}");
        assert!(lines[1].contains("never-seen"), "{t}");
        assert_eq!(lines[2], "page 1 of 1 devices (100 per page)");
    }

    #[test]
    fn csv_leaves_unknown_values_empty() {
        let c = render(&page(), Output::Csv);
        assert_eq!(
            c,
            "id,model,province,county,readiness,presence,firmware,last_seen_ms\n\
             BB-02-000001,ballot-box-v2,IR-02,,never-seen,,,\n"
        );
    }
}
