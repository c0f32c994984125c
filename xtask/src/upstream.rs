//! `openapi/upstream.toml`: where the upstream spec comes from and which bytes we accept.

use std::fs;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::Result;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    upstream: Upstream,
}

/// The pinned upstream spec.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Upstream {
    pub(crate) repository: String,
    pub(crate) path: String,
    pub(crate) commit: String,
    #[allow(dead_code, reason = "recorded for people; nothing computes with it")]
    pub(crate) license: String,
    pub(crate) api_version: String,
    pub(crate) sha256: String,
}

impl Upstream {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: File =
            toml::from_str(&text).map_err(|e| format!("invalid {}: {e}", path.display()))?;
        Ok(file.upstream)
    }

    fn origin(&self) -> String {
        format!(
            "{} at commit {}, file `{}`",
            self.repository, self.commit, self.path
        )
    }

    /// Reads the spec at `spec` and checks its sha256 against the pin.
    pub(crate) fn read_verified(&self, spec: &Path) -> Result<Vec<u8>> {
        let bytes = fs::read(spec).map_err(|e| {
            format!(
                "cannot read the upstream spec at {}: {e}\nGet it from {} (sha256 {}).",
                spec.display(),
                self.origin(),
                self.sha256
            )
        })?;
        let actual = sha256_hex(&bytes);
        if actual != self.sha256 {
            return Err(format!(
                "{} has sha256 {actual}, but openapi/upstream.toml pins {}.\n\
                 Use the file from {}, or, when adopting a new upstream spec, update \
                 openapi/upstream.toml (commit, api-version, sha256) in the same change.",
                spec.display(),
                self.sha256,
                self.origin()
            ));
        }
        Ok(bytes)
    }
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pin(sha256: &str) -> Upstream {
        Upstream {
            repository: "https://example.invalid/repo".into(),
            path: "service.json".into(),
            commit: "abc".into(),
            license: "MIT".into(),
            api_version: "2021-04-12".into(),
            sha256: sha256.into(),
        }
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn accepts_matching_bytes_and_rejects_others() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.json");
        fs::write(&spec, b"abc").unwrap();
        let good = pin("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(good.read_verified(&spec).unwrap(), b"abc");

        fs::write(&spec, b"abd").unwrap();
        let err = good.read_verified(&spec).unwrap_err();
        assert!(err.contains("pins ba7816bf"), "{err}");
        assert!(err.contains("example.invalid/repo at commit abc"), "{err}");
    }

    #[test]
    fn missing_file_says_where_to_get_it() {
        let err = pin("00")
            .read_verified(Path::new("/nonexistent/spec.json"))
            .unwrap_err();
        assert!(
            err.contains("Get it from https://example.invalid/repo"),
            "{err}"
        );
    }

    #[test]
    fn committed_pin_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/upstream.toml");
        let up = Upstream::load(&path).unwrap();
        assert_eq!(up.api_version, "2021-04-12");
        assert_eq!(up.sha256.len(), 64);
    }
}
