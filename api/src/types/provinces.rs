//! `GET /api/v1/provinces`: the 31 provinces with their names.

use fleet_protocol::ProvinceCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProvinceRow {
    /// ISO 3166-2:IR, e.g. `IR-23`.
    #[schema(value_type = String)]
    pub code: ProvinceCode,
    pub name_en: String,
    pub name_fa: String,
}
