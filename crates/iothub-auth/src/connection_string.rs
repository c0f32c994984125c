//! Service (shared access policy) connection strings.

use std::fmt;
use std::str::FromStr;

use crate::error::{ConnectionStringError as E, Error};
use crate::host::HostName;
use crate::key::SharedAccessKey;
use crate::sas::SasToken;

/// A parsed IoT Hub *service* connection string, as shown under the hub's "Shared access
/// policies" in the portal:
///
/// `HostName=my-hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=<base64>`
///
/// # Grammar
///
/// As in the Python reference SDK: the string is split on `;`, each part on its **first** `=`
/// (so base64 padding in values is fine), keys are case-sensitive, nothing is trimmed and the
/// order of parts is free. Recognised keys are `HostName`, `SharedAccessKeyName`,
/// `SharedAccessKey` and `SharedAccessSignature`. Unlike Python, **one trailing `;` is accepted**,
/// because some tools emit it.
///
/// A valid string has `HostName` and either
/// - `SharedAccessKeyName` + `SharedAccessKey` (tokens can then be renewed), or
/// - `SharedAccessSignature` holding a complete SAS token (`SharedAccessKeyName` optional; the
///   token cannot be renewed).
///
/// Every other shape is rejected with a specific [`ConnectionStringError`](crate::ConnectionStringError),
/// including device connection strings (`DeviceId`, `ModuleId`, `GatewayHostName`), which the
/// service API cannot use. The key is decoded at parse time, so signing never fails later.
///
/// `Debug` redacts the key and signature; there is deliberately no `Display`.
///
/// ```
/// use iothub_auth::ConnectionString;
///
/// let cs: ConnectionString = "HostName=contoso.azure-devices.net;SharedAccessKeyName=service;\
///                             SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
///     .parse()?;
/// assert_eq!(cs.host_name().as_str(), "contoso.azure-devices.net");
/// assert_eq!(cs.hub_name(), Some("contoso"));
/// assert_eq!(cs.shared_access_key_name(), Some("service"));
/// assert!(cs.shared_access_key().is_some());
/// assert!(!format!("{cs:?}").contains("AAECAwQFBgcICQoLDA0ODw=="));
/// # Ok::<(), iothub_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct ConnectionString {
    host_name: HostName,
    secret: PolicySecret,
}

#[derive(Clone)]
pub(crate) enum PolicySecret {
    Key {
        key_name: String,
        key: SharedAccessKey,
    },
    Signature {
        key_name: Option<String>,
        token: SasToken,
    },
}

impl ConnectionString {
    /// The `HostName` value, with any port.
    pub fn host_name(&self) -> &HostName {
        &self.host_name
    }

    /// The hub name: the first DNS label of the host. `None` when the host is an IP literal.
    pub fn hub_name(&self) -> Option<&str> {
        self.host_name.hub_name()
    }

    /// The `SharedAccessKeyName` (policy name). Always present when the string holds a key; may
    /// be absent when it holds a signature.
    pub fn shared_access_key_name(&self) -> Option<&str> {
        match &self.secret {
            PolicySecret::Key { key_name, .. } => Some(key_name),
            PolicySecret::Signature { key_name, .. } => key_name.as_deref(),
        }
    }

    /// The decoded `SharedAccessKey`, if the string holds a key.
    pub fn shared_access_key(&self) -> Option<&SharedAccessKey> {
        match &self.secret {
            PolicySecret::Key { key, .. } => Some(key),
            PolicySecret::Signature { .. } => None,
        }
    }

    /// The `SharedAccessSignature` token, if the string holds a fixed token instead of a key.
    pub fn shared_access_signature(&self) -> Option<&SasToken> {
        match &self.secret {
            PolicySecret::Key { .. } => None,
            PolicySecret::Signature { token, .. } => Some(token),
        }
    }

    pub(crate) fn secret(&self) -> &PolicySecret {
        &self.secret
    }

    fn parse(s: &str) -> Result<Self, E> {
        if s.is_empty() {
            return Err(E::Empty);
        }
        let body = s.strip_suffix(';').unwrap_or(s);

        let mut fields = Fields::default();
        for (index, part) in body.split(';').enumerate() {
            let position = index + 1;
            let (key, value) = part
                .split_once('=')
                .ok_or(E::MissingSeparator { position })?;
            let (name, slot) = match key {
                "HostName" => ("HostName", &mut fields.host_name),
                "SharedAccessKeyName" => ("SharedAccessKeyName", &mut fields.key_name),
                "SharedAccessKey" => ("SharedAccessKey", &mut fields.key),
                "SharedAccessSignature" => ("SharedAccessSignature", &mut fields.signature),
                "DeviceId" => ("DeviceId", &mut fields.device),
                "ModuleId" => ("ModuleId", &mut fields.module),
                "GatewayHostName" => ("GatewayHostName", &mut fields.gateway),
                _ => {
                    return Err(E::UnknownKey {
                        position,
                        key: looks_like_key_name(key).then(|| key.to_owned()),
                    });
                }
            };
            if slot.replace(value).is_some() {
                return Err(E::DuplicateKey { key: name });
            }
        }

        if fields.device.is_some() || fields.module.is_some() || fields.gateway.is_some() {
            return Err(E::DeviceConnectionString);
        }
        let host_name = fields.host_name.ok_or(E::MissingHostName)?;
        let host_name = HostName::parse(host_name).map_err(E::InvalidHostName)?;
        let key_name = match fields.key_name {
            Some(name) if is_valid_key_name(name) => Some(name.to_owned()),
            Some(_) => return Err(E::InvalidKeyName),
            None => None,
        };
        let secret = match (fields.key, fields.signature) {
            (Some(_), Some(_)) => return Err(E::KeyAndSignature),
            (None, None) => return Err(E::MissingCredential),
            (Some(key), None) => PolicySecret::Key {
                key_name: key_name.ok_or(E::MissingKeyName)?,
                key: SharedAccessKey::decode(key).map_err(E::InvalidKey)?,
            },
            (None, Some(token)) => PolicySecret::Signature {
                key_name,
                token: SasToken::parse(token).map_err(E::InvalidSignature)?,
            },
        };
        Ok(Self { host_name, secret })
    }
}

#[derive(Default)]
struct Fields<'a> {
    host_name: Option<&'a str>,
    key_name: Option<&'a str>,
    key: Option<&'a str>,
    signature: Option<&'a str>,
    device: Option<&'a str>,
    module: Option<&'a str>,
    gateway: Option<&'a str>,
}

// Only echo an unknown key when it cannot be a piece of a secret: key names are short words,
// while base64 fragments contain digits, '+', '/' or run long.
fn looks_like_key_name(key: &str) -> bool {
    !key.trim().is_empty()
        && key.len() <= 40
        && key
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b' ')
}

/// Policy names go into the token verbatim (as in Python), so refuse anything that would break it.
pub(crate) fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '&')
}

impl FromStr for ConnectionString {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s).map_err(Error::ConnectionString)
    }
}

impl fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ConnectionString");
        d.field("host_name", &self.host_name)
            .field("shared_access_key_name", &self.shared_access_key_name());
        match &self.secret {
            PolicySecret::Key { key, .. } => d.field("shared_access_key", key),
            PolicySecret::Signature { token, .. } => d.field("shared_access_signature", token),
        };
        d.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{HostNameError, KeyError, SasTokenError};

    const KEY: &str = "c2VjcmV0LWtleS1ieXRlcy0xMjM0NTY3ODkwYWI=";
    const SIG: &str = "SharedAccessSignature sr=hub.azure-devices.net&sig=U0lHTkFUVVJFU0VDUkVU%3D&se=1700000000&skn=service";

    fn parse(s: &str) -> Result<ConnectionString, E> {
        ConnectionString::parse(s)
    }

    fn err(s: &str) -> E {
        match parse(s) {
            Ok(cs) => panic!("{s:?} was accepted: {cs:?}"),
            Err(e) => e,
        }
    }

    fn valid() -> String {
        format!("HostName=hub.azure-devices.net;SharedAccessKeyName=service;SharedAccessKey={KEY}")
    }

    #[test]
    fn parses_a_portal_connection_string() {
        let cs = parse(&valid()).unwrap();
        assert_eq!(cs.host_name().as_str(), "hub.azure-devices.net");
        assert_eq!(cs.hub_name(), Some("hub"));
        assert_eq!(cs.shared_access_key_name(), Some("service"));
        assert_eq!(cs.shared_access_key().map(SharedAccessKey::len), Some(29));
        assert!(cs.shared_access_signature().is_none());
    }

    #[test]
    fn part_order_is_free_and_one_trailing_semicolon_is_allowed() {
        let cs = parse(&format!(
            "SharedAccessKey={KEY};SharedAccessKeyName=service;HostName=localhost:8443;"
        ))
        .unwrap();
        assert_eq!(cs.host_name().as_str(), "localhost:8443");
        assert_eq!(cs.host_name().port(), Some(8443));
        assert_eq!(cs.hub_name(), Some("localhost"));
    }

    #[test]
    fn emulator_and_sovereign_hosts_are_accepted() {
        for host in ["127.0.0.1:8443", "x.azure-devices.cn", "[::1]:5671"] {
            let cs = parse(&format!(
                "HostName={host};SharedAccessKeyName=service;SharedAccessKey={KEY}"
            ))
            .unwrap();
            assert_eq!(cs.host_name().as_str(), host);
        }
    }

    #[test]
    fn holds_a_signature_instead_of_a_key() {
        let cs = parse(&format!(
            "HostName=hub.azure-devices.net;SharedAccessSignature={SIG}"
        ))
        .unwrap();
        assert!(cs.shared_access_key().is_none());
        assert_eq!(cs.shared_access_key_name(), None);
        let sig = cs.shared_access_signature().unwrap();
        assert_eq!(sig.expiry_unix(), 1_700_000_000);
        assert_eq!(sig.key_name(), Some("service"));
        // A key name beside the signature is allowed and kept.
        let cs = parse(&format!(
            "HostName=h;SharedAccessKeyName=service;SharedAccessSignature={SIG}"
        ))
        .unwrap();
        assert_eq!(cs.shared_access_key_name(), Some("service"));
    }

    #[test]
    fn rejects_empty_string() {
        assert_eq!(err(""), E::Empty);
    }

    #[test]
    fn rejects_part_without_separator_by_position() {
        // A pasted key has '=' padding, so it splits like a part with an unknown key; as that
        // "key" is not word-like, it is reported by position only.
        let e = err(&format!("HostName=h;SharedAccessKeyName=s;{KEY}"));
        assert_eq!(
            e,
            E::UnknownKey {
                position: 3,
                key: None
            }
        );
        assert_eq!(
            err("HostName=h;SharedAccessKeyName;SharedAccessKey=AAAA"),
            E::MissingSeparator { position: 2 }
        );
        assert_eq!(
            err("HostName=h;;SharedAccessKey=AAAA"),
            E::MissingSeparator { position: 2 }
        );
        assert_eq!(err(";"), E::MissingSeparator { position: 1 });
        assert_eq!(
            err(&format!("{};;", valid())),
            E::MissingSeparator { position: 4 }
        );
        assert_eq!(
            E::MissingSeparator { position: 2 }.to_string(),
            "part 2 is not of the form Key=Value"
        );
    }

    #[test]
    fn rejects_missing_host_name() {
        assert_eq!(
            err(&format!(
                "SharedAccessKeyName=service;SharedAccessKey={KEY}"
            )),
            E::MissingHostName
        );
    }

    #[test]
    fn rejects_key_without_key_name() {
        assert_eq!(
            err(&format!("HostName=h;SharedAccessKey={KEY}")),
            E::MissingKeyName
        );
    }

    #[test]
    fn rejects_key_name_without_key_or_signature() {
        assert_eq!(
            err("HostName=h;SharedAccessKeyName=service"),
            E::MissingCredential
        );
        assert_eq!(err("HostName=h"), E::MissingCredential);
    }

    #[test]
    fn rejects_both_key_and_signature() {
        assert_eq!(
            err(&format!("{};SharedAccessSignature={SIG}", valid())),
            E::KeyAndSignature
        );
    }

    #[test]
    fn rejects_unknown_key_and_names_it() {
        let e = err(&format!(
            "hostname=h;SharedAccessKeyName=service;SharedAccessKey={KEY}"
        ));
        assert_eq!(
            e,
            E::UnknownKey {
                position: 1,
                key: Some("hostname".into())
            }
        );
        assert_eq!(
            e.to_string(),
            "part 1 has the unknown key \"hostname\" (keys are case-sensitive and not trimmed; \
             did you mean HostName?)"
        );
        let e = err(&format!("{}; Endpoint=sb://x", valid()));
        assert_eq!(e.to_string(), "part 4 has the unknown key \" Endpoint\"");
        let e = err(&format!("{}; HostName=x", valid()));
        assert!(e.to_string().ends_with("did you mean HostName?)"), "{e}");
    }

    #[test]
    fn rejects_duplicate_key() {
        assert_eq!(
            err(&format!("{};HostName=other", valid())),
            E::DuplicateKey { key: "HostName" }
        );
        assert_eq!(
            err(&format!("{};SharedAccessKey={KEY}", valid())),
            E::DuplicateKey {
                key: "SharedAccessKey"
            }
        );
    }

    #[test]
    fn rejects_key_that_is_not_base64() {
        assert_eq!(
            err("HostName=h;SharedAccessKeyName=s;SharedAccessKey=not*base64!"),
            E::InvalidKey(KeyError::NotBase64)
        );
    }

    #[test]
    fn rejects_empty_key() {
        assert_eq!(
            err("HostName=h;SharedAccessKeyName=s;SharedAccessKey="),
            E::InvalidKey(KeyError::Empty)
        );
    }

    #[test]
    fn rejects_invalid_key_name() {
        for name in ["", "a b", "a&b", "a\tb"] {
            assert_eq!(
                err(&format!(
                    "HostName=h;SharedAccessKeyName={name};SharedAccessKey={KEY}"
                )),
                E::InvalidKeyName,
                "{name:?}"
            );
        }
    }

    #[test]
    fn rejects_invalid_signature() {
        assert_eq!(
            err("HostName=h;SharedAccessSignature=sr=h&sig=x&se=1"),
            E::InvalidSignature(SasTokenError::Prefix)
        );
        assert_eq!(
            err("HostName=h;SharedAccessSignature="),
            E::InvalidSignature(SasTokenError::Prefix)
        );
    }

    #[test]
    fn rejects_host_that_is_not_a_host_name() {
        for (host, want) in [
            ("https://hub.azure-devices.net", HostNameError::Scheme),
            ("hub.azure-devices.net/", HostNameError::Path),
            ("hub .azure-devices.net", HostNameError::Whitespace),
            ("localhost:0", HostNameError::Port),
            ("localhost:70000", HostNameError::Port),
            ("hub_*", HostNameError::Syntax),
            ("", HostNameError::Empty),
        ] {
            assert_eq!(
                err(&format!(
                    "HostName={host};SharedAccessKeyName=s;SharedAccessKey={KEY}"
                )),
                E::InvalidHostName(want),
                "{host:?}"
            );
        }
    }

    #[test]
    fn rejects_device_connection_strings_with_a_clear_message() {
        for s in [
            format!("HostName=h;DeviceId=d1;SharedAccessKey={KEY}"),
            format!("HostName=h;DeviceId=d1;ModuleId=m1;SharedAccessKey={KEY}"),
            format!("HostName=h;DeviceId=d1;SharedAccessKey={KEY};GatewayHostName=edge"),
            format!("{};ModuleId=m1", valid()),
        ] {
            let e = err(&s);
            assert_eq!(e, E::DeviceConnectionString, "{s}");
            assert_eq!(
                e.to_string(),
                "this is a device connection string; the service SDK needs a shared access \
                 policy connection string (HostName, SharedAccessKeyName, SharedAccessKey)"
            );
        }
    }

    #[test]
    fn from_str_wraps_in_the_crate_error() {
        let e = "".parse::<ConnectionString>().unwrap_err();
        assert!(matches!(e, Error::ConnectionString(E::Empty)));
        assert_eq!(
            e.to_string(),
            "invalid connection string: the connection string is empty"
        );
    }

    #[test]
    fn debug_redacts_key_and_signature() {
        let cs = parse(&valid()).unwrap();
        let debug = format!("{cs:?}");
        assert!(!debug.contains(KEY), "{debug}");
        assert!(debug.contains("hub.azure-devices.net"));
        assert!(debug.contains("[REDACTED]"));

        let cs = parse(&format!("HostName=h;SharedAccessSignature={SIG}")).unwrap();
        let debug = format!("{cs:?}");
        assert!(!debug.contains("U0lHTkFUVVJFU0VDUkVU"), "{debug}");
        assert!(!debug.contains(SIG), "{debug}");
    }

    #[test]
    fn no_error_echoes_a_secret() {
        let sig_value = "U0lHTkFUVVJFU0VDUkVU";
        let inputs = [
            format!("HostName=h;SharedAccessKeyName=s;{KEY}"),
            format!("HostName=h;{KEY};SharedAccessKeyName=s"),
            format!("HostName=h;SharedAccessKey={KEY}"),
            format!("HostName=h;SharedAccessKey={KEY}x;SharedAccessKeyName=s"),
            format!("HostName=h;SharedAccessKey={KEY};SharedAccessKey={KEY}"),
            format!("HostName={KEY};SharedAccessKeyName=s;SharedAccessKey={KEY}"),
            format!("HostName=h;DeviceId=d;SharedAccessKey={KEY}"),
            format!("{};SharedAccessSignature={SIG}", valid()),
            format!(
                "HostName=h;SharedAccessSignature={}",
                SIG.replace("se=", "sx=")
            ),
            format!("HostName=h;SharedAccessSignature={}", &SIG[22..]),
            format!("HostName=h;SharedAccessKeyName={KEY} ;SharedAccessKey={KEY}"),
            format!("HostName=h;sharedaccesskey{KEY}"),
            format!("HostName=h;{sig_value}=x"),
        ];
        for input in inputs {
            let e = Error::from(err(&input));
            for shown in [e.to_string(), format!("{e:?}")] {
                assert!(!shown.contains(KEY), "{shown}");
                assert!(!shown.contains(&KEY[..12]), "{shown}");
                assert!(!shown.contains(sig_value), "{shown}");
            }
        }
    }
}
