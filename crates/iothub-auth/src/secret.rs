//! A string that must not end up in logs.

use std::fmt;

/// What `Debug` and `Display` print in place of any secret in this crate.
pub(crate) const REDACTED: &str = "[REDACTED]";

/// A secret string, such as a SAS token or an `Authorization` header value.
///
/// `Debug` and `Display` print `[REDACTED]`; call [`expose_secret`](Self::expose_secret) at the
/// one place where the value is actually sent.
///
/// ```
/// use iothub_auth::Secret;
///
/// let secret = Secret::new("SharedAccessSignature sr=hub&sig=abc&se=1&skn=owner");
/// assert_eq!(format!("{secret} {secret:?}"), "[REDACTED] [REDACTED]");
/// assert!(secret.expose_secret().starts_with("SharedAccessSignature "));
/// ```
#[derive(Clone, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value so it is not printed by accident.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// Returns the secret value.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

// Compares without an early exit, so that comparing tokens does not leak how much of them matched
// through timing (as far as the optimiser allows).
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_are_redacted() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "[REDACTED]");
        assert_eq!(format!("{secret}"), "[REDACTED]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([REDACTED])");
        assert_eq!(secret.expose_secret(), "hunter2");
    }

    #[test]
    fn equality_compares_whole_value() {
        assert_eq!(Secret::new("abc"), Secret::from("abc".to_owned()));
        assert_ne!(Secret::new("abc"), Secret::new("abd"));
        assert_ne!(Secret::new("abc"), Secret::new("abcd"));
        assert_ne!(Secret::new(""), Secret::new("a"));
    }
}
