//! `iothub profile set|list|show|delete`. Secrets are stored (owner-only) but never printed.

use serde_json::{Map, Value};

use crate::cli::{AuthMode, Global, OutputFormat, ProfileCommand};
use crate::connect::Settings;
use crate::error::{CliError, Result};
use crate::output::Printer;
use crate::profiles::{self, Profile};

/// Runs `profile …`.
pub(crate) fn run(global: &Global, command: ProfileCommand) -> Result<()> {
    let printer = Printer::new(global.output, global.query.clone());
    let path = profiles::path()?;
    let mut all = profiles::load(&path)?;
    match command {
        ProfileCommand::Set { name } => {
            let mut profile = Profile {
                connection_string: global.connection_string.clone(),
                hub: global.hub.clone(),
                auth: global.auth,
                ca_cert: global.ca_cert.clone(),
                amqp_port: global.amqp_port,
            };
            // One way to authenticate per profile: Azure AD drops a connection string that
            // may only be an exported leftover, a connection string drops a stray host.
            if profile.auth == Some(AuthMode::Aad) {
                profile.connection_string = None;
            } else if profile.connection_string.is_some() {
                profile.hub = None;
            }
            // A profile that could not connect is refused now, not at its first use.
            Settings {
                profile: profile.clone(),
            }
            .check()?;
            let shown = profile.redacted();
            all.profiles.insert(name.clone(), profile);
            profiles::save(&path, &all)?;
            printer.print(shown)
        }
        ProfileCommand::List => {
            let listed: Map<String, Value> = all
                .profiles
                .iter()
                .map(|(name, p)| (name.clone(), p.redacted()))
                .collect();
            if matches!(global.output, OutputFormat::Table | OutputFormat::Tsv) {
                let rows: Vec<Value> = listed
                    .into_iter()
                    .map(|(name, mut p)| {
                        p["name"] = name.into();
                        p
                    })
                    .collect();
                return printer.print(rows);
            }
            printer.print(listed)
        }
        ProfileCommand::Show { name } => match all.profiles.get(&name) {
            Some(p) => printer.print(p.redacted()),
            None => Err(CliError::usage(format!(
                "no profile named {name:?} in {}",
                path.display()
            ))),
        },
        ProfileCommand::Delete { name } => {
            if all.profiles.remove(&name).is_none() {
                return Err(CliError::usage(format!(
                    "no profile named {name:?} in {}",
                    path.display()
                )));
            }
            profiles::save(&path, &all)
        }
    }
}
