//! Building an authenticated [`Client`]: endpoint rules, api-version, HTTP settings.

use std::sync::Arc;
use std::time::Duration;

use iothub_auth::network::{NetworkOptions, ProxySetting};
use iothub_auth::{ConnectionString, Credential};
use reqwest::header::HeaderValue;

use crate::Client;
use crate::limits::BodyLimits;

/// The api-version this crate was generated from and sends by default.
pub const API_VERSION: &str = "2021-04-12";

/// Connect timeout of the HTTP client the SDK builds, unless configured otherwise
/// ([`ClientBuilder::connect_timeout`]). There is deliberately no total timeout: a direct
/// method may legitimately take its connect timeout plus 300 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `User-Agent` of every request, before any suffix.
const USER_AGENT: &str = concat!("iothub-rs/", env!("CARGO_PKG_VERSION"));

/// What the generated [`Client`] carries for the request hook: the credential that signs
/// every request, the api-version added to every URL, the `User-Agent` set on every request
/// and the caps on response bodies.
#[derive(Clone, Debug)]
pub struct ClientContext {
    credential: Credential,
    api_version: Arc<str>,
    user_agent: HeaderValue,
    limits: BodyLimits,
}

impl ClientContext {
    /// A context sending [`API_VERSION`], `User-Agent: iothub-rs/<version>`, and capping
    /// response bodies at [`DEFAULT_MAX_RESPONSE_BODY`](crate::DEFAULT_MAX_RESPONSE_BODY) and
    /// error bodies at [`DEFAULT_MAX_ERROR_BODY`](crate::DEFAULT_MAX_ERROR_BODY).
    pub fn new(credential: Credential) -> Self {
        Self {
            credential,
            api_version: API_VERSION.into(),
            user_agent: HeaderValue::from_static(USER_AGENT),
            limits: BodyLimits::default(),
        }
    }

    /// Sends another api-version, for hubs or features that need one.
    pub fn with_api_version(mut self, api_version: impl Into<String>) -> Self {
        self.api_version = api_version.into().into();
        self
    }

    /// The credential that signs requests.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The api-version sent with every request.
    pub fn api_version(&self) -> &str {
        &self.api_version
    }

    /// The `User-Agent` set on every request, whatever the HTTP client's own.
    pub fn user_agent(&self) -> &str {
        self.user_agent.to_str().unwrap_or(USER_AGENT)
    }

    pub(crate) fn user_agent_header(&self) -> &HeaderValue {
        &self.user_agent
    }

    pub(crate) fn limits(&self) -> BodyLimits {
        self.limits
    }
}

/// Why a [`Client`] could not be built. Nothing was sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The connection string was rejected (the message never contains the key).
    #[error(transparent)]
    Auth(#[from] iothub_auth::Error),
    /// The endpoint is not an absolute `https://` URL without query or fragment.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The api-version is empty or contains characters an api-version never has.
    #[error("invalid api-version {0:?}")]
    InvalidApiVersion(String),
    /// The HTTP client could not be built (for example, no TLS roots, a root certificate
    /// that is not a certificate, or a proxy URL the HTTP client does not support).
    #[error("cannot build the HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    /// The user agent suffix makes a `User-Agent` that is not a valid header value.
    #[error("invalid user agent suffix {0:?}")]
    InvalidUserAgent(String),
}

impl Client {
    /// A client for the hub of a service connection string (`HostName=...;
    /// SharedAccessKeyName=...;SharedAccessKey=...`), signing with that policy.
    pub fn from_connection_string(connection_string: &str) -> Result<Self, BuildError> {
        let cs: ConnectionString = connection_string.parse()?;
        let endpoint = format!("https://{}", cs.host_name());
        Self::builder(endpoint, Credential::from_connection_string(&cs)).build()
    }

    /// A builder for a client on `endpoint` (`https://{hub}.azure-devices.net`) that signs
    /// with `credential`.
    pub fn builder(endpoint: impl Into<String>, credential: Credential) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            context: ClientContext::new(credential),
            http_client: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent_suffix: None,
            network: NetworkOptions::default(),
            allow_http: false,
            limits: BodyLimits::default(),
        }
    }
}

/// Configures a [`Client`]; see [`Client::builder`].
///
/// Unless given one with [`http_client`](Self::http_client), it builds the HTTP client: the
/// operating system's trusted roots plus any in the [`NetworkOptions`], their proxy setting, a
/// connect timeout and no total timeout, no redirects followed (the service never redirects;
/// a 3xx is returned as it is), and `User-Agent: iothub-rs/<version>[ <suffix>]`. It is the
/// one place the SDK builds one. Whichever HTTP client is used, every request carries that
/// `User-Agent`, and response bodies are read under the caps set here.
#[derive(Debug)]
#[must_use = "call .build() to get a client"]
pub struct ClientBuilder {
    endpoint: String,
    context: ClientContext,
    http_client: Option<reqwest::Client>,
    connect_timeout: Duration,
    user_agent_suffix: Option<String>,
    network: NetworkOptions,
    allow_http: bool,
    limits: BodyLimits,
}

impl ClientBuilder {
    /// Sends another api-version instead of [`API_VERSION`].
    pub fn api_version(mut self, api_version: impl Into<String>) -> Self {
        self.context = self.context.with_api_version(api_version);
        self
    }

    /// Uses this HTTP client (proxy, TLS roots and timeouts are then yours, and the settings
    /// below that shape the HTTP client are ignored; the `User-Agent` and the body caps still
    /// apply, per request). Avoid a total timeout shorter than the direct methods you invoke.
    ///
    /// Build it with `redirect(reqwest::redirect::Policy::none())`: reqwest follows up to 10
    /// redirects by default, to any origin. The service never redirects, so a redirect comes
    /// from something else on the way, and following it sends the request (without its
    /// `Authorization`) where the SDK did not mean to and accepts whatever answers there.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Connect timeout of the HTTP client this builder makes (default
    /// [`DEFAULT_CONNECT_TIMEOUT`], 30 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Appended to the `User-Agent` of every request: `iothub-rs/<version> <suffix>`, with the
    /// HTTP client this builder makes or one given with [`http_client`](Self::http_client).
    pub fn user_agent_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.user_agent_suffix = Some(suffix.into());
        self
    }

    /// The largest body of a success response read (default
    /// [`DEFAULT_MAX_RESPONSE_BODY`](crate::DEFAULT_MAX_RESPONSE_BODY), 128 MiB). A larger one,
    /// or a `Content-Length` announcing one, fails the request with
    /// [`ResponseTooLarge`](crate::ResponseTooLarge) in its error's sources, and reading stops
    /// there.
    pub fn max_response_body(mut self, bytes: u64) -> Self {
        self.limits.success = bytes;
        self
    }

    /// The largest body of an error response read (default
    /// [`DEFAULT_MAX_ERROR_BODY`](crate::DEFAULT_MAX_ERROR_BODY), 1 MiB); see
    /// [`max_response_body`](Self::max_response_body).
    pub fn max_error_body(mut self, bytes: u64) -> Self {
        self.limits.error = bytes;
        self
    }

    /// Extra root certificates, trusted besides the operating system's, and the proxy of the
    /// HTTP client this builder makes (default: none, and the proxy the environment
    /// variables name).
    pub fn network_options(mut self, network: NetworkOptions) -> Self {
        self.network = network;
        self
    }

    /// Accepts `http://` endpoints on loopback hosts (a local emulator or mock). Plain HTTP
    /// to any other host is refused even so: it would expose the request signatures.
    pub fn allow_http_on_loopback(mut self, allow: bool) -> Self {
        self.allow_http = allow;
        self
    }

    /// Checks the settings and builds the client. Sends nothing.
    pub fn build(self) -> Result<Client, BuildError> {
        let endpoint = check_endpoint(&self.endpoint, self.allow_http)?;
        let version = self.context.api_version();
        if version.is_empty()
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(BuildError::InvalidApiVersion(version.to_owned()));
        }
        let user_agent = match &self.user_agent_suffix {
            Some(suffix) => HeaderValue::try_from(format!("{USER_AGENT} {suffix}"))
                .map_err(|_| BuildError::InvalidUserAgent(suffix.clone()))?,
            None => HeaderValue::from_static(USER_AGENT),
        };
        let http = match self.http_client {
            Some(client) => client,
            None => http_client(self.connect_timeout, user_agent.clone(), &self.network)
                .map_err(BuildError::Http)?,
        };
        let context = ClientContext {
            user_agent,
            limits: self.limits,
            ..self.context
        };
        Ok(Client::new_with_client(&endpoint, http, context))
    }
}

/// The HTTP client [`ClientBuilder`] makes.
fn http_client(
    connect_timeout: Duration,
    user_agent: HeaderValue,
    network: &NetworkOptions,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect_timeout)
        .user_agent(user_agent)
        // The service never redirects; a 3xx is reported, not followed.
        .redirect(reqwest::redirect::Policy::none());
    for root in network.root_certificates() {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(root)?);
    }
    builder = match network.proxy() {
        // reqwest's default (the `system-proxy` feature): the environment variables.
        ProxySetting::Environment => builder,
        ProxySetting::None => builder.no_proxy(),
        ProxySetting::Url(url) => builder.proxy(reqwest::Proxy::all(url.as_str())?),
    };
    builder.build()
}

/// The endpoint without a trailing `/` (generated paths start with one).
fn check_endpoint(endpoint: &str, allow_http: bool) -> Result<String, BuildError> {
    let invalid = |reason| BuildError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let url = url::Url::parse(endpoint).map_err(|_| invalid("not an absolute URL"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it has a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it contains user info"));
    }
    match url.scheme() {
        "https" => {}
        "http" if !allow_http => {
            return Err(invalid(
                "plain http is refused unless allowed (for loopback only)",
            ));
        }
        "http" if !is_loopback(&url) => {
            return Err(invalid("plain http is allowed for loopback hosts only"));
        }
        "http" => {}
        _ => return Err(invalid("the scheme must be https")),
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential() -> Credential {
        let cs: ConnectionString = "HostName=hub.azure-devices.net;SharedAccessKeyName=service;\
                                    SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
            .parse()
            .unwrap();
        Credential::from_connection_string(&cs)
    }

    #[tokio::test]
    async fn the_client_made_here_names_the_sdk_and_uses_an_explicit_proxy() {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

        // Nothing listens on the target; only the proxy can answer.
        let proxy = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(204))
            .mount(&proxy)
            .await;
        let mut network = NetworkOptions::new();
        network.set_proxy(ProxySetting::url(&proxy.uri()).unwrap());
        for (user_agent, expected) in [
            (HeaderValue::from_static(USER_AGENT), USER_AGENT.to_owned()),
            (
                HeaderValue::from_static(concat!(
                    "iothub-rs/",
                    env!("CARGO_PKG_VERSION"),
                    " fleet-tool/2.1"
                )),
                format!("{USER_AGENT} fleet-tool/2.1"),
            ),
        ] {
            let http = http_client(DEFAULT_CONNECT_TIMEOUT, user_agent, &network).unwrap();
            let response = http.get("http://127.0.0.1:9/ping").send().await.unwrap();
            assert_eq!(response.status(), 204);
            let requests = proxy.received_requests().await.unwrap();
            let request = requests.last().unwrap();
            assert_eq!(request.url.path(), "/ping");
            assert_eq!(request.headers["user-agent"], expected.as_str());
        }
        assert_eq!(USER_AGENT, concat!("iothub-rs/", env!("CARGO_PKG_VERSION")));
    }

    #[test]
    fn network_options_reach_the_http_client() {
        // PEM that holds a "certificate" whose DER is not one: only the HTTP client sees that.
        let mut network = NetworkOptions::new();
        network
            .add_root_certificates_pem(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            )
            .unwrap();
        let error = Client::builder("https://hub.azure-devices.net", credential())
            .network_options(network.clone())
            .build()
            .unwrap_err();
        assert!(matches!(error, BuildError::Http(_)), "{error:?}");
        // A client of one's own ignores them.
        Client::builder("https://hub.azure-devices.net", credential())
            .network_options(network)
            .http_client(reqwest::Client::new())
            .build()
            .unwrap();

        let mut network = NetworkOptions::new();
        network.set_proxy(ProxySetting::None);
        Client::builder("https://hub.azure-devices.net", credential())
            .network_options(network)
            .connect_timeout(Duration::from_secs(5))
            .user_agent_suffix("tool/1")
            .build()
            .unwrap();
    }

    #[test]
    fn a_user_agent_suffix_that_is_no_header_value_fails_the_build() {
        for own in [None, Some(reqwest::Client::new())] {
            let mut builder = Client::builder("https://hub.azure-devices.net", credential())
                .user_agent_suffix("bad\nagent");
            if let Some(own) = own {
                builder = builder.http_client(own);
            }
            let error = builder.build().unwrap_err();
            assert!(
                matches!(&error, BuildError::InvalidUserAgent(s) if s == "bad\nagent"),
                "{error:?}"
            );
        }
    }

    #[tokio::test]
    async fn the_client_made_here_follows_no_redirect() {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::any};

        let elsewhere = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200))
            .mount(&elsewhere)
            .await;
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(307).insert_header("location", elsewhere.uri()))
            .mount(&server)
            .await;
        let http = http_client(
            DEFAULT_CONNECT_TIMEOUT,
            HeaderValue::from_static(USER_AGENT),
            &NetworkOptions::new(),
        )
        .unwrap();
        let response = http.get(server.uri()).send().await.unwrap();
        assert_eq!(response.status(), 307);
        assert!(elsewhere.received_requests().await.unwrap().is_empty());
    }

    #[test]
    fn endpoints() {
        let ok = |e: &str, http| check_endpoint(e, http).unwrap();
        assert_eq!(
            ok("https://hub.azure-devices.net/", false),
            "https://hub.azure-devices.net"
        );
        assert_eq!(
            ok("https://localhost:8443", false),
            "https://localhost:8443"
        );
        assert_eq!(ok("http://127.0.0.1:9000", true), "http://127.0.0.1:9000");
        assert_eq!(ok("http://[::1]:9000", true), "http://[::1]:9000");
        assert_eq!(ok("http://localhost:9000", true), "http://localhost:9000");

        for (endpoint, http, reason) in [
            ("hub.azure-devices.net", false, "not an absolute URL"),
            ("http://127.0.0.1:9000", false, "unless allowed"),
            ("http://hub.azure-devices.net", true, "loopback hosts only"),
            ("http://10.0.0.1", true, "loopback hosts only"),
            ("ftp://hub", false, "must be https"),
            ("https://hub/?x=1", false, "query or fragment"),
            ("https://user:pw@hub", false, "user info"),
        ] {
            let err = check_endpoint(endpoint, http).unwrap_err().to_string();
            assert!(err.contains(reason), "{endpoint}: {err}");
        }
    }
}
