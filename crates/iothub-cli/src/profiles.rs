//! Named profiles: connection settings kept in `iothub/profiles.toml` under the user's
//! configuration directory (`IOTHUB_CONFIG_DIR` overrides it), readable by its owner only,
//! since a profile may hold a connection string with a key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cli::AuthMode;
use crate::error::{CliError, Result};

/// One profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    /// A service connection string (a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) connection_string: Option<String>,
    /// The hub's host name, for Azure AD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hub: Option<String>,
    /// How to authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) auth: Option<AuthMode>,
    /// Extra root certificates (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// The AMQP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) amqp_port: Option<u16>,
}

impl Profile {
    /// The profile as it may be shown: the connection string's key replaced.
    pub(crate) fn redacted(&self) -> serde_json::Value {
        let mut shown = serde_json::to_value(self).unwrap_or_default();
        if let Some(cs) = &self.connection_string {
            shown["connection_string"] = redact_connection_string(cs).into();
        }
        shown
    }
}

/// A connection string with its key or signature replaced by `***`.
pub(crate) fn redact_connection_string(cs: &str) -> String {
    cs.split(';')
        .map(|part| match part.split_once('=') {
            Some((name, _))
                if name.eq_ignore_ascii_case("SharedAccessKey")
                    || name.eq_ignore_ascii_case("SharedAccessSignature") =>
            {
                format!("{name}=***")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// The profiles file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profiles {
    /// By name.
    #[serde(default)]
    pub(crate) profiles: BTreeMap<String, Profile>,
}

/// Where the file is.
pub(crate) fn path() -> Result<PathBuf> {
    let dir = match std::env::var_os("IOTHUB_CONFIG_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => dirs::config_dir()
            .ok_or_else(|| {
                CliError::Config(
                    "no configuration directory is known for this user; set IOTHUB_CONFIG_DIR"
                        .into(),
                )
            })?
            .join("iothub"),
    };
    Ok(dir.join("profiles.toml"))
}

/// Reads the file; a missing file has no profiles.
pub(crate) fn load(path: &Path) -> Result<Profiles> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            toml::from_str(&text).map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
        Err(e) => Err(CliError::File {
            path: path.display().to_string(),
            source: e,
        }),
    }
}

/// Writes the file, owner-only (0600 in a 0700 directory on Unix), replacing it atomically.
pub(crate) fn save(path: &Path, profiles: &Profiles) -> Result<()> {
    let file_error = |source| CliError::File {
        path: path.display().to_string(),
        source,
    };
    let text = toml::to_string(profiles)
        .map_err(|e| CliError::Other(format!("cannot write the profiles: {e}")))?;
    if let Some(dir) = path.parent() {
        create_private_dir(dir).map_err(file_error)?;
    }
    let tmp = path.with_extension("toml.tmp");
    write_private(&tmp, text.as_bytes()).map_err(file_error)?;
    std::fs::rename(&tmp, path).map_err(file_error)
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // The mode applies only when the file is created; a leftover file keeps its own.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_redacted() {
        let cs = "HostName=h.azure-devices.net;SharedAccessKeyName=owner;SharedAccessKey=c2VjcmV0";
        assert_eq!(
            redact_connection_string(cs),
            "HostName=h.azure-devices.net;SharedAccessKeyName=owner;SharedAccessKey=***"
        );
    }
}
