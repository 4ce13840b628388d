//! The rollout engine (pure): waves across provinces with brakes. Inputs
//! in ([`Input`]: operator actions, update progress and results, a device
//! joining, a tick), decisions out ([`Decision`]: release this device with
//! this attempt, persist this member or the status, a wave started or is
//! done, paused, completed). No I/O, no clock: `now_ms`, the freeze
//! windows and who is online come in a [`World`] on every call. The
//! controller's `rollouts` task owns the engines and does the I/O.
//!
//! # Plan ([`Engine::new`])
//! - Waves: `[canary]` + one wave per group of provinces + a last `rest`
//!   wave of every selected device not in an earlier wave (only if it has
//!   a member, or if there are no groups). Names: `canary`,
//!   `IR-23+IR-30`, `rest`.
//! - The canary takes N devices (at most all), or ceil(P% of the selected
//!   non-skipped devices), at least 1 when P > 0, chosen round-robin over
//!   provinces in order, within a province online devices first, then by
//!   device id. Skipped candidates never go to the canary; they sit in
//!   their province's wave.
//! - Refused ([`PlanError`]): a province in two groups, a group with no
//!   province, a canary of 0 devices or of a percent outside (0, 100], a
//!   device selected twice, thresholds outside 0..=100, a zero timeout.
//!   A group whose provinces have no selected device is a wave of zero
//!   devices (done as soon as it starts).
//!
//! # Phases
//! | input | from | to |
//! | --- | --- | --- |
//! | `Start` | Draft (refused inside a freeze window: [`EngineError::Frozen`]) | Running, wave 0 |
//! | `Pause` | Running | Paused (the operator's reason) |
//! | `Resume` | Paused; Draft (= `Start`) | Running |
//! | `Abort` | Draft, Running, Paused | Aborted (nothing more is released or timed out) |
//! | `RetryFailed` | Running, Paused, Completed | same; Failed/TimedOut members go back to Pending with `attempt + 1` |
//! | `Join` | all but Aborted | same; the device joins the last wave (a device already a member is left alone) |
//! | `Unreleased` | any | same; a Released member goes back to Pending (its desired state could not be set) |
//! | `Progress`, `Ended`, `Tick` | any | as the rules below say |
//!
//! Anything else is [`EngineError::NotAllowed`] naming the action and phase.
//!
//! # Members
//! - Progress: downloading|verifying → Downloading, installing →
//!   Installing, rebooting|checking → Rebooting, frozen → Skipped (while
//!   the device holds the install in a freeze window; it is known by its
//!   release time, so later events still count). Results: committed →
//!   Succeeded, failed|rolled-back → Failed, timed-out → TimedOut.
//! - Events for a Pending or (selection-)Skipped member are ignored (not
//!   ours yet). Progress for an ended member changes nothing; a later
//!   `committed` moves a Failed/TimedOut member to Succeeded (the device
//!   did update); nothing moves a Succeeded one.
//! - Timeouts (on `Tick`, while Running, Paused or Completed): a member
//!   Released/Downloading/Installing/Rebooting with `now - released_ms >=
//!   device_timeout_ms` → TimedOut. A device that was frozen starts its
//!   timeout again when it leaves the freeze (a restored engine counts
//!   from `released_ms`).
//!
//! # Releasing
//! On `Tick`, and right after `Start`, `Resume` and a wave advance: only
//! while Running (waves up to the current one) or Completed (stragglers:
//! pending members of any wave, e.g. devices that were offline or joined),
//! not inside a freeze window, only inside the allowed hours (either sets
//! [`Status::held`], cleared when it lifts), only online devices, and per
//! province only while Released+Downloading members, with those of other
//! rollouts ([`World::elsewhere`]), < the limit (0 = no limit). Within a province: earlier waves first, then by device id. The
//! engine never releases above the limit; a device that goes back to
//! downloading on its own (an agent restarting a download) is counted as
//! it is, and holds back releases in its province until it moves on.
//!
//! # Brakes and advancing
//! - Failure threshold: after an input that records a failure (Failed or
//!   TimedOut) of a member of the current wave or an earlier one while
//!   Running (a wave advances at its success threshold while some of its
//!   devices are still on their way; a canary that rolls back late must
//!   still stop the rollout): failed+timed-out over THAT wave's
//!   non-skipped members, in percent,
//!   ABOVE `failure_threshold_pct` → Paused, with a reason naming the
//!   wave, the counts and the threshold ("wave 1 (canary): 4 of 30 devices
//!   failed (13.3%), above the 2% threshold"). Edge-triggered: `Resume`
//!   records no failure so it does not pause again; the next failure does.
//! - A wave is done when succeeded over its non-skipped members, in
//!   percent, is AT OR ABOVE `success_threshold_pct`, or when it has no
//!   non-skipped member. Checked after every input while Running and not
//!   inside a freeze window (held): the next wave starts and is released
//!   at once; after the last, Completed (pending members left are
//!   stragglers, released when they come online).
//!
//! # Persisting and restoring
//! The I/O loop persists [`Status`] and every [`Member`] named by a
//! [`Decision::Member`]; [`Engine::restore`] takes them back (in any
//! order) with the same [`WavesSpec`] and [`Policy`], and decides as the
//! original would from then on (unit- and property-tested). The one thing
//! not persisted: a device that left its own freeze restarts its timeout
//! then; a restored engine counts it from `released_ms`.
//!
//! # Cost (100,000 members, a tick a second)
//! Counts are kept per (wave, province) and the download slots per
//! province, moved by one on every member change; pending members sit in
//! a per-province ordered queue, in-flight members in one index ordered by
//! the start of their timeout. So:
//! - a member change: O(log n);
//! - a tick: timeouts O(t log n) for the t that time out; a wave check
//!   O(31) counters; releases O(31 + r log n + s) for r released and the
//!   s pending members read past in provinces with a free slot (offline
//!   devices of the released waves are asked again every tick; a province
//!   with no free slot costs nothing);
//! - `counters()` O(waves × 31), `RetryFailed` O(n), restore O(n log n).
//!
//! `cargo run -p fleet-controller --example rollout_engine_bench` times
//! it at 100,000 devices.

mod counters;
mod engine;
mod error;
mod plan;
mod policy;
#[cfg(test)]
mod tests;

pub use counters::{Counters, DevState};
pub use engine::{Decision, Engine, Input, Member, Phase, RolloutId, Status, World};
pub use error::{EngineError, HoursError, PlanError};
pub use plan::{canary_size, wave_names, Canary, Candidate, WavesSpec};
pub use policy::{AllowedHours, Policy};
