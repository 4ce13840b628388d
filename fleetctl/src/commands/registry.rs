//! `fleetctl registry import|counties`: counties and polling stations.

use std::path::Path;

use fleet_api::{Client, CountyQuery, CountyRow, RegistryImported};
use serde_json::Value;

use super::{read_text, CommandError};
use crate::render::{to_json, Grid, Report, View};

/// Import the registry CSV (`-` for stdin).
pub async fn import(client: &Client, file: &Path) -> Result<Imported, CommandError> {
    let csv = read_text(file)?;
    Ok(Imported(client.import_registry(csv).await?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported(pub RegistryImported);

impl Report for Imported {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        View::Text(format!(
            "imported {} counties and {} stations\n",
            self.0.counties, self.0.stations
        ))
    }
}

pub async fn counties(client: &Client, province: Option<String>) -> Result<Counties, CommandError> {
    Ok(Counties(client.counties(&CountyQuery { province }).await?))
}

/// Counties with their station counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counties(pub Vec<CountyRow>);

impl Report for Counties {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["code", "province", "name_en", "name_fa", "stations"]);
        grid.rows = self
            .0
            .iter()
            .map(|c| {
                vec![
                    c.code.to_string(),
                    c.province.to_string(),
                    c.name_en.clone(),
                    c.name_fa.clone(),
                    c.stations.to_string(),
                ]
            })
            .collect();
        View::grid(grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};

    #[test]
    fn counties_csv_has_both_names_and_the_station_count() {
        let c = Counties(vec![CountyRow {
            code: "IR-02-SARI".parse().unwrap(),
            province: "IR-02".parse().unwrap(),
            name_en: "Sari".into(),
            name_fa: "ساری".into(),
            stations: 12,
        }]);
        assert_eq!(
            render(&c, Output::Csv),
            "code,province,name_en,name_fa,stations\nIR-02-SARI,IR-02,Sari,ساری,12\n"
        );
    }

    #[test]
    fn import_says_how_much_was_imported() {
        let i = Imported(RegistryImported {
            counties: 2,
            stations: 30,
        });
        assert_eq!(
            render(&i, Output::Table),
            "imported 2 counties and 30 stations\n"
        );
    }
}
