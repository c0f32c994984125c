//! What a connection may do: nothing until SASL PLAIN or a `$cbs` put-token presents a valid
//! token with ServiceConnect, then everything until the token's `se`. The latest expiry of
//! any accepted token counts, so renewing before expiry keeps the connection open.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::auth::{AuthError, Permission};
use crate::hub::Shared;

/// How long a connection's tokens let it act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grant {
    /// No valid token yet.
    None,
    /// A SAS token valid until this unix second (exclusive).
    Until(u64),
    /// The configured bearer token, which carries no expiry.
    Always,
}

impl Grant {
    pub(crate) fn allows(self, now: u64) -> bool {
        match self {
            Self::None => false,
            Self::Until(se) => se > now,
            Self::Always => true,
        }
    }

    /// When the grant runs out, measured from the system clock; None when it never does
    /// (an `se` beyond what the clock can represent included).
    pub(crate) fn remaining(self) -> Option<Duration> {
        match self {
            Self::Until(se) => {
                let at = UNIX_EPOCH.checked_add(Duration::from_secs(se))?;
                Some(at.duration_since(SystemTime::now()).unwrap_or_default())
            }
            Self::None | Self::Always => None,
        }
    }
}

/// A connection's grant, observable so the connection can close when it runs out.
#[derive(Debug)]
pub(crate) struct Access(watch::Sender<Grant>);

impl Default for Access {
    fn default() -> Self {
        Self(watch::Sender::new(Grant::None))
    }
}

impl Access {
    pub(crate) fn current(&self) -> Grant {
        *self.0.borrow()
    }

    pub(crate) fn allows_now(&self) -> bool {
        self.current().allows(now_unix())
    }

    /// Adds a grant; the longer one wins.
    pub(crate) fn extend(&self, grant: Grant) {
        self.0.send_if_modified(|current| {
            let longer = grant > *current;
            if longer {
                *current = grant;
            }
            longer
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Grant> {
        self.0.subscribe()
    }
}

/// Checks a token (`SharedAccessSignature …` or `Bearer …`) for ServiceConnect.
pub(crate) fn check(shared: &Shared, token: &str) -> Result<Grant, AuthError> {
    shared
        .auth
        .authorize(Some(token), Permission::ServiceConnect, now_unix())?;
    Ok(sas_field(token, "se")
        .and_then(|se| se.parse().ok())
        .map_or(Grant::Always, Grant::Until))
}

/// A field of a SAS token (`sr`, `se`, `skn`, …) as written in it.
pub(crate) fn sas_field<'a>(token: &'a str, name: &str) -> Option<&'a str> {
    let body = token.trim().strip_prefix("SharedAccessSignature ")?;
    body.split('&').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_order_and_expire() {
        assert!(!Grant::None.allows(0));
        assert!(Grant::Until(10).allows(9));
        assert!(!Grant::Until(10).allows(10));
        assert!(Grant::Always.allows(u64::MAX));
        assert!(Grant::None < Grant::Until(0));
        assert!(Grant::Until(5) < Grant::Until(6));
        assert!(Grant::Until(u64::MAX) < Grant::Always);
        assert_eq!(Grant::Until(0).remaining(), Some(Duration::ZERO));
        assert_eq!(Grant::Until(u64::MAX).remaining(), None);
        assert_eq!(Grant::Always.remaining(), None);
    }

    #[test]
    fn access_keeps_the_longest_grant() {
        let access = Access::default();
        let mut rx = access.subscribe();
        assert!(!access.allows_now());
        access.extend(Grant::Until(now_unix() + 100));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        access.extend(Grant::Until(5));
        assert!(!rx.has_changed().unwrap());
        assert!(access.allows_now());
        access.extend(Grant::Always);
        assert_eq!(access.current(), Grant::Always);
    }

    #[test]
    fn sas_fields_in_any_order() {
        let token = "SharedAccessSignature sig=a%2Bb&se=17&skn=owner&sr=h";
        assert_eq!(sas_field(token, "se"), Some("17"));
        assert_eq!(sas_field(token, "skn"), Some("owner"));
        assert_eq!(sas_field(token, "sr"), Some("h"));
        assert_eq!(sas_field(token, "x"), None);
        assert_eq!(sas_field("Bearer abc", "se"), None);
    }
}
