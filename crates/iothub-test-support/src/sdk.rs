//! Where the official SDKs that the interop and parity tests drive are found. A fresh clone
//! has none of them; `.ci/run` installs them.

use std::path::{Path, PathBuf};

/// Why a test that needs [`python`] skips when it finds none.
pub const NO_PYTHON: &str =
    "no Python with azure-iot-hub at .venv or IOTHUB_INTEROP_PYTHON (bash .ci/run installs it)";

/// The Python interpreter with `azure-iot-hub` installed: `IOTHUB_INTEROP_PYTHON` if set,
/// else the workspace's `.venv/bin/python` if it exists.
pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IOTHUB_INTEROP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}
