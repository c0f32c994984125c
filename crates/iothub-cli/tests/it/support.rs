//! A running emulator, and `iothub` commands pointed at it.

use std::path::PathBuf;

use assert_cmd::Command;
use iothub_emulator::{Emulator, EmulatorBuilder};
use serde_json::Value;
use tempfile::TempDir;

/// The variables a developer's shell may hold that would change what a test sees.
pub(crate) const CLEARED: &[&str] = &[
    "IOTHUB_CONNECTION_STRING",
    "IOTHUB_HOST",
    "IOTHUB_PROFILE",
    "IOTHUB_CA_CERT",
    "IOTHUB_AMQP_PORT",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_AUTHORITY_HOST",
    "RUST_LOG",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// An emulator, and a directory for its CA file and the CLI's configuration.
pub(crate) struct Hub {
    pub(crate) emu: Emulator,
    pub(crate) dir: TempDir,
}

impl Hub {
    pub(crate) async fn start() -> Self {
        Self::start_with(Emulator::builder()).await
    }

    pub(crate) async fn start_with(builder: EmulatorBuilder) -> Self {
        let emu = builder.start().await.expect("the emulator starts");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let pem = emu.ca_certificate_pem().expect("the emulator serves HTTPS");
        std::fs::write(dir.path().join("ca.pem"), pem).expect("the CA file");
        Self { emu, dir }
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub(crate) fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// `iothub` with nothing from the environment but the emulator's connection settings.
    pub(crate) fn bare(&self) -> Command {
        let mut cmd = Command::cargo_bin("iothub").expect("the iothub binary");
        for var in CLEARED {
            cmd.env_remove(var);
        }
        cmd.env("IOTHUB_CONFIG_DIR", self.config_dir())
            .env("IOTHUB_CA_CERT", self.ca_path())
            .env(
                "IOTHUB_AMQP_PORT",
                self.emu.amqp_addr().expect("AMQP").port().to_string(),
            )
            .env("NO_PROXY", "*");
        cmd
    }

    /// `iothub` as the hub's owner.
    pub(crate) fn cmd(&self) -> Command {
        let mut cmd = self.bare();
        cmd.env("IOTHUB_CONNECTION_STRING", self.emu.connection_string());
        cmd
    }

    /// Runs `args`, expects exit code 0 and returns standard output as JSON.
    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let out = self.cmd().args(args).output().expect("iothub runs");
        assert!(
            out.status.success(),
            "iothub {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iothub {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs `args` and returns (exit code, stdout, stderr).
    pub(crate) fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd().args(args).output().expect("iothub runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Fields whose values change from run to run, by name.
const VOLATILE: &[&str] = &[
    "etag",
    "deviceEtag",
    "generationId",
    "deviceGenerationId",
    "primaryKey",
    "secondaryKey",
    "$lastUpdated",
    "statusUpdatedTime",
    "connectionStateUpdatedTime",
    "lastActivityTime",
    "enqueuedTimeUtc",
    "lastUpdatedTime",
    "messageId",
    "originalMessageId",
    "sas",
    "connectionString",
    "blobUri",
    // an edge device's scope carries its generation id
    "deviceScope",
];

/// `value` with every volatile field replaced by `[name]`, for snapshots.
pub(crate) fn redact(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if VOLATILE.contains(&k.as_str()) && !v.is_null() && !v.is_object() {
                        *v = Value::String(format!("[{k}]"));
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

/// Filters for text output: tracking ids, times, etags, ports and keys.
pub(crate) fn text_filters() -> Vec<(&'static str, &'static str)> {
    vec![
        (r"tracking (ID|id):? [^)\n]+", "tracking id: [tracking id]"),
        (r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z", "[time]"),
        (r"localhost:\d+", "localhost:[port]"),
        (r"[A-Za-z0-9+/]{42,43}=", "[key]"),
        (r"\b\d{15,20}\b", "[generation]"),
    ]
}

/// Asserts a text snapshot with [`text_filters`].
#[macro_export]
macro_rules! assert_text {
    ($name:expr, $text:expr) => {
        insta::with_settings!({ filters => $crate::support::text_filters() }, {
            insta::assert_snapshot!($name, $text);
        })
    };
}
