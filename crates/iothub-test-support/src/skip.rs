//! Tests that need something a fresh clone does not have (the upstream spec beside the
//! checkout, an official SDK, a privileged port) skip with a reason, and fail under `CI=true`.
//!
//! libtest hides the output of passing tests, so a skip also appends its line to
//! `target/tmp/skipped.txt`, which `.ci/run` rejects and a developer can read after a run.

use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Whether this is a CI run (`CI=true`), where nothing may skip.
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Where skips are recorded: `$CARGO_TARGET_DIR/tmp/skipped.txt`, else the workspace's
/// `target/tmp/skipped.txt`.
pub fn skipped_file() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("tmp").join("skipped.txt")
}

/// Skips the calling test: prints `skipped <test>: <why>` and records it in
/// [`skipped_file`]. Under `CI=true` it panics instead, so the test fails.
///
/// The caller returns right after: `if missing { return skip("x", "no spec"); }`.
pub fn skip(test: &str, why: &str) {
    assert!(
        !is_ci(),
        "{test}: {why} (CI=true: a test may not skip in CI)"
    );
    let line = format!("skipped {test}: {why}");
    eprintln!("{line}");
    let file = skipped_file();
    let recorded = file
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
        })
        .and_then(|mut f| writeln!(f, "{line}"));
    if let Err(error) = recorded {
        eprintln!("(could not record the skip in {}: {error})", file.display());
    }
}
