//! One file per resource of `/api/v1`. Handlers decide nothing about HTTP
//! status codes: they return `ApiError`, mapped in `http::error`.

pub mod audit;
pub mod baselines;
pub mod broker;
pub mod devices;
pub mod enrolment;
pub mod health;
pub mod readiness;
pub mod registry;
pub mod tokens;
