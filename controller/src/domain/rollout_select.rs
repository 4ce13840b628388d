//! Which devices a rollout is for (pure): the selector's lists are a union
//! (provinces ∪ counties ∪ stations ∪ devices; no list at all = the whole
//! fleet of the model); each selected device either can take the update or
//! is a member skipped with why.
//!
//! Decisions:
//! - A device matched by a location list (or by the whole fleet) that is of
//!   another model, or not in service (registered, retired), is not a member
//!   at all: a province holds other models, and a device enrolled later
//!   joins through `include_new`. A device named in the `devices` list is
//!   always a member: of another model or not in service it is skipped with
//!   why, so the operator sees what became of every device named.
//! - A device already on the version (as it last reported) is skipped
//!   ("already on 2.5.0"); a device that never reported is not.

use std::collections::HashSet;

use fleet_protocol::{ArtifactKind, CountyCode, DeviceId, Model, ProvinceCode, StationId, Version};

use crate::domain::fleet::Device;
use crate::domain::lifecycle::Rules;

/// A selector past validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub provinces: Vec<ProvinceCode>,
    pub counties: Vec<CountyCode>,
    pub stations: Vec<StationId>,
    pub devices: Vec<DeviceId>,
    pub include_new: bool,
}

impl Selector {
    fn is_whole_fleet(&self) -> bool {
        self.provinces.is_empty()
            && self.counties.is_empty()
            && self.stations.is_empty()
            && self.devices.is_empty()
    }

    /// Whether a location list (or the whole fleet) names the device.
    fn by_location(&self, d: &Device) -> bool {
        self.is_whole_fleet()
            || self.provinces.contains(&d.reg.province)
            || d.reg
                .county
                .as_ref()
                .is_some_and(|c| self.counties.contains(c))
            || d.reg
                .station
                .as_ref()
                .is_some_and(|s| self.stations.contains(s))
    }
}

/// What the rollout puts on devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub artifact: ArtifactKind,
    /// Devices of this model are selected (for the agent too: the platform
    /// only picks the agent's build).
    pub model: Model,
    pub version: Version,
}

/// One selected device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub device: DeviceId,
    pub province: ProvinceCode,
    /// Why it is not updated; `None`: it can be.
    pub skip: Option<String>,
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("devices not registered: {}", .0.iter().map(DeviceId::as_str).collect::<Vec<_>>().join(", "))]
    UnknownDevices(Vec<DeviceId>),
}

/// Why a device of the model in service cannot take the target, if so.
pub fn skip_reason(d: &Device, t: &Target) -> Option<String> {
    if d.reg.model != t.model {
        return Some(format!("model {} is not {}", d.reg.model, t.model));
    }
    if !d.reg.lifecycle.is_enrolled() {
        return Some(format!("not in service ({})", d.reg.lifecycle));
    }
    let state = d.status.state.as_ref()?;
    let running = match t.artifact {
        ArtifactKind::Firmware => &state.firmware,
        ArtifactKind::Agent => &state.agent,
    };
    (running == &t.version).then(|| format!("already on {}", t.version))
}

/// Whether a device the rollout does not hold yet should join it
/// (`include_new`): selected by location, of the model and in service.
pub fn joins(sel: &Selector, t: &Target, d: &Device) -> bool {
    sel.include_new
        && (sel.by_location(d) || sel.devices.contains(&d.reg.id))
        && d.reg.model == t.model
        && d.reg.lifecycle.is_enrolled()
}

/// Select from `fleet` (every registered device). `online` says whether a
/// device holds a live session now.
pub fn select<'a>(
    sel: &Selector,
    t: &Target,
    fleet: impl IntoIterator<Item = &'a Device>,
    online: impl Fn(&Device) -> bool,
) -> Result<Vec<Selected>, SelectError> {
    let named: HashSet<&DeviceId> = sel.devices.iter().collect();
    let mut found: HashSet<&DeviceId> = HashSet::new();
    let mut out = Vec::new();
    for d in fleet {
        let listed = named.contains(&d.reg.id);
        if listed {
            found.insert(&d.reg.id);
        }
        let in_scope = d.reg.model == t.model && d.reg.lifecycle.is_enrolled();
        if !(listed || (sel.by_location(d) && in_scope)) {
            continue;
        }
        out.push(Selected {
            device: d.reg.id.clone(),
            province: d.reg.province,
            skip: skip_reason(d, t),
            online: online(d),
        });
    }
    let mut unknown: Vec<DeviceId> = sel
        .devices
        .iter()
        .filter(|id| !found.contains(id))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(SelectError::UnknownDevices(unknown));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use fleet_protocol::{State, UpdateStatus};

    use super::*;
    use crate::domain::fleet::{Registration, Status};
    use crate::domain::lifecycle::Lifecycle;

    fn device(id: &str, model: &str, province: &str, county: Option<&str>) -> Device {
        Device {
            reg: Registration {
                id: DeviceId::parse(id).unwrap(),
                model: Model::parse(model).unwrap(),
                province: province.parse().unwrap(),
                county: county.map(|c| c.parse().unwrap()),
                station: None,
                lifecycle: Lifecycle::Deployed,
                registered_at_ms: 0,
            },
            status: Status::default(),
            reports: Default::default(),
            heard: None,
            reason: None,
            desired: None,
            track: None,
            agent_track: None,
        }
    }

    fn on(mut d: Device, firmware: &str) -> Device {
        d.status.state = Some(State {
            model: d.reg.model.clone(),
            firmware: Version::parse(firmware).unwrap(),
            agent: Version::parse("0.1.0").unwrap(),
            update: UpdateStatus::Idle,
            checks: vec![],
            config_rev: 0,
        });
        d
    }

    fn target() -> Target {
        Target {
            artifact: ArtifactKind::Firmware,
            model: Model::parse("ballot-box-v2").unwrap(),
            version: Version::parse("2.5.0").unwrap(),
        }
    }

    fn ids(s: &[Selected]) -> Vec<&str> {
        s.iter().map(|s| s.device.as_str()).collect()
    }

    fn fleet() -> Vec<Device> {
        let mut retired = device("BB-RET", "ballot-box-v2", "IR-23", None);
        retired.reg.lifecycle = Lifecycle::Retired;
        vec![
            device("BB-TEH", "ballot-box-v2", "IR-23", Some("IR-23-TEH")),
            device("BB-SARI", "ballot-box-v2", "IR-02", Some("IR-02-SARI")),
            on(device("BB-DONE", "ballot-box-v2", "IR-30", None), "2.5.0"),
            device("LAP-1", "id-laptop-v1", "IR-23", None),
            retired,
        ]
    }

    #[test]
    fn no_list_is_the_whole_fleet_of_the_model_in_service() {
        let f = fleet();
        let s = select(&Selector::default(), &target(), &f, |_| false).unwrap();
        assert_eq!(ids(&s), ["BB-TEH", "BB-SARI", "BB-DONE"]);
    }

    #[test]
    fn lists_are_a_union() {
        let f = fleet();
        let sel = Selector {
            provinces: vec!["IR-30".parse().unwrap()],
            counties: vec!["IR-02-SARI".parse().unwrap()],
            ..Selector::default()
        };
        let s = select(&sel, &target(), &f, |_| true).unwrap();
        assert_eq!(ids(&s), ["BB-SARI", "BB-DONE"]);
        assert!(s.iter().all(|s| s.online));
    }

    #[test]
    fn a_device_already_on_the_version_is_skipped_with_why() {
        let f = fleet();
        let s = select(&Selector::default(), &target(), &f, |_| false).unwrap();
        let done = s.iter().find(|s| s.device.as_str() == "BB-DONE").unwrap();
        assert_eq!(done.skip.as_deref(), Some("already on 2.5.0"));
        let teh = s.iter().find(|s| s.device.as_str() == "BB-TEH").unwrap();
        assert_eq!(
            teh.skip, None,
            "a device that never reported is not skipped"
        );
    }

    #[test]
    fn a_listed_device_of_another_model_or_out_of_service_is_a_skipped_member() {
        let f = fleet();
        let sel = Selector {
            devices: vec![
                DeviceId::parse("LAP-1").unwrap(),
                DeviceId::parse("BB-RET").unwrap(),
            ],
            ..Selector::default()
        };
        let s = select(&sel, &target(), &f, |_| false).unwrap();
        assert_eq!(ids(&s), ["LAP-1", "BB-RET"]);
        assert_eq!(
            s[0].skip.as_deref(),
            Some("model id-laptop-v1 is not ballot-box-v2")
        );
        assert_eq!(s[1].skip.as_deref(), Some("not in service (retired)"));
    }

    #[test]
    fn a_province_list_leaves_out_other_models_and_devices_out_of_service() {
        let f = fleet();
        let sel = Selector {
            provinces: vec!["IR-23".parse().unwrap()],
            ..Selector::default()
        };
        let s = select(&sel, &target(), &f, |_| false).unwrap();
        assert_eq!(ids(&s), ["BB-TEH"]);
    }

    #[test]
    fn an_unknown_listed_device_is_refused_by_name() {
        let f = fleet();
        let sel = Selector {
            devices: vec![DeviceId::parse("BB-NOPE").unwrap()],
            ..Selector::default()
        };
        assert_eq!(
            select(&sel, &target(), &f, |_| false)
                .unwrap_err()
                .to_string(),
            "devices not registered: BB-NOPE"
        );
    }

    #[test]
    fn only_include_new_lets_a_later_device_join() {
        let f = fleet();
        let mut sel = Selector {
            provinces: vec!["IR-23".parse().unwrap()],
            ..Selector::default()
        };
        assert!(!joins(&sel, &target(), &f[0]));
        sel.include_new = true;
        assert!(joins(&sel, &target(), &f[0]));
        assert!(!joins(&sel, &target(), &f[1]), "another province");
        assert!(!joins(&sel, &target(), &f[3]), "another model");
        assert!(!joins(&sel, &target(), &f[4]), "retired");
    }
}
