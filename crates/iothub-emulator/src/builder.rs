//! [`EmulatorBuilder`]: the settings of an [`Emulator`] before it starts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Config, Emulator, EntraClient, Error, FaultConfig, SharedAccessPolicy, TlsConfig};

/// Builds an [`Emulator`]; every setting has a default that suits tests.
#[derive(Debug, Clone, Default)]
pub struct EmulatorBuilder {
    config: Config,
}

impl EmulatorBuilder {
    /// Starts from a whole configuration (as read from TOML).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The hub name (default `emulator`).
    pub fn hub_name(mut self, name: impl Into<String>) -> Self {
        self.config.hub_name = name.into();
        self
    }

    /// The host name for connection strings and the certificate.
    pub fn host_name(mut self, name: impl Into<String>) -> Self {
        self.config.host_name = Some(name.into());
        self
    }

    /// Where to listen (default `127.0.0.1:0`: a free loopback port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.config.bind = addr;
        self
    }

    /// Where the AMQP endpoint listens (default: a free port on the IP of
    /// [`EmulatorBuilder::bind`]; the binary uses 5671, the port the SDKs dial).
    pub fn amqp_bind(mut self, addr: SocketAddr) -> Self {
        self.config.amqp_bind = Some(addr);
        self
    }

    /// Closes AMQP connections silent this long (default 240 s, as the hub); half of it is
    /// advertised to clients as the AMQP idle timeout, so their heartbeats keep them open.
    /// Rounded up to whole seconds; zero never closes idle connections.
    pub fn amqp_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.amqp_idle_timeout_secs = whole_secs(timeout);
        self
    }

    /// Closes AMQP connections that still have no valid token this long after opening
    /// (default 60 s; rounded up to whole seconds; zero never does).
    pub fn amqp_auth_timeout(mut self, timeout: Duration) -> Self {
        self.config.amqp_auth_timeout_secs = whole_secs(timeout);
        self
    }

    /// Most sessions one AMQP connection may open at once (default 64).
    pub fn amqp_max_sessions_per_connection(mut self, max: usize) -> Self {
        self.config.amqp_max_sessions_per_connection = max;
        self
    }

    /// Most links one AMQP connection may attach at once (default 256).
    pub fn amqp_max_links_per_connection(mut self, max: usize) -> Self {
        self.config.amqp_max_links_per_connection = max;
        self
    }

    /// Most bytes of cloud-to-device message bodies queued over all devices (default
    /// 64 MiB).
    pub fn c2d_max_total_bytes(mut self, max: usize) -> Self {
        self.config.c2d_max_total_bytes = max;
        self
    }

    /// Most feedback records (and, separately, file-upload notifications) waiting for a
    /// receiver (default 10,000; the oldest goes first).
    pub fn c2d_max_pending_notifications(mut self, max: usize) -> Self {
        self.config.c2d_max_pending_notifications = max;
        self
    }

    /// How long feedback records wait for a receiver before they expire (default one hour,
    /// the hub's `cloudToDevice.feedback.ttlAsIso8601`; rounded up to whole seconds).
    pub fn feedback_ttl(mut self, ttl: Duration) -> Self {
        self.config.feedback_ttl_secs = whole_secs(ttl);
        self
    }

    /// How many times a feedback record is offered before it is dropped (default 10, the
    /// hub's `cloudToDevice.feedback.maxDeliveryCount`).
    pub fn feedback_max_delivery_count(mut self, count: u32) -> Self {
        self.config.feedback_max_delivery_count = count;
        self
    }

    /// How long an offered feedback batch waits to be settled before it is offered again
    /// (default 60 s, the hub's `cloudToDevice.feedback.lockDurationAsIso8601`; rounded up
    /// to whole seconds).
    pub fn feedback_lock_duration(mut self, lock: Duration) -> Self {
        self.config.feedback_lock_duration_secs = whole_secs(lock);
        self
    }

    /// Most direct-method answers the control API keeps (default 1,000).
    pub fn max_method_handlers(mut self, max: usize) -> Self {
        self.config.max_method_handlers = max;
        self
    }

    /// Most bytes the payloads of those answers take together (default 16 MiB).
    pub fn max_method_handler_bytes(mut self, max: usize) -> Self {
        self.config.max_method_handler_bytes = max;
        self
    }

    /// Adds a shared access policy; once any is added, the defaults are not created.
    pub fn policy(mut self, policy: SharedAccessPolicy) -> Self {
        self.config.policies.push(policy);
        self
    }

    /// Keeps the registry (and generated keys and certificates) in this directory,
    /// durably, across restarts.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = Some(dir.into());
        self
    }

    /// Serves plain HTTP instead of HTTPS.
    pub fn plain_http(mut self) -> Self {
        self.config.tls.enabled = false;
        self
    }

    /// Serves this PEM certificate chain and key instead of a generated certificate.
    pub fn tls_files(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.config.tls = TlsConfig {
            enabled: true,
            cert: Some(cert.into()),
            key: Some(key.into()),
        };
        self
    }

    /// Accepts `Authorization: Bearer <token>` with every permission.
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.config.bearer_token = Some(token.into());
        self
    }

    /// Registers an app (client id, secret, roles on the hub) with the emulator's Microsoft
    /// Entra ID look-alike: it can then get tokens for `https://iothubs.azure.net/.default`
    /// from `POST {base_url}/{tenant}/oauth2/v2.0/token` and use them as bearer tokens, on
    /// REST and on AMQP, within what its roles allow.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), iothub_emulator::Error> {
    /// use iothub_emulator::{EntraClient, Emulator, IotHubRole};
    ///
    /// let hub = Emulator::builder()
    ///     .entra_client(EntraClient::new("my-app", "my-secret", [IotHubRole::DataContributor]))
    ///     .start()
    ///     .await?;
    /// // azure_identity: ClientSecretCredential::new(hub.entra_tenant_id(), "my-app", …) with
    /// // the authority host hub.entra_authority_host() and a client trusting hub's CA.
    /// # Ok(()) }
    /// ```
    pub fn entra_client(mut self, client: EntraClient) -> Self {
        self.config.entra.clients.push(client);
        self
    }

    /// The Entra tenant id (default [`DEFAULT_TENANT_ID`](crate::DEFAULT_TENANT_ID)).
    pub fn entra_tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.config.entra.tenant_id = tenant_id.into();
        self
    }

    /// How long the Entra tokens it issues last (default 3,599 s; 1 s to one day, rounded
    /// up to whole seconds).
    pub fn entra_token_lifetime(mut self, lifetime: Duration) -> Self {
        self.config.entra.token_lifetime_secs = lifetime
            .as_secs()
            .saturating_add(u64::from(lifetime.subsec_nanos() > 0));
        self
    }

    /// Fault injection from the start.
    pub fn faults(mut self, faults: FaultConfig) -> Self {
        self.config.faults = faults;
        self
    }

    /// How many service requests the request log keeps (default 1,000; 0 keeps none).
    pub fn request_log_capacity(mut self, capacity: usize) -> Self {
        self.config.request_log_capacity = capacity;
        self
    }

    /// Most bytes one request-log entry keeps (default 64 KiB; at least 1,024): a longer
    /// body is cut and the entry marked truncated.
    pub fn request_log_max_entry_bytes(mut self, max: usize) -> Self {
        self.config.request_log_max_entry_bytes = max;
        self
    }

    /// Most bytes the request log keeps over all its entries (default 32 MiB; the oldest go
    /// first).
    pub fn request_log_max_bytes(mut self, max: usize) -> Self {
        self.config.request_log_max_bytes = max;
        self
    }

    /// Closes an HTTP(S) connection whose request head is not received in full this long
    /// after its first byte, or for its first request after it opened (default 30 s; rounded
    /// up to whole seconds; zero never does).
    pub fn http_header_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.http_header_read_timeout_secs = whole_secs(timeout);
        self
    }

    /// Answers 408, and closes the connection, when a request body is not received in full
    /// this long after the request was admitted (default 60 s; rounded up to whole seconds;
    /// zero never does).
    pub fn http_body_read_timeout(mut self, timeout: Duration) -> Self {
        self.config.http_body_read_timeout_secs = whole_secs(timeout);
        self
    }

    /// Closes an HTTP(S) connection with no request in progress for this long (default
    /// 240 s, the Azure load balancer's idle timeout; rounded up to whole seconds; zero never
    /// does).
    pub fn http_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config.http_idle_timeout_secs = whole_secs(timeout);
        self
    }

    /// Most HTTP(S) connections open at once (default 10,000): at the cap the connection idle
    /// the longest is closed to admit a new one.
    pub fn http_max_connections(mut self, max: usize) -> Self {
        self.config.http_max_connections = max;
        self
    }

    /// Most AMQP connections open at once, WebSocket ones included (default 10,000).
    pub fn amqp_max_connections(mut self, max: usize) -> Self {
        self.config.amqp_max_connections = max;
        self
    }

    /// Where the device-facing MQTT endpoint listens (default: a free port on the IP of
    /// [`EmulatorBuilder::bind`]; the binary uses 8883, the port the device SDKs dial).
    pub fn mqtt_bind(mut self, addr: SocketAddr) -> Self {
        self.config.mqtt_bind = Some(addr);
        self
    }

    /// Closes MQTT connections that have not sent an accepted CONNECT this long after
    /// opening (default 30 s; rounded up to whole seconds; zero never does).
    pub fn mqtt_auth_timeout(mut self, timeout: Duration) -> Self {
        self.config.mqtt_auth_timeout_secs = whole_secs(timeout);
        self
    }

    /// Most MQTT connections open at once, WebSocket ones included (default 10,000).
    pub fn mqtt_max_connections(mut self, max: usize) -> Self {
        self.config.mqtt_max_connections = max;
        self
    }

    /// Most MQTT packets one connection may send in a second before it is closed (default
    /// 10,000; 0 for no limit).
    pub fn mqtt_max_packets_per_second(mut self, max: u32) -> Self {
        self.config.mqtt_max_packets_per_second = max;
        self
    }

    /// How many telemetry messages (and bytes of them) the hub keeps for
    /// [`Emulator::device_messages`] (default 10,000 and 64 MiB).
    pub fn telemetry_buffer(mut self, capacity: usize, max_bytes: usize) -> Self {
        self.config.telemetry_buffer_capacity = capacity;
        self.config.telemetry_buffer_max_bytes = max_bytes;
        self
    }

    /// Requires this token, in the `x-emulator-control-token` header, on every control-API
    /// request but the health check. Without it the control API is open on a loopback bind,
    /// and a token is generated on any other ([`Emulator::control_token`]).
    pub fn control_token(mut self, token: impl Into<String>) -> Self {
        self.config.control_token = Some(token.into().into());
        self
    }

    /// Binds, prepares certificates and the store, and starts serving.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound, the data directory or certificate files cannot be
    /// used, or the configuration is inconsistent.
    pub async fn start(self) -> Result<Emulator, Error> {
        Emulator::start(self.config).await
    }
}

/// A duration in whole seconds, rounded up.
fn whole_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}
