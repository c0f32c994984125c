//! From the connection options (flags, environment, a profile) to a `RegistryManager`.

use std::path::PathBuf;

use iothub_registry::{ConnectionString, Credential, ExponentialRetry, HostName, RegistryManager};

use crate::aad::Chain;
use crate::cli::{AuthMode, Global};
use crate::error::{CliError, Result};
use crate::profiles::{self, Profile};

/// The connection settings in force: flags and environment first, then the profile.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// See [`Profile`].
    pub(crate) profile: Profile,
}

impl Settings {
    /// Merges the flags over the named profile (if any).
    pub(crate) fn resolve(global: &Global) -> Result<Self> {
        let mut profile = match &global.profile {
            Some(name) => {
                let path = profiles::path()?;
                let mut all = profiles::load(&path)?;
                all.profiles.remove(name).ok_or_else(|| {
                    CliError::usage(format!(
                        "no profile named {name:?} in {}; create it with `iothub profile set {name} …`",
                        path.display()
                    ))
                })?
            }
            None => Profile::default(),
        };
        let given = given(global);
        // Flags name one way to authenticate: a connection string on the command line
        // replaces a profile's Azure AD settings and the other way round.
        if given.connection_string.is_some() && given.auth != Some(AuthMode::Aad) {
            profile.hub = None;
            profile.auth = None;
        }
        if given.hub.is_some() || given.auth == Some(AuthMode::Aad) {
            profile.connection_string = None;
        }
        Ok(Self {
            profile: Profile {
                connection_string: given.connection_string.or(profile.connection_string),
                hub: given.hub.or(profile.hub),
                auth: given.auth.or(profile.auth),
                ca_cert: given.ca_cert.or(profile.ca_cert),
                amqp_port: given.amqp_port.or(profile.amqp_port),
            },
        })
    }

    /// Checks the settings make a connection, without connecting.
    pub(crate) fn check(&self) -> Result<()> {
        let p = &self.profile;
        match (p.auth, &p.connection_string, &p.hub) {
            (Some(AuthMode::Aad), _, None) => Err(CliError::usage(
                "--auth aad needs the hub's host name: --hub contoso.azure-devices.net",
            )),
            (Some(AuthMode::Aad), _, Some(hub)) => hub
                .parse::<HostName>()
                .map(drop)
                .map_err(|e| CliError::usage(format!("--hub: {e}"))),
            (_, Some(cs), _) => cs
                .parse::<ConnectionString>()
                .map(drop)
                .map_err(|e| CliError::usage(format!("--connection-string: {e}"))),
            (_, None, Some(_)) => Err(CliError::usage(
                "--hub needs --auth aad (or give --connection-string instead)",
            )),
            (_, None, None) => Err(CliError::usage(
                "no hub given: pass --connection-string (or set IOTHUB_CONNECTION_STRING), or \
                 --hub HOST --auth aad, or --profile NAME",
            )),
        }
    }

    /// The connection string, for commands that sign tokens with its key.
    pub(crate) fn connection_string(&self) -> Option<ConnectionString> {
        self.profile
            .connection_string
            .as_deref()
            .and_then(|cs| cs.parse().ok())
    }

    fn ca_pem(&self) -> Result<Option<(PathBuf, Vec<u8>)>> {
        let Some(path) = &self.profile.ca_cert else {
            return Ok(None);
        };
        let pem = std::fs::read(path).map_err(|source| CliError::File {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Some((path.clone(), pem)))
    }

    /// The manager. Makes no request.
    pub(crate) fn registry(
        &self,
        timeout: Option<std::time::Duration>,
        attempts: Option<u32>,
    ) -> Result<RegistryManager> {
        self.check()?;
        let p = &self.profile;
        let ca = self.ca_pem()?;
        let credential = match (p.auth, &p.connection_string, &p.hub) {
            (Some(AuthMode::Aad), _, Some(hub)) => {
                let host: HostName = hub
                    .parse()
                    .map_err(|e| CliError::usage(format!("--hub: {e}")))?;
                let http = match &ca {
                    Some((path, pem)) => Some(trusting_client(path, pem)?),
                    None => None,
                };
                Credential::from_token_credential(host, Chain::new(http)?)
            }
            (_, Some(cs), _) => {
                let cs: ConnectionString = cs
                    .parse()
                    .map_err(|e| CliError::usage(format!("--connection-string: {e}")))?;
                Credential::from_connection_string(&cs)
            }
            _ => unreachable!("checked above"),
        };
        let mut builder = RegistryManager::builder(credential)
            .user_agent_suffix(concat!("iothub-cli/", env!("CARGO_PKG_VERSION")));
        if let Some((_, pem)) = ca {
            builder = builder.add_root_certificate_pem(pem);
        }
        if let Some(port) = p.amqp_port {
            builder = builder.amqp_port(port);
        }
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(attempts) = attempts {
            builder = builder.retry_policy(ExponentialRetry::default().max_attempts(attempts));
        }
        Ok(builder.build()?)
    }
}

/// An HTTP client for the token requests that trusts the `--ca-cert` roots too.
fn trusting_client(path: &std::path::Path, pem: &[u8]) -> Result<reqwest::Client> {
    let bad = |e: reqwest::Error| CliError::Config(format!("{}: {e}", path.display()));
    let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(bad)?;
    reqwest::Client::builder()
        .tls_certs_merge(certs)
        .build()
        .map_err(bad)
}

/// The connection settings given as flags, and from the environment unless a profile was
/// named: `--profile` was asked for explicitly, an exported variable may be left over.
pub(crate) fn given(global: &Global) -> Profile {
    let keep = |id: &str| global.profile.is_none() || !global.from_env.contains(&id);
    Profile {
        connection_string: global
            .connection_string
            .clone()
            .filter(|_| keep("connection_string")),
        hub: global.hub.clone().filter(|_| keep("hub")),
        auth: global.auth.filter(|_| keep("auth")),
        ca_cert: global.ca_cert.clone().filter(|_| keep("ca_cert")),
        amqp_port: global.amqp_port.filter(|_| keep("amqp_port")),
    }
}
