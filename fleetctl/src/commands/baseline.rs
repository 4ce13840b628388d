//! `fleetctl baseline set|list`: the target firmware per model, which
//! `outdated` is measured against.

use fleet_api::{Baseline, Baselines, Client};
use serde_json::Value;

use super::CommandError;
use crate::render::{to_json, Grid, Report, View};

pub async fn set(client: &Client, model: &str, version: &str) -> Result<BaselineSet, CommandError> {
    Ok(BaselineSet(client.set_baseline(model, version).await?))
}

/// A model's baseline after it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineSet(pub Baseline);

impl Report for BaselineSet {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        View::Text(format!(
            "baseline of {} is now {}\n",
            self.0.model, self.0.version
        ))
    }
}

pub async fn list(client: &Client) -> Result<BaselineList, CommandError> {
    Ok(BaselineList(client.baselines().await?))
}

/// Every model's baseline; JSON is the controller's map, model to version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineList(pub Baselines);

impl Report for BaselineList {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["model", "version"]);
        grid.rows = (self.0 .0.iter())
            .map(|(m, v)| vec![m.to_string(), v.to_string()])
            .collect();
        View::grid(grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};

    fn list() -> BaselineList {
        BaselineList(Baselines(
            [
                ("id-laptop".parse().unwrap(), "1.8.2".parse().unwrap()),
                ("ballot-box-v2".parse().unwrap(), "2.4.0".parse().unwrap()),
            ]
            .into_iter()
            .collect(),
        ))
    }

    #[test]
    fn list_is_a_row_per_model_and_json_is_the_map() {
        assert_eq!(
            render(&list(), Output::Table),
            "MODEL          VERSION\nballot-box-v2  2.4.0\nid-laptop      1.8.2\n"
        );
        let json = render(&list(), Output::Json);
        assert!(json.contains("\"ballot-box-v2\": \"2.4.0\""), "{json}");
    }
}
