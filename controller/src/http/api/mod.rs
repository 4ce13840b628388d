//! One file per resource of `/api/v1`. Handlers decide nothing about HTTP
//! status codes: they return `ApiError`, mapped in `http::error`.

pub mod artifacts;
pub mod audit;
pub mod baselines;
pub mod broker;
pub mod commands;
pub mod devices;
pub mod enrolment;
pub mod firmware;
pub mod freeze;
pub mod health;
pub mod openapi;
pub mod pki;
pub mod readiness;
pub mod registry;
pub mod rollouts;
pub mod tokens;
pub mod tuf;
pub mod updates;

/// The bad lines of an uploaded CSV, as the 422 answer lists them.
pub fn line_items(
    errors: Vec<crate::domain::registry::LineError>,
) -> Vec<fleet_api::types::InvalidItem> {
    errors
        .into_iter()
        .map(|e| fleet_api::types::InvalidItem {
            index: None,
            line: Some(e.line),
            id: None,
            message: e.message,
        })
        .collect()
}

/// The last item of a 422 whose errors were cut at
/// [`MAX_ERRORS`](crate::domain::registry::MAX_ERRORS): how many more.
pub fn more_items(n: u64) -> fleet_api::types::InvalidItem {
    fleet_api::types::InvalidItem {
        index: None,
        line: None,
        id: None,
        message: format!("… and {n} more errors"),
    }
}
