//! [`Credential`]: the one authentication type the HTTP and AMQP crates accept.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use azure_core::credentials::TokenCredential;
use azure_core::time::OffsetDateTime;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use tokio::sync::Mutex;

use crate::clock::{Clock, SystemClock};
use crate::connection_string::{ConnectionString, PolicySecret, is_valid_key_name};
use crate::error::{Error, Result};
use crate::host::HostName;
use crate::key::SharedAccessKey;
use crate::sas::{SasToken, unix_to_system_time};
use crate::secret::Secret;

/// The Azure AD scope for IoT Hub in the public cloud, as used by the Python reference SDK.
pub const DEFAULT_SCOPE: &str = "https://iothubs.azure.net/.default";

/// Lifetime of SAS tokens minted from a shared access key unless configured otherwise; the
/// Python reference SDK uses the same value.
pub const DEFAULT_SAS_TTL: Duration = Duration::from_secs(3600);

// An Azure AD token is refreshed this long before it expires (or halfway through its life, if it
// lives shorter than twice this), like azure_core's own bearer-token policy.
const AAD_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// How to authenticate to one IoT Hub, over HTTP and over AMQP (CBS).
///
/// `Clone` is cheap and clones share their token caches; the type is `Send + Sync`. `Debug`
/// shows the source and host, never a key or token.
///
/// Three sources:
///
/// - **Shared access key** ([`from_connection_string`](Self::from_connection_string),
///   [`from_shared_access_key`](Self::from_shared_access_key)): SAS tokens are minted with a
///   lifetime of [`DEFAULT_SAS_TTL`] (see [`with_sas_ttl`](Self::with_sas_ttl)), cached, and
///   renewed once less than 10 % of the lifetime remains (6 minutes by default). HTTP and AMQP
///   tokens are cached separately, because their `sr` differs.
/// - **Fixed SAS token** ([`from_sas_token`](Self::from_sas_token), or a connection string with
///   `SharedAccessSignature`): used as is until its `se`; after that every call fails with
///   [`Error::SasTokenExpired`].
/// - **Azure AD** ([`from_token_credential`](Self::from_token_credential)): any
///   `azure_core::credentials::TokenCredential`, such as those in `azure_identity`. The token for
///   [`DEFAULT_SCOPE`] (see [`with_scope`](Self::with_scope)) is cached until 5 minutes before it
///   expires. Concurrent callers share one refresh without waiting on a lock: each awaits the
///   same `get_token` call, and one that stops waiting (its deadline passed) leaves the call
///   running for the next caller. A failed refresh is not cached.
///
/// ```
/// use iothub_auth::{CbsTokenType, ConnectionString, Credential};
///
/// # async fn run() -> iothub_auth::Result<()> {
/// let cs: ConnectionString = "HostName=contoso.azure-devices.net;SharedAccessKeyName=service;\
///                             SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
///     .parse()?;
/// let credential = Credential::from_connection_string(&cs);
///
/// let header = credential.http_authorization().await?;
/// assert!(header.expose_secret().starts_with("SharedAccessSignature sr=contoso.azure-devices.net&sig="));
///
/// let cbs = credential.cbs_token().await?;
/// assert_eq!(cbs.token_type, CbsTokenType::SharedAccessSignature);
/// assert_eq!(cbs.audience, "https://contoso.azure-devices.net");
/// # Ok(())
/// # }
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run()).unwrap();
/// ```
#[derive(Clone)]
pub struct Credential {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    sas_http: Mutex<Option<Cached>>,
    sas_amqp: Mutex<Option<Cached>>,
    /// Never held across an await: the refresh in flight is a shared future, not a lock.
    bearer: std::sync::Mutex<Bearer>,
}

/// The Azure AD token cache: the token, and the refresh in flight, if any.
#[derive(Default)]
struct Bearer {
    cached: Option<Cached>,
    refresh: Option<Refresh>,
}

/// One `get_token` call, awaited by every caller that needs a token meanwhile. A caller that
/// gives up (its deadline passed) drops only its handle: the next caller resumes the same call.
type Refresh = Shared<BoxFuture<'static, std::result::Result<Cached, Arc<azure_core::Error>>>>;

// Everything needed to rebuild a credential with one setting changed (caches start empty).
#[derive(Clone)]
struct Config {
    host: HostName,
    clock: Arc<dyn Clock>,
    source: Source,
}

#[derive(Clone)]
enum Source {
    SharedKey(SharedKey),
    Fixed(SasToken),
    Aad {
        credential: Arc<dyn TokenCredential>,
        scope: String,
    },
}

#[derive(Clone)]
struct SharedKey {
    key_name: String,
    key: SharedAccessKey,
    ttl_secs: u64,
}

#[derive(Clone)]
struct Cached {
    token: Secret,
    expires_at: SystemTime,
    refresh_at: SystemTime,
}

/// A token ready for an AMQP CBS `put-token` request.
///
/// The fields are what the Python reference SDK sends: `token` is the message body,
/// `token_type` the `type` application property and `audience` the `name` application property.
#[derive(Clone, Debug)]
pub struct CbsToken {
    /// The body of the put-token message: a SAS token whose `sr` is the raw host, or
    /// `Bearer <jwt>` for Azure AD.
    pub token: Secret,
    /// The `type` application property.
    pub token_type: CbsTokenType,
    /// The `name` application property: `https://{HostName}` (port included) for SAS, the scope
    /// (`https://iothubs.azure.net/.default`) for Azure AD.
    pub audience: String,
    /// When the token stops being valid; put a new one before then.
    pub expires_at: SystemTime,
}

/// The kind of token in a [`CbsToken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CbsTokenType {
    /// A SAS token; sent as `servicebus.windows.net:sastoken`.
    SharedAccessSignature,
    /// An Azure AD bearer token; sent as `bearer`.
    Bearer,
}

impl CbsTokenType {
    /// The value of the CBS `type` application property.
    pub fn as_str(self) -> &'static str {
        match self {
            CbsTokenType::SharedAccessSignature => "servicebus.windows.net:sastoken",
            CbsTokenType::Bearer => "bearer",
        }
    }
}

impl fmt::Display for CbsTokenType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Credential {
    /// Uses the key or the fixed token in a service connection string.
    pub fn from_connection_string(connection_string: &ConnectionString) -> Self {
        let source = match connection_string.secret() {
            PolicySecret::Key { key_name, key } => Source::SharedKey(SharedKey {
                key_name: key_name.clone(),
                key: key.clone(),
                ttl_secs: DEFAULT_SAS_TTL.as_secs(),
            }),
            PolicySecret::Signature { token, .. } => Source::Fixed(token.clone()),
        };
        Self::from_config(Config {
            host: connection_string.host_name().clone(),
            clock: Arc::new(SystemClock),
            source,
        })
    }

    /// Uses a shared access policy's key directly. Fails if `key_name` is empty or contains
    /// whitespace, control characters or `&`, which would corrupt the token.
    pub fn from_shared_access_key(
        host: HostName,
        key_name: impl Into<String>,
        key: SharedAccessKey,
    ) -> Result<Self> {
        let key_name = key_name.into();
        if !is_valid_key_name(&key_name) {
            return Err(Error::InvalidKeyName);
        }
        Ok(Self::from_config(Config {
            host,
            clock: Arc::new(SystemClock),
            source: Source::SharedKey(SharedKey {
                key_name,
                key,
                ttl_secs: DEFAULT_SAS_TTL.as_secs(),
            }),
        }))
    }

    /// Uses a SAS token made elsewhere, for both HTTP and AMQP, until it expires.
    pub fn from_sas_token(host: HostName, token: SasToken) -> Self {
        Self::from_config(Config {
            host,
            clock: Arc::new(SystemClock),
            source: Source::Fixed(token),
        })
    }

    /// Uses Azure AD through any [`TokenCredential`] (every `azure_identity` credential is one).
    /// The scope is [`DEFAULT_SCOPE`]; see [`with_scope`](Self::with_scope) for other clouds.
    pub fn from_token_credential(host: HostName, credential: Arc<dyn TokenCredential>) -> Self {
        Self::from_config(Config {
            host,
            clock: Arc::new(SystemClock),
            source: Source::Aad {
                credential,
                scope: DEFAULT_SCOPE.to_owned(),
            },
        })
    }

    /// Sets the lifetime of SAS tokens minted from a shared access key (whole seconds; at least
    /// one). Tokens are renewed once less than a tenth of it remains. No effect on other sources.
    ///
    /// Returns a new credential with empty caches; clones of `self` keep the old settings.
    pub fn with_sas_ttl(self, ttl: Duration) -> Result<Self> {
        let secs = ttl.as_secs();
        if secs == 0 {
            return Err(Error::InvalidTokenLifetime);
        }
        Ok(self.reconfigure(|config| {
            if let Source::SharedKey(shared) = &mut config.source {
                shared.ttl_secs = secs;
            }
        }))
    }

    /// Sets the Azure AD scope, e.g. `https://iothubs.azure.us/.default` for another cloud.
    /// No effect on other sources.
    ///
    /// Returns a new credential with empty caches; clones of `self` keep the old settings.
    pub fn with_scope(self, scope: impl Into<String>) -> Self {
        let scope = scope.into();
        self.reconfigure(|config| {
            if let Source::Aad { scope: current, .. } = &mut config.source {
                *current = scope;
            }
        })
    }

    /// Replaces the clock used to compute and check expiry (tests use
    /// [`ManualClock`](crate::ManualClock)).
    ///
    /// Returns a new credential with empty caches; clones of `self` keep the old settings.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        self.reconfigure(|config| config.clock = clock)
    }

    /// The hub's host name, with any port.
    pub fn host(&self) -> &HostName {
        &self.inner.config.host
    }

    /// The expiry of a fixed SAS token; `None` for the other sources, which renew their tokens.
    pub fn sas_token_expires_at(&self) -> Option<SystemTime> {
        match &self.inner.config.source {
            Source::Fixed(token) => Some(token.expires_at()),
            _ => None,
        }
    }

    /// The full value of the HTTP `Authorization` header: `SharedAccessSignature sr=…` (with
    /// `sr` URL-encoded) or `Bearer <jwt>`.
    pub async fn http_authorization(&self) -> Result<Secret> {
        let config = &self.inner.config;
        match &config.source {
            Source::SharedKey(shared) => {
                let cached = self
                    .sas(shared, &self.inner.sas_http, SasToken::for_http)
                    .await?;
                Ok(cached.token)
            }
            Source::Fixed(token) => {
                self.check_not_expired(token)?;
                Ok(token.as_secret().clone())
            }
            Source::Aad { credential, scope } => Ok(self.bearer(credential, scope).await?.token),
        }
    }

    /// A token for an AMQP CBS `put-token`, as the Python reference SDK sends it.
    pub async fn cbs_token(&self) -> Result<CbsToken> {
        let config = &self.inner.config;
        let sas_audience = || format!("https://{}", config.host);
        match &config.source {
            Source::SharedKey(shared) => {
                let cached = self
                    .sas(shared, &self.inner.sas_amqp, SasToken::for_amqp)
                    .await?;
                Ok(CbsToken {
                    token: cached.token,
                    token_type: CbsTokenType::SharedAccessSignature,
                    audience: sas_audience(),
                    expires_at: cached.expires_at,
                })
            }
            Source::Fixed(token) => {
                self.check_not_expired(token)?;
                Ok(CbsToken {
                    token: token.as_secret().clone(),
                    token_type: CbsTokenType::SharedAccessSignature,
                    audience: sas_audience(),
                    expires_at: token.expires_at(),
                })
            }
            Source::Aad { credential, scope } => {
                let cached = self.bearer(credential, scope).await?;
                Ok(CbsToken {
                    token: cached.token,
                    token_type: CbsTokenType::Bearer,
                    audience: scope.clone(),
                    expires_at: cached.expires_at,
                })
            }
        }
    }

    fn from_config(config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                sas_http: Mutex::new(None),
                sas_amqp: Mutex::new(None),
                bearer: std::sync::Mutex::default(),
            }),
        }
    }

    fn reconfigure(self, change: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.inner.config.clone();
        change(&mut config);
        Self::from_config(config)
    }

    fn now_unix(&self) -> Result<u64> {
        self.inner
            .config
            .clock
            .now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .map_err(|_| Error::ClockBeforeUnixEpoch)
    }

    fn check_not_expired(&self, token: &SasToken) -> Result<()> {
        let now = self.now_unix()?;
        let expired_at = token.expiry_unix();
        if now >= expired_at {
            return Err(Error::SasTokenExpired {
                expired_at,
                ago_secs: now - expired_at,
            });
        }
        Ok(())
    }

    async fn sas(
        &self,
        shared: &SharedKey,
        slot: &Mutex<Option<Cached>>,
        build: fn(&HostName, &str, &SharedAccessKey, u64) -> SasToken,
    ) -> Result<Cached> {
        let config = &self.inner.config;
        let SharedKey {
            key_name,
            key,
            ttl_secs,
        } = shared;
        let mut cache = slot.lock().await;
        let now = config.clock.now();
        if let Some(cached) = cache.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.clone());
        }
        let expiry = self.now_unix()?.saturating_add(*ttl_secs);
        let token = build(&config.host, key_name, key, expiry);
        let cached = Cached {
            token: token.into_secret(),
            expires_at: unix_to_system_time(expiry),
            refresh_at: unix_to_system_time(expiry - ttl_secs / 10),
        };
        *cache = Some(cached.clone());
        Ok(cached)
    }

    async fn bearer(&self, credential: &Arc<dyn TokenCredential>, scope: &str) -> Result<Cached> {
        let clock = &self.inner.config.clock;
        let refresh = {
            // A poisoned lock only means a panic elsewhere while it was held; the state is
            // still consistent (every write is a single assignment).
            let mut state = self.inner.bearer.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(cached) = state.cached.as_ref().filter(|c| clock.now() < c.refresh_at) {
                return Ok(cached.clone());
            }
            state
                .refresh
                .get_or_insert_with(|| refresh(credential.clone(), scope.to_owned(), clock.clone()))
                .clone()
        };
        let outcome = refresh.clone().await;
        let mut state = self.inner.bearer.lock().unwrap_or_else(|e| e.into_inner());
        // The first caller to see this refresh end files its outcome; a failure is not cached,
        // so the next call asks again.
        if state.refresh.as_ref().is_some_and(|r| r.ptr_eq(&refresh)) {
            state.refresh = None;
            if let Ok(cached) = &outcome {
                state.cached = Some(cached.clone());
            }
        }
        outcome.map_err(|source| Error::TokenCredential {
            scope: scope.to_owned(),
            source: Box::new(source),
        })
    }
}

/// Asks `credential` for a token for `scope`; refreshed [`AAD_REFRESH_MARGIN`] before it
/// expires, or halfway through a shorter life.
fn refresh(credential: Arc<dyn TokenCredential>, scope: String, clock: Arc<dyn Clock>) -> Refresh {
    async move {
        let access = credential
            .get_token(&[scope.as_str()], None)
            .await
            .map_err(Arc::new)?;
        let expires_at = offset_to_system_time(access.expires_on);
        let lifetime = expires_at
            .duration_since(clock.now())
            .unwrap_or(Duration::ZERO);
        let margin = AAD_REFRESH_MARGIN.min(lifetime / 2);
        Ok(Cached {
            token: Secret::new(format!("Bearer {}", access.token.secret())),
            expires_at,
            refresh_at: expires_at.checked_sub(margin).unwrap_or(expires_at),
        })
    }
    .boxed()
    .shared()
}

fn offset_to_system_time(t: OffsetDateTime) -> SystemTime {
    u64::try_from(t.unix_timestamp()).map_or(UNIX_EPOCH, unix_to_system_time)
}

impl From<ConnectionString> for Credential {
    fn from(connection_string: ConnectionString) -> Self {
        Self::from_connection_string(&connection_string)
    }
}

impl From<&ConnectionString> for Credential {
    fn from(connection_string: &ConnectionString) -> Self {
        Self::from_connection_string(connection_string)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &self.inner.config;
        let mut d = f.debug_struct("Credential");
        d.field("host", &config.host);
        match &config.source {
            Source::SharedKey(shared) => d
                .field("source", &"shared access key")
                .field("key_name", &shared.key_name)
                .field("sas_ttl", &Duration::from_secs(shared.ttl_secs)),
            Source::Fixed(token) => d
                .field("source", &"fixed SAS token")
                .field("expiry", &token.expiry_unix()),
            Source::Aad { scope, .. } => {
                d.field("source", &"token credential").field("scope", scope)
            }
        };
        d.finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::error::SasTokenError;
    use azure_core::credentials::{AccessToken, TokenRequestOptions};
    use azure_core::error::ErrorKind;
    use std::sync::Mutex as StdMutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const T0: u64 = 1_700_000_000;
    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwYWI=";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn host(s: &str) -> HostName {
        s.parse().unwrap()
    }

    fn key() -> SharedAccessKey {
        KEY.parse().unwrap()
    }

    fn shared_key(clock: &Arc<ManualClock>) -> Credential {
        Credential::from_shared_access_key(host("localhost:8443"), "service", key())
            .unwrap()
            .with_clock(clock.clone())
    }

    fn sig_of(token: &str) -> String {
        token
            .split('&')
            .find_map(|f| f.split_once("sig=").map(|(_, v)| v.to_owned()))
            .unwrap()
    }

    /// A fake Azure AD credential: counts calls, records scopes, returns `jwt-{n}` living
    /// `lifetime` from its clock's now, after an optional delay.
    #[derive(Debug)]
    struct FakeAad {
        clock: Arc<ManualClock>,
        lifetime: Duration,
        delay: Duration,
        fail: bool,
        calls: AtomicUsize,
        scopes: StdMutex<Vec<String>>,
    }

    impl FakeAad {
        fn new(clock: &Arc<ManualClock>, lifetime: Duration) -> Arc<Self> {
            Arc::new(Self {
                clock: clock.clone(),
                lifetime,
                delay: Duration::ZERO,
                fail: false,
                calls: AtomicUsize::new(0),
                scopes: StdMutex::new(Vec::new()),
            })
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    #[async_trait::async_trait]
    impl TokenCredential for FakeAad {
        async fn get_token(
            &self,
            scopes: &[&str],
            _options: Option<TokenRequestOptions<'_>>,
        ) -> azure_core::Result<AccessToken> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.scopes
                .lock()
                .unwrap()
                .extend(scopes.iter().map(|s| s.to_string()));
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if self.fail {
                return Err(azure_core::Error::with_message(
                    ErrorKind::Credential,
                    "no credential configured",
                ));
            }
            let expires = self.clock.now() + self.lifetime;
            let secs = expires.duration_since(UNIX_EPOCH).unwrap().as_secs();
            let expires_on = OffsetDateTime::from_unix_timestamp(secs as i64).unwrap();
            Ok(AccessToken::new(format!("jwt-{n}"), expires_on))
        }
    }

    #[tokio::test]
    async fn sas_token_is_cached_until_a_tenth_of_its_life_remains() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let credential = shared_key(&clock);
        let expected = SasToken::for_http(&host("localhost:8443"), "service", &key(), T0 + 3600);

        let first = credential.http_authorization().await.unwrap();
        assert_eq!(&first, expected.as_secret());

        // 361 s left: still the same token.
        clock.set(at(T0 + 3239));
        assert_eq!(credential.http_authorization().await.unwrap(), first);

        // 360 s (10 % of 3600) left: renewed, with a later expiry.
        clock.set(at(T0 + 3240));
        let second = credential.http_authorization().await.unwrap();
        assert_ne!(second, first);
        let renewed =
            SasToken::for_http(&host("localhost:8443"), "service", &key(), T0 + 3240 + 3600);
        assert_eq!(&second, renewed.as_secret());
        assert!(
            second
                .expose_secret()
                .contains(&format!("se={}", T0 + 6840))
        );

        clock.set(at(T0 + 3300));
        assert_eq!(credential.http_authorization().await.unwrap(), second);
    }

    #[tokio::test]
    async fn http_and_amqp_tokens_are_cached_separately() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let credential = shared_key(&clock);
        let http = credential.http_authorization().await.unwrap();
        clock.advance(Duration::from_secs(100));
        let cbs = credential.cbs_token().await.unwrap();

        assert!(
            http.expose_secret()
                .starts_with("SharedAccessSignature sr=localhost%3A8443&sig=")
        );
        assert!(
            cbs.token
                .expose_secret()
                .starts_with("SharedAccessSignature sr=localhost:8443&sig=")
        );
        let expected = SasToken::for_amqp(&host("localhost:8443"), "service", &key(), T0 + 3700);
        assert_eq!(&cbs.token, expected.as_secret());
        assert_eq!(cbs.token_type, CbsTokenType::SharedAccessSignature);
        assert_eq!(cbs.token_type.as_str(), "servicebus.windows.net:sastoken");
        assert_eq!(cbs.audience, "https://localhost:8443");
        assert_eq!(cbs.expires_at, at(T0 + 3700));

        // Each cache keeps its own token.
        clock.advance(Duration::from_secs(100));
        assert_eq!(credential.http_authorization().await.unwrap(), http);
        assert_eq!(credential.cbs_token().await.unwrap().token, cbs.token);
    }

    #[tokio::test]
    async fn clones_share_the_cache() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let credential = shared_key(&clock);
        let first = credential.http_authorization().await.unwrap();
        let clone = credential.clone();
        clock.advance(Duration::from_secs(60));
        assert_eq!(clone.http_authorization().await.unwrap(), first);
    }

    #[tokio::test]
    async fn sas_ttl_is_configurable() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let credential = shared_key(&clock)
            .with_sas_ttl(Duration::from_millis(600_900))
            .unwrap();
        let cbs = credential.cbs_token().await.unwrap();
        assert_eq!(cbs.expires_at, at(T0 + 600));
        clock.set(at(T0 + 539));
        assert_eq!(credential.cbs_token().await.unwrap().token, cbs.token);
        clock.set(at(T0 + 540));
        assert_eq!(
            credential.cbs_token().await.unwrap().expires_at,
            at(T0 + 1140)
        );

        for bad in [Duration::ZERO, Duration::from_millis(999)] {
            assert!(matches!(
                shared_key(&clock).with_sas_ttl(bad),
                Err(Error::InvalidTokenLifetime)
            ));
        }
    }

    #[tokio::test]
    async fn connection_string_with_key_mints_tokens() {
        let cs: ConnectionString = format!(
            "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"
        )
        .parse()
        .unwrap();
        let clock = Arc::new(ManualClock::new(at(T0)));
        let credential = Credential::from(&cs).with_clock(clock);
        assert_eq!(credential.host().as_str(), "hub.azure-devices.net");
        assert_eq!(credential.sas_token_expires_at(), None);
        let header = credential.http_authorization().await.unwrap();
        let expected = SasToken::for_http(cs.host_name(), "iothubowner", &key(), T0 + 3600);
        assert_eq!(&header, expected.as_secret());
    }

    #[test]
    fn invalid_key_name_is_rejected() {
        for name in ["", "a b", "a&b"] {
            assert!(matches!(
                Credential::from_shared_access_key(host("h"), name, key()),
                Err(Error::InvalidKeyName)
            ));
        }
    }

    const FIXED: &str = "SharedAccessSignature sr=hub.azure-devices.net&sig=Rml4ZWRTaWduYXR1cmU%3D&se=1700003600&skn=service";

    #[tokio::test]
    async fn fixed_token_is_used_as_is_until_it_expires() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let credential =
            Credential::from_sas_token(host("hub.azure-devices.net"), FIXED.parse().unwrap())
                .with_clock(clock.clone());
        assert_eq!(credential.sas_token_expires_at(), Some(at(T0 + 3600)));
        assert_eq!(
            credential
                .http_authorization()
                .await
                .unwrap()
                .expose_secret(),
            FIXED
        );
        let cbs = credential.cbs_token().await.unwrap();
        assert_eq!(cbs.token.expose_secret(), FIXED);
        assert_eq!(cbs.token_type, CbsTokenType::SharedAccessSignature);
        assert_eq!(cbs.audience, "https://hub.azure-devices.net");
        assert_eq!(cbs.expires_at, at(T0 + 3600));

        clock.set(at(T0 + 3600 + 42));
        let err = credential.http_authorization().await.unwrap_err();
        assert!(matches!(
            err,
            Error::SasTokenExpired {
                expired_at: 1_700_003_600,
                ago_secs: 42
            }
        ));
        assert_eq!(
            err.to_string(),
            "the shared access signature expired at Unix time 1700003600 (42 s ago); supply a \
             new one, or use a shared access key so tokens can be renewed"
        );
        assert!(!err.to_string().contains("Rml4ZWRTaWduYXR1cmU"));
        assert!(matches!(
            credential.cbs_token().await,
            Err(Error::SasTokenExpired { .. })
        ));
    }

    #[tokio::test]
    async fn connection_string_with_signature_gives_a_fixed_credential() {
        let cs: ConnectionString =
            format!("HostName=hub.azure-devices.net;SharedAccessSignature={FIXED}")
                .parse()
                .unwrap();
        let credential = Credential::from(cs).with_clock(Arc::new(ManualClock::new(at(T0))));
        assert_eq!(credential.sas_token_expires_at(), Some(at(T0 + 3600)));
        assert_eq!(
            credential
                .http_authorization()
                .await
                .unwrap()
                .expose_secret(),
            FIXED
        );
    }

    #[test]
    fn malformed_fixed_token_is_rejected() {
        let err = FIXED
            .replace("&se=", "&expiry=")
            .parse::<SasToken>()
            .unwrap_err();
        assert!(matches!(
            err,
            Error::InvalidSasToken(SasTokenError::MissingField("se"))
        ));
    }

    #[tokio::test]
    async fn aad_token_is_cached_until_five_minutes_before_expiry() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let aad = FakeAad::new(&clock, Duration::from_secs(3600));
        let credential =
            Credential::from_token_credential(host("hub.azure-devices.net"), aad.clone())
                .with_clock(clock.clone());

        assert_eq!(
            credential
                .http_authorization()
                .await
                .unwrap()
                .expose_secret(),
            "Bearer jwt-1"
        );
        clock.set(at(T0 + 3600 - 301));
        assert_eq!(
            credential
                .http_authorization()
                .await
                .unwrap()
                .expose_secret(),
            "Bearer jwt-1"
        );
        let cbs = credential.cbs_token().await.unwrap();
        assert_eq!(cbs.token.expose_secret(), "Bearer jwt-1");
        assert_eq!(cbs.expires_at, at(T0 + 3600));
        assert_eq!(aad.calls(), 1);

        clock.set(at(T0 + 3600 - 300));
        let cbs = credential.cbs_token().await.unwrap();
        assert_eq!(cbs.token.expose_secret(), "Bearer jwt-2");
        assert_eq!(cbs.token_type, CbsTokenType::Bearer);
        assert_eq!(cbs.token_type.as_str(), "bearer");
        assert_eq!(cbs.audience, DEFAULT_SCOPE);
        assert_eq!(cbs.expires_at, at(T0 + 3300 + 3600));
        assert_eq!(aad.calls(), 2);
        assert_eq!(
            *aad.scopes.lock().unwrap(),
            vec![DEFAULT_SCOPE.to_owned(), DEFAULT_SCOPE.to_owned()]
        );
    }

    #[tokio::test]
    async fn short_lived_aad_token_is_refreshed_halfway() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let aad = FakeAad::new(&clock, Duration::from_secs(120));
        let credential =
            Credential::from_token_credential(host("hub.azure-devices.net"), aad.clone())
                .with_clock(clock.clone());
        credential.http_authorization().await.unwrap();
        clock.set(at(T0 + 59));
        credential.http_authorization().await.unwrap();
        assert_eq!(aad.calls(), 1);
        clock.set(at(T0 + 60));
        credential.http_authorization().await.unwrap();
        assert_eq!(aad.calls(), 2);
    }

    #[tokio::test]
    async fn aad_scope_is_configurable() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let aad = FakeAad::new(&clock, Duration::from_secs(3600));
        let scope = "https://iothubs.azure.us/.default";
        let credential =
            Credential::from_token_credential(host("hub.azure-devices.us"), aad.clone())
                .with_scope(scope)
                .with_clock(clock);
        assert_eq!(credential.cbs_token().await.unwrap().audience, scope);
        assert_eq!(*aad.scopes.lock().unwrap(), vec![scope.to_owned()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_one_aad_refresh() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let aad = Arc::new(FakeAad {
            delay: Duration::from_millis(50),
            ..Arc::into_inner(FakeAad::new(&clock, Duration::from_secs(3600))).unwrap()
        });
        let credential =
            Credential::from_token_credential(host("hub.azure-devices.net"), aad.clone())
                .with_clock(clock);
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let credential = credential.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        credential.http_authorization().await.unwrap()
                    } else {
                        credential.cbs_token().await.unwrap().token
                    }
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().expose_secret(), "Bearer jwt-1");
        }
        assert_eq!(aad.calls(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refresh_outlives_a_caller_that_gave_up_and_blocks_nobody() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let aad = Arc::new(FakeAad {
            delay: Duration::from_millis(300),
            ..Arc::into_inner(FakeAad::new(&clock, Duration::from_secs(3600))).unwrap()
        });
        let credential =
            Credential::from_token_credential(host("hub.azure-devices.net"), aad.clone())
                .with_clock(clock);
        // A caller with a short deadline gives up while the refresh is in flight...
        let impatient =
            tokio::time::timeout(Duration::from_millis(50), credential.http_authorization()).await;
        assert!(impatient.is_err(), "the fake answers after 300 ms");
        // ...another one, started meanwhile, is not stuck behind a lock: it can give up too...
        let other = tokio::time::timeout(Duration::from_millis(50), credential.cbs_token()).await;
        assert!(other.is_err());
        // ...and the next patient caller gets the token of that same refresh.
        let token = credential.http_authorization().await.unwrap();
        assert_eq!(token.expose_secret(), "Bearer jwt-1");
        assert_eq!(aad.calls(), 1, "one refresh, shared");
    }

    #[tokio::test]
    async fn aad_failure_carries_the_source_error() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let aad = Arc::new(FakeAad {
            fail: true,
            ..Arc::into_inner(FakeAad::new(&clock, Duration::from_secs(3600))).unwrap()
        });
        let credential =
            Credential::from_token_credential(host("hub.azure-devices.net"), aad.clone())
                .with_clock(clock);
        let err = credential.http_authorization().await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Azure AD credential could not get a token for scope https://iothubs.azure.net/.default"
        );
        let source = std::error::Error::source(&err).unwrap();
        assert!(
            source.to_string().contains("no credential configured"),
            "{source}"
        );
        // Failures are not cached: the next call asks again.
        assert!(credential.cbs_token().await.is_err());
        assert_eq!(aad.calls(), 2);
    }

    #[tokio::test]
    async fn clock_before_1970_is_an_error() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH - Duration::from_secs(1)));
        let credential = shared_key(&clock);
        assert!(matches!(
            credential.http_authorization().await,
            Err(Error::ClockBeforeUnixEpoch)
        ));
        let fixed = Credential::from_sas_token(host("h"), FIXED.parse().unwrap()).with_clock(clock);
        assert!(matches!(
            fixed.cbs_token().await,
            Err(Error::ClockBeforeUnixEpoch)
        ));
    }

    #[tokio::test]
    async fn nothing_secret_is_printed() {
        let clock = Arc::new(ManualClock::new(at(T0)));
        let keyed = shared_key(&clock);
        let header = keyed.http_authorization().await.unwrap();
        let cbs = keyed.cbs_token().await.unwrap();
        let fixed = Credential::from_sas_token(host("h"), FIXED.parse().unwrap());
        let aad = Credential::from_token_credential(
            host("h"),
            FakeAad::new(&clock, Duration::from_secs(3600)),
        )
        .with_clock(clock.clone());
        let bearer = aad.cbs_token().await.unwrap();

        let secrets = [
            KEY.to_owned(),
            sig_of(header.expose_secret()),
            sig_of(cbs.token.expose_secret()),
            "Rml4ZWRTaWduYXR1cmU".to_owned(),
            "jwt-1".to_owned(),
        ];
        let printed = [
            format!("{keyed:?}"),
            format!("{fixed:?}"),
            format!("{aad:?}"),
            format!("{header:?} {header}"),
            format!("{cbs:?}"),
            format!("{bearer:?}"),
        ];
        for text in &printed {
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "{text} contains a secret");
            }
        }
        assert!(printed[0].contains("shared access key") && printed[0].contains("localhost:8443"));
        assert!(printed[1].contains("fixed SAS token"));
        assert!(printed[2].contains(DEFAULT_SCOPE));
    }

    #[test]
    fn credential_is_send_sync_and_clone() {
        fn assert_traits<T: Send + Sync + Clone + 'static>() {}
        assert_traits::<Credential>();
        assert_traits::<CbsToken>();
        fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
        assert_error::<Error>();
    }
}
