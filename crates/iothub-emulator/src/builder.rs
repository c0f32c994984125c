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
        self.config.amqp_idle_timeout_secs = timeout
            .as_secs()
            .saturating_add(u64::from(timeout.subsec_nanos() > 0));
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

    /// How many service requests the request log keeps (default 1,000; bodies are kept whole, so a long log of bulk calls is large).
    pub fn request_log_capacity(mut self, capacity: usize) -> Self {
        self.config.request_log_capacity = capacity;
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
