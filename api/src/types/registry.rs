//! The registry of counties and polling stations (`/api/v1/registry…`).

use fleet_protocol::{CountyCode, ProvinceCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// What `POST /api/v1/registry/import` imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RegistryImported {
    pub counties: u64,
    pub stations: u64,
}

/// The query string of `GET /api/v1/registry/counties`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CountyQuery {
    /// Only this province.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
}

/// A county of the registry with its number of polling stations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CountyRow {
    #[schema(value_type = String)]
    pub code: CountyCode,
    #[schema(value_type = String)]
    pub province: ProvinceCode,
    pub name_en: String,
    pub name_fa: String,
    pub stations: u64,
}
