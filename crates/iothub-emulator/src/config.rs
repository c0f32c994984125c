//! Emulator settings, shared by the library builder and the binary's TOML file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use iothub_rest_gen::SecretString;
use serde::{Deserialize, Serialize};

use crate::auth::SharedAccessPolicy;
use crate::entra::EntraConfig;
use crate::faults::FaultConfig;

/// Everything the emulator can be told. Unset fields take the defaults documented here.
///
/// As TOML (every key optional):
///
/// ```toml
/// hub_name = "emulator"
/// host_name = "localhost"
/// bind = "127.0.0.1:8443"
/// amqp_bind = "127.0.0.1:5671"
/// amqp_idle_timeout_secs = 240
/// amqp_auth_timeout_secs = 60
/// amqp_max_sessions_per_connection = 64
/// amqp_max_links_per_connection = 256
/// data_dir = "./.iothub-emulator"
/// c2d_max_total_bytes = 67108864
/// c2d_max_pending_notifications = 10000
/// feedback_ttl_secs = 3600
/// feedback_max_delivery_count = 10
/// feedback_lock_duration_secs = 60
/// max_method_handlers = 1000
/// max_method_handler_bytes = 16777216
/// http_header_read_timeout_secs = 30
/// http_body_read_timeout_secs = 60
/// http_idle_timeout_secs = 240
/// http_max_connections = 10000
/// amqp_max_connections = 10000
/// mqtt_bind = "127.0.0.1:8883"
/// mqtt_auth_timeout_secs = 30
/// mqtt_max_connections = 10000
/// mqtt_max_packets_per_second = 10000
/// telemetry_buffer_capacity = 10000
/// telemetry_buffer_max_bytes = 67108864
/// request_log_capacity = 1000
/// request_log_max_entry_bytes = 65536
/// request_log_max_bytes = 33554432
/// # control_token = "…"   # required for /_emulator/ on a bind other than loopback
///
/// [tls]
/// enabled = true
/// # cert = "server.pem"
/// # key = "server.key"
///
/// [[policies]]
/// name = "iothubowner"
/// primary_key = "…base64…"
/// secondary_key = "…base64…"
/// permissions = ["RegistryRead", "RegistryWrite", "ServiceConnect", "DeviceConnect"]
///
/// [faults]
/// throttle_rate = 0.1
/// retry_after_secs = 1
///
/// [entra]
/// tenant_id = "00000000-0000-0000-0000-000000000000"
///
/// [[entra.clients]]
/// client_id = "my-app"
/// client_secret = "…"
/// roles = ["IoT Hub Data Contributor"]
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The hub's name (default `emulator`).
    pub hub_name: String,
    /// The host name put in connection strings and certificates (default `localhost`, or
    /// the bind address when it is neither loopback 127.0.0.1 nor unspecified).
    pub host_name: Option<String>,
    /// Where to listen (default `127.0.0.1:0`, a free port; the binary uses 8443).
    pub bind: SocketAddr,
    /// Where the AMQP endpoint listens (default: a free port on `bind`'s IP; the binary
    /// uses port 5671, which the SDKs dial).
    pub amqp_bind: Option<SocketAddr>,
    /// AMQP connections silent this long are closed (default 240, as the hub); half of it is
    /// advertised as the AMQP idle timeout. 0 never closes them; at most 30 days are
    /// honoured.
    pub amqp_idle_timeout_secs: u64,
    /// AMQP connections that have no valid token this long after they opened are closed
    /// with `amqp:unauthorized-access` (default 60; 0 never closes them). The service closes
    /// connections that never authenticate; how soon is not documented, so the default is
    /// the emulator's choice.
    pub amqp_auth_timeout_secs: u64,
    /// Most sessions one AMQP connection may have open at once (default 64); one more closes
    /// the connection with `amqp:resource-limit-exceeded`.
    pub amqp_max_sessions_per_connection: usize,
    /// Most links one AMQP connection may have attached at once, over all its sessions
    /// (default 256); one more closes the connection with `amqp:resource-limit-exceeded`.
    pub amqp_max_links_per_connection: usize,
    /// Most bytes of cloud-to-device message bodies waiting in all queues together (default
    /// 64 MiB; each device's queue also holds at most 50 messages of at most 64 KB, as the
    /// service's). A send beyond it is rejected with `amqp:resource-limit-exceeded`. The
    /// record of accepted messages ([`crate::Emulator::c2d_messages`]) keeps at most this
    /// many bytes of bodies too.
    pub c2d_max_total_bytes: usize,
    /// Most feedback records, and separately most file-upload notifications, waiting for a
    /// receiver (default 10,000 each); the oldest goes when a new one would exceed it.
    pub c2d_max_pending_notifications: usize,
    /// How long a feedback record waits for a receiver before it expires (default 3,600 s;
    /// 1 s to 2 days), the hub's `cloudToDevice.feedback.ttlAsIso8601`.
    pub feedback_ttl_secs: u64,
    /// How many times a feedback record is offered before it is dropped (default 10; 1 to
    /// 100), the hub's `cloudToDevice.feedback.maxDeliveryCount`.
    pub feedback_max_delivery_count: u32,
    /// How long an offered feedback batch waits to be settled before it is offered again
    /// (default 60 s; 1 to 300), the hub's `cloudToDevice.feedback.lockDurationAsIso8601`.
    pub feedback_lock_duration_secs: u64,
    /// Most direct-method answers the control API keeps, over all devices (default 1,000).
    pub max_method_handlers: usize,
    /// Most bytes those answers' payloads take together (default 16 MiB; each at most
    /// 128 KB, the service's direct-method payload limit).
    pub max_method_handler_bytes: usize,
    /// Other names the hub answers to: certificate SANs and accepted SAS audiences.
    pub extra_names: Vec<String>,
    /// Shared access policies; empty means the service's four defaults with fresh keys.
    pub policies: Vec<SharedAccessPolicy>,
    /// With a data directory every acknowledged write is durable, and generated keys and
    /// certificates are kept there across restarts. Without one, state lives in memory.
    pub data_dir: Option<PathBuf>,
    /// Where a generated certificate is written when there is no data directory.
    pub cert_dir: Option<PathBuf>,
    /// HTTPS settings.
    pub tls: TlsConfig,
    /// A bearer token accepted with every permission, for Azure AD style clients that bring
    /// a fixed token. Tokens from the Entra ID look-alike ([`Config::entra`]) need no
    /// configuration here.
    pub bearer_token: Option<String>,
    /// The Microsoft Entra ID look-alike: tenant, app registrations and their roles.
    pub entra: EntraConfig,
    /// Fault injection at start (can be changed later through the control API).
    pub faults: FaultConfig,
    /// Service requests kept in the request log (oldest dropped first); 0 keeps none.
    pub request_log_capacity: usize,
    /// Most bytes one request-log entry keeps (default 64 KiB; at least 1,024): a longer
    /// body is cut, and marked [`truncated`](crate::RequestLogEntry::truncated). A request
    /// refused by authentication keeps a short entry without its body.
    pub request_log_max_entry_bytes: usize,
    /// Most bytes the request log keeps over all its entries (default 32 MiB); the oldest
    /// entries go first. 0 keeps none.
    pub request_log_max_bytes: usize,
    /// An HTTP(S) connection whose request head is not received in full this long after its
    /// first byte (the first request's: after the connection opened) is closed (default 30 s;
    /// 0 never).
    pub http_header_read_timeout_secs: u64,
    /// A request body not received in full this long after the request was admitted is
    /// answered 408 and its connection closed (default 60 s; 0 never).
    pub http_body_read_timeout_secs: u64,
    /// An HTTP(S) connection with no request in progress this long is closed (default
    /// 240 s, the Azure load balancer's idle timeout; 0 never).
    pub http_idle_timeout_secs: u64,
    /// Most HTTP(S) connections open at once on the HTTPS listener (default 10,000; at least
    /// 1). At the cap the connection idle the longest is closed to admit a new one; when
    /// every connection has a request in progress, new ones wait to be accepted.
    pub http_max_connections: usize,
    /// Most AMQP connections open at once on the AMQP listener, WebSocket ones included
    /// (default 10,000; at least 1). At the cap new connections wait to be accepted (a
    /// WebSocket upgrade is closed).
    pub amqp_max_connections: usize,
    /// Where the device-facing MQTT endpoint listens, over TLS (default: a free port on
    /// `bind`'s IP; the binary uses 8883, the port the device SDKs dial). Serving plain
    /// HTTP, it serves plain MQTT.
    pub mqtt_bind: Option<SocketAddr>,
    /// MQTT connections that have not sent an accepted CONNECT this long after they opened
    /// are closed (default 30; 0 never closes them).
    pub mqtt_auth_timeout_secs: u64,
    /// Most MQTT connections open at once, WebSocket ones included (default 10,000; at least
    /// 1). At the cap new connections wait to be accepted (a WebSocket upgrade is closed).
    pub mqtt_max_connections: usize,
    /// Most MQTT packets one connection may send in a second; more closes it (default
    /// 10,000; 0 for no limit).
    pub mqtt_max_packets_per_second: u32,
    /// Telemetry messages devices sent that the hub keeps for tests and the control API
    /// (default 10,000; the oldest go first; 0 keeps none).
    pub telemetry_buffer_capacity: usize,
    /// Most bytes (bodies and properties) of the telemetry kept (default 64 MiB).
    pub telemetry_buffer_max_bytes: usize,
    /// A token the control API (`/_emulator/`, the health check aside) requires in the
    /// `x-emulator-control-token` header. Without one, the control API is open on a loopback
    /// bind; on any other bind a token is generated at start
    /// ([`Emulator::control_token`](crate::Emulator::control_token)) and a warning logged.
    pub control_token: Option<SecretString>,
}

/// HTTPS: a generated certificate (default), the user's own, or plain HTTP.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// `false` serves plain HTTP.
    pub enabled: bool,
    /// A PEM certificate chain to serve instead of a generated one (with `key`).
    pub cert: Option<PathBuf>,
    /// The PEM private key for `cert`.
    pub key: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            cert: None,
            key: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hub_name: "emulator".to_owned(),
            host_name: None,
            bind: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
            amqp_bind: None,
            amqp_idle_timeout_secs: 240,
            amqp_auth_timeout_secs: 60,
            amqp_max_sessions_per_connection: 64,
            amqp_max_links_per_connection: 256,
            c2d_max_total_bytes: 64 * 1024 * 1024,
            c2d_max_pending_notifications: 10_000,
            feedback_ttl_secs: 3600,
            feedback_max_delivery_count: 10,
            feedback_lock_duration_secs: 60,
            max_method_handlers: 1_000,
            max_method_handler_bytes: 16 * 1024 * 1024,
            extra_names: Vec::new(),
            policies: Vec::new(),
            data_dir: None,
            cert_dir: None,
            tls: TlsConfig::default(),
            bearer_token: None,
            entra: EntraConfig::default(),
            faults: FaultConfig::default(),
            request_log_capacity: 1_000,
            request_log_max_entry_bytes: 64 * 1024,
            request_log_max_bytes: 32 * 1024 * 1024,
            http_header_read_timeout_secs: 30,
            http_body_read_timeout_secs: 60,
            http_idle_timeout_secs: 240,
            http_max_connections: 10_000,
            amqp_max_connections: 10_000,
            mqtt_bind: None,
            mqtt_auth_timeout_secs: 30,
            mqtt_max_connections: 10_000,
            mqtt_max_packets_per_second: 10_000,
            telemetry_buffer_capacity: 10_000,
            telemetry_buffer_max_bytes: 64 * 1024 * 1024,
            control_token: None,
        }
    }
}

/// Smallest per-entry cap of the request log: room for a request line and a few headers.
const MIN_LOG_ENTRY_BYTES: usize = 1024;
/// Longest feedback time to live the service allows (`ttlAsIso8601`, 2 days).
const MAX_FEEDBACK_TTL_SECS: u64 = 2 * 24 * 3600;
/// Longest fault-injection latency (and jitter) accepted, in milliseconds: a minute is far
/// beyond any client's patience already.
pub(crate) const MAX_LATENCY_MS: u64 = 60_000;
/// Largest `Retry-After` fault injection sends, in seconds.
pub(crate) const MAX_RETRY_AFTER_SECS: u64 = 3600;
/// Most units of a tier (the service's maximum per hub).
pub(crate) const MAX_UNITS: u32 = 200;

/// Why fault-injection settings are refused, if they are: rates are fractions (0 to 1),
/// latencies at most [`MAX_LATENCY_MS`], `Retry-After` at most [`MAX_RETRY_AFTER_SECS`],
/// units 1 to [`MAX_UNITS`].
pub(crate) fn check_faults(f: &FaultConfig) -> Result<(), String> {
    for (name, rate) in [
        ("throttle_rate", f.throttle_rate),
        ("server_error_rate", f.server_error_rate),
        ("drop_before_rate", f.drop_before_rate),
        ("drop_after_rate", f.drop_after_rate),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            return Err(format!(
                "{name} must be a fraction from 0 to 1; it was {rate}"
            ));
        }
    }
    for (name, ms) in [
        ("latency_ms", f.latency_ms),
        ("latency_jitter_ms", f.latency_jitter_ms),
    ] {
        if ms > MAX_LATENCY_MS {
            return Err(format!(
                "{name} must be at most {MAX_LATENCY_MS} (milliseconds); it was {ms}"
            ));
        }
    }
    if f.retry_after_secs > MAX_RETRY_AFTER_SECS {
        return Err(format!(
            "retry_after_secs must be at most {MAX_RETRY_AFTER_SECS}; it was {}",
            f.retry_after_secs
        ));
    }
    if let Some(units) = f.units
        && !(1..=MAX_UNITS).contains(&units)
    {
        return Err(format!("units must be 1 to {MAX_UNITS}; it was {units}"));
    }
    Ok(())
}

impl Config {
    /// Why the settings cannot be used, if they cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        check_faults(&self.faults).map_err(|e| format!("faults: {e}"))?;
        if self.amqp_max_sessions_per_connection == 0 || self.amqp_max_links_per_connection == 0 {
            return Err(
                "amqp_max_sessions_per_connection and amqp_max_links_per_connection must be \
                 at least 1"
                    .into(),
            );
        }
        if self.http_max_connections == 0
            || self.amqp_max_connections == 0
            || self.mqtt_max_connections == 0
        {
            return Err(
                "http_max_connections, amqp_max_connections and mqtt_max_connections must be \
                 at least 1"
                    .into(),
            );
        }
        if self.request_log_max_entry_bytes < MIN_LOG_ENTRY_BYTES {
            return Err(format!(
                "request_log_max_entry_bytes must be at least {MIN_LOG_ENTRY_BYTES}; it was {}",
                self.request_log_max_entry_bytes
            ));
        }
        if self
            .control_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().trim().is_empty())
        {
            return Err("control_token must not be empty".into());
        }
        if !(1..=MAX_FEEDBACK_TTL_SECS).contains(&self.feedback_ttl_secs) {
            return Err(format!(
                "feedback_ttl_secs must be 1 to {MAX_FEEDBACK_TTL_SECS}; it was {}",
                self.feedback_ttl_secs
            ));
        }
        if !(1..=100).contains(&self.feedback_max_delivery_count) {
            return Err(format!(
                "feedback_max_delivery_count must be 1 to 100; it was {}",
                self.feedback_max_delivery_count
            ));
        }
        if !(1..=300).contains(&self.feedback_lock_duration_secs) {
            return Err(format!(
                "feedback_lock_duration_secs must be 1 to 300; it was {}",
                self.feedback_lock_duration_secs
            ));
        }
        Ok(())
    }

    /// Whether the HTTPS listener is reachable from this machine only (127.0.0.0/8 or ::1).
    pub(crate) fn binds_loopback(&self) -> bool {
        self.bind.ip().is_loopback()
    }

    /// The host name clients use.
    pub fn effective_host_name(&self) -> String {
        if let Some(name) = &self.host_name {
            return name.clone();
        }
        let ip = self.bind.ip();
        if ip.is_unspecified()
            || ip == IpAddr::V4(Ipv4Addr::LOCALHOST)
            || ip.is_loopback() && ip.is_ipv6()
        {
            "localhost".to_owned()
        } else {
            ip.to_string()
        }
    }

    /// Names for certificate SANs and SAS audiences.
    pub(crate) fn names(&self) -> Vec<String> {
        let mut names = vec![self.effective_host_name()];
        let ip = self.bind.ip();
        if !ip.is_unspecified() {
            names.push(ip.to_string());
        }
        names.extend(self.extra_names.iter().cloned());
        names.push(format!("{}.azure-devices.net", self.hub_name));
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_defaults() {
        let config: Config = toml::from_str(
            r#"
            hub_name = "h"
            bind = "127.0.0.2:443"
            amqp_bind = "127.0.0.2:5671"
            [faults]
            throttle_rate = 0.5
            [entra]
            tenant_id = "contoso.onmicrosoft.com"
            [[entra.clients]]
            client_id = "app"
            client_secret = "hunter2"
            roles = ["IoT Hub Data Reader"]
            "#,
        )
        .unwrap();
        assert_eq!(config.hub_name, "h");
        assert_eq!(config.effective_host_name(), "127.0.0.2");
        assert!(config.tls.enabled);
        assert_eq!(config.faults.throttle_rate, 0.5);
        assert_eq!(config.request_log_capacity, 1_000);
        assert_eq!(config.amqp_bind, Some("127.0.0.2:5671".parse().unwrap()));
        assert_eq!(config.amqp_idle_timeout_secs, 240);
        assert_eq!(config.entra.tenant_id, "contoso.onmicrosoft.com");
        assert_eq!(
            config.entra.clients[0].roles,
            [crate::IotHubRole::DataReader]
        );
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(Config::default().entra.tenant_id, crate::DEFAULT_TENANT_ID);
        assert!(toml::from_str::<Config>("bogus = 1").is_err());
        assert_eq!(config.amqp_auth_timeout_secs, 60);
        assert_eq!(config.feedback_ttl_secs, 3600);
        assert_eq!(config.feedback_max_delivery_count, 10);
        assert_eq!(config.feedback_lock_duration_secs, 60);
        assert_eq!(config.c2d_max_total_bytes, 64 * 1024 * 1024);
        assert!(config.check().is_ok());
        assert_eq!(Config::default().effective_host_name(), "localhost");
        assert_eq!(config.http_header_read_timeout_secs, 30);
        assert_eq!(config.http_body_read_timeout_secs, 60);
        assert_eq!(config.http_idle_timeout_secs, 240);
        assert_eq!(config.http_max_connections, 10_000);
        assert_eq!(config.amqp_max_connections, 10_000);
        assert_eq!(config.request_log_max_entry_bytes, 64 * 1024);
        assert_eq!(config.request_log_max_bytes, 32 * 1024 * 1024);
        assert!(config.control_token.is_none() && config.binds_loopback());
        let exposed: Config =
            toml::from_str("bind = \"0.0.0.0:8443\"\ncontrol_token = \"t0ken\"").unwrap();
        assert!(!exposed.binds_loopback());
        assert!(!format!("{exposed:?}").contains("t0ken"));
    }

    #[test]
    fn out_of_range_numbers_are_refused() {
        let faults = |f: FaultConfig| Config {
            faults: f,
            ..Config::default()
        };
        for bad in [
            faults(FaultConfig {
                latency_ms: u64::MAX,
                ..FaultConfig::default()
            }),
            faults(FaultConfig {
                latency_jitter_ms: MAX_LATENCY_MS + 1,
                ..FaultConfig::default()
            }),
            faults(FaultConfig {
                throttle_rate: f64::NAN,
                ..FaultConfig::default()
            }),
            faults(FaultConfig {
                drop_after_rate: 1.5,
                ..FaultConfig::default()
            }),
            faults(FaultConfig {
                units: Some(0),
                ..FaultConfig::default()
            }),
            Config {
                feedback_ttl_secs: 0,
                ..Config::default()
            },
            Config {
                feedback_max_delivery_count: 101,
                ..Config::default()
            },
            Config {
                amqp_max_links_per_connection: 0,
                ..Config::default()
            },
            Config {
                http_max_connections: 0,
                ..Config::default()
            },
            Config {
                amqp_max_connections: 0,
                ..Config::default()
            },
            Config {
                request_log_max_entry_bytes: 100,
                ..Config::default()
            },
            Config {
                control_token: Some(" ".into()),
                ..Config::default()
            },
        ] {
            assert!(bad.check().is_err(), "{bad:?}");
        }
    }
}
