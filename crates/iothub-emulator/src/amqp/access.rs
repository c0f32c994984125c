//! What a connection may do: nothing until SASL PLAIN or a `$cbs` put-token presents a valid
//! token, then what that token allows until it expires. A SAS token with ServiceConnect (or
//! the configured fixed bearer token) allows everything; a token of the Entra tenant allows
//! what its principal's roles grant: sending cloud-to-device messages, receiving feedback,
//! receiving file-upload notifications. For each of these the latest expiry of any accepted
//! token counts, so renewing before expiry keeps the connection open.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::feedback::Stream;
use crate::auth::{AuthError, Permission, Principal, scope_covers};
use crate::entra::Action;
use crate::hub::Shared;

/// How long a token lets a connection act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Grant {
    /// No valid token yet.
    None,
    /// A token valid until this unix second (exclusive).
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

/// What a connection does with the hub, each allowed by its own data action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Right {
    /// Send on `/messages/devicebound`.
    SendC2d,
    /// Receive on `/messages/servicebound/feedback`.
    Feedback,
    /// Receive on `/messages/servicebound/filenotifications`.
    FileNotifications,
}

impl Right {
    const ALL: [Right; 3] = [Right::SendC2d, Right::Feedback, Right::FileNotifications];

    /// The hub resource the right acts on, as a SAS token's `sr` must cover it.
    fn resource(self) -> &'static [&'static str] {
        match self {
            Self::SendC2d => &["messages", "devicebound"],
            Self::Feedback => &["messages", "servicebound", "feedback"],
            Self::FileNotifications => &["messages", "servicebound", "filenotifications"],
        }
    }

    fn action(self) -> Action {
        match self {
            Self::SendC2d => Action::C2dSend,
            Self::Feedback => Action::C2dFeedback,
            Self::FileNotifications => Action::FileNotifications,
        }
    }
}

impl From<Stream> for Right {
    fn from(stream: Stream) -> Self {
        match stream {
            Stream::Feedback => Self::Feedback,
            Stream::FileNotifications => Self::FileNotifications,
        }
    }
}

/// A [`Grant`] per [`Right`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grants([Grant; 3]);

impl Default for Grants {
    fn default() -> Self {
        Self([Grant::None; 3])
    }
}

impl Grants {
    /// Every right, for as long as `grant` says.
    pub(crate) fn all(grant: Grant) -> Self {
        Self([grant; 3])
    }

    pub(crate) fn get(self, right: Right) -> Grant {
        self.0[right as usize]
    }

    /// The longest of the grants.
    fn longest(self) -> Grant {
        self.0.into_iter().max().unwrap_or(Grant::None)
    }

    pub(crate) fn allows(self, right: Right, now: u64) -> bool {
        self.get(right).allows(now)
    }

    /// When the last right runs out; None when one never does, or none was granted.
    pub(crate) fn remaining(self) -> Option<Duration> {
        self.longest().remaining()
    }
}

/// A connection's grants, observable so the connection can close when they run out.
#[derive(Debug)]
pub(crate) struct Access(watch::Sender<Grants>);

impl Default for Access {
    fn default() -> Self {
        Self(watch::Sender::new(Grants::default()))
    }
}

impl Access {
    pub(crate) fn current(&self) -> Grants {
        *self.0.borrow()
    }

    /// Whether the connection may do `right` now.
    pub(crate) fn allows_now(&self, right: impl Into<Right>) -> bool {
        self.current().allows(right.into(), now_unix())
    }

    /// Adds grants; for each right the longer one wins.
    pub(crate) fn extend(&self, grants: Grants) {
        self.0.send_if_modified(|current| {
            let mut changed = false;
            for (mine, theirs) in current.0.iter_mut().zip(grants.0) {
                if theirs > *mine {
                    *mine = theirs;
                    changed = true;
                }
            }
            changed
        });
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Grants> {
        self.0.subscribe()
    }
}

/// Checks a token (`SharedAccessSignature …` or `Bearer …`): a SAS token needs
/// ServiceConnect and grants, until its `se`, what its `sr` covers (everything for a token of
/// the hub; nothing for one scoped to a device); the fixed bearer token grants
/// everything for ever; an Entra token grants, until its `exp`, the rights its principal's
/// roles allow, and at least one of them is needed.
pub(crate) fn check(shared: &Shared, token: &str) -> Result<Grants, AuthError> {
    let principal = shared
        .auth
        .authorize(Some(token), Permission::ServiceConnect, now_unix())?;
    Ok(match principal {
        Principal::Policy(_) => {
            let until = sas_field(token, "se")
                .and_then(|se| se.parse().ok())
                .map_or(Grant::Always, Grant::Until);
            let sr = sas_field(token, "sr").unwrap_or_default();
            let mut grants = Grants::default();
            for right in Right::ALL {
                if scope_covers(sr, right.resource()) {
                    grants.0[right as usize] = until;
                }
            }
            if grants == Grants::default() {
                return Err(AuthError::OutOfScope);
            }
            grants
        }
        Principal::Bearer => Grants::all(Grant::Always),
        Principal::Entra(principal) => {
            let mut grants = Grants::default();
            for right in Right::ALL {
                if principal.actions.contains(right.action()) {
                    grants.0[right as usize] = Grant::Until(principal.expires);
                }
            }
            if grants == Grants::default() {
                return Err(AuthError::NotPermitted(Action::C2dSend));
            }
            grants
        }
    })
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
    fn access_keeps_the_longest_grant_per_right() {
        let access = Access::default();
        let mut rx = access.subscribe();
        assert!(!access.allows_now(Right::SendC2d));
        assert_eq!(access.current().remaining(), None);
        let soon = now_unix() + 100;
        access.extend(Grants::all(Grant::Until(soon)));
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        access.extend(Grants::all(Grant::Until(5)));
        assert!(!rx.has_changed().unwrap());
        assert!(access.allows_now(Right::SendC2d));
        assert!(access.allows_now(Stream::Feedback));
        // A longer grant of one right alone: only that right is extended, and watchers see it.
        let mut later = Grants::default();
        later.0[Right::FileNotifications as usize] = Grant::Until(soon + 100);
        access.extend(later);
        assert!(rx.has_changed().unwrap());
        assert_eq!(access.current().get(Right::SendC2d), Grant::Until(soon));
        assert_eq!(
            access.current().get(Right::FileNotifications),
            Grant::Until(soon + 100)
        );
        assert!(access.current().remaining().unwrap() > Duration::from_secs(150));
        access.extend(Grants::all(Grant::Always));
        assert_eq!(access.current(), Grants::all(Grant::Always));
        assert_eq!(access.current().remaining(), None);
    }

    #[test]
    fn one_right_does_not_imply_another() {
        let mut only_files = Grants::default();
        only_files.0[Right::FileNotifications as usize] = Grant::Always;
        assert!(only_files.allows(Right::FileNotifications, 0));
        assert!(!only_files.allows(Right::SendC2d, 0));
        assert!(!only_files.allows(Right::Feedback, 0));
        assert_eq!(Right::from(Stream::Feedback).action(), Action::C2dFeedback);
        assert_eq!(Right::SendC2d.action(), Action::C2dSend);
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
