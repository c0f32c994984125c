//! [`RegistryManager`]: construction, and the one place every operation runs through
//! (per-attempt timeout, credential check, retries, tracing, error mapping).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "amqp")]
use iothub_amqp::{ServiceClient, Transport};
use iothub_auth::network::{NetworkError, NetworkOptions, ProxySetting};
use iothub_auth::{ConnectionString, Credential, HostName};
use iothub_rest_gen::{BuildError, Client, DEFAULT_CONNECT_TIMEOUT};
use serde::Serialize;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::retry::{ExponentialRetry, OperationKind, RetryClass, RetryContext, RetryPolicy};

/// Time allowed for one attempt of an operation unless configured otherwise
/// ([`RegistryManagerBuilder::timeout`], [`RegistryManager::with_timeout`]). Direct methods
/// derive theirs from the method's own timeouts instead.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The Rust counterpart of Python's `IoTHubRegistryManager`: device and module identities,
/// twins, queries, statistics, bulk registry operations and direct methods of one IoT Hub.
///
/// Cheap to clone (the HTTP connection pool and token caches are shared). Every method checks
/// its arguments before sending anything, retries what is safe to retry (see
/// [`OperationKind::may_repeat`] and [`RetryPolicy`]), and signs every attempt afresh.
///
/// A failed operation was not applied, unless its error says it may have been
/// ([`Error::may_have_been_applied`]): when an attempt fails in a way that leaves its outcome
/// unknown and a later attempt fails too, the error is [`Error::MaybeApplied`]; and a delete
/// whose retry finds the identity gone after such an attempt succeeds.
///
/// ```no_run
/// use iothub_registry::{IfMatch, RegistryManager};
///
/// # async fn run() -> iothub_registry::Result<()> {
/// let registry = RegistryManager::from_connection_string(
///     &std::env::var("IOTHUB_CONNECTION_STRING").expect("set IOTHUB_CONNECTION_STRING"),
/// )?;
/// let twin = registry.get_twin("thermostat-1").await?;
/// println!("reported: {:?}", twin.properties.map(|p| p.reported));
/// # Ok(()) }
/// ```
#[doc(alias = "IoTHubRegistryManager")]
#[derive(Clone, Debug)]
pub struct RegistryManager {
    pub(crate) rest: Client,
    /// Cloud-to-device messages, feedback and file notifications; connects on first use.
    #[cfg(feature = "amqp")]
    pub(crate) c2d: ServiceClient,
    credential: Credential,
    retry: Arc<dyn RetryPolicy>,
    pub(crate) timeout: Duration,
    /// The caps on response bodies, for the requests this crate sends without the generated
    /// client (the job query, whose paging headers the spec leaves out).
    pub(crate) max_response_body: u64,
    pub(crate) max_error_body: u64,
}

impl RegistryManager {
    /// A manager for the hub of a service connection string (`HostName=...;
    /// SharedAccessKeyName=...;SharedAccessKey=...`). Makes no network request.
    pub fn from_connection_string(connection_string: &str) -> Result<Self> {
        let cs: ConnectionString = connection_string.parse()?;
        Self::builder(Credential::from_connection_string(&cs)).build()
    }

    /// A manager that authenticates with Azure AD through any `azure_core` token credential
    /// (for example one from `azure_identity`). `host` is the hub's host name, without scheme:
    /// `contoso.azure-devices.net`.
    pub fn from_token_credential(
        host: &str,
        credential: Arc<dyn azure_core::credentials::TokenCredential>,
    ) -> Result<Self> {
        let host: HostName = host.parse().map_err(Error::from)?;
        Self::builder(Credential::from_token_credential(host, credential)).build()
    }

    /// A builder for the remaining settings: endpoint, api-version, Azure AD scope, retries,
    /// timeouts, user agent, HTTP client, proxy, extra root certificates and the AMQP
    /// transport for cloud-to-device messages.
    pub fn builder(credential: Credential) -> RegistryManagerBuilder {
        RegistryManagerBuilder {
            credential,
            endpoint: None,
            allow_http: false,
            api_version: None,
            scope: None,
            retry: Arc::new(ExponentialRetry::default()),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent_suffix: None,
            http_client: None,
            max_response_body: iothub_rest_gen::DEFAULT_MAX_RESPONSE_BODY,
            max_error_body: iothub_rest_gen::DEFAULT_MAX_ERROR_BODY,
            network: NetworkOptions::default(),
            network_error: None,
            #[cfg(feature = "amqp")]
            amqp_transport: Transport::Amqp,
            #[cfg(feature = "amqp")]
            amqp_port: None,
            #[cfg(feature = "amqp")]
            c2d_client: None,
        }
    }

    /// The same manager with another per-attempt timeout, for one call or a group of calls:
    /// `registry.with_timeout(Duration::from_secs(5)).get_device("d1")`.
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            timeout,
            ..self.clone()
        }
    }

    /// The generated REST client, authenticated the same way: the escape hatch for a request
    /// this crate's methods do not shape as you need (every operation is wrapped).
    pub fn rest(&self) -> &Client {
        &self.rest
    }

    /// Runs one operation: each attempt gets a token (so token failures surface as
    /// [`Error::Auth`]), sends and reads the answer, all under the per-attempt timeout, and
    /// maps the outcome; failed attempts are retried as the policy allows. After the last
    /// attempt, a failure that follows an ambiguous one (or a direct method's 408) is reported
    /// as [`Error::MaybeApplied`].
    pub(crate) async fn execute<T, E, F, Fut>(&self, call: Call<'_>, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, iothub_rest_gen::Error<E>>>,
        E: Serialize,
    {
        let span = tracing::info_span!(
            "iothub_registry",
            operation = call.operation,
            device_id = call.device_id,
            module_id = call.module_id,
            configuration_id = call.configuration_id,
            job_id = call.job_id,
            attempt = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let timeout = call.timeout.unwrap_or(self.timeout);
        async {
            let started = Instant::now();
            let mut attempts = 0;
            // The first failure after which the request may have been applied.
            let mut ambiguous: Option<Error> = None;
            loop {
                attempts += 1;
                tracing::Span::current().record("attempt", attempts);
                let outcome = self.attempt(timeout, &mut attempt).await;
                let error = match outcome {
                    Ok(value) => {
                        tracing::Span::current().record("status", "ok");
                        return Ok(value);
                    }
                    Err(error) => error,
                };
                if let Some(status) = error.status() {
                    tracing::Span::current().record("status", status);
                }
                let class = error.retry_class_for(call.kind);
                let context =
                    RetryContext::for_kind(call.operation, attempts, started.elapsed(), call.kind);
                if !self.wait(&error, class, &context).await {
                    return Err(reported(&call, error, class, ambiguous));
                }
                if class == RetryClass::MaybePerformed && ambiguous.is_none() {
                    ambiguous = Some(error);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Asks the retry policy about a failed attempt: sleeps and returns true to try again, or
    /// returns false to give up. For AMQP sends, which do not run through `execute`.
    #[cfg(feature = "amqp")]
    pub(crate) async fn wait_to_retry(&self, error: &Error, context: &RetryContext) -> bool {
        self.wait(error, error.retry_class(), context).await
    }

    async fn wait(&self, error: &Error, class: RetryClass, context: &RetryContext) -> bool {
        match self.retry.next_delay(class, context) {
            Some(delay) => {
                tracing::debug!(error = %error, ?delay, "retrying");
                tokio::time::sleep(delay).await;
                true
            }
            None => {
                tracing::debug!(error = %error, "giving up");
                false
            }
        }
    }

    async fn attempt<T, E, F, Fut>(&self, timeout: Duration, attempt: &mut F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, iothub_rest_gen::Error<E>>>,
        E: Serialize,
    {
        let mut sent = false;
        let within = async {
            // Cached after the first call, so this costs nothing; it turns a token failure into
            // a typed error instead of the string the request hook can report. Inside the
            // deadline: an Azure AD credential that never answers must not hang the call.
            self.credential.http_authorization().await?;
            sent = true;
            match attempt().await {
                Ok(value) => Ok(value),
                // An error's body is read here, inside the deadline too.
                Err(error) => Err(Error::from_rest(error).await),
            }
        };
        let outcome = tokio::time::timeout(timeout, within).await;
        outcome.unwrap_or(Err(Error::Timeout {
            after: timeout,
            sent,
        }))
    }
}

/// The error an operation reports after its last attempt failed with `error` (of `class`),
/// `earlier` being the first failure after which the request may have been applied.
fn reported(call: &Call<'_>, error: Error, class: RetryClass, earlier: Option<Error>) -> Error {
    if !call.kind.changes_state() {
        return error;
    }
    let earlier = match earlier {
        Some(earlier) => Some(Box::new(earlier)),
        // A failure that says so itself needs no wrapping; one the operation's kind makes
        // ambiguous (a direct method's 408) does.
        None if class == RetryClass::MaybePerformed && !error.may_have_been_applied() => None,
        None => return error,
    };
    tracing::debug!(
        error = %error,
        earlier = earlier.as_ref().map(|e| e.to_string()),
        "the outcome is unknown: the operation may have been applied"
    );
    Error::MaybeApplied {
        operation: call.operation,
        error: Box::new(error),
        earlier,
    }
}

/// A delete's outcome: a 404 after an attempt whose outcome was unknown means the identity is
/// gone, which is what was asked for (the earlier attempt deleted it, or someone else did).
pub(crate) fn deleted(call: Call<'_>, outcome: Result<()>) -> Result<()> {
    match outcome {
        Err(Error::MaybeApplied {
            operation,
            error,
            earlier: Some(earlier),
        }) if error.status() == Some(404) => {
            tracing::info!(
                operation,
                device_id = call.device_id,
                module_id = call.module_id,
                earlier = %earlier,
                "already gone after an attempt whose outcome was unknown: reported as deleted"
            );
            Ok(())
        }
        outcome => outcome,
    }
}

/// What [`RegistryManager::execute`] needs to know about an operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub(crate) operation: &'static str,
    pub(crate) device_id: Option<&'a str>,
    pub(crate) module_id: Option<&'a str>,
    /// The configuration it reads or writes, for its span.
    pub(crate) configuration_id: Option<&'a str>,
    /// The job it reads, creates or cancels, for its span.
    pub(crate) job_id: Option<&'a str>,
    /// What it does, which decides what may be repeated after which failure.
    pub(crate) kind: OperationKind,
    /// Overrides the manager's per-attempt timeout.
    pub(crate) timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    pub(crate) fn new(operation: &'static str, kind: OperationKind) -> Self {
        Self {
            operation,
            device_id: None,
            module_id: None,
            configuration_id: None,
            job_id: None,
            kind,
            timeout: None,
        }
    }

    pub(crate) fn device(mut self, device_id: &'a str) -> Self {
        self.device_id = Some(device_id);
        self
    }

    pub(crate) fn module(mut self, module_id: &'a str) -> Self {
        self.module_id = Some(module_id);
        self
    }

    pub(crate) fn configuration(mut self, configuration_id: &'a str) -> Self {
        self.configuration_id = Some(configuration_id);
        self
    }

    pub(crate) fn job(mut self, job_id: &'a str) -> Self {
        self.job_id = Some(job_id);
        self
    }

    pub(crate) fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Configures a [`RegistryManager`]; see [`RegistryManager::builder`].
#[derive(Debug)]
#[must_use = "call .build() to get a RegistryManager"]
pub struct RegistryManagerBuilder {
    credential: Credential,
    endpoint: Option<String>,
    allow_http: bool,
    api_version: Option<String>,
    scope: Option<String>,
    retry: Arc<dyn RetryPolicy>,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent_suffix: Option<String>,
    http_client: Option<reqwest::Client>,
    max_response_body: u64,
    max_error_body: u64,
    /// Extra roots and the proxy, for the REST client and the AMQP one.
    network: NetworkOptions,
    /// The first root certificate PEM or proxy URL refused; `build` reports it.
    network_error: Option<NetworkError>,
    #[cfg(feature = "amqp")]
    amqp_transport: Transport,
    #[cfg(feature = "amqp")]
    amqp_port: Option<u16>,
    #[cfg(feature = "amqp")]
    c2d_client: Option<ServiceClient>,
}

impl RegistryManagerBuilder {
    /// Sends requests to this base URL instead of `https://{host}` (a private endpoint, a
    /// local emulator, a test server).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Accepts a plain `http://` endpoint when its host is loopback (`localhost`, `127.0.0.1`,
    /// `::1`). Any other plain-HTTP endpoint is refused: it would expose request signatures.
    pub fn allow_http_on_loopback(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Sends another api-version than `2021-04-12`.
    pub fn api_version(mut self, api_version: impl Into<String>) -> Self {
        self.api_version = Some(api_version.into());
        self
    }

    /// The Azure AD scope for token credentials, for clouds other than the public one
    /// (default `https://iothubs.azure.net/.default`).
    pub fn scope(mut self, scope: impl Into<String>) -> Self {
        self.scope = Some(scope.into());
        self
    }

    /// Replaces the retry policy (default: [`ExponentialRetry::default`]).
    pub fn retry_policy(mut self, policy: impl RetryPolicy + 'static) -> Self {
        self.retry = Arc::new(policy);
        self
    }

    /// Time allowed for one attempt of an operation (default 60 s): getting a token, sending
    /// the request and reading the whole answer. Direct methods ignore it: theirs follows from
    /// the method's own timeouts.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Connect timeout of the HTTP client (default [`DEFAULT_CONNECT_TIMEOUT`], 30 s); ignored
    /// with [`Self::http_client`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Appended to the `User-Agent` of every request (`iothub-rs/<version> <suffix>`), with
    /// the HTTP client the builder makes or one given with [`Self::http_client`].
    pub fn user_agent_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.user_agent_suffix = Some(suffix.into());
        self
    }

    /// Uses this HTTP client as it is (proxy, TLS roots and timeouts are then yours; every
    /// request still carries the SDK's `User-Agent`, and bodies are still read under the caps).
    /// Give it no total timeout shorter than the direct methods you invoke.
    ///
    /// Disable redirects on it: reqwest follows up to 10 by default, to any origin. The service
    /// never redirects; the client the builder makes follows none and reports a 3xx as
    /// [`Error::Redirect`], but a client that follows one sends the request (without its
    /// `Authorization`) elsewhere and hands back that answer as the hub's.
    ///
    /// ```
    /// # fn run(credential: iothub_registry::Credential) -> iothub_registry::Result<()> {
    /// use iothub_registry::RegistryManager;
    ///
    /// let http = reqwest::Client::builder()
    ///     .redirect(reqwest::redirect::Policy::none())
    ///     .build()
    ///     .expect("a client");
    /// let registry = RegistryManager::builder(credential).http_client(http).build()?;
    /// # Ok(()) }
    /// ```
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// The largest body of a success response read (default
    /// [`DEFAULT_MAX_RESPONSE_BODY`](crate::DEFAULT_MAX_RESPONSE_BODY), 128 MiB; the
    /// service's largest answers, query pages and device lists, are a few MiB). A larger body,
    /// or a `Content-Length` announcing one, fails the attempt with
    /// [`Error::ResponseTooLarge`] and is not read further.
    pub fn max_response_body(mut self, bytes: u64) -> Self {
        self.max_response_body = bytes;
        self
    }

    /// The largest body of an error response read (default
    /// [`DEFAULT_MAX_ERROR_BODY`](crate::DEFAULT_MAX_ERROR_BODY), 1 MiB; the service's
    /// error bodies are a few hundred bytes); see [`max_response_body`](Self::max_response_body).
    pub fn max_error_body(mut self, bytes: u64) -> Self {
        self.max_error_body = bytes;
        self
    }

    /// Sends every request through this proxy (`http://proxy:8080`), instead of the one the
    /// standard environment variables name.
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        match ProxySetting::url(&url.into()) {
            Ok(proxy) => self.network.set_proxy(proxy),
            Err(error) => {
                self.network_error.get_or_insert(error);
            }
        }
        self
    }

    /// Ignores proxy environment variables.
    pub fn no_proxy(mut self) -> Self {
        self.network.set_proxy(ProxySetting::None);
        self
    }

    /// Trusts the certificates of a PEM document as roots, besides the usual ones, for HTTPS
    /// and for AMQP: an emulator's CA, or a TLS-inspecting proxy's. May be called several
    /// times. Over HTTPS it applies only to the HTTP client the builder makes (not to one given
    /// with [`Self::http_client`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use iothub_registry::{ConnectionString, Credential, RegistryManager};
    ///
    /// let emulator = iothub_emulator::Emulator::builder().start().await?;
    /// let cs: ConnectionString = emulator.connection_string().parse()?;
    /// let registry = RegistryManager::builder(Credential::from_connection_string(&cs))
    ///     .add_root_certificate_pem(emulator.ca_certificate_pem().unwrap_or_default())
    ///     .amqp_port(emulator.amqp_addr().map_or(5671, |addr| addr.port()))
    ///     .build()?;
    /// # Ok(()) }
    /// ```
    pub fn add_root_certificate_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        if let Err(error) = self.network.add_root_certificates_pem(pem) {
            self.network_error.get_or_insert(error);
        }
        self
    }

    /// How cloud-to-device messages travel: AMQP over TLS on port 5671 (the default) or AMQP
    /// over WebSockets on port 443, for networks that block 5671. With WebSockets, the proxy
    /// applies to AMQP too (the one set with [`Self::proxy`], else the environment's, as for
    /// HTTPS).
    #[cfg(feature = "amqp")]
    pub fn amqp_transport(mut self, transport: Transport) -> Self {
        self.amqp_transport = transport;
        self
    }

    /// The port to dial for AMQP instead of the transport's default (an emulator's, a test
    /// server's).
    #[cfg(feature = "amqp")]
    pub fn amqp_port(mut self, port: u16) -> Self {
        self.amqp_port = Some(port);
        self
    }

    /// Uses this AMQP client for cloud-to-device messages as it is, instead of one the builder
    /// makes from the credential and the settings above (for its keep-alive or send timeout).
    #[cfg(feature = "amqp")]
    pub fn c2d_client(mut self, client: ServiceClient) -> Self {
        self.c2d_client = Some(client);
        self
    }

    /// Checks the settings and builds the manager. Sends nothing.
    pub fn build(self) -> Result<RegistryManager> {
        if let Some(error) = self.network_error {
            return Err(network_error(error));
        }
        let credential = match self.scope {
            Some(scope) => self.credential.with_scope(scope),
            None => self.credential,
        };
        // iothub-rest-gen's builder makes the HTTP client (connect timeout, user agent, roots,
        // proxy) unless one is given.
        let endpoint = self
            .endpoint
            .unwrap_or_else(|| format!("https://{}", credential.host()));
        let mut rest = Client::builder(endpoint, credential.clone())
            .connect_timeout(self.connect_timeout)
            .network_options(self.network.clone())
            .allow_http_on_loopback(self.allow_http)
            .max_response_body(self.max_response_body)
            .max_error_body(self.max_error_body);
        if let Some(suffix) = self.user_agent_suffix {
            rest = rest.user_agent_suffix(suffix);
        }
        if let Some(client) = self.http_client {
            rest = rest.http_client(client);
        }
        if let Some(version) = self.api_version {
            rest = rest.api_version(version);
        }
        let rest = rest.build().map_err(build_error)?;
        #[cfg(feature = "amqp")]
        let c2d = match self.c2d_client {
            Some(client) => client,
            None => {
                // The same roots, and the same proxy over WebSockets (HTTPS to the proxy, as
                // REST); AMQP on 5671 connects directly.
                let mut network = self.network;
                if self.amqp_transport != Transport::WebSocket {
                    network.set_proxy(ProxySetting::None);
                }
                let mut amqp = ServiceClient::builder(credential.clone())
                    .transport(self.amqp_transport)
                    .send_timeout(self.timeout)
                    .network_options(network);
                if let Some(port) = self.amqp_port {
                    amqp = amqp.port(port);
                }
                amqp.build().map_err(Error::from_amqp)?
            }
        };
        Ok(RegistryManager {
            rest,
            #[cfg(feature = "amqp")]
            c2d,
            credential,
            retry: self.retry,
            timeout: self.timeout,
            max_response_body: self.max_response_body,
            max_error_body: self.max_error_body,
        })
    }
}

/// A refused root certificate PEM or proxy URL, as [`Error::Configuration`].
fn network_error(error: NetworkError) -> Error {
    let reason = match &error {
        NetworkError::NoCertificate => "a root certificate PEM holds no certificate",
        NetworkError::InvalidProxyUrl(_) => "invalid proxy URL",
        _ => "invalid root certificate PEM",
    };
    Error::configuration(reason, error)
}

/// Why the REST client could not be built, as [`Error::Configuration`].
fn build_error(error: BuildError) -> Error {
    let reason = match &error {
        BuildError::Http(_) => "cannot build the HTTP client",
        BuildError::InvalidUserAgent(_) => "invalid user agent suffix",
        _ => "invalid settings",
    };
    Error::configuration(reason, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> RegistryManagerBuilder {
        let cs: ConnectionString = "HostName=hub.azure-devices.net;SharedAccessKeyName=service;\
                                    SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
            .parse()
            .unwrap();
        RegistryManager::builder(Credential::from_connection_string(&cs))
    }

    #[test]
    fn amqp_takes_only_an_explicit_proxy_and_only_over_websockets() {
        let amqp = |builder: RegistryManagerBuilder| format!("{:?}", builder.build().unwrap().c2d);
        let proxied = |transport| {
            amqp(
                builder()
                    .amqp_transport(transport)
                    .proxy("proxy.example:8080"),
            )
        };
        assert!(proxied(Transport::WebSocket).contains("proxy.example"));
        assert!(!proxied(Transport::Amqp).contains("proxy.example"));
        assert!(amqp(builder().amqp_transport(Transport::WebSocket)).contains("proxy: None"));
    }

    #[test]
    fn refused_network_settings_are_configuration_errors() {
        let reason = |builder: RegistryManagerBuilder| match builder.build() {
            Err(Error::Configuration {
                reason,
                source: Some(source),
            }) => {
                assert!(source.is::<NetworkError>(), "{source:?}");
                reason
            }
            other => panic!("expected Configuration, got {other:?}"),
        };
        assert_eq!(
            reason(builder().add_root_certificate_pem("no certificate")),
            "a root certificate PEM holds no certificate"
        );
        assert_eq!(
            reason(builder().add_root_certificate_pem("-----BEGIN CERTIFICATE-----\n!!!\n")),
            "invalid root certificate PEM"
        );
        assert_eq!(reason(builder().proxy("not a url")), "invalid proxy URL");
        // The first refusal is the one reported, even when a later setting replaces it.
        assert_eq!(
            reason(builder().proxy("not a url").no_proxy()),
            "invalid proxy URL"
        );
    }

    #[test]
    fn the_builder_shows_no_proxy_password() {
        let shown = format!(
            "{:?}",
            builder().proxy("http://user:hunter2@proxy.example:8080")
        );
        assert!(shown.contains("proxy.example:8080"), "{shown}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("AAECAw"),
            "{shown}"
        );
    }
}
