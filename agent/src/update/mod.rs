//! Signed updates (issue 9).
//!
//! - [`tuf`]: the TUF client: fetch and verify the repository's metadata
//!   (tough), check a target's model, artifact and version.
//! - [`clock`]: the trusted time expiry is checked against (pure).
//! - [`delta`]: rebuild an image from the installed one and a bidiff patch,
//!   bounded by and checked against the signed length and hash.

pub mod clock;
pub mod delta;
pub mod tuf;
