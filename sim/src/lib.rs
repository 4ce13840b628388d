//! fleet-sim: a simulated fleet of real agents (the `fleet-agent` library
//! with simulated hardware), each its own MQTT client against the real
//! broker. It drives the quick start, the end-to-end tests and the benchmarks.
//!
//! - [`plan`]: which devices, where, in which condition; and the readiness
//!   that must follow (pure).
//! - [`hardware`]: simulated metrics and checks.
//! - [`run`]: register through the HTTP API, then run the agents.
//! - [`reconnects`]: when each device (re)connected; the histogram of
//!   reconnect delays after an outage (pure).
//! - [`update`]: devices that update for real (the agent's update driver,
//!   TUF client and an installer), with failures chosen from the seed.
//! - [`shard`]: a large fleet's slices over processes, and the progress
//!   lines the shards send their parent (pure); [`supervise`]: the parent
//!   that starts the shards and the shard's side of it.
//! - [`bench`]: measured figures for the controller, the tier and the agent.
//! - [`report`]: the table and JSON every bench leaves under `target/bench/`.

pub mod bench;
pub mod hardware;
pub mod plan;
pub mod reconnects;
pub mod report;
pub mod run;
pub mod shard;
pub mod supervise;
pub mod update;
