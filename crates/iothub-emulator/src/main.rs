//! `iothub-emulator`: a local Azure IoT Hub on the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use iothub_emulator::{Config, Emulator};

/// A local Azure IoT Hub (service REST API, api-version 2021-04-12, and cloud-to-device
/// messaging over AMQP) for development and tests.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// A TOML configuration file; flags override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The hub name.
    #[arg(long)]
    hub_name: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Address of the AMQP endpoint [default: port 5671 on the --bind IP].
    #[arg(long)]
    amqp_bind: Option<SocketAddr>,
    /// Address of the device-facing MQTT endpoint (MQTT over TLS) [default: port 8883 on the
    /// --bind IP].
    #[arg(long)]
    mqtt_bind: Option<SocketAddr>,
    /// Most MQTT connections open at once [default: 10000].
    #[arg(long)]
    mqtt_max_connections: Option<usize>,
    /// Close AMQP connections silent this long, in seconds; 0 never does [default: 240].
    #[arg(long)]
    amqp_idle_timeout_secs: Option<u64>,
    /// Host name for the connection string and certificate [default: localhost].
    #[arg(long)]
    host_name: Option<String>,
    /// Keep the registry, keys and certificates here, durably [default: in memory].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where to write the generated certificate when there is no data directory
    /// [default: $XDG_CACHE_HOME/iothub-emulator or ~/.cache/iothub-emulator].
    #[arg(long)]
    cert_dir: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Serve this PEM certificate chain (with --tls-key) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Fraction of requests answered 429 with Retry-After.
    #[arg(long)]
    throttle_rate: Option<f64>,
    /// Fraction of requests answered 500 or 503.
    #[arg(long)]
    server_error_rate: Option<f64>,
    /// Latency added to every request, in milliseconds.
    #[arg(long)]
    latency_ms: Option<u64>,
    /// Close an HTTP connection whose request head takes longer than this, in seconds; 0
    /// never does [default: 30].
    #[arg(long)]
    http_header_read_timeout_secs: Option<u64>,
    /// Answer 408 when a request body takes longer than this, in seconds; 0 never does
    /// [default: 60].
    #[arg(long)]
    http_body_read_timeout_secs: Option<u64>,
    /// Close an HTTP connection with no request in progress this long, in seconds; 0 never
    /// does [default: 240].
    #[arg(long)]
    http_idle_timeout_secs: Option<u64>,
    /// Most HTTP connections open at once [default: 10000].
    #[arg(long)]
    http_max_connections: Option<usize>,
    /// Most AMQP connections open at once [default: 10000].
    #[arg(long)]
    amqp_max_connections: Option<usize>,
    /// Service requests the request log keeps [default: 1000].
    #[arg(long)]
    request_log_capacity: Option<usize>,
    /// Most bytes one request-log entry keeps [default: 65536].
    #[arg(long)]
    request_log_max_entry_bytes: Option<usize>,
    /// Most bytes the request log keeps in total [default: 33554432].
    #[arg(long)]
    request_log_max_bytes: Option<usize>,
}

/// Where the control-API token may be given (not as a flag: a command line is visible to
/// every user of the machine).
const CONTROL_TOKEN_VAR: &str = "IOTHUB_EMULATOR_CONTROL_TOKEN";

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

/// The port AMQP clients dial.
const AMQPS_PORT: u16 = 5671;
/// The port the device SDKs dial for MQTT over TLS.
const MQTTS_PORT: u16 = 8883;

fn default_cert_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("iothub-emulator"))
}

fn config(args: Args) -> Result<Config, String> {
    let mut config = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => Config {
            bind: "127.0.0.1:8443".parse().map_err(|e| format!("{e}"))?,
            ..Config::default()
        },
    };
    if let Some(v) = args.hub_name {
        config.hub_name = v;
    }
    if let Some(v) = args.bind {
        config.bind = v;
    }
    if let Some(v) = args.amqp_bind {
        config.amqp_bind = Some(v);
    }
    // The SDKs always dial 5671, so the binary listens there unless told otherwise.
    config.amqp_bind = config
        .amqp_bind
        .or_else(|| Some(SocketAddr::new(config.bind.ip(), AMQPS_PORT)));
    if let Some(v) = args.mqtt_bind {
        config.mqtt_bind = Some(v);
    }
    // The device SDKs always dial 8883, so the binary listens there unless told otherwise.
    config.mqtt_bind = config
        .mqtt_bind
        .or_else(|| Some(SocketAddr::new(config.bind.ip(), MQTTS_PORT)));
    if let Some(v) = args.mqtt_max_connections {
        config.mqtt_max_connections = v;
    }
    if let Some(v) = args.amqp_idle_timeout_secs {
        config.amqp_idle_timeout_secs = v;
    }
    if let Some(v) = args.host_name {
        config.host_name = Some(v);
    }
    if let Some(v) = args.data_dir {
        config.data_dir = Some(v);
    }
    config.cert_dir = args.cert_dir.or(config.cert_dir).or_else(default_cert_dir);
    if args.plain_http {
        config.tls.enabled = false;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    if let Some(v) = args.throttle_rate {
        config.faults.throttle_rate = v;
    }
    if let Some(v) = args.server_error_rate {
        config.faults.server_error_rate = v;
    }
    if let Some(v) = args.latency_ms {
        config.faults.latency_ms = v;
    }
    if let Some(v) = args.http_header_read_timeout_secs {
        config.http_header_read_timeout_secs = v;
    }
    if let Some(v) = args.http_body_read_timeout_secs {
        config.http_body_read_timeout_secs = v;
    }
    if let Some(v) = args.http_idle_timeout_secs {
        config.http_idle_timeout_secs = v;
    }
    if let Some(v) = args.http_max_connections {
        config.http_max_connections = v;
    }
    if let Some(v) = args.amqp_max_connections {
        config.amqp_max_connections = v;
    }
    if let Some(v) = args.request_log_capacity {
        config.request_log_capacity = v;
    }
    if let Some(v) = args.request_log_max_entry_bytes {
        config.request_log_max_entry_bytes = v;
    }
    if let Some(v) = args.request_log_max_bytes {
        config.request_log_max_bytes = v;
    }
    if let Some(token) = std::env::var(CONTROL_TOKEN_VAR)
        .ok()
        .filter(|t| !t.is_empty())
    {
        config.control_token = Some(token.into());
    }
    Ok(config)
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
    let config = match config(Args::parse()) {
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

/// Raises the open-file soft limit to the hard limit (shells often start processes at 1,024,
/// far below the 10,000 connections a listener may hold), and warns when even the hard limit
/// is below what the connection caps need: each HTTP connection takes two descriptors (one to
/// close it cleanly after an injected drop), each AMQP connection one.
#[cfg(unix)]
fn raise_open_file_limit(config: &Config) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let soft = match (limit.current, limit.maximum) {
        (Some(current), Some(maximum)) if current < maximum => {
            match setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(maximum),
                    maximum: Some(maximum),
                },
            ) {
                Ok(()) => Some(maximum),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot raise the open-file limit to its hard limit");
                    Some(current)
                }
            }
        }
        (current, _) => current,
    };
    let needed = config
        .http_max_connections
        .saturating_mul(2)
        .saturating_add(config.amqp_max_connections)
        .saturating_add(config.mqtt_max_connections)
        .saturating_add(64);
    if let Some(soft) = soft
        && soft < u64::try_from(needed).unwrap_or(u64::MAX)
    {
        tracing::warn!(
            open_file_limit = soft,
            needed,
            "the open-file limit is below what the connection caps may need; lower \
             http_max_connections, amqp_max_connections and mqtt_max_connections, or raise the hard limit (ulimit -Hn)"
        );
    }
}

#[cfg(not(unix))]
fn raise_open_file_limit(_config: &Config) {}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
