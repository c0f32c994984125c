//! `If-Match` as the service reads it, and the etag formats it writes.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IfMatch {
    /// No header, or a value the service ignores (an unquoted etag, `""`).
    Absent,
    /// `*` or `"*"`: any current version.
    Any,
    /// A quoted etag, compared with the current one (without its quotes).
    Etag(String),
}

impl IfMatch {
    /// Reads the header value. Only quoted etags are conditions: the service ignored unquoted
    /// ones (reported in Azure/azure-iot-sdk-node#606, azure-iot-sdk-java#574 and
    /// azure-iot-sdk-python#716, and why the SDKs now quote etags), and `""` is what clients
    /// send to mean "create" (the Azure SDK for .NET's recorded IoT Hub tests).
    pub(crate) fn parse(header: Option<&str>) -> Self {
        let Some(raw) = header.map(str::trim) else {
            return Self::Absent;
        };
        if raw == "*" || raw == "\"*\"" {
            return Self::Any;
        }
        match raw
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some("") | None => Self::Absent,
            Some(etag) => Self::Etag(etag.to_owned()),
        }
    }

    /// True when this condition allows replacing an entity whose etag is `current`.
    pub(crate) fn matches(&self, current: &str) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Etag(etag) => etag == current,
        }
    }
}

/// An identity etag: base64 of a decimal number, like the service's `OTQ1MjczNDU0`.
pub(crate) fn identity_etag() -> String {
    STANDARD.encode(fastrand::u32(100_000_000..).to_string())
}

/// A twin etag: base64 of the big-endian twin version, like the service's `AAAAAAAAAAE=`.
pub(crate) fn twin_etag(version: u64) -> String {
    STANDARD.encode(version.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_service() {
        assert_eq!(IfMatch::parse(None), IfMatch::Absent);
        assert_eq!(IfMatch::parse(Some("*")), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("\"*\"")), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("\"abc\"")), IfMatch::Etag("abc".into()));
        assert_eq!(IfMatch::parse(Some("abc")), IfMatch::Absent);
        assert_eq!(IfMatch::parse(Some("\"\"")), IfMatch::Absent);
        assert_eq!(IfMatch::parse(Some("\"")), IfMatch::Absent);
    }

    #[test]
    fn compares_quoted_etags_only() {
        assert!(IfMatch::Etag("a".into()).matches("a"));
        assert!(!IfMatch::Etag("a".into()).matches("b"));
        assert!(IfMatch::Any.matches("b"));
    }

    #[test]
    fn etag_formats() {
        assert_eq!(twin_etag(1), "AAAAAAAAAAE=");
        let e = identity_etag();
        let decoded = String::from_utf8(STANDARD.decode(&e).unwrap()).unwrap();
        assert!(decoded.parse::<u32>().is_ok());
    }
}
