//! fleet-repo: the firmware repository, as TUF metadata (tough's schema and
//! signing). No server code: fleetctl (the release team's offline signer)
//! and the controller both link it.
//!
//! - [`keys`]: ed25519 keys in PKCS#8 PEM files (0600).
//! - [`release`]: the release team's key set, `sign` (an image into
//!   targets.json) and `rotate` (a role's key, through root N+1).
//! - [`publish`]: the controller's repository: stores images, checks and
//!   publishes what the release team signed, signs snapshot and timestamp,
//!   exports the tree for a USB update.
//! - [`delta`]: bidiff patches between images.
//! - [`metadata`]: signing and checking helpers shared by the above.
//! - [`error`]: the one error type, `RepoError`.

pub mod delta;
pub mod error;
pub mod keys;
pub mod metadata;
pub mod publish;
pub mod release;

pub use error::RepoError;
