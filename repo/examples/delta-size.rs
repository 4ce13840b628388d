//! Full and delta bytes between two images:
//! `cargo run -p fleet-repo --example delta-size -- OLD NEW`.
//! Makes the patch the controller serves (bidiff in an LZ4 frame), applies
//! it back, checks the result is NEW, and prints both sizes.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [old, new] = args.as_slice() else {
        return Err("usage: delta-size OLD NEW".into());
    };
    let dir = tempfile::tempdir()?;
    let patch = dir.path().join("patch");
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let patch_len = fleet_repo::delta::make(old, new, &patch)?;
    let made = started.elapsed();
    let started = std::time::Instant::now();
    fleet_repo::delta::apply(old, &patch, &out)?;
    let applied = started.elapsed();
    if std::fs::read(&out)? != std::fs::read(new)? {
        return Err("the patch did not rebuild NEW".into());
    }
    let full = std::fs::metadata(new)?.len();
    println!(
        "full {full} bytes, delta {patch_len} bytes ({:.2} % of full); made in {} ms, applied in {} ms",
        patch_len as f64 * 100.0 / full as f64,
        made.as_millis(),
        applied.as_millis()
    );
    Ok(())
}
