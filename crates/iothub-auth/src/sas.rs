//! Shared access signature (SAS) tokens, built byte for byte as the Python reference SDK builds
//! them (`azure.iot.hub.sastoken` for HTTP, `iothub_amqp_client` for AMQP).

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::error::{Error, SasTokenError};
use crate::host::HostName;
use crate::key::SharedAccessKey;
use crate::secret::{REDACTED, Secret};

const PREFIX: &str = "SharedAccessSignature ";

/// A SAS token: `SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={key_name}`.
///
/// Build one with [`for_http`](Self::for_http) or [`for_amqp`](Self::for_amqp), or parse a token
/// someone else made with [`FromStr`]. `Debug` shows the resource, key name and expiry, never the
/// signature; [`as_secret`](Self::as_secret) gives the whole token.
///
/// ```
/// use iothub_auth::{HostName, SasToken, SharedAccessKey};
///
/// let host: HostName = "localhost:8443".parse()?;
/// let key: SharedAccessKey = "AAECAwQFBgcICQoLDA0ODw==".parse()?;
/// let token = SasToken::for_http(&host, "iothubowner", &key, 1_700_000_000);
/// assert_eq!(token.resource(), "localhost%3A8443");
/// assert!(token.as_secret().expose_secret().ends_with("&se=1700000000&skn=iothubowner"));
///
/// let parsed: SasToken = token.as_secret().expose_secret().parse()?;
/// assert_eq!(parsed.expiry_unix(), 1_700_000_000);
/// # Ok::<(), iothub_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct SasToken {
    token: Secret,
    resource: String,
    key_name: Option<String>,
    expiry: u64,
}

impl SasToken {
    /// The token the Python SDK sends in the HTTP `Authorization` header: `sr` is the host
    /// (with any port) encoded like Python's `urllib.parse.quote_plus`, so `localhost:8443` becomes
    /// `localhost%3A8443`, and that encoded value is what gets signed.
    ///
    /// `expiry` is in seconds since the Unix epoch. `key_name` is inserted verbatim, as Python does.
    pub fn for_http(host: &HostName, key_name: &str, key: &SharedAccessKey, expiry: u64) -> Self {
        Self::sign(quote_plus(host.as_str()), key_name, key, expiry)
    }

    /// The token the Python SDK sends in the AMQP CBS `put-token`: `sr` is the raw host (with any
    /// port, not encoded: `sr=localhost:8443`), and the raw host is what gets signed.
    pub fn for_amqp(host: &HostName, key_name: &str, key: &SharedAccessKey, expiry: u64) -> Self {
        Self::sign(host.as_str().to_owned(), key_name, key, expiry)
    }

    /// A device's (or, with `module_id`, a module's) own token, as the official device SDKs
    /// make it from the identity's symmetric key (`azure.iot.device`'s `SasToken`): `sr` is
    /// `{host}/devices/{device_id}[/modules/{module_id}]` encoded like Python's
    /// `urllib.parse.quote(s, safe="")` (so `/` becomes `%2F`), that encoded value is signed, the
    /// signature is encoded the same way, and there is no `skn`.
    ///
    /// ```
    /// use iothub_auth::{HostName, SasToken, SharedAccessKey};
    ///
    /// let host: HostName = "myhub.azure-devices.net".parse()?;
    /// let key: SharedAccessKey = "AAECAwQFBgcICQoLDA0ODw==".parse()?;
    /// let token = SasToken::for_device(&host, "sensor-1", None, &key, 1_700_000_000);
    /// assert_eq!(token.resource(), "myhub.azure-devices.net%2Fdevices%2Fsensor-1");
    /// assert_eq!(token.key_name(), None);
    /// # Ok::<(), iothub_auth::Error>(())
    /// ```
    pub fn for_device(
        host: &HostName,
        device_id: &str,
        module_id: Option<&str>,
        key: &SharedAccessKey,
        expiry: u64,
    ) -> Self {
        let uri = match module_id {
            Some(module_id) => format!("{host}/devices/{device_id}/modules/{module_id}"),
            None => format!("{host}/devices/{device_id}"),
        };
        let resource = quote_all(&uri);
        let to_sign = format!("{resource}\n{expiry}");
        let sig = quote_all(&STANDARD.encode(key.sign(to_sign.as_bytes())));
        Self {
            token: Secret::new(format!("{PREFIX}sr={resource}&sig={sig}&se={expiry}")),
            resource,
            key_name: None,
            expiry,
        }
    }

    fn sign(resource: String, key_name: &str, key: &SharedAccessKey, expiry: u64) -> Self {
        let to_sign = format!("{resource}\n{expiry}");
        let sig = quote(&STANDARD.encode(key.sign(to_sign.as_bytes())));
        let token = format!("{PREFIX}sr={resource}&sig={sig}&se={expiry}&skn={key_name}");
        Self {
            token: Secret::new(token),
            resource,
            key_name: Some(key_name.to_owned()),
            expiry,
        }
    }

    /// The `sr` field as it appears in the token (so possibly URL-encoded).
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The `skn` field, if present (device-scoped tokens have none).
    pub fn key_name(&self) -> Option<&str> {
        self.key_name.as_deref()
    }

    /// The `se` field: expiry in seconds since the Unix epoch.
    pub fn expiry_unix(&self) -> u64 {
        self.expiry
    }

    /// The `se` field as a [`SystemTime`].
    pub fn expires_at(&self) -> SystemTime {
        unix_to_system_time(self.expiry)
    }

    /// The whole token, `SharedAccessSignature sr=…`.
    pub fn as_secret(&self) -> &Secret {
        &self.token
    }

    /// The whole token, consuming `self`.
    pub fn into_secret(self) -> Secret {
        self.token
    }

    // Shared with the connection-string parser, which reports problems under its own variant.
    pub(crate) fn parse(s: &str) -> Result<Self, SasTokenError> {
        let fields = s.strip_prefix(PREFIX).ok_or(SasTokenError::Prefix)?;
        let (mut sr, mut sig, mut se, mut skn) = (None, None, None, None);
        for field in fields.split('&') {
            let (name, value) = field.split_once('=').ok_or(SasTokenError::Malformed)?;
            let slot = match name {
                "sr" => &mut sr,
                "sig" => &mut sig,
                "se" => &mut se,
                "skn" => &mut skn,
                // The service ignores fields it does not know; so do we.
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(SasTokenError::Malformed);
            }
        }
        let resource = required(sr, "sr")?;
        required(sig, "sig")?;
        let se = required(se, "se")?;
        if !se.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SasTokenError::Expiry);
        }
        let expiry = se.parse::<u64>().map_err(|_| SasTokenError::Expiry)?;
        Ok(Self {
            token: Secret::new(s),
            resource: resource.to_owned(),
            key_name: skn.filter(|v| !v.is_empty()).map(str::to_owned),
            expiry,
        })
    }
}

fn required<'a>(value: Option<&'a str>, name: &'static str) -> Result<&'a str, SasTokenError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(SasTokenError::MissingField(name))
}

/// Parses a complete token, `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]` (fields in any
/// order). The signature is not checked — only the hub can do that — but `se` is parsed, so the
/// expiry is known.
impl FromStr for SasToken {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s).map_err(Error::InvalidSasToken)
    }
}

impl fmt::Debug for SasToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SasToken")
            .field("resource", &self.resource)
            .field("key_name", &self.key_name)
            .field("expiry", &self.expiry)
            .field("token", &format_args!("{REDACTED}"))
            .finish()
    }
}

pub(crate) fn unix_to_system_time(secs: u64) -> SystemTime {
    // Saturate at the end of year 9999 instead of panicking on absurd `se` values.
    const MAX_SECS: u64 = 253_402_300_799;
    UNIX_EPOCH + Duration::from_secs(secs.min(MAX_SECS))
}

/// Python's `urllib.parse.quote(s)` with its default `safe='/'`: UTF-8 bytes other than
/// `A-Za-z0-9_.-~/` become `%XX` (upper-case hex).
pub(crate) fn quote(s: &str) -> String {
    encode(s, |b| b == b'/', false)
}

/// Python's `urllib.parse.quote(s, safe="")`: like `quote`, but `/` is encoded too.
fn quote_all(s: &str) -> String {
    encode(s, |_| false, false)
}

/// Python's `urllib.parse.quote_plus(s)`: like `quote` with `safe=''` (so `/` is encoded too),
/// except that a space becomes `+`.
pub(crate) fn quote_plus(s: &str) -> String {
    encode(s, |_| false, true)
}

fn encode(s: &str, extra_safe: impl Fn(u8) -> bool, space_as_plus: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') || extra_safe(b) {
            out.push(char::from(b));
        } else if b == b' ' && space_as_plus {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values were produced with CPython 3.11's urllib.parse.
    #[test]
    fn quote_matches_python_default_safe_slash() {
        assert_eq!(quote(""), "");
        assert_eq!(quote("AZaz09_.-~"), "AZaz09_.-~");
        assert_eq!(quote("a/b"), "a/b");
        assert_eq!(quote("ab+c/d=="), "ab%2Bc/d%3D%3D");
        assert_eq!(quote("a b"), "a%20b");
        assert_eq!(quote("localhost:8443"), "localhost%3A8443");
        assert_eq!(
            quote("!*'();@&=+$,?#[]%"),
            "%21%2A%27%28%29%3B%40%26%3D%2B%24%2C%3F%23%5B%5D%25"
        );
        assert_eq!(quote("é"), "%C3%A9");
        assert_eq!(quote("\n\u{7f}"), "%0A%7F");
    }

    #[test]
    fn quote_plus_matches_python() {
        assert_eq!(
            quote_plus("contoso.azure-devices.net"),
            "contoso.azure-devices.net"
        );
        assert_eq!(quote_plus("localhost:8443"), "localhost%3A8443");
        assert_eq!(quote_plus("[::1]:8443"), "%5B%3A%3A1%5D%3A8443");
        assert_eq!(quote_plus("a/b c+d"), "a%2Fb+c%2Bd");
        assert_eq!(quote_plus("~_.-"), "~_.-");
        assert_eq!(quote_plus("é"), "%C3%A9");
    }

    fn key() -> SharedAccessKey {
        SharedAccessKey::new("AAECAwQFBgcICQoLDA0ODw==").unwrap()
    }

    #[test]
    fn http_and_amqp_differ_only_in_sr() {
        let host: HostName = "localhost:8443".parse().unwrap();
        let http = SasToken::for_http(&host, "owner", &key(), 42);
        let amqp = SasToken::for_amqp(&host, "owner", &key(), 42);
        assert_eq!(http.resource(), "localhost%3A8443");
        assert_eq!(amqp.resource(), "localhost:8443");
        assert!(
            http.as_secret()
                .expose_secret()
                .starts_with("SharedAccessSignature sr=localhost%3A8443&sig=")
        );
        assert!(
            amqp.as_secret()
                .expose_secret()
                .starts_with("SharedAccessSignature sr=localhost:8443&sig=")
        );
        assert_ne!(http.as_secret(), amqp.as_secret());
        // Without characters to encode, both transports sign the same string.
        let plain: HostName = "hub.azure-devices.net".parse().unwrap();
        assert_eq!(
            SasToken::for_http(&plain, "owner", &key(), 42).as_secret(),
            SasToken::for_amqp(&plain, "owner", &key(), 42).as_secret()
        );
    }

    #[test]
    fn built_tokens_round_trip_through_parse() {
        let host: HostName = "hub.azure-devices.net".parse().unwrap();
        let token = SasToken::for_http(&host, "service", &key(), 1_700_000_000);
        let parsed = SasToken::parse(token.as_secret().expose_secret()).unwrap();
        assert_eq!(parsed.resource(), "hub.azure-devices.net");
        assert_eq!(parsed.key_name(), Some("service"));
        assert_eq!(parsed.expiry_unix(), 1_700_000_000);
        assert_eq!(
            parsed.expires_at(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert_eq!(parsed.as_secret(), token.as_secret());
    }

    #[test]
    fn parse_accepts_any_field_order_and_device_tokens() {
        let t = SasToken::parse("SharedAccessSignature se=10&sig=abc%3D&sr=hub%2Fdevices%2Fd1&x=y")
            .unwrap();
        assert_eq!(t.resource(), "hub%2Fdevices%2Fd1");
        assert_eq!(t.key_name(), None);
        assert_eq!(t.expiry_unix(), 10);
    }

    #[test]
    fn parse_rejects_each_malformation() {
        use SasTokenError::*;
        for (input, want) in [
            ("", Prefix),
            ("sr=a&sig=b&se=1", Prefix),
            ("sharedaccesssignature sr=a&sig=b&se=1", Prefix),
            ("Bearer abc", Prefix),
            ("SharedAccessSignature sr=a&sig=b&se=1&", Malformed),
            ("SharedAccessSignature sr=a&sig=b&sig=c&se=1", Malformed),
            ("SharedAccessSignature sr=a&sigb&se=1", Malformed),
            ("SharedAccessSignature sig=b&se=1", MissingField("sr")),
            ("SharedAccessSignature sr=&sig=b&se=1", MissingField("sr")),
            ("SharedAccessSignature sr=a&se=1", MissingField("sig")),
            ("SharedAccessSignature sr=a&sig=b", MissingField("se")),
            ("SharedAccessSignature sr=a&sig=b&se=soon", Expiry),
            ("SharedAccessSignature sr=a&sig=b&se=+1", Expiry),
            ("SharedAccessSignature sr=a&sig=b&se=1.5", Expiry),
            (
                "SharedAccessSignature sr=a&sig=b&se=99999999999999999999999",
                Expiry,
            ),
        ] {
            assert_eq!(SasToken::parse(input).err(), Some(want), "{input:?}");
        }
    }

    #[test]
    fn debug_and_errors_hide_the_signature() {
        let host: HostName = "hub.azure-devices.net".parse().unwrap();
        let token = SasToken::for_amqp(&host, "service", &key(), 7);
        let text = token.as_secret().expose_secret().to_owned();
        let sig = text
            .split('&')
            .find_map(|f| f.strip_prefix("sig="))
            .unwrap();
        let debug = format!("{token:?}");
        assert!(!debug.contains(sig), "{debug}");
        assert!(debug.contains("[REDACTED]"));

        let broken = text.replace("&se=7", "&se=later");
        let err = broken.parse::<SasToken>().unwrap_err();
        assert!(matches!(err, Error::InvalidSasToken(SasTokenError::Expiry)));
        assert!(!err.to_string().contains(sig));
        assert!(!format!("{err:?}").contains(sig));
    }

    #[test]
    fn absurd_expiry_saturates() {
        assert!(unix_to_system_time(u64::MAX) > UNIX_EPOCH);
    }
}
