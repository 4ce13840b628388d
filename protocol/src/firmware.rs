//! Firmware repository conventions shared by the release team's signer
//! (fleetctl through fleet-repo), the controller and the agent: how a TUF
//! target is named and what its `custom` metadata says. The agent believes
//! these fields only from metadata whose signatures it verified.

use serde::{Deserialize, Serialize};

use crate::ids::{Model, Version};
use crate::message::ArtifactKind;

/// The `custom` object of every target in the targets metadata. The agent
/// refuses a target whose `model` is not its own, or whose `version` is
/// older than what it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TargetCustom {
    pub artifact: ArtifactKind,
    /// Hardware model for firmware; for the agent, the platform it runs on
    /// (e.g. `x86-64-linux`).
    pub model: Model,
    pub version: Version,
}

/// The TUF target name of an artifact: `firmware/MODEL/VERSION.tar` or
/// `agent/PLATFORM/VERSION`. One name per (artifact, model, version), so a
/// version cannot be signed twice with different content.
pub fn target_name(artifact: ArtifactKind, model: &Model, version: &Version) -> String {
    match artifact {
        ArtifactKind::Firmware => format!("firmware/{model}/{version}.tar"),
        ArtifactKind::Agent => format!("agent/{model}/{version}"),
    }
}

/// The platform name an agent binary is published under, from the build
/// target (`x86_64` Linux: `x86-64-linux`).
pub fn agent_platform() -> Model {
    let arch = std::env::consts::ARCH.replace('_', "-");
    Model::parse(&format!("{arch}-{}", std::env::consts::OS))
        .expect("arch and OS names are lower-case letters, digits and '-'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_differ_by_artifact_model_and_version() {
        let m = Model::parse("ballot-box-v2").unwrap();
        let v = Version::parse("1.4.0").unwrap();
        assert_eq!(
            target_name(ArtifactKind::Firmware, &m, &v),
            "firmware/ballot-box-v2/1.4.0.tar"
        );
        assert_eq!(
            target_name(ArtifactKind::Agent, &m, &v),
            "agent/ballot-box-v2/1.4.0"
        );
    }

    #[test]
    fn custom_metadata_reads_back_from_json() {
        let c = TargetCustom {
            artifact: ArtifactKind::Agent,
            model: agent_platform(),
            version: Version::parse("0.2.0").unwrap(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"artifact\":\"agent\""), "{json}");
        assert_eq!(serde_json::from_str::<TargetCustom>(&json).unwrap(), c);
    }
}
