//! fleet-api: the controller's HTTP API under `/api/v1`, shared by the
//! controller (which serves it) and its callers (fleetctl, fleet-sim, the
//! tests), so that no caller builds a URL or parses JSON by hand.
//!
//! - [`types`]: the request bodies, query strings and answers, one module
//!   per resource, with exactly the JSON the controller sends.
//! - [`roles`]: operator roles and their permissions (`Role::allows`).
//! - [`endpoints`]: the table of every route: method, path, how it
//!   authenticates, what it takes and answers.
//! - [`openapi`]: the OpenAPI 3 document, built from the table and the types.
//! - `dates` (feature `dates`): Jalali and Gregorian dates to Unix ms and
//!   back (ICU4X), for fleetctl and the console.
//! - `sheet` (feature `sheet`): the printable enrolment sheet of a shipment
//!   (QR codes, HTML and PDF), for fleetctl and the console.
//! - [`client`]: a typed async client (reqwest, rustls with ring, trusting
//!   only the fleet CA, the operator's bearer token).
//!
//! The schemas come from `utoipa`'s derives, which know no web framework:
//! fleetctl links this crate and so must not pull in a server (it also
//! holds the release team's offline signing commands). `aide`, the other
//! candidate, documents an axum router and would tie the types to axum.

pub mod client;
#[cfg(feature = "dates")]
pub mod dates;
pub mod endpoints;
pub mod openapi;
pub mod roles;
#[cfg(feature = "sheet")]
pub mod sheet;
pub mod types;

pub use client::{Client, ClientError};
pub use endpoints::{endpoint, Auth, Body, Endpoint, Method, ENDPOINTS};
pub use roles::{Permission, Role};
pub use types::*;
