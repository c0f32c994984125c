//! Emulator settings, shared by the library builder and the binary's TOML file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

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
/// data_dir = "./.iothub-emulator"
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
            extra_names: Vec::new(),
            policies: Vec::new(),
            data_dir: None,
            cert_dir: None,
            tls: TlsConfig::default(),
            bearer_token: None,
            entra: EntraConfig::default(),
            faults: FaultConfig::default(),
            request_log_capacity: 1_000,
        }
    }
}

impl Config {
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
        assert_eq!(Config::default().effective_host_name(), "localhost");
    }
}
