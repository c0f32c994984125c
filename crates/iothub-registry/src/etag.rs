//! Entity tags and the `If-Match` precondition of a write.
//!
//! The service compares a *quoted* `If-Match` value with the entity's current etag and answers
//! 412 on a mismatch; an unquoted value was silently ignored (the write went through
//! unconditionally), so every etag is sent quoted. `*` and `"*"` both mean "any version"; the
//! Python reference sends `"*"`, and so do we.

use std::fmt;
use std::str::FromStr;

use crate::Error;
use crate::retry::OperationKind;

/// An entity tag, as the service returns it: unquoted in bodies (`"etag": "AAAAAAAAAAE="`) or
/// quoted in headers (`ETag: "MQ=="`).
///
/// It is stored without the quotes; [`IfMatch`] adds them when it builds the header.
///
/// ```
/// use iothub_registry::ETag;
///
/// let from_body = ETag::new("AAAAAAAAAAE=")?;
/// let from_header: ETag = "\"AAAAAAAAAAE=\"".parse()?;
/// assert_eq!(from_body, from_header);
/// assert_eq!(from_body.as_str(), "AAAAAAAAAAE=");
/// # Ok::<(), iothub_registry::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(String);

impl ETag {
    /// Checks and wraps an etag, quoted or not.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `"etag"`) when the value is empty (or `""`), contains
    /// a control character, contains a `"` other than one pair wrapping the whole value, or is
    /// the wildcard `*` (use [`IfMatch::Any`] for that: an etag of `*` would turn a conditional
    /// write into an unconditional one).
    pub fn new(etag: impl Into<String>) -> Result<Self, Error> {
        let mut etag = etag.into();
        // Mirrors the reference's rule: a value longer than one character that starts and ends
        // with `"` is already quoted.
        if etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"') {
            etag.pop();
            etag.remove(0);
        }
        if etag.is_empty() {
            return Err(invalid("must not be empty".to_owned()));
        }
        if etag == "*" {
            return Err(invalid(
                "`*` is the wildcard, not an entity tag; use IfMatch::Any for an unconditional write"
                    .to_owned(),
            ));
        }
        if let Some((index, c)) = etag
            .chars()
            .enumerate()
            .find(|&(_, c)| c == '"' || c.is_control())
        {
            let what = if c == '"' {
                "a double quote is only allowed as one pair wrapping the whole etag"
            } else {
                "control characters are not allowed"
            };
            return Err(invalid(format!(
                "character {c:?} (U+{:04X}) at index {index}: {what}",
                u32::from(c)
            )));
        }
        Ok(Self(etag))
    }

    /// The etag without quotes, as it appears in response bodies.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The etag without quotes, as an owned string.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument {
        argument: "etag",
        reason,
    }
}

/// Shows the etag without quotes.
impl fmt::Display for ETag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Same as [`ETag::new`].
impl FromStr for ETag {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl AsRef<str> for ETag {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The precondition of a write (update or delete): the `If-Match` header.
///
/// There is deliberately no `Default` and no conversion from `Option`: a conditional write must
/// never silently become unconditional. Use [`IfMatch::from_current`] with the etag you just
/// read; it fails if there is none, where passing `None` to the Python reference would send
/// `"*"` and overwrite whatever is there.
///
/// ```
/// use iothub_registry::IfMatch;
///
/// // Overwrite whatever is there.
/// assert_eq!(IfMatch::Any.header_value(), "\"*\"");
///
/// // Write only if nobody changed the entity since we read it.
/// let etag_read: Option<String> = Some("AAAAAAAAAAE=".to_owned()); // e.g. `twin.etag`
/// let if_match = IfMatch::from_current(etag_read.as_deref())?;
/// assert_eq!(if_match.header_value(), "\"AAAAAAAAAAE=\"");
///
/// // An entity read without an etag is an error, not an unconditional write.
/// assert!(IfMatch::from_current(None).is_err());
/// # Ok::<(), iothub_registry::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum IfMatch {
    /// Any version: the write is unconditional. Sent as `"*"`.
    Any,
    /// Only the version with this etag: the service answers 412 `PreconditionFailed` if the
    /// entity changed since. Sent quoted.
    ETag(ETag),
}

impl IfMatch {
    /// An unconditional write: [`IfMatch::Any`].
    pub fn any() -> Self {
        Self::Any
    }

    /// A write conditional on `etag`.
    pub fn etag(etag: ETag) -> Self {
        Self::ETag(etag)
    }

    /// A write conditional on the etag just read from the service.
    ///
    /// Use this with the `etag` field of a device, module or twin: an entity without an etag
    /// gives an error instead of an unconditional write.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `"etag"`) when `etag` is `None`, or when it is not a
    /// valid [`ETag`] (including `*`).
    pub fn from_current(etag: Option<&str>) -> Result<Self, Error> {
        match etag {
            Some(etag) => ETag::new(etag).map(Self::ETag),
            None => Err(invalid(
                "no etag was read, so the write cannot be made conditional; \
                 use IfMatch::Any to write unconditionally"
                    .to_owned(),
            )),
        }
    }

    /// The `If-Match` header value, exactly as the Python reference builds it: `"*"` (with the
    /// double quotes) for [`IfMatch::Any`], otherwise the etag wrapped in double quotes.
    pub fn header_value(&self) -> String {
        match self {
            Self::Any => "\"*\"".to_owned(),
            // ETag stores the value unquoted and without inner quotes, so this never
            // double-wraps.
            Self::ETag(etag) => format!("\"{etag}\""),
        }
    }

    /// What a write under this precondition is, for the retry rule.
    pub(crate) fn write_kind(&self) -> OperationKind {
        match self {
            Self::Any => OperationKind::UnconditionalWrite,
            Self::ETag(_) => OperationKind::ConditionalWrite,
        }
    }
}

impl From<ETag> for IfMatch {
    fn from(etag: ETag) -> Self {
        Self::ETag(etag)
    }
}

/// `*` and `"*"` give [`IfMatch::Any`]; anything else must be a valid [`ETag`].
impl TryFrom<&str> for IfMatch {
    type Error = Error;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        match value {
            "*" | "\"*\"" => Ok(Self::Any),
            etag => ETag::new(etag).map(Self::ETag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(error: Error) -> String {
        match error {
            Error::InvalidArgument { argument, reason } => {
                assert_eq!(argument, "etag");
                reason
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn unquoted_and_quoted_forms_are_the_same_etag() {
        let body = ETag::new("AAAAAAAAAAE=").unwrap();
        let header = ETag::new("\"AAAAAAAAAAE=\"").unwrap();
        assert_eq!(body, header);
        assert_eq!(header.as_str(), "AAAAAAAAAAE=");
        assert_eq!(header.to_string(), "AAAAAAAAAAE=");
        assert_eq!(header.as_ref(), "AAAAAAAAAAE=");
        assert_eq!(header.into_string(), "AAAAAAAAAAE=");
    }

    #[test]
    fn from_str_matches_new() {
        assert_eq!(
            "\"MQ==\"".parse::<ETag>().unwrap(),
            ETag::new("MQ==").unwrap()
        );
        assert!("".parse::<ETag>().is_err());
    }

    #[test]
    fn a_single_character_etag_is_fine() {
        assert_eq!(ETag::new("a").unwrap().as_str(), "a");
        assert_eq!(ETag::new("\"a\"").unwrap().as_str(), "a");
    }

    #[test]
    fn empty_etags_are_rejected() {
        assert!(reason(ETag::new("").unwrap_err()).contains("empty"));
        assert!(reason(ETag::new("\"\"").unwrap_err()).contains("empty"));
    }

    #[test]
    fn stray_quotes_are_rejected() {
        for etag in [
            "\"",
            "\"abc",
            "abc\"",
            "a\"b",
            "\"a\"b\"",
            "\"\"abc\"\"",
            "W/\"abc\"",
        ] {
            let reason = reason(ETag::new(etag).unwrap_err());
            assert!(reason.contains("double quote"), "{etag}: {reason}");
        }
    }

    #[test]
    fn control_characters_are_rejected_with_their_position() {
        let reason = reason(ETag::new("ab\ncd").unwrap_err());
        assert!(reason.contains("U+000A"), "{reason}");
        assert!(reason.contains("index 2"), "{reason}");
        for etag in ["\tabc", "abc\r", "a\u{7f}", "a\u{85}", "\"a\0\""] {
            assert!(ETag::new(etag).is_err(), "{etag:?}");
        }
    }

    #[test]
    fn the_wildcard_is_not_an_etag() {
        for etag in ["*", "\"*\""] {
            assert!(reason(ETag::new(etag).unwrap_err()).contains("IfMatch::Any"));
        }
        // Not the wildcard, just an etag containing a star.
        assert_eq!(ETag::new("**").unwrap().as_str(), "**");
    }

    #[test]
    fn header_value_follows_the_reference() {
        assert_eq!(IfMatch::Any.header_value(), "\"*\"");
        assert_eq!(IfMatch::any().header_value(), "\"*\"");
        let etag = ETag::new("OTQ1MjczNDU0").unwrap();
        assert_eq!(
            IfMatch::etag(etag.clone()).header_value(),
            "\"OTQ1MjczNDU0\""
        );
        assert_eq!(IfMatch::from(etag).header_value(), "\"OTQ1MjczNDU0\"");
    }

    #[test]
    fn header_value_never_double_wraps() {
        let quoted = IfMatch::try_from("\"MQ==\"").unwrap();
        assert_eq!(quoted.header_value(), "\"MQ==\"");
        let unquoted = IfMatch::try_from("MQ==").unwrap();
        assert_eq!(unquoted, quoted);
    }

    #[test]
    fn from_current_requires_an_etag() {
        let reason = reason(IfMatch::from_current(None).unwrap_err());
        assert!(reason.contains("IfMatch::Any"), "{reason}");
        assert_eq!(
            IfMatch::from_current(Some("AAAAAAAAAAE=")).unwrap(),
            IfMatch::ETag(ETag::new("AAAAAAAAAAE=").unwrap())
        );
        assert!(IfMatch::from_current(Some("")).is_err());
        // "The etag I just read" is never the wildcard.
        assert!(IfMatch::from_current(Some("*")).is_err());
    }

    #[test]
    fn try_from_str_treats_star_as_any() {
        assert_eq!(IfMatch::try_from("*").unwrap(), IfMatch::Any);
        assert_eq!(IfMatch::try_from("\"*\"").unwrap(), IfMatch::Any);
        assert_eq!(
            IfMatch::try_from("abc").unwrap(),
            IfMatch::ETag(ETag::new("abc").unwrap())
        );
        assert!(IfMatch::try_from("").is_err());
        assert!(IfMatch::try_from("a\"b").is_err());
    }
}
