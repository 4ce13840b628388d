//! fleet-repo: the firmware repository's signing side (skeleton; the
//! signed-updates issue fills it).
