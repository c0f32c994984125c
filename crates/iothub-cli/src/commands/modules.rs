//! `iothub module …`.

use iothub_registry::models::Module;
use iothub_registry::{IfMatch, RegistryManager};

use super::Context;
use super::identity::{self, Existing, NewAuth};
use crate::cli::{KeyChoice, ModuleCommand, ModuleConnectionStringCommand};
use crate::error::{CliError, Result};
use crate::output::object;

/// Runs `module …`.
pub(crate) async fn run(cx: &Context, command: ModuleCommand) -> Result<()> {
    if let ModuleCommand::Create { credentials, .. } = &command {
        NewAuth::from_flags(credentials)?;
    }
    if let ModuleCommand::Update {
        managed_by: None, ..
    } = &command
    {
        return Err(CliError::usage("nothing to update: give --managed-by"));
    }
    let registry = cx.registry()?;
    match command {
        ModuleCommand::Create {
            device_id,
            module_id,
            managed_by,
            credentials,
        } => {
            let managed_by = managed_by.as_deref();
            let module = match NewAuth::from_flags(&credentials)? {
                NewAuth::Sas(keys) => {
                    registry
                        .create_module_with_sas(device_id, module_id, keys, managed_by)
                        .await?
                }
                NewAuth::X509(t) => {
                    registry
                        .create_module_with_x509(device_id, module_id, t, managed_by)
                        .await?
                }
                NewAuth::Ca => {
                    registry
                        .create_module_with_certificate_authority(device_id, module_id, managed_by)
                        .await?
                }
            };
            cx.printer.print(module)
        }
        ModuleCommand::Show {
            device_id,
            module_id,
        } => cx
            .printer
            .print(registry.get_module(device_id, module_id).await?),
        ModuleCommand::List { device_id } => {
            cx.printer.print(registry.get_modules(device_id).await?)
        }
        ModuleCommand::Update {
            device_id,
            module_id,
            managed_by,
            etag,
        } => {
            let module = registry.get_module(&device_id, &module_id).await?;
            let if_match = identity::if_match(etag, module.etag.as_deref())?;
            let managed_by = managed_by.or(module.managed_by.clone());
            let updated = replace(
                &registry,
                (&device_id, &module_id),
                &module,
                if_match,
                managed_by.as_deref(),
                None,
            )
            .await?;
            cx.printer.print(updated)
        }
        ModuleCommand::Delete {
            device_id,
            module_id,
            etag,
        } => {
            registry
                .delete_module(device_id, module_id, identity::if_match_or_any(etag))
                .await?;
            Ok(())
        }
        ModuleCommand::ConnectionString(ModuleConnectionStringCommand::Show {
            device_id,
            module_id,
            key,
        }) => {
            let module = registry.get_module(&device_id, &module_id).await?;
            let host = identity::host(&cx.settings);
            let prefix = format!("HostName={host};DeviceId={device_id};ModuleId={module_id}");
            let cs = match identity::existing(module.authentication.as_ref()) {
                Existing::X509(_) | Existing::Ca => format!("{prefix};x509=true"),
                _ => {
                    let what = format!("module {module_id:?} of device {device_id:?}");
                    let key = identity::key(module.authentication.as_ref(), key, &what)?;
                    format!("{prefix};SharedAccessKey={key}")
                }
            };
            cx.printer.print(object([("connectionString", cs.into())]))
        }
        ModuleCommand::RenewKey {
            device_id,
            module_id,
            key,
            etag,
        } => {
            let module = registry.get_module(&device_id, &module_id).await?;
            let if_match = identity::if_match(etag, module.etag.as_deref())?;
            let what = format!("module {module_id:?} of device {device_id:?}");
            let auth = module.authentication.as_ref();
            let primary = identity::key(auth, KeyChoice::Primary, &what)?;
            let secondary = identity::key(auth, KeyChoice::Secondary, &what)?;
            let keys = identity::renewed(&primary, &secondary, key)?;
            let updated = replace(
                &registry,
                (&device_id, &module_id),
                &module,
                if_match,
                module.managed_by.as_deref(),
                Some(keys),
            )
            .await?;
            cx.printer.print(updated)
        }
    }
}

/// A module update is a replacement (PUT): its credentials are sent back as they are, or
/// the new keys.
async fn replace(
    registry: &RegistryManager,
    (device_id, module_id): (&str, &str),
    module: &Module,
    if_match: IfMatch,
    managed_by: Option<&str>,
    new_keys: Option<iothub_registry::SasKeys>,
) -> Result<Module> {
    if let Some(keys) = new_keys {
        return Ok(registry
            .update_module_with_sas(device_id, module_id, if_match, keys, managed_by)
            .await?);
    }
    Ok(match identity::existing(module.authentication.as_ref()) {
        Existing::Sas(keys) => {
            registry
                .update_module_with_sas(device_id, module_id, if_match, keys, managed_by)
                .await?
        }
        Existing::X509(t) => {
            registry
                .update_module_with_x509(device_id, module_id, if_match, t, managed_by)
                .await?
        }
        Existing::Ca => {
            registry
                .update_module_with_certificate_authority(
                    device_id, module_id, if_match, managed_by,
                )
                .await?
        }
        Existing::Other(kind) => {
            return Err(CliError::Other(format!(
                "module {module_id:?} authenticates with {kind:?}, which this command cannot send back"
            )));
        }
    })
}
