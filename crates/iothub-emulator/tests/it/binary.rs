//! The `iothub-emulator` binary as a child process: what it prints, the open-file limit it
//! runs with, and (for the soak) its resident memory.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running emulator binary; killed when dropped.
pub(crate) struct Binary {
    child: Child,
    /// `https://localhost:port` (or `http://`).
    pub(crate) base_url: String,
    pub(crate) amqp_addr: SocketAddr,
    pub(crate) connection_string: String,
    /// The CA certificate, when serving HTTPS.
    pub(crate) ca_pem: Option<String>,
}

impl Binary {
    /// Starts the binary with `config` (TOML) written into `dir`, its open-file soft limit
    /// first lowered to `soft_nofile` when given, and waits until it serves.
    pub(crate) fn start(dir: &Path, config: &str, soft_nofile: Option<u64>) -> Self {
        let config_path = dir.join("emulator.toml");
        std::fs::write(&config_path, config).unwrap();
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_iothub-emulator"));
        let mut command = match soft_nofile {
            Some(limit) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
                    .arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        command
            .arg("--config")
            .arg(&config_path)
            .arg("--cert-dir")
            .arg(dir.join("certs"))
            .env("RUST_LOG", "iothub_emulator=error")
            .env_remove("IOTHUB_EMULATOR_CONTROL_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("the emulator binary starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once nobody listens, keep draining so that the child never blocks.
                let _ = tx.send(line);
            }
        });
        let (mut base_url, mut amqp_addr, mut connection_string, mut ca_path) =
            (None, None, None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        // "Control API: …" comes after everything else it prints at start.
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the emulator prints where it listens");
            if let Some(url) = line.strip_prefix("IoT Hub emulator listening on ") {
                base_url = Some(url.trim().to_owned());
            } else if let Some(rest) = line.strip_prefix("AMQP endpoint: ") {
                let address = rest.split_whitespace().next().unwrap();
                let address = address.split("://").nth(1).unwrap();
                amqp_addr = Some(address.parse().unwrap());
            } else if let Some(cs) = line.strip_prefix("IOTHUB_CONNECTION_STRING=") {
                connection_string = Some(cs.trim().to_owned());
            } else if let Some(path) = line.strip_prefix("CA certificate: ") {
                ca_path = Some(PathBuf::from(path.trim()));
            } else if line.starts_with("Control API: ") {
                break;
            }
        }
        let ca_pem = ca_path.map(|p| std::fs::read_to_string(p).unwrap());
        Self {
            child,
            base_url: base_url.unwrap(),
            amqp_addr: amqp_addr.unwrap(),
            connection_string: connection_string.unwrap(),
            ca_pem,
        }
    }

    /// A line of `/proc/{pid}/status` (`VmRSS`, `VmHWM`) in KiB.
    pub(crate) fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the status of the emulator process"))
    }

    /// The open-file limits (soft, hard) the process runs with.
    pub(crate) fn open_file_limits(&self) -> (String, String) {
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", self.child.id())).unwrap();
        let line = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let mut fields = line["Max open files".len()..].split_whitespace();
        (
            fields.next().unwrap().to_owned(),
            fields.next().unwrap().to_owned(),
        )
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal configuration for the binary on free loopback ports, plain HTTP.
pub(crate) const PLAIN_ON_FREE_PORTS: &str = r#"
bind = "127.0.0.1:0"
amqp_bind = "127.0.0.1:0"
mqtt_bind = "127.0.0.1:0"
[tls]
enabled = false
"#;

#[cfg(target_os = "linux")]
#[test]
fn the_binary_raises_its_open_file_limit_to_the_hard_limit() {
    let dir = tempfile::tempdir().unwrap();
    let probe = Binary::start(dir.path(), PLAIN_ON_FREE_PORTS, None);
    let (_, hard) = probe.open_file_limits();
    drop(probe);
    let lowered: u64 = match hard.parse::<u64>() {
        Ok(hard) if hard <= 64 => {
            // Nothing to raise to: the hard limit is already tiny.
            return;
        }
        Ok(hard) => (hard / 2).min(256),
        Err(_) => 256, // "unlimited"
    };
    let binary = Binary::start(dir.path(), PLAIN_ON_FREE_PORTS, Some(lowered));
    let (soft, hard) = binary.open_file_limits();
    assert_eq!(soft, hard, "started with a soft limit of {lowered}");
}
