//! `iothub-emulator`: a local Azure IoT Hub on the command line.

use std::process::ExitCode;

use clap::Parser;
use iothub_emulator::Emulator;
use iothub_emulator::serve::{ServeArgs, raise_open_file_limit, wait_for_signal};

/// A local Azure IoT Hub (service REST API, api-version 2021-04-12, and cloud-to-device
/// messaging over AMQP) for development and tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
}

/// Prints a line on standard output; nobody reading it (a closed pipe) is no reason to stop
/// serving, so a failed write is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, $($arg)*);
        let _ = out.flush();
    }};
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "iothub_emulator=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Args::parse().serve.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iothub-emulator: {e}");
            return ExitCode::from(2);
        }
    };
    raise_open_file_limit(&config);
    let durable = config.data_dir.clone();
    let entra_clients = config.entra.clients.len();
    let hub = match Emulator::builder().config(config).start().await {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("iothub-emulator: {e}");
            return ExitCode::FAILURE;
        }
    };
    say!("IoT Hub emulator listening on {}", hub.base_url());
    if let Some(addr) = hub.amqp_addr() {
        let (amqp, ws) = if hub.base_url().starts_with("https") {
            ("amqps", "wss")
        } else {
            ("amqp", "ws")
        };
        say!(
            "AMQP endpoint: {amqp}://{addr} (WebSockets: {ws}://{}/$iothub/websocket)",
            hub.host()
        );
    }
    {
        let (mqtt, ws) = if hub.base_url().starts_with("https") {
            ("mqtts", "wss")
        } else {
            ("mqtt", "ws")
        };
        say!(
            "Device MQTT endpoint: {mqtt}://{} (WebSockets: {ws}://{}/$iothub/websocket)",
            hub.mqtt_addr(),
            hub.host()
        );
    }
    say!("IOTHUB_CONNECTION_STRING={}", hub.connection_string());
    match hub.ca_certificate_path() {
        Some(path) => say!("CA certificate: {}", path.display()),
        None if hub.ca_certificate_pem().is_some() => {
            say!(
                "CA certificate (not written to disk):\n{}",
                hub.ca_certificate_pem().unwrap_or_default()
            );
        }
        None => say!("Serving plain HTTP"),
    }
    match durable {
        Some(dir) => say!("Registry stored durably in {}", dir.display()),
        None => say!("Registry kept in memory (use --data-dir to keep it)"),
    }
    if entra_clients > 0 {
        say!(
            "Entra ID: authority host {}, tenant {}, {entra_clients} app registration(s) \
             (token endpoint {}/{}/oauth2/v2.0/token)",
            hub.entra_authority_host(),
            hub.entra_tenant_id(),
            hub.entra_authority_host(),
            hub.entra_tenant_id()
        );
    }
    say!("Control API: {}/_emulator/health", hub.base_url());
    if let Some(token) = hub.control_token() {
        say!("Control API token (header x-emulator-control-token): {token}");
    }
    wait_for_signal().await;
    hub.shutdown().await;
    ExitCode::SUCCESS
}
