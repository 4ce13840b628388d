//! fleet-controller: ingest, fleet state, readiness, store, HTTP API and the
//! managed Mosquitto. This file is the map; nothing else lives here.
//!
//! Pure (no I/O; takes `now`):
//! - [`domain`]: readiness, the fleet and its tally, lifecycle, registry and
//!   enrolment rules, roles and scope, the audit chain.
//!
//! Edges (I/O):
//! - [`store`]: SQLite through sqlx, one file per group of tables, and the batched writer.
//! - [`ingest`]: MQTT in: validate, apply to the fleet, hand to the store writer.
//! - [`broker`]: the managed Mosquitto (config, start, supervise, stop).
//! - [`firmware`]: the TUF firmware repository (fleet-repo) under
//!   `DATA/firmware/`: images, metadata, deltas, the snapshot and timestamp keys.
//! - [`pki`]: the fleet CA, the broker's and controller's certificates, the CRL.
//! - [`access`]: the operator-token cache and the audit writer, over the store.
//! - [`http`]: the router, authentication, error mapping, one file per
//!   resource under `http/api/`, and the HTTPS listener.
//! - [`clock`]: the wall clock, read at the edges only.
//!
//! Wiring:
//! - [`config`]: the layered configuration (defaults, site file, environment, flags).
//! - [`startup`]: `Application::build(config)` → `run_until_stopped()`, and `init`.

pub mod access;
pub mod broker;
pub mod clock;
pub mod config;
pub mod domain;
pub mod firmware;
pub mod http;
pub mod ingest;
pub mod pki;
pub mod rollouts;
pub mod startup;
pub mod store;
pub mod ui;
