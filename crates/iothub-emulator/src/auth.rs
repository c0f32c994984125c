//! Hub-level shared access policies and the check IoT Hub makes on every service request: a
//! `SharedAccessSignature` token signed with a policy key, or a bearer token: one issued by
//! the emulator's Microsoft Entra ID look-alike (checked against the principal's role
//! assignments), or, when configured, a fixed token with every permission. Every failure
//! maps to 401 `IotHubUnauthorizedAccess`.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use crate::entra::{self, Action};

type HmacSha256 = Hmac<Sha256>;

const SAS_PREFIX: &str = "SharedAccessSignature ";
const BEARER_SCHEME: &str = "bearer";
const REDACTED: &str = "<redacted>";

/// Clients differ on whether they keep base64 padding once `=` has been percent-encoded, so
/// padding is optional when decoding `sig`.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A permission a shared access policy grants (IoT Hub's names).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Permission {
    /// Read the identity registry (devices, modules, twins, configurations, statistics).
    RegistryRead,
    /// Write the identity registry; implies [`Permission::RegistryRead`].
    RegistryWrite,
    /// Service-facing operations: direct methods, cloud-to-device messages, feedback.
    ServiceConnect,
    /// Device-facing operations, on behalf of any device.
    DeviceConnect,
}

impl Permission {
    /// Every permission, in IoT Hub's order.
    const ALL: [Permission; 4] = [
        Permission::RegistryRead,
        Permission::RegistryWrite,
        Permission::ServiceConnect,
        Permission::DeviceConnect,
    ];
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A hub-level shared access policy. Its `Debug` output never shows the keys.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct SharedAccessPolicy {
    /// The policy name, sent by clients as `skn` (`SharedAccessKeyName`).
    pub name: String,
    /// The primary key, base64.
    pub primary_key: String,
    /// The secondary key, base64; tokens signed with either key are accepted.
    pub secondary_key: String,
    /// What the policy allows.
    pub permissions: Vec<Permission>,
}

impl SharedAccessPolicy {
    /// A policy with two freshly generated random 32-byte keys (what the portal creates).
    pub fn new(name: impl Into<String>, permissions: impl Into<Vec<Permission>>) -> Self {
        Self::with_keys(name, random_key(), random_key(), permissions)
    }

    /// A policy with the given base64 keys.
    pub fn with_keys(
        name: impl Into<String>,
        primary_key: impl Into<String>,
        secondary_key: impl Into<String>,
        permissions: impl Into<Vec<Permission>>,
    ) -> Self {
        Self {
            name: name.into(),
            primary_key: primary_key.into(),
            secondary_key: secondary_key.into(),
            permissions: permissions.into(),
        }
    }

    /// The four policies a new IoT Hub has, with random keys: `iothubowner` (everything),
    /// `service` (ServiceConnect), `registryRead` and `registryReadWrite`.
    pub fn defaults() -> Vec<SharedAccessPolicy> {
        use Permission::*;
        vec![
            Self::new("iothubowner", Permission::ALL),
            Self::new("service", [ServiceConnect]),
            Self::new("registryRead", [RegistryRead]),
            Self::new("registryReadWrite", [RegistryRead, RegistryWrite]),
        ]
    }

    /// Whether the policy allows `permission`. As in IoT Hub, RegistryWrite implies RegistryRead.
    pub fn grants(&self, permission: Permission) -> bool {
        self.permissions.iter().any(|&p| {
            p == permission
                || (p == Permission::RegistryWrite && permission == Permission::RegistryRead)
        })
    }
}

impl fmt::Debug for SharedAccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedAccessPolicy")
            .field("name", &self.name)
            .field("primary_key", &REDACTED)
            .field("secondary_key", &REDACTED)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// A random 32-byte key, base64, from the system's cryptographic generator (through
/// aws-lc-rs): policy and device keys are secrets.
pub(crate) fn random_key() -> String {
    let mut bytes = [0u8; 32];
    // aws-lc-rs fails only when the operating system cannot provide randomness at all; no
    // key can be made then.
    aws_lc_rs::rand::fill(&mut bytes)
        .unwrap_or_else(|_| panic!("the system's random generator is unavailable"));
    STANDARD.encode(bytes)
}

/// Why a request was not authorized. All variants map to HTTP 401 `IotHubUnauthorizedAccess`;
/// the `Display` text is safe to return to the client: it never contains the token, the
/// signature, a key or any other value taken from the request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum AuthError {
    /// No (or an empty) `Authorization` header.
    #[error("Unauthorized: the Authorization header is missing")]
    Missing,
    /// The header is not a well-formed token; the reason is a fixed text.
    #[error("Unauthorized: malformed SharedAccessSignature ({0})")]
    Malformed(&'static str),
    /// `se` is not in the future.
    #[error("Unauthorized: the SharedAccessSignature has expired")]
    Expired,
    /// `skn` names no policy of this hub, or is absent (a device-scoped token).
    #[error("Unauthorized: the token does not name a shared access policy of this hub")]
    UnknownPolicy,
    /// The signature matches neither key of the policy (or the bearer token is not accepted).
    #[error("Unauthorized: the signature is not valid")]
    BadSignature,
    /// `sr` names another host.
    #[error("Unauthorized: the token's resource (sr) is not this hub")]
    WrongAudience,
    /// The policy lacks the permission the operation needs.
    #[error("Unauthorized: the shared access policy does not grant {0}")]
    Insufficient(Permission),
    /// A bearer token that is not one the hub's tenant issued for IoT Hub (or no longer
    /// names a registered client); the reason is a fixed text.
    #[error("Unauthorized: the bearer token is not valid: {0}")]
    InvalidToken(&'static str),
    /// The bearer token's `exp` has passed.
    #[error("Unauthorized: the bearer token has expired")]
    TokenExpired,
    /// The principal's role assignments lack a data action the operation needs.
    #[error("Unauthorized: the principal's role assignments do not grant {0}")]
    NotPermitted(Action),
    /// The token's `sr` names a resource of the hub (`{host}/devices/x`) that does not
    /// contain the one requested.
    #[error("Unauthorized: the token's resource (sr) does not cover the requested resource")]
    OutOfScope,
}

/// What an operation needs: one of these shared access permissions for a SAS token, or every
/// one of these data actions for a Microsoft Entra principal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Need {
    pub(crate) permissions: &'static [Permission],
    pub(crate) data_actions: &'static [Action],
}

impl From<Permission> for Need {
    /// That permission alone, and no data action.
    fn from(permission: Permission) -> Self {
        let permissions: &'static [Permission] = match permission {
            Permission::RegistryRead => &[Permission::RegistryRead],
            Permission::RegistryWrite => &[Permission::RegistryWrite],
            Permission::ServiceConnect => &[Permission::ServiceConnect],
            Permission::DeviceConnect => &[Permission::DeviceConnect],
        };
        Self {
            permissions,
            data_actions: &[],
        }
    }
}

/// Who made the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// A SAS token signed with the named policy's key.
    Policy(String),
    /// The configured bearer token (all permissions).
    Bearer,
    /// A token of the hub's Entra tenant.
    Entra(entra::Principal),
}

/// A policy with its keys decoded once, at construction.
struct Verifier {
    /// Base64-decoded primary and secondary keys; a key that is not valid base64 can never
    /// match, so it is left out instead of failing the whole hub.
    keys: Vec<Vec<u8>>,
}

/// Checks `Authorization` headers against the hub's policies.
pub(crate) struct Authenticator {
    policies: Vec<SharedAccessPolicy>,
    verifiers: Vec<Verifier>,
    /// Normalised host names (lowercase, no brackets, no port).
    audiences: Vec<String>,
    /// SHA-256 of the accepted bearer token, so comparing does not depend on where the
    /// presented token first differs, nor on its length.
    bearer_digest: Option<[u8; 32]>,
    /// The Entra ID look-alike whose tokens are accepted.
    entra: Option<entra::Directory>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("policies", &self.policies)
            .field("audiences", &self.audiences)
            .field("bearer_token", &self.bearer_digest.map(|_| REDACTED))
            .field("entra", &self.entra)
            .finish()
    }
}

impl Authenticator {
    /// `audiences`: host names the hub answers to (e.g. "localhost", "127.0.0.1",
    /// "myhub.azure-devices.net"), compared case-insensitively, without port.
    pub(crate) fn new(
        policies: Vec<SharedAccessPolicy>,
        audiences: Vec<String>,
        bearer_token: Option<String>,
    ) -> Self {
        let verifiers = policies
            .iter()
            .map(|p| Verifier {
                keys: [&p.primary_key, &p.secondary_key]
                    .into_iter()
                    .filter_map(|k| STANDARD.decode(k.trim()).ok())
                    .filter(|k| !k.is_empty())
                    .collect(),
            })
            .collect();
        let audiences = audiences
            .iter()
            .map(|a| normalize_host(host_of(a.trim())))
            .filter(|a| !a.is_empty())
            .collect();
        Self {
            policies,
            verifiers,
            audiences,
            bearer_digest: bearer_token.map(|t| Sha256::digest(t.as_bytes()).into()),
            entra: None,
        }
    }

    /// Also accepts the tokens of this Entra tenant.
    pub(crate) fn with_entra(mut self, directory: entra::Directory) -> Self {
        self.entra = Some(directory);
        self
    }

    /// The Entra tenant, when there is one.
    pub(crate) fn entra(&self) -> Option<&entra::Directory> {
        self.entra.as_ref()
    }

    /// The hub's policies.
    pub(crate) fn policies(&self) -> &[SharedAccessPolicy] {
        &self.policies
    }

    /// Checks an `Authorization` header value for a request that needs `need` (a
    /// [`Permission`] converts); `now` is unix seconds.
    ///
    /// SAS, in the service's order: parse, policy known, signature, expiry, audience,
    /// permission (any one of `need.permissions`). A SAS token without `skn` is a
    /// device-scoped token, which no hub policy can verify, so it fails with
    /// [`AuthError::UnknownPolicy`]. Bearer: the configured fixed token (everything
    /// allowed), else a JWT of the Entra tenant whose principal holds every data action of
    /// `need.data_actions`.
    pub(crate) fn authorize(
        &self,
        header: Option<&str>,
        need: impl Into<Need>,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let need = need.into();
        let header = header.map(str::trim).unwrap_or_default();
        if header.is_empty() {
            return Err(AuthError::Missing);
        }
        if let Some(body) = header.strip_prefix(SAS_PREFIX) {
            let mut first_error = None;
            for &permission in need.permissions {
                match self.authorize_sas(body, permission, now) {
                    Ok(principal) => return Ok(principal),
                    // Only a missing permission is worth trying the alternatives for.
                    Err(e @ AuthError::Insufficient(_)) => {
                        first_error.get_or_insert(e);
                    }
                    Err(e) => return Err(first_error.unwrap_or(e)),
                }
            }
            return Err(first_error.unwrap_or(AuthError::BadSignature));
        }
        // The HTTP auth scheme is case-insensitive (RFC 9110), unlike the SAS prefix.
        let (scheme, token) = header
            .split_once(char::is_whitespace)
            .unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case(BEARER_SCHEME) {
            return self.authorize_bearer(token.trim_start(), need, now);
        }
        Err(AuthError::Malformed("expected a SharedAccessSignature"))
    }

    /// [`Authenticator::authorize`] for a request on `path` (as sent, percent-encoded): a SAS
    /// token is accepted only when its `sr` covers the path, as the service does. A token for
    /// the hub (`sr={host}`) covers everything; one for `{host}/devices/x` covers
    /// `/devices/x` and what is below it, and nothing else.
    pub(crate) fn authorize_request(
        &self,
        header: Option<&str>,
        need: impl Into<Need>,
        path: &str,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let principal = self.authorize(header, need, now)?;
        if let Principal::Policy(_) = principal {
            let requested: Vec<String> = path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
                .collect();
            let requested: Vec<&str> = requested.iter().map(String::as_str).collect();
            let sr = header.and_then(|h| sas_sr(h.trim()));
            if !sr.is_some_and(|sr| scope_covers(sr, &requested)) {
                return Err(AuthError::OutOfScope);
            }
        }
        Ok(principal)
    }

    fn authorize_bearer(&self, token: &str, need: Need, now: u64) -> Result<Principal, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Malformed("empty bearer token"));
        }
        if let Some(expected) = self.bearer_digest {
            let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            let diff = expected
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                return Ok(Principal::Bearer);
            }
        }
        let Some(directory) = &self.entra else {
            return Err(AuthError::BadSignature);
        };
        if !entra::looks_like_jwt(token) {
            return Err(AuthError::BadSignature);
        }
        let principal = directory.verify(token, now)?;
        if let Some(&missing) = need
            .data_actions
            .iter()
            .find(|&&action| !principal.actions.contains(action))
        {
            return Err(AuthError::NotPermitted(missing));
        }
        Ok(Principal::Entra(principal))
    }

    fn authorize_sas(
        &self,
        body: &str,
        required: Permission,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let token = SasFields::parse(body.trim_start())?;

        let skn = token.skn.ok_or(AuthError::UnknownPolicy)?;
        let index = self
            .policies
            .iter()
            .position(|p| p.name == skn)
            .ok_or(AuthError::UnknownPolicy)?;
        let policy = &self.policies[index];

        let sig = decode_sig(token.sig)?;
        // Signed over `sr` exactly as sent (HTTP clients send it encoded, AMQP raw), and `se`
        // exactly as sent.
        let signed = [token.sr.as_bytes(), b"\n", token.se.as_bytes()].concat();
        let valid = self.verifiers[index].keys.iter().any(|key| {
            HmacSha256::new_from_slice(key).is_ok_and(|mut mac| {
                mac.update(&signed);
                mac.verify_slice(&sig).is_ok()
            })
        });
        if !valid {
            return Err(AuthError::BadSignature);
        }

        if token.expiry <= now {
            return Err(AuthError::Expired);
        }

        if !self.audience_matches(token.sr) {
            return Err(AuthError::WrongAudience);
        }

        if !policy.grants(required) {
            return Err(AuthError::Insufficient(required));
        }
        Ok(Principal::Policy(policy.name.clone()))
    }

    /// Checks the SAS token a device presents (the MQTT CONNECT password) for the resource
    /// whose path segments are `resource` (`["devices", id]`, plus `["modules", mid]`):
    /// signed with one of `keys` (the identity's own, base64) when it names no policy, or by
    /// a hub policy granting `DeviceConnect`, as the service accepts. Answers the token's
    /// expiry (unix seconds), when the connection must end.
    pub(crate) fn authorize_device(
        &self,
        password: &str,
        keys: &[&str],
        resource: &[&str],
        now: u64,
    ) -> Result<u64, AuthError> {
        let password = password.trim();
        let body = password
            .strip_prefix(SAS_PREFIX)
            .ok_or(AuthError::Malformed("expected a SharedAccessSignature"))?;
        let token = SasFields::parse(body.trim_start())?;
        if token.skn.is_some() {
            self.authorize(Some(password), Permission::DeviceConnect, now)?;
        } else {
            let sig = decode_sig(token.sig)?;
            let signed = [token.sr.as_bytes(), b"\n", token.se.as_bytes()].concat();
            let valid = keys
                .iter()
                .filter_map(|k| STANDARD.decode(k.trim()).ok())
                .filter(|k| !k.is_empty())
                .any(|key| {
                    HmacSha256::new_from_slice(&key).is_ok_and(|mut mac| {
                        mac.update(&signed);
                        mac.verify_slice(&sig).is_ok()
                    })
                });
            if !valid {
                return Err(AuthError::BadSignature);
            }
            if token.expiry <= now {
                return Err(AuthError::Expired);
            }
            if !self.audience_matches(token.sr) {
                return Err(AuthError::WrongAudience);
            }
        }
        if !scope_covers(token.sr, resource) {
            return Err(AuthError::OutOfScope);
        }
        Ok(token.expiry)
    }

    fn audience_matches(&self, sr: &str) -> bool {
        let Ok(decoded) = percent_decode_str(sr).decode_utf8() else {
            return false;
        };
        let decoded = decoded.trim();
        let lower = decoded.to_ascii_lowercase();
        let rest = ["https://", "amqps://"]
            .iter()
            .find(|scheme| lower.starts_with(*scheme))
            .and_then(|scheme| decoded.get(scheme.len()..))
            .unwrap_or(decoded);
        let host = rest.split('/').next().unwrap_or_default();
        let host = normalize_host(host_of(host));
        !host.is_empty() && self.audiences.contains(&host)
    }
}

/// The `sr` of a `SharedAccessSignature` header, as sent.
fn sas_sr(header: &str) -> Option<&str> {
    let body = header.strip_prefix(SAS_PREFIX)?;
    SasFields::parse(body.trim_start()).ok().map(|t| t.sr)
}

/// Whether a token's `sr` (as sent, percent-encoded or not, with or without a scheme) covers
/// the resource whose decoded path segments are `requested`: the path of `sr` after the host
/// must be a prefix of them, segment by segment. The first segment (the collection:
/// `devices`, `messages`, …) is compared without regard to case, ids exactly.
pub(crate) fn scope_covers(sr: &str, requested: &[&str]) -> bool {
    let decoded = percent_decode_str(sr.trim()).decode_utf8_lossy();
    let lower = decoded.to_ascii_lowercase();
    let rest = ["https://", "amqps://"]
        .iter()
        .find(|scheme| lower.starts_with(*scheme))
        .and_then(|scheme| decoded.get(scheme.len()..))
        .unwrap_or(&decoded);
    let scope: Vec<&str> = rest
        .split_once('/')
        .map_or("", |(_, path)| path)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    scope.len() <= requested.len()
        && scope.iter().zip(requested).enumerate().all(|(i, (s, r))| {
            if i == 0 {
                s.eq_ignore_ascii_case(r)
            } else {
                s == r
            }
        })
}

/// The fields of a SAS token body (`sr=…&sig=…&se=…&skn=…`), borrowed as sent.
struct SasFields<'a> {
    sr: &'a str,
    sig: &'a str,
    se: &'a str,
    expiry: u64,
    skn: Option<&'a str>,
}

impl<'a> SasFields<'a> {
    fn parse(body: &'a str) -> Result<Self, AuthError> {
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        // Empty segments (a trailing `&`) are tolerated; unknown fields are ignored.
        for part in body.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or(AuthError::Malformed("a field has no '='"))?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::Malformed("duplicate field"));
            }
        }
        let sr = required(sr, "missing sr")?;
        let sig = required(sig, "missing sig")?;
        let se = required(se, "missing se")?;
        if !se.bytes().all(|b| b.is_ascii_digit()) {
            return Err(AuthError::Malformed("se is not a unix time"));
        }
        let expiry = se
            .parse()
            .map_err(|_| AuthError::Malformed("se is not a unix time"))?;
        Ok(Self {
            sr,
            sig,
            se,
            expiry,
            skn: skn.filter(|s| !s.is_empty()),
        })
    }
}

fn required<'a>(value: Option<&'a str>, missing: &'static str) -> Result<&'a str, AuthError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(AuthError::Malformed(missing))
}

/// `sig` is percent-decoded leniently (`%2B`, `%3D`, `%2F` may or may not be encoded; the
/// Python SDK leaves `/` raw), then base64-decoded. `+` stays `+`: this is not form encoding.
fn decode_sig(sig: &str) -> Result<Vec<u8>, AuthError> {
    let decoded: Vec<u8> = percent_decode_str(sig).collect();
    LENIENT_BASE64
        .decode(decoded.trim_ascii())
        .map_err(|_| AuthError::Malformed("sig is not base64"))
}

/// The host of `host[:port]` or `[v6]:port`, without the port. A bare IPv6 literal (several
/// colons, no brackets) is returned whole.
fn host_of(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        _ => authority,
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use Permission::*;

    const NOW: u64 = 1_700_000_000;
    const HOUR: u64 = 3600;
    const OWNER_PRIMARY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const OWNER_SECONDARY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
    const OTHER_KEY: &str = "//79/Pv6+fj39vX08/Lx8O/u7ezr6uno5+bl5OPi4eA=";

    fn policies() -> Vec<SharedAccessPolicy> {
        vec![
            SharedAccessPolicy::with_keys(
                "iothubowner",
                OWNER_PRIMARY,
                OWNER_SECONDARY,
                Permission::ALL,
            ),
            SharedAccessPolicy::with_keys("service", OTHER_KEY, OTHER_KEY, [ServiceConnect]),
            SharedAccessPolicy::with_keys("registryRead", OTHER_KEY, OTHER_KEY, [RegistryRead]),
            SharedAccessPolicy::with_keys(
                "registryReadWrite",
                OTHER_KEY,
                OTHER_KEY,
                [RegistryRead, RegistryWrite],
            ),
        ]
    }

    fn auth() -> Authenticator {
        Authenticator::new(
            policies(),
            vec![
                "localhost".into(),
                "127.0.0.1".into(),
                "MyHub.azure-devices.net".into(),
                "::1".into(),
            ],
            Some("aad-token-123".into()),
        )
    }

    /// Python's `urllib.parse.quote(s, safe)`: unreserved characters and `safe` stay raw.
    fn py_quote(s: &str, safe: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"_.-~".contains(&b) || safe.as_bytes().contains(&b)
                {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn mac(key_b64: &str, sr: &str, se: &str) -> String {
        let key = STANDARD.decode(key_b64).unwrap();
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(format!("{sr}\n{se}").as_bytes());
        STANDARD.encode(mac.finalize().into_bytes())
    }

    /// The HTTP token of the Python SDK: `sr = quote_plus(host)`, `sig = quote(b64, safe='/')`.
    fn http_token(host: &str, skn: &str, key: &str, se: u64) -> String {
        let sr = py_quote(host, "");
        let sig = py_quote(&mac(key, &sr, &se.to_string()), "/");
        format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn={skn}")
    }

    /// The AMQP token: raw `sr`.
    fn amqp_token(host: &str, skn: &str, key: &str, se: u64) -> String {
        let sig = py_quote(&mac(key, host, &se.to_string()), "/");
        format!("SharedAccessSignature sr={host}&sig={sig}&se={se}&skn={skn}")
    }

    fn check(header: &str, required: Permission) -> Result<Principal, AuthError> {
        auth().authorize(Some(header), required, NOW)
    }

    fn owner() -> Result<Principal, AuthError> {
        Ok(Principal::Policy("iothubowner".into()))
    }

    #[test]
    fn python_http_token_with_port_is_accepted() {
        let t = http_token("localhost:8443", "iothubowner", OWNER_PRIMARY, NOW + HOUR);
        assert!(t.contains("sr=localhost%3A8443&"));
        assert_eq!(check(&t, RegistryWrite), owner());
    }

    #[test]
    fn amqp_token_with_raw_sr_is_accepted() {
        let t = amqp_token("localhost:8443", "iothubowner", OWNER_PRIMARY, NOW + HOUR);
        assert!(t.contains("sr=localhost:8443&"));
        assert_eq!(check(&t, ServiceConnect), owner());
    }

    #[test]
    fn secondary_key_is_accepted() {
        let t = http_token("127.0.0.1:8443", "iothubowner", OWNER_SECONDARY, NOW + HOUR);
        assert_eq!(check(&t, RegistryRead), owner());
    }

    #[test]
    fn sig_with_every_special_character_encoded_or_raw_is_accepted() {
        // Find an expiry whose signature contains '+', '/' and '=' characters.
        let (se, raw) = (NOW + 1..NOW + 100_000)
            .map(|se| (se, mac(OWNER_PRIMARY, "localhost", &se.to_string())))
            .find(|(_, s)| s.contains('+') && s.contains('/'))
            .unwrap();
        assert!(raw.ends_with('='));
        for sig in [
            raw.clone(),
            py_quote(&raw, "/"),
            py_quote(&raw, ""),
            raw.trim_end_matches('=').to_owned(),
        ] {
            let t = format!("SharedAccessSignature sr=localhost&sig={sig}&se={se}&skn=iothubowner");
            assert_eq!(check(&t, RegistryRead), owner(), "sig form {sig}");
        }
    }

    #[test]
    fn fields_in_any_order_and_surrounding_whitespace_are_accepted() {
        let se = (NOW + HOUR).to_string();
        let sig = py_quote(&mac(OWNER_PRIMARY, "myhub.azure-devices.net", &se), "/");
        let t = format!(
            "  SharedAccessSignature skn=iothubowner&se={se}&sig={sig}&sr=myhub.azure-devices.net \t"
        );
        assert_eq!(check(&t, DeviceConnect), owner());
    }

    #[test]
    fn sr_with_scheme_path_case_and_ipv6_is_accepted() {
        for host in [
            "https://MyHub.Azure-Devices.net/devices/d1",
            "amqps://localhost:5671",
            "https%3A%2F%2Flocalhost%3A8443%2Fdevices",
            "[::1]:8443",
        ] {
            let t = amqp_token(host, "iothubowner", OWNER_PRIMARY, NOW + HOUR);
            assert_eq!(check(&t, RegistryRead), owner(), "sr {host}");
        }
    }

    #[test]
    fn signature_covers_sr_as_sent_not_re_encoded() {
        // Signed over the raw host but sent encoded: the service must not decode before verifying.
        let se = (NOW + HOUR).to_string();
        let sig = py_quote(&mac(OWNER_PRIMARY, "localhost:8443", &se), "/");
        let t =
            format!("SharedAccessSignature sr=localhost%3A8443&sig={sig}&se={se}&skn=iothubowner");
        assert_eq!(check(&t, RegistryRead), Err(AuthError::BadSignature));
    }

    #[test]
    fn forged_and_wrong_key_signatures_are_rejected() {
        let forged = format!(
            "SharedAccessSignature sr=localhost&sig={}&se={}&skn=iothubowner",
            py_quote(&STANDARD.encode([7u8; 32]), "/"),
            NOW + HOUR
        );
        assert_eq!(check(&forged, RegistryRead), Err(AuthError::BadSignature));
        // Signed with the service policy's key but claiming iothubowner.
        let wrong = http_token("localhost", "iothubowner", OTHER_KEY, NOW + HOUR);
        assert_eq!(check(&wrong, RegistryRead), Err(AuthError::BadSignature));
        // A MAC of the wrong length.
        let short = "SharedAccessSignature sr=localhost&sig=AAAA&se=1800000000&skn=iothubowner";
        assert_eq!(check(short, RegistryRead), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_expiry_is_rejected() {
        let t = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW + HOUR);
        let tampered = t.replace(
            &format!("se={}", NOW + HOUR),
            &format!("se={}", NOW + 99 * HOUR),
        );
        assert_ne!(t, tampered);
        assert_eq!(check(&tampered, RegistryRead), Err(AuthError::BadSignature));
        // Leading zeros change the signed string even though the number is the same.
        let padded = t.replace(
            &format!("se={}", NOW + HOUR),
            &format!("se=0{}", NOW + HOUR),
        );
        assert_eq!(check(&padded, RegistryRead), Err(AuthError::BadSignature));
    }

    #[test]
    fn expired_token_is_rejected_after_signature_check() {
        let at_now = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW);
        assert_eq!(check(&at_now, RegistryRead), Err(AuthError::Expired));
        let past = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW - 1);
        assert_eq!(check(&past, RegistryRead), Err(AuthError::Expired));
        let just_valid = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW + 1);
        assert_eq!(check(&just_valid, RegistryRead), owner());
        // An expired forgery reports the bad signature, not the expiry.
        let forged = http_token("localhost", "iothubowner", OTHER_KEY, NOW);
        assert_eq!(check(&forged, RegistryRead), Err(AuthError::BadSignature));
    }

    #[test]
    fn unknown_or_missing_skn_is_unknown_policy() {
        let t = http_token("localhost", "nobody", OWNER_PRIMARY, NOW + HOUR);
        assert_eq!(check(&t, RegistryRead), Err(AuthError::UnknownPolicy));
        // Policy names are case-sensitive.
        let t = http_token("localhost", "IoTHubOwner", OWNER_PRIMARY, NOW + HOUR);
        assert_eq!(check(&t, RegistryRead), Err(AuthError::UnknownPolicy));
        let device_style = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW + HOUR)
            .replace("&skn=iothubowner", "");
        assert_eq!(
            check(&device_style, RegistryRead),
            Err(AuthError::UnknownPolicy)
        );
        let empty = device_style.clone() + "&skn=";
        assert_eq!(check(&empty, RegistryRead), Err(AuthError::UnknownPolicy));
    }

    #[test]
    fn wrong_audience_is_rejected() {
        for host in [
            "otherhub.azure-devices.net",
            "localhost.evil.com",
            "127.0.0.2:8443",
            "",
        ] {
            let t = http_token(host, "iothubowner", OWNER_PRIMARY, NOW + HOUR);
            let expected = if host.is_empty() {
                AuthError::Malformed("missing sr")
            } else {
                AuthError::WrongAudience
            };
            assert_eq!(check(&t, RegistryRead), Err(expected), "sr {host}");
        }
        let nobody = Authenticator::new(policies(), vec![], None);
        let t = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW + HOUR);
        assert_eq!(
            nobody.authorize(Some(&t), RegistryRead, NOW),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn permissions_are_enforced() {
        let token = |skn| http_token("localhost", skn, OTHER_KEY, NOW + HOUR);
        assert_eq!(
            check(&token("registryRead"), RegistryWrite),
            Err(AuthError::Insufficient(RegistryWrite))
        );
        assert_eq!(
            check(&token("registryRead"), RegistryRead),
            Ok(Principal::Policy("registryRead".into()))
        );
        assert_eq!(
            check(&token("service"), RegistryRead),
            Err(AuthError::Insufficient(RegistryRead))
        );
        assert_eq!(
            check(&token("service"), ServiceConnect),
            Ok(Principal::Policy("service".into()))
        );
        assert_eq!(
            check(&token("registryReadWrite"), RegistryRead),
            Ok(Principal::Policy("registryReadWrite".into()))
        );
        assert_eq!(
            check(&token("registryReadWrite"), DeviceConnect),
            Err(AuthError::Insufficient(DeviceConnect))
        );
    }

    #[test]
    fn registry_write_implies_read_only() {
        let p = SharedAccessPolicy::new("w", [RegistryWrite]);
        assert!(p.grants(RegistryWrite));
        assert!(p.grants(RegistryRead));
        assert!(!p.grants(ServiceConnect));
        let r = SharedAccessPolicy::new("r", [RegistryRead]);
        assert!(!r.grants(RegistryWrite));
    }

    #[test]
    fn sas_tries_each_permission_an_operation_accepts() {
        // Twin reads take RegistryRead or ServiceConnect: the service policy has the second.
        let need = Need {
            permissions: &[RegistryRead, ServiceConnect],
            data_actions: &[Action::TwinsRead],
        };
        let service = http_token("localhost", "service", OTHER_KEY, NOW + HOUR);
        assert_eq!(
            auth().authorize(Some(&service), need, NOW),
            Ok(Principal::Policy("service".into()))
        );
        // Neither: the first refusal is reported.
        let need = Need {
            permissions: &[RegistryWrite, DeviceConnect],
            data_actions: &[],
        };
        assert_eq!(
            auth().authorize(Some(&service), need, NOW),
            Err(AuthError::Insufficient(RegistryWrite))
        );
        // A bad signature is not retried with the other permissions.
        let forged = http_token("localhost", "service", OWNER_PRIMARY, NOW + HOUR);
        assert_eq!(
            auth().authorize(Some(&forged), need, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn entra_tokens_need_every_data_action_and_the_fixed_token_still_works() {
        use crate::entra::{Directory, EntraClient, EntraConfig, IotHubRole};
        let config = EntraConfig {
            clients: vec![
                EntraClient::new("reader", "r", [IotHubRole::DataReader]),
                EntraClient::new("registry", "g", [IotHubRole::RegistryContributor]),
            ],
            ..EntraConfig::default()
        };
        let directory = Directory::new(&config, "https://localhost", None).unwrap();
        let reader = directory.token_for_tests("reader", NOW);
        let registry = directory.token_for_tests("registry", NOW);
        let a = auth().with_entra(directory);
        let need = |actions: &'static [Action]| Need {
            permissions: &[RegistryWrite],
            data_actions: actions,
        };
        let bearer = |t: &str| format!("Bearer {t}");
        assert!(matches!(
            a.authorize(Some(&bearer(&reader)), need(&[Action::DevicesRead]), NOW),
            Ok(Principal::Entra(p)) if p.client_id == "reader"
        ));
        assert_eq!(
            a.authorize(Some(&bearer(&reader)), need(&[Action::DevicesWrite]), NOW),
            Err(AuthError::NotPermitted(Action::DevicesWrite))
        );
        assert_eq!(
            a.authorize(
                Some(&bearer(&registry)),
                need(&[Action::DevicesWrite, Action::DevicesDelete]),
                NOW
            )
            .map(|_| ()),
            Ok(())
        );
        assert_eq!(
            a.authorize(
                Some(&bearer(&registry)),
                need(&[Action::DevicesRead, Action::TwinsRead]),
                NOW
            ),
            Err(AuthError::NotPermitted(Action::TwinsRead))
        );
        // No data action needed (AMQP's put-token): any valid token passes here.
        assert!(
            a.authorize(Some(&bearer(&registry)), ServiceConnect, NOW)
                .is_ok()
        );
        assert_eq!(
            a.authorize(Some(&bearer(&reader)), RegistryRead, NOW + 3599),
            Err(AuthError::TokenExpired)
        );
        // The fixed token, and what is neither.
        assert_eq!(
            a.authorize(
                Some("Bearer aad-token-123"),
                need(&[Action::DevicesWrite]),
                NOW
            ),
            Ok(Principal::Bearer)
        );
        assert_eq!(
            a.authorize(Some("Bearer not-a-jwt"), RegistryRead, NOW),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            a.authorize(Some("Bearer a.b.c"), RegistryRead, NOW),
            Err(AuthError::InvalidToken(_))
        ));
        // Without a tenant, a JWT is just a token that is not the fixed one.
        assert_eq!(
            auth().authorize(Some(&bearer(&reader)), RegistryRead, NOW),
            Err(AuthError::BadSignature)
        );
        for e in [
            AuthError::InvalidToken("it is not a JWT"),
            AuthError::TokenExpired,
            AuthError::NotPermitted(Action::TwinsWrite),
        ] {
            assert!(e.to_string().starts_with("Unauthorized: "), "{e}");
        }
    }

    #[test]
    fn bearer_token() {
        assert_eq!(
            check("Bearer aad-token-123", RegistryWrite),
            Ok(Principal::Bearer)
        );
        assert_eq!(
            check("bearer  aad-token-123", DeviceConnect),
            Ok(Principal::Bearer)
        );
        assert_eq!(
            check("Bearer aad-token-12", RegistryRead),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            check("Bearer aad-token-1234", RegistryRead),
            Err(AuthError::BadSignature)
        );
        for empty in ["Bearer", "Bearer ", "Bearer  \t"] {
            assert_eq!(
                check(empty, RegistryRead),
                Err(AuthError::Malformed("empty bearer token"))
            );
        }
        let without = Authenticator::new(policies(), vec!["localhost".into()], None);
        assert_eq!(
            without.authorize(Some("Bearer aad-token-123"), RegistryRead, NOW),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn malformed_headers_are_rejected_without_panicking() {
        let good = http_token("localhost", "iothubowner", OWNER_PRIMARY, NOW + HOUR);
        let a = auth();
        assert_eq!(
            a.authorize(None, RegistryRead, NOW),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authorize(Some(""), RegistryRead, NOW),
            Err(AuthError::Missing)
        );
        assert_eq!(
            a.authorize(Some("   "), RegistryRead, NOW),
            Err(AuthError::Missing)
        );
        let malformed = |h: &str| match a.authorize(Some(h), RegistryRead, NOW) {
            Err(AuthError::Malformed(reason)) => reason,
            other => panic!("{h:?} gave {other:?}"),
        };
        assert_eq!(
            malformed(&good["SharedAccessSignature ".len()..]),
            "expected a SharedAccessSignature"
        );
        assert_eq!(
            malformed(&good.replace("SharedAccessSignature", "sharedaccesssignature")),
            "expected a SharedAccessSignature"
        );
        assert_eq!(
            malformed(&good.replace("SharedAccessSignature ", "SharedAccessSignature")),
            "expected a SharedAccessSignature"
        );
        assert_eq!(
            malformed("SharedAccessSignature "),
            "expected a SharedAccessSignature"
        );
        assert_eq!(malformed("SharedAccessSignature &&"), "missing sr");
        assert_eq!(malformed(&good.replace("sr=localhost&", "")), "missing sr");
        assert_eq!(malformed(&good.replace("&se=", "&xx=")), "missing se");
        let no_sig: String = good
            .split('&')
            .filter(|p| !p.starts_with("sig="))
            .collect::<Vec<_>>()
            .join("&");
        assert_eq!(malformed(&no_sig), "missing sig");
        assert_eq!(
            malformed(&good.replace("&se=", "&se=12a")),
            "se is not a unix time"
        );
        assert_eq!(
            malformed(&good.replace("&se=", "&se=-")),
            "se is not a unix time"
        );
        assert_eq!(
            malformed(&good.replace("&se=", "&se=+")),
            "se is not a unix time"
        );
        assert_eq!(
            malformed(&good.replace("&se=", "&se=99999999999999999999")),
            "se is not a unix time"
        );
        assert_eq!(
            malformed(&good.replace("sig=", "sig=!!")),
            "sig is not base64"
        );
        assert_eq!(
            malformed(&good.replace("sig=", "sig=%ZZ")),
            "sig is not base64"
        );
        assert_eq!(
            malformed(&(good.clone() + "&sr=localhost")),
            "duplicate field"
        );
        assert_eq!(
            malformed(&(good.clone() + "&skn=iothubowner")),
            "duplicate field"
        );
        assert_eq!(malformed(&(good.clone() + "&flag")), "a field has no '='");
        // Unknown fields and a trailing '&' are tolerated.
        assert_eq!(
            a.authorize(Some(&(good.clone() + "&foo=bar&")), RegistryRead, NOW),
            owner()
        );
        for weird in [
            "SharedAccessSignature =&=&=",
            "SharedAccessSignature sr=%&sig=%&se=1",
            "Basic Zm9vOmJhcg==",
            "\u{1F600} ",
            "SharedAccessSignature sr=\u{e9}%C3&sig=AAAA&se=9&skn=iothubowner",
        ] {
            assert!(
                a.authorize(Some(weird), RegistryRead, NOW).is_err(),
                "{weird:?}"
            );
        }
    }

    #[test]
    fn error_messages_never_echo_the_request() {
        let t = http_token("evil.example", "iothubowner", OWNER_PRIMARY, NOW + HOUR);
        let sig = t.split("sig=").nth(1).unwrap().split('&').next().unwrap();
        for err in [
            AuthError::Missing,
            AuthError::Malformed("missing sr"),
            AuthError::Expired,
            AuthError::UnknownPolicy,
            AuthError::BadSignature,
            AuthError::WrongAudience,
            AuthError::Insufficient(RegistryWrite),
            check(&t, RegistryRead).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.starts_with("Unauthorized"), "{text}");
            assert!(!text.contains(sig) && !text.contains("evil") && !text.contains(OWNER_PRIMARY));
        }
        assert_eq!(
            AuthError::Insufficient(RegistryWrite).to_string(),
            "Unauthorized: the shared access policy does not grant RegistryWrite"
        );
    }

    #[test]
    fn debug_redacts_keys() {
        let p = &policies()[0];
        let text = format!("{p:?} {:?}", auth());
        assert!(text.contains("iothubowner") && text.contains("<redacted>"));
        for secret in [OWNER_PRIMARY, OWNER_SECONDARY, OTHER_KEY, "aad-token-123"] {
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[test]
    fn defaults_have_distinct_random_keys_and_the_portal_permissions() {
        let d = SharedAccessPolicy::defaults();
        let names: Vec<_> = d.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "iothubowner",
                "service",
                "registryRead",
                "registryReadWrite"
            ]
        );
        assert_eq!(d[0].permissions, Permission::ALL);
        assert_eq!(d[1].permissions, [ServiceConnect]);
        assert_eq!(d[2].permissions, [RegistryRead]);
        assert_eq!(d[3].permissions, [RegistryRead, RegistryWrite]);
        let mut keys: Vec<_> = d
            .iter()
            .flat_map(|p| [p.primary_key.clone(), p.secondary_key.clone()])
            .collect();
        for k in &keys {
            assert_eq!(STANDARD.decode(k).unwrap().len(), 32);
        }
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 8);
        // A generated key signs tokens the authenticator accepts.
        let a = Authenticator::new(d.clone(), vec!["localhost".into()], None);
        let t = http_token("localhost", "service", &d[1].secondary_key, NOW + HOUR);
        assert_eq!(
            a.authorize(Some(&t), ServiceConnect, NOW),
            Ok(Principal::Policy("service".into()))
        );
        assert_eq!(a.policies().len(), 4);
    }

    #[test]
    fn keys_come_from_a_cryptographic_generator() {
        // fastrand is seedable and predictable: a key must not be what it would produce.
        for seed in [0, 7, 42] {
            fastrand::seed(seed);
            let policy = SharedAccessPolicy::new("p", [RegistryRead]);
            fastrand::seed(seed);
            let mut predicted = [0u8; 32];
            fastrand::fill(&mut predicted);
            let mut by_u8 = [0u8; 32];
            fastrand::seed(seed);
            by_u8.iter_mut().for_each(|b| *b = fastrand::u8(..));
            for key in [&policy.primary_key, &policy.secondary_key] {
                let key = STANDARD.decode(key).unwrap();
                assert_ne!(key, predicted, "seed {seed}");
                assert_ne!(key, by_u8, "seed {seed}");
            }
            fastrand::seed(seed);
            let device_key = STANDARD.decode(random_key()).unwrap();
            assert_ne!(device_key, predicted);
        }
    }

    #[test]
    fn policy_with_undecodable_key_accepts_its_other_key() {
        let p = SharedAccessPolicy::with_keys("p", "not base64!", OWNER_PRIMARY, [RegistryRead]);
        let a = Authenticator::new(vec![p], vec!["localhost".into()], None);
        let t = http_token("localhost", "p", OWNER_PRIMARY, NOW + HOUR);
        assert_eq!(
            a.authorize(Some(&t), RegistryRead, NOW),
            Ok(Principal::Policy("p".into()))
        );
    }

    #[test]
    fn a_scoped_token_covers_its_resource_and_what_is_below_it() {
        let covers = |sr: &str, path: &str| {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            scope_covers(sr, &segs)
        };
        assert!(covers("localhost%3A8443", "/devices/x"));
        assert!(covers("https://h/", "/statistics/devices"));
        assert!(covers("h%2Fdevices%2Fx", "/devices/x/modules/m"));
        assert!(covers("h/Devices/x", "/devices/x"));
        assert!(!covers("h/devices/x", "/devices/X"));
        assert!(!covers("h/devices/x", "/devices/xy"));
        assert!(!covers("h/devices/x", "/devices"));
        assert!(!covers("h/devices/x", "/statistics/devices"));
        assert!(covers("amqps://h:5671/messages", "/messages/devicebound"));
        let t = http_token(
            "localhost/devices/x",
            "iothubowner",
            OWNER_PRIMARY,
            NOW + HOUR,
        );
        let a = auth();
        assert_eq!(
            a.authorize_request(Some(&t), RegistryRead, "/devices/x", NOW),
            owner()
        );
        assert_eq!(
            a.authorize_request(Some(&t), RegistryRead, "/devices/y", NOW),
            Err(AuthError::OutOfScope)
        );
        // Bearer tokens carry no sr.
        assert_eq!(
            a.authorize_request(
                Some("Bearer aad-token-123"),
                RegistryRead,
                "/devices/y",
                NOW
            ),
            Ok(Principal::Bearer)
        );
    }

    #[test]
    fn tokens_from_iothub_auth_are_accepted() {
        let key: iothub_auth::SharedAccessKey = OWNER_SECONDARY.parse().unwrap();
        let host: iothub_auth::HostName = "localhost:8443".parse().unwrap();
        for token in [
            iothub_auth::SasToken::for_http(&host, "iothubowner", &key, NOW + HOUR),
            iothub_auth::SasToken::for_amqp(&host, "iothubowner", &key, NOW + HOUR),
        ] {
            let header = token.as_secret().expose_secret().to_owned();
            assert_eq!(
                check(&header, RegistryWrite),
                owner(),
                "{}",
                token.resource()
            );
        }
    }
}
