//! What the core needs to know about its device and its timing.

use std::time::Duration;

use fleet_protocol::{DeviceId, Model, Version};

use super::renewal::RenewalPolicy;
use crate::health::HealthPolicy;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub device: DeviceId,
    pub model: Model,
    /// The installed firmware, reported in state and in the boot event.
    pub firmware: Version,
    /// This agent's own version, reported in presence and state.
    pub agent: Version,
    /// How often a health sample is taken (whether it is sent is the
    /// [`HealthPolicy`]'s call).
    pub health_sample: Duration,
    pub health: HealthPolicy,
    /// How often the configured checks run.
    pub checks_interval: Duration,
    /// This run's boot id, drawn at random by the runtime at each start and
    /// put on every event: with the sequence number it names an event, so a
    /// lost sequence file (numbers start again at 1) does not make new
    /// events look like old ones to the controller.
    pub boot: u64,
    /// How the certificate is renewed; `None`: never (no certificate, a
    /// plaintext development agent, the simulator).
    pub renewal: Option<RenewalPolicy>,
}
