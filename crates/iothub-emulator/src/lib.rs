//! A local Azure IoT Hub: the service REST API (api-version 2021-04-12) over HTTPS, with
//! shared-access-signature authentication, a durable registry, twins, the query language,
//! bulk operations and direct methods, faithful enough that the official SDKs cannot tell
//! it from the service for what it covers.
//!
//! Use it for offline development and in tests. Beside the service's paths it serves a
//! control API under `/_emulator/` for what devices would do (connect, report properties,
//! answer methods), the request log and fault injection; the same is available on
//! [`Emulator`] for Rust tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iothub_emulator::Error> {
//! use iothub_emulator::{Emulator, MethodResponse};
//!
//! let hub = Emulator::builder().start().await?;
//! println!("{}", hub.connection_string());
//! // Trust hub.ca_certificate_pem() in your HTTP client, then use the hub.
//! hub.connect_device("dev1")?; // once dev1 exists
//! hub.set_method_response("dev1", None, "reboot", MethodResponse::echo());
//! hub.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Cloud-to-device messages go in over AMQP 1.0 as the SDKs send them (see
//! [`Emulator::amqp_addr`]): implicit TLS with the HTTPS certificate (or plain TCP when
//! serving plain HTTP), and WebSockets on the HTTPS port. Feedback and file-upload
//! notifications come back on the service's links.
//!
//! The binary `iothub-emulator` runs the same thing from the command line (`--help`).

mod amqp;
mod auth;
mod c2d;
mod config;
mod control;
mod errors;
mod etag;
mod faults;
mod http;
mod ids;
mod log;
mod methods;
mod persist;
mod query;
mod service;
mod store;
mod tls;
mod twin;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use auth::{Permission, SharedAccessPolicy};
pub use c2d::{
    ACCEPTED_RECORD, C2dMessage, DEFAULT_TTL, LOCK_TIMEOUT, MAX_DELIVERY_COUNT, MAX_MESSAGE_BYTES,
    MAX_QUEUE_DEPTH, ReceivedC2d,
};
pub use config::{Config, TlsConfig};
pub use faults::{FaultConfig, FaultStats, Tier};
pub use log::RequestLogEntry;
pub use methods::{DEFAULT_METHOD, MethodResponse};

/// Why the emulator could not start, or why a control call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The durable store failed.
    #[error("registry store {}: {message}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Certificates could not be generated or loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A control call was refused as the service would refuse it (unknown device, …).
    #[error("{status} {code}: {message}")]
    Rejected {
        /// HTTP status the control API would answer.
        status: u16,
        /// The service's error code name.
        code: &'static str,
        /// The reason.
        message: String,
    },
}

impl From<errors::ServiceError> for Error {
    fn from(e: errors::ServiceError) -> Self {
        Self::Rejected {
            status: e.status,
            code: e.name,
            message: e.message,
        }
    }
}

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) store: store::Store,
    pub(crate) auth: auth::Authenticator,
    pub(crate) log: log::RequestLog,
    pub(crate) faults: faults::Faults,
    pub(crate) methods: methods::Methods,
    pub(crate) c2d: c2d::C2d,
    pub(crate) hub_name: String,
    pub(crate) host_name: String,
    pub(crate) amqp: amqp::Endpoint,
}

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

/// A running emulator. Dropping it stops serving; [`Emulator::shutdown`] also waits.
pub struct Emulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    amqp_addr: SocketAddr,
    host: String,
    https: bool,
    ca_pem: Option<String>,
    ca_path: Option<PathBuf>,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
    amqp_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("amqp_addr", &self.amqp_addr)
            .field("host", &self.host)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder with the defaults.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    async fn start(config: Config) -> Result<Self, Error> {
        let names = config.names();
        let policies = load_policies(&config)?;
        let persist = config
            .data_dir
            .as_deref()
            .map(persist::Persist::open)
            .transpose()?;
        let store = store::Store::open(persist)?;

        let (tls_acceptor, amqp_tls_acceptor, ca_pem, ca_path) = if config.tls.enabled {
            let cert_dir = config.data_dir.clone().or_else(|| config.cert_dir.clone());
            let (material, ca_path) = match (&config.tls.cert, &config.tls.key, &cert_dir) {
                (Some(cert), Some(key), _) => (
                    tls::TlsMaterial::load(cert, key).map_err(|e| Error::Tls(e.to_string()))?,
                    None,
                ),
                (Some(_), None, _) | (None, Some(_), _) => {
                    return Err(Error::Config(
                        "tls.cert and tls.key must be given together".into(),
                    ));
                }
                (None, None, Some(dir)) => {
                    let (material, _) = tls::TlsMaterial::load_or_generate(dir, &names)
                        .map_err(|e| Error::Tls(e.to_string()))?;
                    (material, Some(dir.join("ca.pem")))
                }
                (None, None, None) => (
                    tls::TlsMaterial::generate(&names).map_err(|e| Error::Tls(e.to_string()))?,
                    None,
                ),
            };
            let server_config = material
                .server_config(&[b"h2".as_slice(), b"http/1.1".as_slice()])
                .map_err(|e| Error::Tls(e.to_string()))?;
            // AMQP clients send no ALPN (or one we need not check): offer none.
            let amqp_config = material
                .server_config(&[])
                .map_err(|e| Error::Tls(e.to_string()))?;
            (
                Some(tokio_rustls::TlsAcceptor::from(server_config)),
                Some(tokio_rustls::TlsAcceptor::from(amqp_config)),
                Some(material.ca_pem.clone()),
                ca_path,
            )
        } else {
            (None, None, None, None)
        };

        let listener = tokio::net::TcpListener::bind(config.bind)
            .await
            .map_err(|source| Error::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.bind,
            source,
        })?;
        let amqp_bind = config
            .amqp_bind
            .unwrap_or_else(|| SocketAddr::new(config.bind.ip(), 0));
        let amqp_listener = tokio::net::TcpListener::bind(amqp_bind)
            .await
            .map_err(|source| Error::Bind {
                addr: amqp_bind,
                source,
            })?;
        let amqp_addr = amqp_listener.local_addr().map_err(|source| Error::Bind {
            addr: amqp_bind,
            source,
        })?;
        let (amqp_endpoint, websockets) =
            amqp::Endpoint::new(Duration::from_secs(config.amqp_idle_timeout_secs));
        let host_name = config.effective_host_name();
        let default_port = if config.tls.enabled { 443 } else { 80 };
        let host = if addr.port() == default_port {
            host_name.clone()
        } else {
            format!("{host_name}:{}", addr.port())
        };
        let audiences = names.clone();
        let shared = Arc::new(Shared {
            store,
            auth: auth::Authenticator::new(policies, audiences, config.bearer_token.clone()),
            log: log::RequestLog::new(config.request_log_capacity),
            faults: faults::Faults::new(config.faults.clone()),
            methods: methods::Methods::default(),
            c2d: c2d::C2d::default(),
            hub_name: config.hub_name.clone(),
            host_name: host.clone(),
            amqp: amqp_endpoint,
        });
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(http::serve(
            listener,
            tls_acceptor,
            shared.clone(),
            rx.clone(),
        ));
        let amqp_task = tokio::spawn(amqp::serve(
            amqp_listener,
            amqp_tls_acceptor,
            shared.clone(),
            rx.clone(),
            websockets,
        ));
        tokio::spawn(sweep(shared.clone(), rx));
        tracing::info!(%addr, %amqp_addr, %host, "iothub-emulator listening");
        Ok(Self {
            shared,
            addr,
            amqp_addr,
            host,
            https: config.tls.enabled,
            ca_pem,
            ca_path,
            shutdown,
            task: Some(task),
            amqp_task: Some(amqp_task),
        })
    }

    /// The `iothubowner` connection string (or the first policy's, if there is none).
    pub fn connection_string(&self) -> String {
        let policy = self
            .policies()
            .iter()
            .find(|p| p.name == "iothubowner")
            .or_else(|| self.policies().first());
        policy.map_or_else(String::new, |p| self.connection_string_with(p))
    }

    /// The connection string of the named policy.
    pub fn connection_string_for(&self, policy: &str) -> Option<String> {
        self.policies()
            .iter()
            .find(|p| p.name == policy)
            .map(|p| self.connection_string_with(p))
    }

    fn connection_string_with(&self, p: &SharedAccessPolicy) -> String {
        format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host, p.name, p.primary_key
        )
    }

    /// The host as connection strings name it: `name:port` (the port left out on 443).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The socket address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket address of the AMQP endpoint (`amqps`, or plain `amqp` when serving plain
    /// HTTP). Always present today; `None` is kept for an emulator without AMQP.
    pub fn amqp_addr(&self) -> Option<SocketAddr> {
        Some(self.amqp_addr)
    }

    /// `https://host[:port]` (or `http://` when serving plain HTTP).
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    /// The CA certificate (PEM) clients must trust, when serving HTTPS.
    pub fn ca_certificate_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where the CA certificate was written (with a data or certificate directory).
    pub fn ca_certificate_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The shared access policies (with their keys).
    pub fn policies(&self) -> &[SharedAccessPolicy] {
        self.shared.auth.policies()
    }

    /// Every service request so far (up to the log's capacity), oldest first.
    pub fn request_log(&self) -> Vec<RequestLogEntry> {
        self.shared.log.snapshot()
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        self.shared.log.clear();
    }

    /// Marks a device as connected, so direct methods reach it.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device does not exist.
    pub fn connect_device(&self, device_id: &str) -> Result<(), Error> {
        Ok(self.shared.set_connected(device_id, None, true)?)
    }

    /// Marks a device as disconnected.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device does not exist.
    pub fn disconnect_device(&self, device_id: &str) -> Result<(), Error> {
        Ok(self.shared.set_connected(device_id, None, false)?)
    }

    /// Marks a module as connected or disconnected.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device or module does not exist.
    pub fn set_module_connected(
        &self,
        device_id: &str,
        module_id: &str,
        connected: bool,
    ) -> Result<(), Error> {
        Ok(self
            .shared
            .set_connected(device_id, Some(module_id), connected)?)
    }

    /// A device (or module) reporting properties; returns the twin afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] for an unknown device or module, or a patch the service refuses.
    pub fn report_properties(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        patch: &Value,
    ) -> Result<Value, Error> {
        Ok(self.shared.report(device_id, module_id, patch)?)
    }

    /// How a device (or module) answers direct method `name` ([`DEFAULT_METHOD`] for any).
    pub fn set_method_response(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        name: &str,
        response: MethodResponse,
    ) {
        self.shared
            .methods
            .set(device_id, module_id, name, response);
    }

    /// Replaces the fault-injection settings.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.shared.faults.set(faults);
    }

    /// Faults injected so far.
    pub fn fault_stats(&self) -> FaultStats {
        self.shared.faults.stats()
    }

    /// The cloud-to-device messages the hub accepted, oldest first, as it received them: the
    /// most recent [`ACCEPTED_RECORD`] of them.
    pub fn c2d_messages(&self) -> Vec<C2dMessage> {
        self.shared.c2d.accepted()
    }

    /// Empties the record returned by [`Emulator::c2d_messages`] (queues are unaffected).
    pub fn clear_c2d_messages(&self) {
        self.shared.c2d.clear_accepted();
    }

    /// Messages waiting for a device (or module), locked ones included.
    pub fn c2d_pending(&self, device_id: &str, module_id: Option<&str>) -> usize {
        self.shared.c2d.pending(device_id, module_id)
    }

    /// The device (or module) takes its next message; settle it with
    /// [`Emulator::complete_c2d`], [`Emulator::reject_c2d`] or [`Emulator::abandon_c2d`].
    pub fn receive_c2d(&self, device_id: &str, module_id: Option<&str>) -> Option<ReceivedC2d> {
        self.shared.c2d.receive(device_id, module_id)
    }

    /// Completes a received message; false if the lock is unknown or expired.
    pub fn complete_c2d(&self, lock_token: &str) -> bool {
        self.shared.c2d.complete(lock_token)
    }

    /// Rejects a received message (dead-letters it).
    pub fn reject_c2d(&self, lock_token: &str) -> bool {
        self.shared.c2d.reject(lock_token)
    }

    /// Abandons a received message: it is delivered again, up to the delivery count.
    pub fn abandon_c2d(&self, lock_token: &str) -> bool {
        self.shared.c2d.abandon(lock_token)
    }

    /// A device finished uploading `blob_name`: the hub queues a file-upload notification.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device does not exist.
    pub fn notify_file_upload(
        &self,
        device_id: &str,
        blob_name: &str,
        size: u64,
    ) -> Result<(), Error> {
        Ok(self.shared.file_uploaded(device_id, blob_name, size)?)
    }

    /// Stops serving, closes every connection and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.amqp_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// Expires cloud-to-device messages and locks on time, so that feedback for expiry is
/// produced even when nobody looks at the queue.
async fn sweep(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => shared.c2d.sweep(),
            _ = shutdown.changed() => return,
        }
    }
}

/// The configured policies, else the defaults: with a data directory, generated keys are
/// kept in `policies.json` so connection strings survive restarts.
fn load_policies(config: &Config) -> Result<Vec<SharedAccessPolicy>, Error> {
    if !config.policies.is_empty() {
        return Ok(config.policies.clone());
    }
    let Some(dir) = &config.data_dir else {
        return Ok(SharedAccessPolicy::defaults());
    };
    let path = dir.join("policies.json");
    let io = |source| Error::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
            let policies = SharedAccessPolicy::defaults();
            let json =
                serde_json::to_vec_pretty(&policies).map_err(|e| Error::Config(e.to_string()))?;
            write_private(&path, &json).map_err(io)?;
            Ok(policies)
        }
        Err(e) => Err(io(e)),
    }
}

/// Writes a file only its owner can read (it holds keys).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
