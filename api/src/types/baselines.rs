//! Baselines: the target firmware of each model, which `outdated` is
//! measured against (`/api/v1/baselines…`).

use std::collections::BTreeMap;

use fleet_protocol::{Model, Version};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every model's baseline: `{"ballot-box-v2": "2.4.0", …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = BTreeMap<String, String>)]
pub struct Baselines(pub BTreeMap<Model, Version>);

/// The body of `PUT /api/v1/baselines/{model}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BaselineRequest {
    pub version: String,
}

/// A model's baseline after it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Baseline {
    #[schema(value_type = String)]
    pub model: Model,
    #[schema(value_type = String)]
    pub version: Version,
}
