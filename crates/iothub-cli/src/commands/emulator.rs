//! `iothub emulator`: the local IoT Hub in the foreground. The `iothub-emulator` binary's
//! flag struct is private to it, so its flags are mirrored here onto the library's public
//! [`Config`], with the same defaults (127.0.0.1:8443, AMQP on 5671 of the same address).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use iothub_emulator::{Config, Emulator};

use crate::error::{CliError, Result};

/// The flags of `iothub-emulator`.
#[derive(Debug, Args)]
pub(crate) struct EmulatorArgs {
    /// A TOML configuration file (the emulator's); flags override it.
    #[arg(long)]
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
    /// Close an HTTP connection whose request head takes longer than this, in seconds.
    #[arg(long)]
    http_header_read_timeout_secs: Option<u64>,
    /// Answer 408 when a request body takes longer than this, in seconds.
    #[arg(long)]
    http_body_read_timeout_secs: Option<u64>,
    /// Close an idle HTTP connection after this many seconds.
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

/// Where the control-API token may be given, as for the emulator binary (not as a flag: a
/// command line is visible to every user of the machine).
const CONTROL_TOKEN_VAR: &str = "IOTHUB_EMULATOR_CONTROL_TOKEN";

/// The port AMQP clients dial.
const AMQPS_PORT: u16 = 5671;
/// The port device SDKs dial for MQTT.
const MQTTS_PORT: u16 = 8883;

fn default_cert_dir() -> Option<PathBuf> {
    dirs::cache_dir().map(|d| d.join("iothub-emulator"))
}

fn config(args: EmulatorArgs) -> Result<Config> {
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::File {
                path: path.display().to_string(),
                source,
            })?;
            toml::from_str(&text)
                .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
        }
        None => Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 8443)),
            ..Config::default()
        },
    };
    macro_rules! set {
        ($($flag:ident => $($field:ident).+),* $(,)?) => {
            $(if let Some(v) = args.$flag { config.$($field).+ = v; })*
        };
    }
    set!(
        hub_name => hub_name,
        bind => bind,
        amqp_idle_timeout_secs => amqp_idle_timeout_secs,
        throttle_rate => faults.throttle_rate,
        server_error_rate => faults.server_error_rate,
        latency_ms => faults.latency_ms,
        http_header_read_timeout_secs => http_header_read_timeout_secs,
        http_body_read_timeout_secs => http_body_read_timeout_secs,
        http_idle_timeout_secs => http_idle_timeout_secs,
        http_max_connections => http_max_connections,
        amqp_max_connections => amqp_max_connections,
        mqtt_max_connections => mqtt_max_connections,
        request_log_capacity => request_log_capacity,
        request_log_max_entry_bytes => request_log_max_entry_bytes,
        request_log_max_bytes => request_log_max_bytes,
    );
    if let Some(token) = std::env::var(CONTROL_TOKEN_VAR)
        .ok()
        .filter(|t| !t.is_empty())
    {
        config.control_token = Some(token.into());
    }
    // The SDKs always dial 5671, so it listens there unless told otherwise (as the binary).
    config.amqp_bind = args
        .amqp_bind
        .or(config.amqp_bind)
        .or_else(|| Some(SocketAddr::new(config.bind.ip(), AMQPS_PORT)));
    // The device SDKs always dial 8883, so it listens there unless told otherwise.
    config.mqtt_bind = args
        .mqtt_bind
        .or(config.mqtt_bind)
        .or_else(|| Some(SocketAddr::new(config.bind.ip(), MQTTS_PORT)));
    if args.host_name.is_some() {
        config.host_name = args.host_name;
    }
    if args.data_dir.is_some() {
        config.data_dir = args.data_dir;
    }
    config.cert_dir = args.cert_dir.or(config.cert_dir).or_else(default_cert_dir);
    if args.plain_http {
        config.tls.enabled = false;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls.cert = Some(cert);
        config.tls.key = Some(key);
    }
    Ok(config)
}

/// Runs the emulator until Ctrl-C or SIGTERM, after printing how to connect.
pub(crate) async fn run(args: EmulatorArgs) -> Result<()> {
    let config = config(args)?;
    let durable = config.data_dir.clone();
    let hub = Emulator::builder()
        .config(config)
        .start()
        .await
        .map_err(|e| CliError::Other(format!("the emulator did not start: {e}")))?;
    println!("IoT Hub emulator listening on {}", hub.base_url());
    if let Some(addr) = hub.amqp_addr() {
        println!("AMQP endpoint: {addr}");
    }
    println!("Device MQTT endpoint: {}", hub.mqtt_addr());
    match durable {
        Some(dir) => println!("Registry stored durably in {}", dir.display()),
        None => println!("Registry kept in memory (use --data-dir to keep it)"),
    }
    println!("\nTo use it from another shell:\n");
    println!(
        "export IOTHUB_CONNECTION_STRING='{}'",
        hub.connection_string()
    );
    if let Some(path) = hub.ca_certificate_path() {
        println!("export IOTHUB_CA_CERT='{}'", path.display());
    }
    if let Some(addr) = hub.amqp_addr().filter(|a| a.port() != AMQPS_PORT) {
        println!("export IOTHUB_AMQP_PORT={}", addr.port());
    }
    if let Some(token) = hub.control_token() {
        println!("# control API token (header x-emulator-control-token): {token}");
    }
    println!("iothub device create thermostat-1");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    wait_for_signal().await;
    hub.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
