//! Strings that grant access, typed so that printing a model never prints them.
//!
//! `cargo xtask codegen` types the spec's secret fields with these (device and module keys as
//! [`SecretString`], the container SAS URIs of import/export jobs as [`SasUri`]). On the wire
//! they are the plain string, in both directions.

use std::fmt;

const REDACTED: &str = "[REDACTED]";

/// A secret string (a shared access key). `Debug` shows `SecretString([REDACTED])`; there is
/// no `Display`. Read it with [`expose_secret`](Self::expose_secret) where it must be used.
///
/// ```
/// use iothub_rest_gen::types::SymmetricKey;
///
/// let keys = SymmetricKey {
///     primary_key: Some("c2VjcmV0LWtleS1vbmUtMTIzNDU2Nzg5MA==".into()),
///     secondary_key: None,
/// };
/// assert!(!format!("{keys:?}").contains("c2VjcmV0"));
/// assert_eq!(
///     keys.primary_key.as_ref().map(|k| k.expose_secret()),
///     Some("c2VjcmV0LWtleS1vbmUtMTIzNDU2Nzg5MA==")
/// );
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The secret itself, owned.
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretString").field(&REDACTED).finish()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// A URI that may carry a shared access signature (a blob container's SAS URI). `Debug` shows
/// it with the value of every `sig` query parameter replaced by `[REDACTED]`, so the account,
/// container and permissions stay visible; there is no `Display`.
///
/// ```
/// use iothub_rest_gen::SasUri;
///
/// let uri = SasUri::from("https://acct.blob.core.windows.net/c?sp=rw&sig=abc%2Bdef%3D");
/// assert_eq!(
///     format!("{uri:?}"),
///     r#"SasUri("https://acct.blob.core.windows.net/c?sp=rw&sig=[REDACTED]")"#
/// );
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SasUri(String);

impl SasUri {
    /// The URI, signature included.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The URI, signature included, owned.
    pub fn into_inner(self) -> String {
        self.0
    }

    /// The URI with every `sig` value replaced by `[REDACTED]`, for logs and messages.
    pub fn redacted(&self) -> String {
        redact_query_param(&self.0, "sig")
    }
}

impl fmt::Debug for SasUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SasUri").field(&self.redacted()).finish()
    }
}

impl From<String> for SasUri {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SasUri {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

/// JSON fields whose string value is a secret, matched without regard to case.
const SECRET_FIELDS: &[&str] = &["primaryKey", "secondaryKey", "sharedAccessKey"];

/// `text` (a response body, a log line) with what would grant access replaced by
/// `[REDACTED]`: the string values of the JSON fields `primaryKey`, `secondaryKey` and
/// `sharedAccessKey` (whatever their case, and whether or not the JSON is valid),
/// every `sig=` query value, and the value of `SharedAccessKey=` in a connection string. The
/// rest is kept, so the text still says what went wrong.
///
/// ```
/// let body = r#"{"deviceId":"d1","authentication":{"symmetricKey":{"primaryKey":"c2VjcmV0","secondaryKey":"b3RoZXI="}}"#;
/// let shown = iothub_rest_gen::redact_secrets(body);
/// assert!(shown.contains(r#""deviceId":"d1""#));
/// assert!(!shown.contains("c2VjcmV0") && !shown.contains("b3RoZXI="));
/// ```
pub fn redact_secrets(text: &str) -> String {
    let mut text = redact_query_param(text, "sig");
    text = redact_query_param(&text, "SharedAccessKey");
    for field in SECRET_FIELDS {
        text = redact_json_string_field(&text, field);
    }
    text
}

/// Replaces the string value of every `"<field>": "…"` (any case, any white space around the
/// colon) with `[REDACTED]`, scanning the text rather than parsing it, so a body that is not
/// valid JSON is redacted too.
fn redact_json_string_field(text: &str, field: &str) -> String {
    let quoted = format!("\"{}\"", field.to_ascii_lowercase());
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(&quoted) {
        let key_end = search + found + quoted.len();
        search = key_end;
        let after = &text[key_end..];
        let colon = after.len() - after.trim_start().len();
        if !after[colon..].starts_with(':') {
            continue;
        }
        let value = &after[colon + 1..];
        let space = value.len() - value.trim_start().len();
        if !value[space..].starts_with('"') {
            continue;
        }
        let start = key_end + colon + 1 + space + 1;
        // The closing quote: the first one not escaped by a backslash.
        let mut end = start;
        let bytes = text.as_bytes();
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let end = end.min(text.len());
        out.push_str(&text[copied..start]);
        if end > start {
            out.push_str(REDACTED);
        }
        copied = end;
        search = end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `text` with the value of every `name=` parameter (after `?`, `&` or `;`, any case) up to
/// the next `&`, `;`, `#`, quote or white space replaced by `[REDACTED]`. Works on a URI, a
/// query string or free text holding one.
pub(crate) fn redact_query_param(text: &str, name: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let needle = format!("{}=", name.to_ascii_lowercase());
    loop {
        let lower = rest.to_ascii_lowercase();
        let Some(at) = lower.match_indices(&needle).map(|(i, _)| i).find(|&i| {
            i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b';' | b' ' | b'"')
        }) else {
            out.push_str(rest);
            return out;
        };
        let value_start = at + needle.len();
        let value_end = rest[value_start..]
            .find(|c: char| matches!(c, '&' | ';' | '#' | '"' | '\'') || c.is_whitespace())
            .map_or(rest.len(), |end| value_start + end);
        out.push_str(&rest[..value_start]);
        if value_end > value_start {
            out.push_str(REDACTED);
        }
        rest = &rest[value_end..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_serialize_as_the_plain_string_and_never_print() {
        let key = SecretString::from("a2V5");
        assert_eq!(serde_json::to_string(&key).unwrap(), r#""a2V5""#);
        assert_eq!(
            serde_json::from_str::<SecretString>(r#""a2V5""#).unwrap(),
            key
        );
        assert_eq!(format!("{key:?}"), r#"SecretString("[REDACTED]")"#);
        assert_eq!(key.expose_secret(), "a2V5");
    }

    #[test]
    fn secrets_are_redacted_from_text_valid_json_or_not() {
        let body = r#"{"authentication":{"symmetricKey":{"primaryKey":"AAA","SecondaryKey" : "B\"B"}},"etag":"e"}"#;
        assert_eq!(
            redact_secrets(body),
            r#"{"authentication":{"symmetricKey":{"primaryKey":"[REDACTED]","SecondaryKey" : "[REDACTED]"}},"etag":"e"}"#
        );
        // Cut off in the middle of a key: still nothing of it shown.
        assert_eq!(
            redact_secrets(r#"{"primaryKey":"AAAA"#),
            r#"{"primaryKey":"[REDACTED]"#
        );
        assert_eq!(
            redact_secrets("HostName=h;SharedAccessKeyName=p;SharedAccessKey=c2Vj"),
            "HostName=h;SharedAccessKeyName=p;SharedAccessKey=[REDACTED]"
        );
        assert_eq!(
            redact_secrets("see https://a/c?sp=r&sig=xyz for details"),
            "see https://a/c?sp=r&sig=[REDACTED] for details"
        );
        // Other fields, and keys that are not strings, are left alone.
        let plain = r#"{"primaryKeyHint":"x","primaryKey":null,"monkey":"m"}"#;
        assert_eq!(redact_secrets(plain), plain);
    }

    #[test]
    fn only_signatures_are_redacted_from_uris() {
        for (uri, expected) in [
            (
                "https://a.blob.core.windows.net/c?sv=2020&sig=x%2By&se=1",
                "https://a.blob.core.windows.net/c?sv=2020&sig=[REDACTED]&se=1",
            ),
            ("https://a/c?SIG=abc", "https://a/c?SIG=[REDACTED]"),
            ("https://a/c?design=1&sig=", "https://a/c?design=1&sig="),
            ("https://a/c?x=1", "https://a/c?x=1"),
            ("sig=one&sig=two", "sig=[REDACTED]&sig=[REDACTED]"),
            (
                r#"{"u":"https://a/c?sig=abc"}"#,
                r#"{"u":"https://a/c?sig=[REDACTED]"}"#,
            ),
        ] {
            assert_eq!(SasUri::from(uri).redacted(), expected, "{uri}");
        }
        let uri = SasUri::from("https://a/c?sig=abc");
        assert_eq!(
            serde_json::to_string(&uri).unwrap(),
            r#""https://a/c?sig=abc""#
        );
        assert!(!format!("{uri:?}").contains("abc"));
    }
}
