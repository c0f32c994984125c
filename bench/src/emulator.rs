//! The emulator runs in a child process (this binary, `iothub-bench emulator`), so the driver
//! can read its CPU time and memory from `/proc/<pid>` apart from everything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use iothub_emulator::{Config, Emulator};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

/// Arguments of the hidden `emulator` subcommand.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct EmulatorArgs {
    /// Where to listen.
    #[arg(long)]
    bind: SocketAddr,
    /// The host name in the connection string and certificate.
    #[arg(long)]
    host_name: String,
    /// Where the generated CA certificate is written.
    #[arg(long)]
    cert_dir: PathBuf,
    /// Where the AMQP endpoint listens (the SDKs dial port 5671 of the host).
    #[arg(long)]
    amqp_bind: Option<SocketAddr>,
}

/// What the child prints once it is serving.
#[derive(Debug, Serialize, Deserialize)]
struct Ready {
    connection_string: String,
    ca_path: PathBuf,
    mqtt_addr: SocketAddr,
}

/// Runs the emulator until standard input closes (the driver exited or is done).
pub(crate) fn serve(args: &EmulatorArgs) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let config = Config {
            bind: args.bind,
            host_name: Some(args.host_name.clone()),
            cert_dir: Some(args.cert_dir.clone()),
            amqp_bind: args.amqp_bind,
            // The log would cost time and memory on every request; nothing reads it here.
            request_log_capacity: 0,
            // The devices scenario holds 10,000 connections, and more when asked.
            mqtt_max_connections: 100_000,
            ..Config::default()
        };
        let hub = Emulator::builder()
            .config(config)
            .start()
            .await
            .map_err(|e| e.to_string())?;
        let ready = Ready {
            connection_string: hub.connection_string(),
            mqtt_addr: hub.mqtt_addr(),
            ca_path: hub
                .ca_certificate_path()
                .ok_or("the emulator wrote no CA certificate")?
                .to_owned(),
        };
        println!(
            "{}",
            serde_json::to_string(&ready).map_err(|e| e.to_string())?
        );
        let mut sink = Vec::new();
        let _ = tokio::io::stdin().read_to_end(&mut sink).await;
        hub.shutdown().await;
        Ok(())
    })
}

/// A running emulator child; killed when dropped.
pub(crate) struct EmulatorChild {
    child: tokio::process::Child,
    /// The child's pid, as `/proc` names it.
    pub(crate) pid: String,
    /// `iothubowner`'s connection string.
    pub(crate) connection_string: String,
    /// The CA certificate clients must trust.
    pub(crate) ca_path: PathBuf,
    /// Host (and port, unless 443) as clients dial it.
    pub(crate) host: String,
    /// The device-facing MQTT endpoint (TLS).
    pub(crate) mqtt_addr: SocketAddr,
}

impl EmulatorChild {
    /// Starts `iothub-bench emulator` and waits until it serves.
    pub(crate) async fn start(
        bind: SocketAddr,
        amqp_bind: SocketAddr,
        host_name: &str,
        cert_dir: &std::path::Path,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = tokio::process::Command::new(exe)
            .arg("emulator")
            .arg("--amqp-bind")
            .arg(amqp_bind.to_string())
            .arg("--bind")
            .arg(bind.to_string())
            .arg("--host-name")
            .arg(host_name)
            .arg("--cert-dir")
            .arg(cert_dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the emulator: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        let ready: Ready = match serde_json::from_str(&line) {
            Ok(ready) => ready,
            Err(_) => {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err).await;
                }
                return Err(format!("the emulator did not start: {}", err.trim()));
            }
        };
        let host = ready
            .connection_string
            .split(';')
            .find_map(|p| p.strip_prefix("HostName="))
            .unwrap_or_default()
            .to_owned();
        let pid = child.id().ok_or("the emulator exited")?.to_string();
        Ok(Self {
            child,
            pid,
            connection_string: ready.connection_string,
            ca_path: ready.ca_path,
            host,
            mqtt_addr: ready.mqtt_addr,
        })
    }

    /// Closes its standard input and waits for it to exit.
    pub(crate) async fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}
