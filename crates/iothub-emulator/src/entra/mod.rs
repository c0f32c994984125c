//! A Microsoft Entra ID look-alike for the emulator's own hub: one tenant whose app
//! registrations (client id, secret, role assignments) come from the configuration, an
//! OpenID Connect discovery document, a token endpoint for the client-credentials grant, and
//! the check of the tokens it issued when they come back as bearer tokens on REST and on
//! AMQP `$cbs`.
//!
//! - `roles.rs`: IoT Hub's data actions and built-in roles ([`IotHubRole`]).
//! - `jwt.rs`: the RS256 signing key and token verification.
//! - `form.rs`: form bodies and their redaction.
//! - `endpoint.rs`: the HTTP endpoints.
//!
//! The tokens are v2.0 access tokens for the resource `https://iothubs.azure.net`. Role
//! assignments are looked up when a token is used, not written into it, as Azure RBAC does.

mod endpoint;
mod form;
mod jwt;
mod roles;

use std::fmt;
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::Error;
use crate::auth::AuthError;
pub(crate) use endpoint::{is_endpoint, serve};
use jwt::SigningKey;
pub(crate) use jwt::looks_like_jwt;
pub(crate) use roles::{Action, Actions};
pub use roles::{IotHubRole, UnknownRole};

/// The tenant the emulator answers for unless configured otherwise.
pub const DEFAULT_TENANT_ID: &str = "00000000-0000-0000-0000-000000000000";

/// Lifetime of the access tokens issued unless configured otherwise, in seconds (what Entra
/// commonly answers for the client-credentials grant).
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3599;

/// The resource (audience) of IoT Hub's service API in Microsoft Entra ID.
pub const IOT_HUB_RESOURCE: &str = "https://iothubs.azure.net";

/// Longest configurable token lifetime: one day.
const MAX_TOKEN_LIFETIME_SECS: u64 = 86_400;

/// The key file in the data directory.
const KEY_FILE: &str = "entra-signing-key.der";

/// The Microsoft Entra ID look-alike: its tenant, token lifetime and app registrations.
///
/// As TOML (under `[entra]` of [`Config`](crate::Config)):
///
/// ```toml
/// [entra]
/// tenant_id = "00000000-0000-0000-0000-000000000000"
/// token_lifetime_secs = 3599
///
/// [[entra.clients]]
/// client_id = "11111111-1111-1111-1111-111111111111"
/// client_secret = "…"
/// roles = ["IoT Hub Data Contributor"]
///
/// [[entra.clients]]
/// client_id = "reader"
/// client_secret = "…"
/// roles = ["IoT Hub Data Reader"]
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EntraConfig {
    /// The tenant (directory) id: letters, digits, `.` and `-` (default
    /// [`DEFAULT_TENANT_ID`]).
    pub tenant_id: String,
    /// Lifetime of issued access tokens, 1 to 86,400 seconds (default
    /// [`DEFAULT_TOKEN_LIFETIME_SECS`]).
    pub token_lifetime_secs: u64,
    /// The app registrations that may get tokens, with their role assignments on the hub.
    pub clients: Vec<EntraClient>,
}

impl Default for EntraConfig {
    fn default() -> Self {
        Self {
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            clients: Vec::new(),
        }
    }
}

/// An app registration (service principal) of the tenant: its client id and secret, and
/// the roles assigned to it on the hub. Its `Debug` output never shows the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntraClient {
    /// The application (client) id; compared without regard to ASCII case.
    pub client_id: String,
    /// The client secret.
    pub client_secret: String,
    /// Built-in roles assigned on the hub.
    #[serde(default)]
    pub roles: Vec<IotHubRole>,
    /// Further data actions, as a custom role lists them (`*` wildcards allowed), e.g.
    /// `"Microsoft.Devices/IotHubs/cloudToDeviceMessages/*"`.
    #[serde(default)]
    pub data_actions: Vec<String>,
}

impl EntraClient {
    /// A client with these built-in roles.
    pub fn new(
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        roles: impl Into<Vec<IotHubRole>>,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            roles: roles.into(),
            data_actions: Vec::new(),
        }
    }

    /// Adds data actions beyond those of the built-in roles (a custom role).
    pub fn with_data_actions<I, S>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.data_actions
            .extend(actions.into_iter().map(Into::into));
        self
    }

    fn actions(&self) -> Actions {
        let from_roles = self
            .roles
            .iter()
            .flat_map(|role| role.data_actions().iter().copied());
        Actions::from_patterns(from_roles).union(Actions::from_patterns(
            self.data_actions.iter().map(String::as_str),
        ))
    }
}

impl fmt::Debug for EntraClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EntraClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("roles", &self.roles)
            .field("data_actions", &self.data_actions)
            .finish()
    }
}

/// Who a verified token speaks for, with what its roles allow now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    pub(crate) client_id: String,
    /// The token's `exp` (unix seconds).
    pub(crate) expires: u64,
    pub(crate) actions: Actions,
}

/// A registered client, its secret kept only as a digest.
struct Registered {
    client_id: String,
    secret_digest: [u8; 32],
    object_id: String,
    actions: Actions,
}

/// The tenant at run time.
pub(crate) struct Directory {
    tenant_id: String,
    /// `{scheme}://{host}` of the emulator; endpoints and the issuer hang off it.
    base: String,
    issuer: String,
    lifetime_secs: u64,
    clients: Vec<Registered>,
    /// Generated on first use unless loaded at start; `None` inside when generation failed.
    key: OnceLock<Option<SigningKey>>,
}

impl fmt::Debug for Directory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("tenant_id", &self.tenant_id)
            .field("issuer", &self.issuer)
            .field(
                "clients",
                &self
                    .clients
                    .iter()
                    .map(|c| c.client_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// A refusal of the token endpoint, as Entra words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntraError {
    pub(crate) status: u16,
    /// The OAuth 2.0 error (`invalid_client`, …).
    pub(crate) error: &'static str,
    /// The AADSTS number, when Entra has one for the case.
    pub(crate) code: Option<u32>,
    /// The description after `AADSTSnnnn: ` (which is added when rendering).
    pub(crate) description: String,
}

impl EntraError {
    fn new(status: u16, error: &'static str, code: Option<u32>, description: String) -> Self {
        Self {
            status,
            error,
            code,
            description,
        }
    }

    fn missing(parameter: &str) -> Self {
        Self::new(
            400,
            "invalid_request",
            Some(900_144),
            format!("The request body must contain the following parameter: '{parameter}'."),
        )
    }

    pub(crate) fn unknown_tenant(tenant: &str, error: &'static str) -> Self {
        Self::new(
            400,
            error,
            Some(90_002),
            format!(
                "Tenant '{}' not found. Check to make sure you have the correct tenant ID and \
                 are signing into the correct cloud.",
                shorten(tenant)
            ),
        )
    }
}

/// Values from the request are echoed in descriptions, but never at length.
fn shorten(value: &str) -> String {
    value.chars().take(128).collect()
}

impl Directory {
    /// Checks the configuration; `base` is `https://host[:port]`; `key` was loaded from the
    /// data directory, else one is generated when first needed.
    pub(crate) fn new(
        config: &EntraConfig,
        base: &str,
        key: Option<SigningKey>,
    ) -> Result<Self, Error> {
        let tenant = config.tenant_id.trim();
        if tenant.is_empty()
            || tenant.len() > 256
            || !tenant
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(Error::Config(
                "entra.tenant_id must be 1 to 256 letters, digits, '.' or '-'".into(),
            ));
        }
        if !(1..=MAX_TOKEN_LIFETIME_SECS).contains(&config.token_lifetime_secs) {
            return Err(Error::Config(format!(
                "entra.token_lifetime_secs must be 1 to {MAX_TOKEN_LIFETIME_SECS}"
            )));
        }
        let mut clients: Vec<Registered> = Vec::new();
        for client in &config.clients {
            let id = client.client_id.trim();
            if id.is_empty() || client.client_secret.is_empty() {
                return Err(Error::Config(
                    "every entra client needs a client_id and a client_secret".into(),
                ));
            }
            if clients.iter().any(|c| c.client_id.eq_ignore_ascii_case(id)) {
                return Err(Error::Config(format!(
                    "entra client {id:?} is configured twice"
                )));
            }
            clients.push(Registered {
                client_id: id.to_owned(),
                secret_digest: Sha256::digest(client.client_secret.as_bytes()).into(),
                object_id: object_id(tenant, id),
                actions: client.actions(),
            });
        }
        let cell = OnceLock::new();
        if let Some(key) = key {
            let _ = cell.set(Some(key));
        }
        Ok(Self {
            tenant_id: tenant.to_owned(),
            base: base.to_owned(),
            issuer: format!("{base}/{tenant}/v2.0"),
            lifetime_secs: config.token_lifetime_secs,
            clients,
            key: cell,
        })
    }

    pub(crate) fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    fn is_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id)
    }

    /// The signing key, generated now if need be (slow: call off the async threads).
    pub(crate) fn signing_key(&self) -> Option<&SigningKey> {
        self.key
            .get_or_init(|| match SigningKey::generate() {
                Ok(key) => Some(key),
                Err(e) => {
                    tracing::error!(error = %e, "cannot generate the Entra signing key");
                    None
                }
            })
            .as_ref()
    }

    /// Whether the key exists already (then [`Directory::signing_key`] is quick).
    pub(crate) fn has_key(&self) -> bool {
        self.key.get().is_some()
    }

    /// The OpenID Connect discovery document of the tenant.
    pub(crate) fn openid_configuration(&self) -> Value {
        let tenant_url = format!("{}/{}", self.base, self.tenant_id);
        json!({
            "token_endpoint": format!("{tenant_url}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post"],
            "jwks_uri": format!("{tenant_url}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer,
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{tenant_url}/oauth2/v2.0/authorize"),
            "tenant_region_scope": null,
            "cloud_instance_name": "iothub-emulator",
        })
    }

    /// The tenant's signing keys as a JWK set.
    pub(crate) fn jwks(&self) -> Option<Value> {
        Some(json!({ "keys": [self.signing_key()?.jwk()] }))
    }

    /// The token endpoint: a client-credentials request for `tenant`, answered with the
    /// token response body, or refused as Entra refuses it.
    pub(crate) fn token(
        &self,
        tenant: &str,
        form: &form::Form,
        now: u64,
    ) -> Result<Value, EntraError> {
        if !self.is_tenant(tenant) {
            return Err(EntraError::unknown_tenant(tenant, "invalid_request"));
        }
        let grant_type = form
            .get("grant_type")
            .filter(|g| !g.is_empty())
            .ok_or_else(|| EntraError::missing("grant_type"))?;
        if grant_type != "client_credentials" {
            return Err(EntraError::new(
                400,
                "unsupported_grant_type",
                Some(70_003),
                format!(
                    "The app requested an unsupported grant type '{}'. The emulator \
                     supports client_credentials only.",
                    shorten(grant_type)
                ),
            ));
        }
        let client_id = form
            .get("client_id")
            .filter(|c| !c.is_empty())
            .ok_or_else(|| EntraError::missing("client_id"))?;
        let scope = form
            .get("scope")
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| EntraError::missing("scope"))?;
        let client = self
            .clients
            .iter()
            .find(|c| c.client_id.eq_ignore_ascii_case(client_id))
            .ok_or_else(|| {
                EntraError::new(
                    400,
                    "unauthorized_client",
                    Some(700_016),
                    format!(
                        "Application with identifier '{}' was not found in the directory '{}'. \
                         This can happen if the application has not been installed by the \
                         administrator of the tenant or consented to by any user in the \
                         tenant. You may have sent your authentication request to the wrong \
                         tenant.",
                        shorten(client_id),
                        self.tenant_id
                    ),
                )
            })?;
        let Some(secret) = form.get("client_secret").filter(|s| !s.is_empty()) else {
            if form.get("client_assertion").is_some() {
                return Err(EntraError::new(
                    400,
                    "invalid_request",
                    None,
                    "The emulator verifies client secrets only: client assertions \
                     (certificates, federated credentials) are not emulated."
                        .into(),
                ));
            }
            return Err(EntraError::new(
                401,
                "invalid_client",
                Some(7_000_218),
                "The request body must contain the following parameter: 'client_assertion' \
                 or 'client_secret'."
                    .into(),
            ));
        };
        if !digest_matches(&client.secret_digest, secret) {
            return Err(EntraError::new(
                401,
                "invalid_client",
                Some(7_000_215),
                format!(
                    "Invalid client secret provided. Ensure the secret being sent in the \
                     request is the client secret value, not the client secret ID, for a \
                     secret added to app '{}'.",
                    client.client_id
                ),
            ));
        }
        check_scope(scope, &self.tenant_id)?;
        let key = self.signing_key().ok_or_else(|| {
            EntraError::new(
                503,
                "temporarily_unavailable",
                None,
                "The emulator has no signing key.".into(),
            )
        })?;
        let expires = now.saturating_add(self.lifetime_secs);
        let claims = json!({
            "aud": IOT_HUB_RESOURCE,
            "iss": self.issuer,
            "iat": now,
            "nbf": now,
            "exp": expires,
            "azp": client.client_id,
            "azpacr": "1",
            "idtyp": "app",
            "oid": client.object_id,
            "sub": client.object_id,
            "tid": self.tenant_id,
            "uti": crate::rest::errors::tracking_id(),
            "ver": "2.0",
        });
        let token = key
            .sign(&claims)
            .map_err(|e| EntraError::new(503, "temporarily_unavailable", None, e))?;
        Ok(json!({
            "token_type": "Bearer",
            "expires_in": self.lifetime_secs,
            "ext_expires_in": self.lifetime_secs,
            "access_token": token,
        }))
    }

    /// Checks a bearer token this tenant issued: signature, issuer, tenant, audience,
    /// validity period, and that its client is still registered; `now` is unix seconds.
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Principal, AuthError> {
        const FOREIGN: AuthError =
            AuthError::InvalidToken("it was not issued by this hub's tenant");
        // No key yet: nothing was ever issued, so the token is someone else's.
        let key = self.key.get().and_then(Option::as_ref).ok_or(FOREIGN)?;
        let claims = key.verify(token).map_err(|e| match e {
            jwt::JwtError::Malformed => AuthError::InvalidToken("it is not a JWT"),
            jwt::JwtError::Signature => FOREIGN,
        })?;
        if claims["iss"] != self.issuer.as_str() || claims["tid"] != self.tenant_id.as_str() {
            return Err(FOREIGN);
        }
        let audience = claims["aud"].as_str().unwrap_or_default();
        if audience.trim_end_matches('/') != IOT_HUB_RESOURCE {
            return Err(AuthError::InvalidToken(
                "its audience is not https://iothubs.azure.net",
            ));
        }
        let (Some(expires), Some(not_before)) = (claims["exp"].as_u64(), claims["nbf"].as_u64())
        else {
            return Err(AuthError::InvalidToken("it has no validity period"));
        };
        if expires <= now {
            return Err(AuthError::TokenExpired);
        }
        if not_before > now {
            return Err(AuthError::InvalidToken("it is not valid yet"));
        }
        let client_id = claims["azp"].as_str().unwrap_or_default();
        let client = self
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .ok_or(AuthError::InvalidToken("its client is not registered"))?;
        Ok(Principal {
            client_id: client.client_id.clone(),
            expires,
            actions: client.actions,
        })
    }
}

#[cfg(test)]
impl Directory {
    /// A token for a registered client, issued at `now`, for tests elsewhere in the crate.
    pub(crate) fn token_for_tests(&self, client_id: &str, now: u64) -> String {
        let client = self
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
            .expect("a registered client");
        let claims = json!({
            "aud": IOT_HUB_RESOURCE, "iss": self.issuer, "tid": self.tenant_id,
            "nbf": now, "exp": now + self.lifetime_secs, "azp": client.client_id,
        });
        self.signing_key()
            .expect("a key")
            .sign(&claims)
            .expect("signed")
    }
}

/// Client credentials take exactly one scope, `{resource}/.default`, and the only resource
/// of this tenant is IoT Hub.
fn check_scope(scope: &str, tenant: &str) -> Result<(), EntraError> {
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    let [scope] = scopes.as_slice() else {
        return Err(EntraError::new(
            400,
            "invalid_scope",
            Some(70_011),
            "The provided value for the input parameter 'scope' is not valid. Client \
             credential flows take a single scope, the resource's '/.default'."
                .into(),
        ));
    };
    let Some(resource) = scope.strip_suffix("/.default") else {
        return Err(EntraError::new(
            400,
            "invalid_scope",
            Some(1_002_012),
            format!(
                "The provided value for scope {} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI).",
                shorten(scope)
            ),
        ));
    };
    if !resource
        .trim_end_matches('/')
        .eq_ignore_ascii_case(IOT_HUB_RESOURCE)
    {
        return Err(EntraError::new(
            400,
            "invalid_resource",
            Some(500_011),
            format!(
                "The resource principal named {} was not found in the tenant named {tenant}. \
                 This can happen if the application has not been installed by the \
                 administrator of the tenant or consented to by any user in the tenant. You \
                 might have sent your authentication request to the wrong tenant. The \
                 emulator's tenant knows {IOT_HUB_RESOURCE} only.",
                shorten(resource)
            ),
        ));
    }
    Ok(())
}

/// Compares digests, so the time taken does not depend on where the secrets differ.
fn digest_matches(expected: &[u8; 32], presented: &str) -> bool {
    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    expected
        .iter()
        .zip(presented.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A stable object id for a client (UUID-shaped), so tokens keep the same `oid` across
/// restarts.
fn object_id(tenant: &str, client_id: &str) -> String {
    let digest = Sha256::digest(format!("{tenant}\n{}", client_id.to_ascii_lowercase()));
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The signing key kept in the data directory: read, or generated and written (readable by
/// its owner only).
pub(crate) fn load_or_create_key(dir: &Path) -> Result<SigningKey, Error> {
    let path = dir.join(KEY_FILE);
    match std::fs::read(&path) {
        Ok(der) => SigningKey::from_pkcs8(&der)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate().map_err(Error::Config)?;
            let der = key.to_pkcs8().map_err(Error::Config)?;
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
            crate::startup::write_private(&path, &der).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            Ok(key)
        }
        Err(source) => Err(Error::Io { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const BASE: &str = "https://localhost:8443";
    const TENANT: &str = "72f9aaaa-0000-4000-8000-000000000001";

    fn config() -> EntraConfig {
        EntraConfig {
            tenant_id: TENANT.into(),
            token_lifetime_secs: 600,
            clients: vec![
                EntraClient::new("app-1", "s3cret", [IotHubRole::DataContributor]),
                EntraClient::new("reader", "r3ader", [IotHubRole::DataReader]),
            ],
        }
    }

    fn directory() -> Directory {
        Directory::new(&config(), BASE, None).unwrap()
    }

    fn form(body: &str) -> form::Form {
        form::Form::parse(body.as_bytes()).unwrap()
    }

    const GOOD: &str = "client_id=app-1&client_secret=s3cret&grant_type=client_credentials\
                        &scope=https%3A%2F%2Fiothubs.azure.net%2F.default";

    fn refusal(d: &Directory, body: &str) -> (u16, &'static str, Option<u32>) {
        let e = d.token(TENANT, &form(body), NOW).unwrap_err();
        (e.status, e.error, e.code)
    }

    #[test]
    fn client_credentials_get_a_token_for_iot_hub() {
        let d = directory();
        let answer = d.token(TENANT, &form(GOOD), NOW).unwrap();
        assert_eq!(answer["token_type"], "Bearer");
        assert_eq!(answer["expires_in"], 600);
        assert_eq!(answer["ext_expires_in"], 600);
        let token = answer["access_token"].as_str().unwrap();
        let claims = d.signing_key().unwrap().verify(token).unwrap();
        assert_eq!(claims["aud"], IOT_HUB_RESOURCE);
        assert_eq!(claims["iss"], format!("{BASE}/{TENANT}/v2.0"));
        assert_eq!(claims["tid"], TENANT);
        assert_eq!(claims["azp"], "app-1");
        assert_eq!(claims["exp"], NOW + 600);
        assert_eq!(claims["oid"], object_id(TENANT, "APP-1"));
        let p = d.verify(token, NOW + 10).unwrap();
        assert_eq!(p.client_id, "app-1");
        assert_eq!(p.expires, NOW + 600);
        assert!(p.actions.contains(Action::DevicesWrite));
        // The tenant and client id in any case, a trailing slash on the resource.
        let upper = GOOD
            .replace("app-1", "APP-1")
            .replace("%2F.default", "%2F%2F.default");
        assert!(d.token(&TENANT.to_uppercase(), &form(&upper), NOW).is_ok());
    }

    #[test]
    fn refusals_are_the_ones_entra_gives() {
        let d = directory();
        let with = |from: &str, to: &str| GOOD.replace(from, to);
        assert_eq!(
            refusal(&d, &with("s3cret", "wrong")),
            (401, "invalid_client", Some(7_000_215))
        );
        assert_eq!(
            refusal(&d, &with("client_secret=s3cret&", "")),
            (401, "invalid_client", Some(7_000_218))
        );
        assert_eq!(
            refusal(&d, &with("client_secret=s3cret", "client_assertion=eyJ")),
            (400, "invalid_request", None)
        );
        assert_eq!(
            refusal(&d, &with("app-1", "nobody")),
            (400, "unauthorized_client", Some(700_016))
        );
        assert_eq!(
            refusal(&d, &with("grant_type=client_credentials", "")),
            (400, "invalid_request", Some(900_144))
        );
        assert_eq!(
            refusal(&d, &with("client_credentials", "password")),
            (400, "unsupported_grant_type", Some(70_003))
        );
        assert_eq!(
            refusal(&d, &with("client_id=app-1&", "")),
            (400, "invalid_request", Some(900_144))
        );
        assert_eq!(
            refusal(&d, &with("%2F.default", "")),
            (400, "invalid_scope", Some(1_002_012))
        );
        assert_eq!(
            refusal(&d, &with("iothubs.azure.net", "vault.azure.net")),
            (400, "invalid_resource", Some(500_011))
        );
        assert_eq!(
            refusal(&d, &with(".default", ".default+openid")),
            (400, "invalid_scope", Some(70_011))
        );
        let e = d.token("other-tenant", &form(GOOD), NOW).unwrap_err();
        assert_eq!(
            (e.status, e.error, e.code),
            (400, "invalid_request", Some(90_002))
        );
        // No refusal repeats the secret that was sent.
        for body in [
            with("s3cret", "hunter2"),
            with("app-1", "nobody").replace("s3cret", "hunter2"),
        ] {
            let e = d.token(TENANT, &form(&body), NOW).unwrap_err();
            assert!(!format!("{e:?}").contains("hunter2"));
        }
    }

    #[test]
    fn tokens_are_refused_when_expired_foreign_or_for_a_removed_client() {
        let d = directory();
        let token = d.token(TENANT, &form(GOOD), NOW).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(d.verify(&token, NOW + 600), Err(AuthError::TokenExpired));
        assert!(matches!(
            d.verify(&token, NOW - 1),
            Err(AuthError::InvalidToken("it is not valid yet"))
        ));
        // Another emulator's tenant of the same name and host: another key.
        let other = directory();
        assert!(matches!(
            other.verify(&token, NOW + 1),
            Err(AuthError::InvalidToken(
                "it was not issued by this hub's tenant"
            ))
        ));
        let other_token = other.token(TENANT, &form(GOOD), NOW).unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(d.verify(&other_token, NOW + 1).is_err());
        // The same key behind another host or tenant: another issuer.
        let key = SigningKey::from_pkcs8(&d.signing_key().unwrap().to_pkcs8().unwrap()).unwrap();
        let moved = Directory::new(&config(), "https://127.0.0.1:8443", Some(key)).unwrap();
        assert!(moved.verify(&token, NOW + 1).is_err());
        // The client was removed from the configuration.
        let key = SigningKey::from_pkcs8(&d.signing_key().unwrap().to_pkcs8().unwrap()).unwrap();
        let mut fewer = config();
        fewer.clients.remove(0);
        let fewer = Directory::new(&fewer, BASE, Some(key)).unwrap();
        assert!(matches!(
            fewer.verify(&token, NOW + 1),
            Err(AuthError::InvalidToken("its client is not registered"))
        ));
        assert!(matches!(
            d.verify("a.b.c", NOW),
            Err(AuthError::InvalidToken("it is not a JWT"))
        ));
    }

    #[test]
    fn a_token_for_another_audience_is_refused() {
        let d = directory();
        let key = d.signing_key().unwrap();
        let claims = json!({
            "aud": "https://vault.azure.net", "iss": d.issuer, "tid": TENANT,
            "exp": NOW + 60, "nbf": NOW, "azp": "app-1",
        });
        let token = key.sign(&claims).unwrap();
        assert!(matches!(
            d.verify(&token, NOW),
            Err(AuthError::InvalidToken(
                "its audience is not https://iothubs.azure.net"
            ))
        ));
    }

    #[test]
    fn configuration_is_checked_and_debug_hides_secrets() {
        let bad = |f: fn(&mut EntraConfig)| {
            let mut c = config();
            f(&mut c);
            Directory::new(&c, BASE, None).unwrap_err().to_string()
        };
        assert!(bad(|c| c.tenant_id = "a/b".into()).contains("tenant_id"));
        assert!(bad(|c| c.tenant_id = String::new()).contains("tenant_id"));
        assert!(bad(|c| c.token_lifetime_secs = 0).contains("token_lifetime_secs"));
        assert!(bad(|c| c.clients[1].client_id = "APP-1".into()).contains("twice"));
        assert!(bad(|c| c.clients[0].client_secret = String::new()).contains("client_secret"));
        let text = format!("{:?} {:?}", config(), directory());
        assert!(
            !text.contains("s3cret") && !text.contains("r3ader"),
            "{text}"
        );
        assert!(text.contains("app-1") && text.contains("<redacted>"));
    }

    #[test]
    fn toml_configuration() {
        let c: EntraConfig = toml::from_str(
            r#"
            tenant_id = "contoso.onmicrosoft.com"
            [[clients]]
            client_id = "a"
            client_secret = "b"
            roles = ["IoT Hub Registry Contributor"]
            data_actions = ["Microsoft.Devices/IotHubs/cloudToDeviceMessages/send/action"]
            "#,
        )
        .unwrap();
        assert_eq!(c.token_lifetime_secs, DEFAULT_TOKEN_LIFETIME_SECS);
        let actions = c.clients[0].actions();
        assert!(actions.contains(Action::DevicesDelete) && actions.contains(Action::C2dSend));
        assert!(!actions.contains(Action::TwinsRead));
        assert!(toml::from_str::<EntraConfig>("[[clients]]\nclient_id = \"a\"").is_err());
        assert_eq!(EntraConfig::default().tenant_id, DEFAULT_TENANT_ID);
    }

    #[test]
    fn the_discovery_document_points_back_at_the_emulator() {
        let doc = directory().openid_configuration();
        assert_eq!(doc["issuer"], format!("{BASE}/{TENANT}/v2.0"));
        assert_eq!(
            doc["token_endpoint"],
            format!("{BASE}/{TENANT}/oauth2/v2.0/token")
        );
        assert_eq!(
            doc["authorization_endpoint"],
            format!("{BASE}/{TENANT}/oauth2/v2.0/authorize")
        );
        assert_eq!(
            doc["jwks_uri"],
            format!("{BASE}/{TENANT}/discovery/v2.0/keys")
        );
    }
}
