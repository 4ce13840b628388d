//! fleetctl: the operators' command line. It talks to the controller's
//! HTTP API only, through `fleet_api::Client`, and links no server code
//! (and holds the release team's offline signing commands, `release`).
//!
//! - [`cli`]: the command tree (clap): commands, flags, environment, help.
//! - [`commands`]: one module per command group (readiness, devices,
//!   device, enrol, registry, baseline, token, audit, decode, release), each
//!   returning a typed result.
//! - [`dates`]: Jalali and Gregorian dates to Unix ms and back (ICU4X).
//! - [`render`]: the one renderer, typed results to table, JSON or CSV.
//! - [`sheet`]: the printable enrolment sheet (HTML and PDF, pure).

pub mod cli;
pub mod commands;
pub use fleet_api::dates;
pub mod render;
pub use fleet_api::sheet;
