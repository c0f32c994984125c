//! Serving from a command line: the flags of the `iothub-emulator` binary (also flattened into
//! other command lines, such as the `iothub` CLI's `emulator` command), how they combine with
//! a configuration file into a [`Config`], and what a foreground process needs (its open-file
//! limit raised, a wait for Ctrl-C or SIGTERM). One definition, so every front end accepts the
//! same flags with the same defaults.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::Config;

/// The flags of the `iothub-emulator` binary. Flatten them into a clap command
/// (`#[command(flatten)]`) and turn them into a [`Config`] with
/// [`into_config`](Self::into_config).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// A TOML configuration file; flags override it.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The hub name.
    #[arg(long)]
    pub hub_name: Option<String>,
    /// Address to listen on [default: 127.0.0.1:8443].
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Address of the AMQP endpoint [default: port 5671 on the --bind IP].
    #[arg(long)]
    pub amqp_bind: Option<SocketAddr>,
    /// Address of the device-facing MQTT endpoint (MQTT over TLS) [default: port 8883 on the
    /// --bind IP].
    #[arg(long)]
    pub mqtt_bind: Option<SocketAddr>,
    /// Most MQTT connections open at once [default: 10000].
    #[arg(long)]
    pub mqtt_max_connections: Option<usize>,
    /// Close AMQP connections silent this long, in seconds; 0 never does [default: 240].
    #[arg(long)]
    pub amqp_idle_timeout_secs: Option<u64>,
    /// Host name for the connection string and certificate [default: localhost].
    #[arg(long)]
    pub host_name: Option<String>,
    /// Keep the registry, keys and certificates here, durably [default: in memory].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Where to write the generated certificate when there is no data directory
    /// [default: $XDG_CACHE_HOME/iothub-emulator or ~/.cache/iothub-emulator].
    #[arg(long)]
    pub cert_dir: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    pub plain_http: bool,
    /// Serve this PEM certificate chain (with --tls-key) instead of a generated one.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Fraction of requests answered 429 with Retry-After.
    #[arg(long)]
    pub throttle_rate: Option<f64>,
    /// Fraction of requests answered 500 or 503.
    #[arg(long)]
    pub server_error_rate: Option<f64>,
    /// Latency added to every request, in milliseconds.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Close an HTTP connection whose request head takes longer than this, in seconds; 0
    /// never does [default: 30].
    #[arg(long)]
    pub http_header_read_timeout_secs: Option<u64>,
    /// Answer 408 when a request body takes longer than this, in seconds; 0 never does
    /// [default: 60].
    #[arg(long)]
    pub http_body_read_timeout_secs: Option<u64>,
    /// Close an HTTP connection with no request in progress this long, in seconds; 0 never
    /// does [default: 240].
    #[arg(long)]
    pub http_idle_timeout_secs: Option<u64>,
    /// Most HTTP connections open at once [default: 10000].
    #[arg(long)]
    pub http_max_connections: Option<usize>,
    /// Most AMQP connections open at once [default: 10000].
    #[arg(long)]
    pub amqp_max_connections: Option<usize>,
    /// Service requests the request log keeps [default: 1000].
    #[arg(long)]
    pub request_log_capacity: Option<usize>,
    /// Most bytes one request-log entry keeps [default: 65536].
    #[arg(long)]
    pub request_log_max_entry_bytes: Option<usize>,
    /// Most bytes the request log keeps in total [default: 33554432].
    #[arg(long)]
    pub request_log_max_bytes: Option<usize>,
}

/// Where the control-API token may be given (not as a flag: a command line is visible to
/// every user of the machine).
pub const CONTROL_TOKEN_VAR: &str = "IOTHUB_EMULATOR_CONTROL_TOKEN";

/// The port AMQP clients dial.
pub const AMQPS_PORT: u16 = 5671;
/// The port the device SDKs dial for MQTT over TLS.
pub const MQTTS_PORT: u16 = 8883;

fn default_cert_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("iothub-emulator"))
}

impl ServeArgs {
    /// The configuration these flags ask for: the `--config` file (or the binary's defaults,
    /// 127.0.0.1:8443), each flag given overriding it, AMQP on 5671 and MQTT on 8883 of the bind
    /// IP unless set, and the control-API token from [`CONTROL_TOKEN_VAR`]. An unreadable or
    /// invalid file is an error naming it.
    pub fn into_config(self) -> Result<Config, String> {
        let args = self;
        let mut config = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
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
}

/// Raises the open-file soft limit to the hard limit (shells often start processes at 1,024,
/// far below the 10,000 connections a listener may hold), and warns when even the hard limit
/// is below what the connection caps need: each HTTP connection takes two descriptors (one to
/// close it cleanly after an injected drop), each AMQP connection one.
#[cfg(unix)]
pub fn raise_open_file_limit(config: &Config) {
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

/// Does nothing off unix.
#[cfg(not(unix))]
pub fn raise_open_file_limit(_config: &Config) {}

/// Waits for Ctrl-C, or SIGTERM on unix (how orchestrators stop a process).
pub async fn wait_for_signal() {
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
