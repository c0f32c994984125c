//! [`ServiceClient`]: lazy connection, sends, receivers, close.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use fe2o3_amqp::link::Receiver;
use iothub_auth::Credential;
use iothub_auth::network::{NetworkError, NetworkOptions, ProxySetting};
use tokio::sync::{Mutex, RwLock, watch};
use tokio::time::timeout;

use crate::connection::{Live, Settings, Transport};
use crate::error::{Error, Result};
use crate::feedback::FeedbackReceiver;
use crate::file_notification::FileNotificationReceiver;
use crate::link::map_outcome;
use crate::message::Message;
use crate::proxy::Proxy;
use crate::tls;

/// Keep-alive interval unless configured: half the hub's 240 s idle limit, as uamqp does.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(120);

/// Time limit of one operation (a send, including any connecting) unless configured.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends cloud-to-device messages and receives feedback and file-upload notifications over
/// one AMQP connection to the hub.
///
/// The connection is opened on first use and reopened by the first operation after it is
/// lost; one link carries every send, with many in flight at once. `Clone` is cheap and clones
/// share the connection. Dropping the last clone closes the connection in the background and
/// never blocks; [`close`](Self::close) closes it after in-flight sends complete.
///
/// ```no_run
/// use iothub_amqp::{Ack, Message, ServiceClient};
/// use iothub_auth::{ConnectionString, Credential};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let cs: ConnectionString = std::env::var("IOTHUB_CONNECTION_STRING")?.parse()?;
/// let client = ServiceClient::new(Credential::from_connection_string(&cs));
/// let message = Message::builder("thermostat-1").body("reboot").ack(Ack::Full).build()?;
/// client.send(&message).await?;
/// client.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ServiceClient {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    settings: Arc<Settings>,
    live: Mutex<Option<Arc<Live>>>,
    // Every send holds a read guard; `close` takes the write guard to wait for them.
    in_flight: RwLock<()>,
    closed: AtomicBool,
    closed_signal: watch::Sender<bool>,
}

impl fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &self.shared.settings;
        f.debug_struct("ServiceClient")
            .field("host", settings.credential.host())
            .field("transport", &settings.transport)
            .field("port", &settings.port())
            .field("proxy", &settings.proxy)
            .finish_non_exhaustive()
    }
}

impl ServiceClient {
    /// A client with the default settings: AMQP over TLS on port 5671, Mozilla's root
    /// certificates, a keep-alive every 2 minutes and a 60 s send timeout.
    pub fn new(credential: Credential) -> Self {
        Self::from_settings(Settings {
            credential,
            transport: Transport::Amqp,
            port: None,
            proxy: None,
            extra_roots: Vec::new(),
            tls: OnceLock::new(),
            keep_alive: DEFAULT_KEEP_ALIVE,
            timeout: DEFAULT_SEND_TIMEOUT,
        })
    }

    /// Starts a client with non-default settings.
    pub fn builder(credential: Credential) -> ServiceClientBuilder {
        ServiceClientBuilder {
            credential,
            transport: Transport::Amqp,
            port: None,
            network: NetworkOptions::default(),
            network_error: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            send_timeout: DEFAULT_SEND_TIMEOUT,
        }
    }

    fn from_settings(settings: Settings) -> Self {
        let (closed_signal, _) = watch::channel(false);
        Self {
            shared: Arc::new(Shared {
                settings: Arc::new(settings),
                live: Mutex::new(None),
                in_flight: RwLock::new(()),
                closed: AtomicBool::new(false),
                closed_signal,
            }),
        }
    }

    /// Sends a message and waits for the hub to accept it (the message is then in the
    /// device's queue).
    ///
    /// Connects first if there is no connection (or it was lost). Concurrent calls share the
    /// connection and the link and overlap on the wire. The whole call, connecting included,
    /// is bounded by the send timeout.
    ///
    /// # Retrying
    ///
    /// Nothing is retried for you, except that a connection found dead before the message was
    /// handed to it is replaced once. After an error for which
    /// [`Error::is_ambiguous`] is true (the connection was lost, or the timeout expired, after
    /// the message was handed to the connection) the hub may or may not have enqueued the
    /// message: sending the same `Message` again keeps its message id, so a device that
    /// remembers recent ids can drop the duplicate; not sending again may lose it. Which is
    /// worse is the caller's call. Every other error means the message was not enqueued.
    ///
    /// # Errors
    ///
    /// [`Error::DeviceNotFound`], [`Error::QueueFull`], [`Error::MessageTooLarge`],
    /// [`Error::Throttled`], [`Error::Unauthorized`], [`Error::Rejected`],
    /// [`Error::Released`], [`Error::Modified`] for the hub's refusals;
    /// [`Error::ConnectionLost`], [`Error::Timeout`], [`Error::Connect`],
    /// [`Error::Protocol`], [`Error::Auth`], [`Error::Configuration`] for the rest;
    /// [`Error::Closed`] after [`close`](Self::close).
    pub async fn send(&self, message: &Message) -> Result<()> {
        self.send_within(message, self.shared.settings.timeout)
            .await
    }

    /// [`send`](Self::send) with another time limit than the client's
    /// [`send_timeout`](ServiceClientBuilder::send_timeout) for this message: connecting
    /// included, until the hub's outcome arrives.
    ///
    /// # Errors
    ///
    /// As for [`send`](Self::send).
    pub async fn send_within(&self, message: &Message, limit: Duration) -> Result<()> {
        let shared = &self.shared;
        let _in_flight = shared.in_flight.read().await;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let amqp = message.to_amqp();
        let sent = AtomicBool::new(false);
        let attempt = async {
            let mut replaced = false;
            loop {
                let live = shared.connection().await?;
                let queued = || sent.store(true, Ordering::Release);
                match live.submit(amqp.clone(), queued).await {
                    Ok(outcome) => {
                        return match outcome.await {
                            Ok(outcome) => map_outcome(outcome),
                            Err(error) => Err(crate::link::map_send_error(error, true)),
                        };
                    }
                    // Found dead before anything left: one fresh connection, then give up.
                    Err(Error::ConnectionLost { sent: false, .. }) if !replaced => {
                        replaced = true;
                        shared.discard(&live).await;
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        match timeout(limit, attempt).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                after: limit,
                sent: sent.load(Ordering::Acquire),
            }),
        }
    }

    /// A stream of delivery-feedback batches (`/messages/servicebound/feedback`).
    ///
    /// Nothing happens until the stream is first polled. The hub sends the next batch only
    /// after the previous one is settled, so complete or abandon each promptly; one dropped
    /// unsettled is abandoned. See [`FeedbackReceiver`].
    pub fn feedback_receiver(&self) -> FeedbackReceiver {
        FeedbackReceiver::new(self.clone())
    }

    /// A stream of file-upload notifications (`/messages/serviceBound/filenotifications`),
    /// with the same settlement rules as [`feedback_receiver`](Self::feedback_receiver).
    pub fn file_notification_receiver(&self) -> FileNotificationReceiver {
        FileNotificationReceiver::new(self.clone())
    }

    /// Closes the client: new operations fail with [`Error::Closed`], sends in flight get
    /// their outcome (within the send timeout), receivers end after abandoning what they hold
    /// unsettled, and the connection is closed. Affects every clone.
    pub async fn close(&self) {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Release);
        shared.closed_signal.send_replace(true);
        let limit = shared.settings.timeout;
        if timeout(limit, shared.in_flight.write()).await.is_err() {
            tracing::warn!(?limit, "closing with sends still in flight");
        }
        let live = shared.live.lock().await.take();
        if let Some(live) = live {
            live.close().await;
        }
    }

    pub(crate) fn downgrade(&self) -> Weak<Shared> {
        Arc::downgrade(&self.shared)
    }

    pub(crate) fn closed_signal(&self) -> watch::Receiver<bool> {
        self.shared.closed_signal.subscribe()
    }
}

impl Shared {
    /// The open connection, opening one if needed.
    async fn connection(&self) -> Result<Arc<Live>> {
        let mut slot = self.live.lock().await;
        if let Some(live) = slot.as_ref().filter(|live| !live.is_closed()) {
            return Ok(live.clone());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        *slot = None;
        let live = Arc::new(Live::open(&self.settings).await?);
        *slot = Some(live.clone());
        Ok(live)
    }

    /// Forgets `live` if it is still the current connection.
    async fn discard(&self, live: &Arc<Live>) {
        let mut slot = self.live.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, live))
        {
            *slot = None;
        }
    }

    /// Attaches a receiver from `address`, connecting if needed, within the timeout.
    pub(crate) async fn attach(&self, address: &'static str) -> Result<Receiver> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let limit = self.settings.timeout;
        timeout(limit, async {
            let live = self.connection().await?;
            live.attach(address).await
        })
        .await
        .unwrap_or(Err(Error::Timeout {
            after: limit,
            sent: false,
        }))
    }
}

/// Configures a [`ServiceClient`]; from [`ServiceClient::builder`].
///
/// ```
/// use std::time::Duration;
/// use iothub_amqp::{ServiceClient, Transport};
/// use iothub_auth::{ConnectionString, Credential};
///
/// let cs: ConnectionString = "HostName=contoso.azure-devices.net;SharedAccessKeyName=service;\
///                             SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
///     .parse()?;
/// let client = ServiceClient::builder(Credential::from_connection_string(&cs))
///     .transport(Transport::WebSocket)
///     .proxy("http://proxy.corp.example:3128")
///     .send_timeout(Duration::from_secs(30))
///     .build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[must_use = "call build() to get the client"]
pub struct ServiceClientBuilder {
    credential: Credential,
    transport: Transport,
    port: Option<u16>,
    network: NetworkOptions,
    // The first PEM or proxy URL refused by the methods below; `build` reports it.
    network_error: Option<NetworkError>,
    keep_alive: Duration,
    send_timeout: Duration,
}

impl ServiceClientBuilder {
    /// AMQP over TLS (the default) or over WebSockets.
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The port to dial instead of the transport's default (5671 for AMQP; for WebSockets the
    /// host name's port if it has one, else 443). For emulators and tests.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Trusts the certificates of a PEM document as roots, besides the operating system's (e.g.
    /// an emulator's CA or a TLS-inspecting proxy's). May be called several times.
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        if let Err(error) = self.network.add_root_certificates_pem(pem) {
            self.network_error.get_or_insert(error);
        }
        self
    }

    /// Tunnels the connection through an HTTP proxy with `CONNECT`:
    /// `http://[user:password@]host[:port]`. Works with both transports; proxies usually only
    /// allow port 443, i.e. [`Transport::WebSocket`].
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        match ProxySetting::url(&url.into()) {
            Ok(proxy) => self.network.set_proxy(proxy),
            Err(error) => {
                self.network_error.get_or_insert(error);
            }
        }
        self
    }

    /// Replaces the extra root certificates and the proxy with these (the options the SDK's
    /// HTTPS client takes too, so both trust and route alike). Roots are trusted besides the
    /// operating system's. An explicit proxy ([`ProxySetting::Url`], which must be `http://`)
    /// is used as with [`proxy`](Self::proxy). [`ProxySetting::Environment`] (the default)
    /// applies to [`Transport::WebSocket`], which is HTTPS to the proxy: `HTTPS_PROXY`,
    /// `ALL_PROXY` and `NO_PROXY`, read when the client is built, as the HTTPS client reads
    /// them ([`ProxySetting::for_https`]); AMQP on port 5671 is not HTTPS and connects
    /// directly, as with [`ProxySetting::None`].
    pub fn network_options(mut self, network: NetworkOptions) -> Self {
        self.network = network;
        self
    }

    /// How long the connection may stay silent before an empty AMQP frame is sent (default
    /// 2 minutes; the hub closes connections idle for 4 minutes).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// The time limit of one send, connecting included, and of attaching a receiver (default
    /// 60 s).
    pub fn send_timeout(mut self, limit: Duration) -> Self {
        self.send_timeout = limit;
        self
    }

    /// Checks the settings and returns the client. Does not connect.
    ///
    /// # Errors
    ///
    /// [`Error::Configuration`] for a PEM without certificates, a root that is not a usable
    /// certificate, a proxy URL that is not `http://`, or a zero keep-alive or timeout.
    pub fn build(self) -> Result<ServiceClient> {
        if self.keep_alive.is_zero() || self.send_timeout.is_zero() {
            return Err(Error::Configuration {
                reason: "the keep-alive interval and the send timeout must not be zero".into(),
            });
        }
        if let Some(error) = self.network_error {
            return Err(Error::Configuration {
                reason: error.to_string(),
            });
        }
        let proxy = match (self.network.proxy(), self.transport) {
            (ProxySetting::Url(url), _) => Some(Proxy::from_url(url)?),
            (setting @ ProxySetting::Environment, Transport::WebSocket) => setting
                .for_https(self.credential.host().host())
                .map_err(|error| Error::Configuration {
                    reason: error.to_string(),
                })?
                .map(|url| Proxy::from_url(&url))
                .transpose()?,
            (ProxySetting::Environment, Transport::Amqp) | (ProxySetting::None, _) => None,
        };
        let extra_roots = self.network.root_certificates().to_vec();
        let tls_config = OnceLock::new();
        if !extra_roots.is_empty() {
            // Reports an unusable certificate now rather than on the first send.
            let _ = tls_config.set(tls::client_config(&extra_roots)?);
        }
        Ok(ServiceClient::from_settings(Settings {
            credential: self.credential,
            transport: self.transport,
            port: self.port,
            proxy,
            extra_roots,
            tls: tls_config,
            keep_alive: self.keep_alive,
            timeout: self.send_timeout,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feedback::FEEDBACK_ADDRESS;
    use iothub_auth::ConnectionString;

    fn credential(host: &str) -> Credential {
        let cs: ConnectionString = format!(
            "HostName={host};SharedAccessKeyName=service;SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
        )
        .parse()
        .unwrap();
        Credential::from_connection_string(&cs)
    }

    #[test]
    fn ports_default_per_transport() {
        let client = ServiceClient::new(credential("hub.example"));
        assert_eq!(client.shared.settings.port(), 5671);
        let ws = ServiceClient::builder(credential("hub.example"))
            .transport(Transport::WebSocket)
            .build()
            .unwrap();
        assert_eq!(ws.shared.settings.port(), 443);
        let emulator = ServiceClient::builder(credential("localhost:8443"))
            .transport(Transport::WebSocket)
            .build()
            .unwrap();
        assert_eq!(emulator.shared.settings.port(), 8443);
        let amqp = ServiceClient::new(credential("localhost:8443"));
        assert_eq!(amqp.shared.settings.port(), 5671);
        let explicit = ServiceClient::builder(credential("localhost:8443"))
            .port(5999)
            .build()
            .unwrap();
        assert_eq!(explicit.shared.settings.port(), 5999);
    }

    #[test]
    fn bad_settings_are_refused_at_build() {
        let refused = |builder: ServiceClientBuilder| {
            assert!(matches!(builder.build(), Err(Error::Configuration { .. })));
        };
        refused(ServiceClient::builder(credential("h")).keep_alive(Duration::ZERO));
        refused(ServiceClient::builder(credential("h")).send_timeout(Duration::ZERO));
        refused(ServiceClient::builder(credential("h")).proxy("socks5://p:1"));
        refused(ServiceClient::builder(credential("h")).add_root_certificate_pem("nope"));
    }

    #[test]
    fn debug_shows_no_secret() {
        let client = ServiceClient::builder(credential("hub.example"))
            .proxy("http://user:hunter2@proxy:3128")
            .build()
            .unwrap();
        let text = format!("{client:?}");
        assert!(
            text.contains("hub.example") && text.contains("proxy"),
            "{text}"
        );
        assert!(
            !text.contains("hunter2") && !text.contains("AAECAw"),
            "{text}"
        );
    }

    #[test]
    fn network_options_give_the_roots_and_only_an_explicit_proxy() {
        let mut network = NetworkOptions::new();
        network.set_proxy(ProxySetting::url("http://user:hunter2@proxy.example:3128").unwrap());
        let client = ServiceClient::builder(credential("h"))
            .transport(Transport::WebSocket)
            .network_options(network.clone())
            .build()
            .unwrap();
        let endpoint = |client: &ServiceClient| {
            let settings = &client.shared.settings;
            settings.proxy.as_ref().map(Proxy::endpoint)
        };
        assert_eq!(endpoint(&client).as_deref(), Some("proxy.example:3128"));
        // Over AMQP on 5671 neither reads the environment: both connect directly.
        for setting in [ProxySetting::Environment, ProxySetting::None] {
            network.set_proxy(setting);
            let client = ServiceClient::builder(credential("h"))
                .network_options(network.clone())
                .build()
                .unwrap();
            assert_eq!(endpoint(&client), None);
            assert!(client.shared.settings.extra_roots.is_empty());
        }
        // The builder's own methods apply after the options, in order.
        let client = ServiceClient::builder(credential("h"))
            .network_options(network)
            .proxy("proxy.example:8080")
            .build()
            .unwrap();
        assert_eq!(endpoint(&client).as_deref(), Some("proxy.example:8080"));
    }

    #[test]
    fn the_builder_shows_no_proxy_password() {
        let builder = ServiceClient::builder(credential("hub.example"))
            .proxy("http://user:hunter2@proxy:3128")
            .add_root_certificate_pem("not a pem");
        let text = format!("{builder:?}");
        assert!(text.contains("proxy:3128"), "{text}");
        assert!(
            !text.contains("hunter2") && !text.contains("AAECAw"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_closed_client_refuses_work_without_connecting() {
        let client = ServiceClient::builder(credential("127.0.0.1"))
            .port(1)
            .build()
            .unwrap();
        client.close().await;
        let message = Message::builder("d").build().unwrap();
        assert!(matches!(client.send(&message).await, Err(Error::Closed)));
        assert!(matches!(
            client.shared.attach(FEEDBACK_ADDRESS).await,
            Err(Error::Closed)
        ));
    }

    #[tokio::test]
    async fn an_unreachable_hub_is_a_connect_error_that_was_not_sent() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = ServiceClient::builder(credential("127.0.0.1"))
            .port(port)
            .build()
            .unwrap();
        let message = Message::builder("d").build().unwrap();
        let error = client.send(&message).await.unwrap_err();
        assert!(
            matches!(&error, Error::Connect { stage, .. } if stage.contains("TCP")),
            "{error:?}"
        );
        assert!(!error.is_ambiguous());
        assert!(error.is_transient());
    }
}
