//! Test keys, SAS credentials built from them, and a fixed Azure AD token.

use std::fmt::Display;
use std::sync::Mutex;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::{Duration, OffsetDateTime};
use iothub_auth::{ConnectionString, Credential};

/// The shared access key the mock-server tests sign with (32 bytes, base64).
pub const SERVICE_KEY: &str = "c2VydmljZS1rZXktZm9yLXRlc3RzLTMyLWJ5dGVzISE=";

/// Another valid key, for tokens a hub holding [`SERVICE_KEY`] must refuse.
pub const OTHER_KEY: &str = "b3RoZXIta2V5LWZvci10ZXN0cy0zMi1ieXRlcyEhISE=";

/// `HostName={host};SharedAccessKeyName={policy};SharedAccessKey={key}`.
pub fn connection_string(host: impl Display, policy: &str, key: &str) -> String {
    format!("HostName={host};SharedAccessKeyName={policy};SharedAccessKey={key}")
}

/// A SAS credential for `host` (a mock server's `127.0.0.1:port`, or a hub name), signing
/// as `policy` with `key`.
pub fn credential(host: impl Display, policy: &str, key: &str) -> Credential {
    let cs: ConnectionString = connection_string(host, policy, key)
        .parse()
        .expect("a valid connection string");
    Credential::from_connection_string(&cs)
}

/// An Azure AD credential that hands out one fixed token, valid for an hour, and records the
/// scopes it was asked for.
#[derive(Debug)]
pub struct FixedToken {
    token: String,
    scopes: Mutex<Vec<String>>,
}

impl FixedToken {
    /// A credential that always answers `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            scopes: Mutex::default(),
        }
    }

    /// Every scope asked for so far, in order.
    pub fn scopes(&self) -> Vec<String> {
        self.scopes.lock().expect("not poisoned").clone()
    }
}

// `TokenCredential` is an `#[async_trait]` trait; azure_core does not re-export the macro,
// so it comes from the `async-trait` crate.
#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        self.scopes
            .lock()
            .expect("not poisoned")
            .extend(scopes.iter().map(|s| s.to_string()));
        Ok(AccessToken::new(
            self.token.clone(),
            OffsetDateTime::now_utc() + Duration::hours(1),
        ))
    }
}
