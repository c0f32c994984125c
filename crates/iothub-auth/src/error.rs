//! The crate's error type.
//!
//! No message here ever contains a key, a signature, a token or a host name the caller typed:
//! a mistyped host can hold a pasted connection string, and with it the key.

use std::error::Error as StdError;

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection string could not be parsed or is not a service connection string.
    #[error("invalid connection string: {0}")]
    ConnectionString(ConnectionStringError),

    /// A host name given directly is not usable.
    #[error("invalid host name: {0}")]
    InvalidHostName(HostNameError),

    /// A shared access key given directly is not usable.
    #[error("invalid shared access key: {0}")]
    InvalidKey(KeyError),

    /// A shared access key name (policy name) is empty or holds characters that would break a token.
    #[error("invalid shared access key name: {}", KEY_NAME_RULE)]
    InvalidKeyName,

    /// A SAS token given directly does not have the expected shape.
    #[error("invalid shared access signature: {0}")]
    InvalidSasToken(SasTokenError),

    /// A fixed SAS token has expired; it cannot be renewed without the key.
    #[error(
        "the shared access signature expired at Unix time {expired_at} ({ago_secs} s ago); \
         supply a new one, or use a shared access key so tokens can be renewed"
    )]
    SasTokenExpired {
        /// The token's `se` value, in seconds since the Unix epoch.
        expired_at: u64,
        /// How long ago that was, according to the credential's clock.
        ago_secs: u64,
    },

    /// A SAS token lifetime shorter than one second was requested.
    #[error("the SAS token lifetime must be at least one second")]
    InvalidTokenLifetime,

    /// The Azure AD token credential failed to produce a token.
    #[error("the Azure AD credential could not get a token for scope {scope}")]
    TokenCredential {
        /// The scope that was requested.
        scope: String,
        /// What the token credential reported.
        source: Box<dyn StdError + Send + Sync + 'static>,
    },

    /// The clock reads a time before 1970, so no token expiry can be computed.
    #[error("the clock reads a time before the Unix epoch")]
    ClockBeforeUnixEpoch,
}

pub(crate) const KEY_NAME_RULE: &str =
    "it must be non-empty and contain no whitespace, control characters or '&'";

impl From<ConnectionStringError> for Error {
    fn from(e: ConnectionStringError) -> Self {
        Error::ConnectionString(e)
    }
}

/// Why a connection string was rejected.
///
/// Parts are numbered from 1, in the order they appear between `;` separators. Values are never
/// quoted back; key names are, when they look like key names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionStringError {
    /// The string is empty.
    #[error("the connection string is empty")]
    Empty,

    /// A part has no `=`, or is empty (as between `;;`).
    #[error("part {position} is not of the form Key=Value")]
    MissingSeparator {
        /// 1-based number of the part.
        position: usize,
    },

    /// A part has a key this SDK does not know. Keys are case-sensitive.
    #[error("{}", unknown_key_message(*.position, key.as_deref()))]
    UnknownKey {
        /// 1-based number of the part.
        position: usize,
        /// The key, when it looks like a key name (letters, digits, `_`, spaces); `None` when it
        /// could be a fragment of a secret.
        key: Option<String>,
    },

    /// The same key appears twice.
    #[error("{key} appears more than once")]
    DuplicateKey {
        /// The repeated key.
        key: &'static str,
    },

    /// A device or module connection string was given where a service one is needed.
    #[error(
        "this is a device connection string; the service SDK needs a shared access policy \
         connection string (HostName, SharedAccessKeyName, SharedAccessKey)"
    )]
    DeviceConnectionString,

    /// `HostName` is missing.
    #[error("HostName is missing")]
    MissingHostName,

    /// `SharedAccessKey` is given without `SharedAccessKeyName`.
    #[error("SharedAccessKey is given without SharedAccessKeyName")]
    MissingKeyName,

    /// Neither `SharedAccessKey` nor `SharedAccessSignature` is given.
    #[error("neither SharedAccessKey nor SharedAccessSignature is given")]
    MissingCredential,

    /// Both `SharedAccessKey` and `SharedAccessSignature` are given.
    #[error("both SharedAccessKey and SharedAccessSignature are given; keep one")]
    KeyAndSignature,

    /// `HostName` is not a host name.
    #[error("HostName is invalid: {0}")]
    InvalidHostName(HostNameError),

    /// `SharedAccessKey` is not a valid key.
    #[error("SharedAccessKey is invalid: {0}")]
    InvalidKey(KeyError),

    /// `SharedAccessKeyName` is empty or holds characters that would break a token.
    #[error("SharedAccessKeyName is invalid: {}", KEY_NAME_RULE)]
    InvalidKeyName,

    /// `SharedAccessSignature` is not a SAS token.
    #[error("SharedAccessSignature is invalid: {0}")]
    InvalidSignature(SasTokenError),
}

const KNOWN_KEYS: [&str; 7] = [
    "HostName",
    "SharedAccessKeyName",
    "SharedAccessKey",
    "SharedAccessSignature",
    "DeviceId",
    "ModuleId",
    "GatewayHostName",
];

fn unknown_key_message(position: usize, key: Option<&str>) -> String {
    let Some(key) = key else {
        return format!("part {position} has an unknown key");
    };
    let hint = KNOWN_KEYS
        .iter()
        .find(|known| known.eq_ignore_ascii_case(key.trim()))
        .map(|known| format!(" (keys are case-sensitive and not trimmed; did you mean {known}?)"))
        .unwrap_or_default();
    format!("part {position} has the unknown key {key:?}{hint}")
}

/// Why a host name was rejected. The host itself is not repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostNameError {
    /// The host name is empty.
    #[error("it is empty")]
    Empty,
    /// It starts with a scheme such as `https://`; give the bare host.
    #[error("it has a scheme; give only the host, as in my-hub.azure-devices.net")]
    Scheme,
    /// It holds a path, query, fragment or user info.
    #[error("it has a path, query or user info; give only the host and an optional :port")]
    Path,
    /// It holds whitespace or control characters.
    #[error("it contains whitespace or control characters")]
    Whitespace,
    /// The `:port` suffix is not a number from 1 to 65535.
    #[error("the port must be a number from 1 to 65535")]
    Port,
    /// It is neither a DNS name nor an IPv4 or bracketed IPv6 literal.
    #[error("it is not a DNS name or an IPv4 or [IPv6] address")]
    Syntax,
}

/// Why a shared access key was rejected. The key itself is never repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key is empty.
    #[error("it is empty")]
    Empty,
    /// The key is not standard, padded base64.
    #[error("it is not valid base64")]
    NotBase64,
}

/// Why a SAS token was rejected. The token itself is never repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SasTokenError {
    /// It does not start with `SharedAccessSignature `.
    #[error("it does not start with \"SharedAccessSignature \"")]
    Prefix,
    /// A field is not of the form `name=value`, or a field appears twice.
    #[error("its fields are not distinct name=value pairs separated by '&'")]
    Malformed,
    /// A required field is missing or empty.
    #[error("the {0} field is missing or empty")]
    MissingField(&'static str),
    /// `se` is not a number of seconds since the Unix epoch.
    #[error("the se field is not a Unix time in seconds")]
    Expiry,
}
