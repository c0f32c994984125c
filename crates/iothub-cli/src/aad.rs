//! Azure AD for `--auth aad`. azure_identity 1.0 has no chained default credential, so this
//! is the CLI's own chain, in the order the issue sets: a client secret from the environment,
//! then the developer tools (`az login`, `azd auth login`), then a managed identity. The first
//! credential that gives a token is kept for every later token, as azure_identity's
//! `DeveloperToolsCredential` does for its own sources.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{
    ClientSecretCredential, ClientSecretCredentialOptions, DeveloperToolsCredential,
    ManagedIdentityCredential, ManagedIdentityCredentialOptions,
};

use crate::error::{CliError, Result};

/// No source chosen yet.
const NONE: usize = usize::MAX;

/// The chain of credentials.
pub(crate) struct Chain {
    sources: Vec<(&'static str, Arc<dyn TokenCredential>)>,
    chosen: AtomicUsize,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.sources.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Chain").field("sources", &names).finish()
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Chain {
    /// The chain; `http` (trusting `--ca-cert`) carries the token requests when given.
    pub(crate) fn new(http: Option<reqwest::Client>) -> Result<Arc<Self>> {
        let client_options = || ClientOptions {
            transport: http.clone().map(|c| Transport::new(Arc::new(c))),
            ..Default::default()
        };
        let failed = |what: &str, e: azure_core::Error| {
            CliError::Config(format!("cannot set up the {what} credential: {e}"))
        };
        let mut sources: Vec<(&'static str, Arc<dyn TokenCredential>)> = Vec::new();
        // Only when all three are set, as the other Azure SDKs' environment credential.
        if let (Some(tenant), Some(client), Some(secret)) = (
            env("AZURE_TENANT_ID"),
            env("AZURE_CLIENT_ID"),
            env("AZURE_CLIENT_SECRET"),
        ) {
            let options = ClientSecretCredentialOptions {
                client_options: client_options(),
            };
            let credential =
                ClientSecretCredential::new(&tenant, client, Secret::new(secret), Some(options))
                    .map_err(|e| failed("client secret", e))?;
            sources.push(("client secret (AZURE_CLIENT_SECRET)", credential));
        }
        let developer =
            DeveloperToolsCredential::new(None).map_err(|e| failed("developer tools", e))?;
        sources.push(("developer tools (az, azd)", developer));
        let managed = ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
            client_options: client_options(),
            ..Default::default()
        }))
        .map_err(|e| failed("managed identity", e))?;
        sources.push(("managed identity", managed));
        Ok(Arc::new(Self {
            sources,
            chosen: AtomicUsize::new(NONE),
        }))
    }
}

#[async_trait::async_trait]
impl TokenCredential for Chain {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let chosen = self.chosen.load(Ordering::Acquire);
        if let Some((_, source)) = self.sources.get(chosen) {
            return source.get_token(scopes, options).await;
        }
        let mut failures = Vec::new();
        for (index, (name, source)) in self.sources.iter().enumerate() {
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    tracing::info!(credential = name, "Azure AD token");
                    self.chosen.store(index, Ordering::Release);
                    return Ok(token);
                }
                Err(e) => failures.push(format!("{name}: {e}")),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Azure AD credential gave a token. Set AZURE_TENANT_ID, AZURE_CLIENT_ID and \
                 AZURE_CLIENT_SECRET, or run `az login`, or run on an Azure host with a managed \
                 identity. Tried: {}",
                failures.join("; ")
            ),
        ))
    }
}
