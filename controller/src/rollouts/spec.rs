//! From the API's `RolloutRequest` to what the engine and selection take
//! (checked at the boundary; every bad field is one line of the 422).

use fleet_api::types::{PolicyView, RolloutRequest};
use fleet_protocol::firmware::{agent_platform, target_name};
use fleet_protocol::{ArtifactKind, CountyCode, DeviceId, Model, ProvinceCode, StationId, Version};

use crate::domain::rollout::{AllowedHours, Canary, Policy, WavesSpec};
use crate::domain::rollout_select::{Selector, Target};

/// A rollout request past validation.
#[derive(Debug, Clone)]
pub struct Spec {
    pub name: String,
    pub target: Target,
    /// The TUF target name devices are told to fetch.
    pub manifest: String,
    pub selector: Selector,
    pub waves: WavesSpec,
    pub policy: Policy,
    pub policy_view: PolicyView,
}

fn each<T: std::str::FromStr>(field: &str, items: &[String], errors: &mut Vec<String>) -> Vec<T>
where
    T::Err: std::fmt::Display,
{
    items
        .iter()
        .filter_map(|s| match s.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                errors.push(format!("{field}: {s:?}: {e}"));
                None
            }
        })
        .collect()
}

/// Parse a request; `Err` holds one message per bad field.
pub fn parse(req: &RolloutRequest) -> Result<Spec, Vec<String>> {
    let mut errors = Vec::new();
    let artifact = ArtifactKind::parse(&req.artifact);
    if artifact.is_none() {
        errors.push(format!(
            "artifact: {:?} is neither firmware nor agent",
            req.artifact
        ));
    }
    let model = Model::parse(req.model.trim())
        .map_err(|e| errors.push(format!("model: {e}")))
        .ok();
    let version = Version::parse(req.version.trim())
        .map_err(|e| errors.push(format!("version: {e}")))
        .ok();
    let platform = match req.platform.as_deref().map(str::trim) {
        Some(p) if !p.is_empty() => Model::parse(p)
            .map_err(|e| errors.push(format!("platform: {e}")))
            .ok(),
        _ => Some(agent_platform()),
    };
    let s = &req.selector;
    let selector = Selector {
        provinces: each::<ProvinceCode>("selector.provinces", &s.provinces, &mut errors),
        counties: each::<CountyCode>("selector.counties", &s.counties, &mut errors),
        stations: each::<StationId>("selector.stations", &s.stations, &mut errors),
        devices: each::<DeviceId>("selector.devices", &s.devices, &mut errors),
        include_new: s.include_new,
    };
    let canary = match &req.canary {
        None => None,
        Some(c) => match (c.devices, c.percent) {
            (Some(n), None) => Some(Canary::Devices(n)),
            (None, Some(p)) => Some(Canary::Percent(p)),
            (None, None) => None,
            (Some(_), Some(_)) => {
                errors.push("canary: devices or percent, not both".into());
                None
            }
        },
    };
    let groups: Vec<Vec<ProvinceCode>> = req
        .waves
        .iter()
        .enumerate()
        .map(|(i, g)| each::<ProvinceCode>(&format!("waves[{i}]"), g, &mut errors))
        .collect();
    let p = &req.policy;
    let defaults = Policy::default();
    let offset = p.utc_offset_min.unwrap_or(AllowedHours::TEHRAN_OFFSET_MIN);
    let allowed_hours = match p.allowed_hours.as_deref().map(str::trim) {
        Some(h) if !h.is_empty() => AllowedHours::parse(h, offset)
            .map_err(|e| errors.push(format!("policy.allowed_hours: {e}")))
            .ok(),
        _ => None,
    };
    let timeout_s = p
        .device_timeout_s
        .unwrap_or(defaults.device_timeout_ms / 1000);
    let policy = Policy {
        failure_threshold_pct: p
            .failure_threshold_pct
            .unwrap_or(defaults.failure_threshold_pct),
        success_threshold_pct: p
            .success_threshold_pct
            .unwrap_or(defaults.success_threshold_pct),
        max_downloads_per_province: p
            .max_downloads_per_province
            .unwrap_or(defaults.max_downloads_per_province),
        allowed_hours,
        device_timeout_ms: timeout_s.saturating_mul(1000),
    };
    if let Err(e) = policy.check() {
        errors.push(e.to_string());
    }
    let (Some(artifact), Some(model), Some(version), Some(platform)) =
        (artifact, model, version, platform)
    else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let manifest = match artifact {
        ArtifactKind::Firmware => target_name(artifact, &model, &version),
        ArtifactKind::Agent => target_name(artifact, &platform, &version),
    };
    let policy_view = PolicyView {
        failure_threshold_pct: policy.failure_threshold_pct,
        success_threshold_pct: policy.success_threshold_pct,
        max_downloads_per_province: policy.max_downloads_per_province,
        allowed_hours: p.allowed_hours.clone().filter(|h| !h.trim().is_empty()),
        utc_offset_min: offset,
        device_timeout_s: timeout_s,
    };
    Ok(Spec {
        name: req
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("{model} {version}")),
        target: Target {
            artifact,
            model,
            version,
        },
        manifest,
        selector,
        waves: WavesSpec { canary, groups },
        policy,
        policy_view,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: &str) -> RolloutRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_fill_the_policy_and_name_the_rollout() {
        let s = parse(&req(r#"{"model":"ballot-box-v2","version":"2.5.0"}"#)).unwrap();
        assert_eq!(s.name, "ballot-box-v2 2.5.0");
        assert_eq!(s.manifest, "firmware/ballot-box-v2/2.5.0.tar");
        assert_eq!(s.policy, Policy::default());
        assert_eq!(s.policy_view.utc_offset_min, 210);
        assert_eq!(s.policy_view.device_timeout_s, 7200);
    }

    #[test]
    fn every_bad_field_is_named() {
        let e = parse(&req(
            r#"{"artifact":"kernel","model":"ballot-box-v2","version":"2.5.0",
                "selector":{"provinces":["IR-99"]},"waves":[["Tehran"]],
                "canary":{"devices":5,"percent":1.0},
                "policy":{"allowed_hours":"2-6","failure_threshold_pct":150}}"#,
        ))
        .unwrap_err();
        assert_eq!(e.len(), 6, "{e:?}");
        assert!(e[0].starts_with("artifact"), "{e:?}");
    }
}
