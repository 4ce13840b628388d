//! `fleetctl brokers`: the central broker and the provincial tier (which
//! broker serves which provinces, where its devices reach it).

use fleet_api::{BrokerTier, Client};
use serde_json::Value;

use super::CommandError;
use crate::render::{to_json, Grid, Report, View};

pub async fn list(client: &Client) -> Result<Brokers, CommandError> {
    Ok(Brokers(client.brokers().await?))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brokers(pub BrokerTier);

fn url(host: &str, port: u16, tls: bool) -> String {
    format!("{}://{host}:{port}", if tls { "mqtts" } else { "mqtt" })
}

impl Report for Brokers {
    fn json(&self) -> Value {
        to_json(&self.0)
    }

    fn table(&self) -> View {
        let mut grid = Grid::new(&["broker", "address", "managed", "bridge", "provinces"]);
        let c = &self.0.central;
        grid.rows.push(vec![
            "central".into(),
            url(&c.host, c.port, c.tls),
            String::new(),
            String::new(),
            "the others".into(),
        ]);
        grid.rows.extend(self.0.provincial.iter().map(|b| {
            let provinces: Vec<String> = b.provinces.iter().map(ToString::to_string).collect();
            vec![
                b.name.clone(),
                url(&b.host, b.port, b.tls),
                if b.managed { "yes" } else { "no" }.into(),
                b.bridge.clone(),
                provinces.join(" "),
            ]
        }));
        View::grid(grid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::{render, Output};
    use fleet_api::{BrokerInfo, ProvincialBrokerInfo};

    #[test]
    fn the_central_broker_then_each_provincial_one_with_its_provinces() {
        let b = Brokers(BrokerTier {
            central: BrokerInfo {
                host: "127.0.0.1".into(),
                port: 8883,
                tls: true,
            },
            provincial: vec![ProvincialBrokerInfo {
                name: "p01".into(),
                provinces: vec![
                    fleet_protocol::ProvinceCode::parse("IR-02").unwrap(),
                    fleet_protocol::ProvinceCode::parse("IR-27").unwrap(),
                ],
                host: "127.0.0.1".into(),
                port: 18831,
                tls: true,
                managed: true,
                bridge: "bridge.p01".into(),
            }],
        });
        let t = render(&b, Output::Table);
        assert!(t.contains("mqtts://127.0.0.1:8883"), "{t}");
        assert!(t.contains("mqtts://127.0.0.1:18831"), "{t}");
        assert!(t.contains("IR-02 IR-27"), "{t}");
        let csv = render(&b, Output::Csv);
        assert!(
            csv.starts_with("broker,address,managed,bridge,provinces"),
            "{csv}"
        );
        assert!(
            csv.contains("p01,mqtts://127.0.0.1:18831,yes,bridge.p01,IR-02 IR-27"),
            "{csv}"
        );
        let json: Value = serde_json::from_str(&render(&b, Output::Json)).unwrap();
        assert_eq!(json["provincial"][0]["bridge"], "bridge.p01");
        assert_eq!(json["central"]["port"], 8883);
    }
}
