//! `iothub device …`.

use iothub_registry::models::{Device, DeviceStatus};
use iothub_registry::{DeviceOptions, IfMatch, RegistryManager};

use super::Context;
use super::identity::{self, Existing, NewAuth};
use crate::cli::{ConnectionStringCommand, DeviceCommand, Status};
use crate::error::{CliError, Result};
use crate::output::object;

fn status(status: Status) -> DeviceStatus {
    match status {
        Status::Enabled => DeviceStatus::Enabled,
        Status::Disabled => DeviceStatus::Disabled,
    }
}

/// Runs `device …`.
pub(crate) async fn run(cx: &Context, command: DeviceCommand) -> Result<()> {
    // Flag combinations are checked before the manager exists, so before any request.
    if let DeviceCommand::Create { credentials, .. } = &command {
        NewAuth::from_flags(credentials)?;
    }
    if let DeviceCommand::Update {
        status: None,
        status_reason: None,
        edge: None,
        ..
    } = &command
    {
        return Err(CliError::usage(
            "nothing to update: give --status, --status-reason or --edge",
        ));
    }
    let registry = cx.registry()?;
    match command {
        DeviceCommand::Create {
            device_id,
            status: s,
            status_reason,
            edge,
            credentials,
        } => {
            let mut options = DeviceOptions::new().iot_edge(edge);
            if let Some(reason) = status_reason {
                options = options.status_reason(reason);
            }
            let device = match NewAuth::from_flags(&credentials)? {
                NewAuth::Sas(keys) => {
                    registry
                        .create_device_with_sas(device_id, keys, status(s), options)
                        .await?
                }
                NewAuth::X509(t) => {
                    registry
                        .create_device_with_x509(device_id, t, status(s), options)
                        .await?
                }
                NewAuth::Ca => {
                    registry
                        .create_device_with_certificate_authority(device_id, status(s), options)
                        .await?
                }
            };
            cx.printer.print(device)
        }
        DeviceCommand::Show { device_id } => {
            cx.printer.print(registry.get_device(device_id).await?)
        }
        DeviceCommand::List { top } => cx.printer.print(registry.get_devices(top).await?),
        DeviceCommand::Update {
            device_id,
            status: new_status,
            status_reason,
            edge,
            etag,
        } => {
            let device = registry.get_device(&device_id).await?;
            let if_match = identity::if_match(etag, device.etag.as_deref())?;
            let s = new_status
                .map(status)
                .or(device.status.clone())
                .unwrap_or(DeviceStatus::Enabled);
            let mut options = DeviceOptions::new().iot_edge(edge.unwrap_or_else(|| {
                device
                    .capabilities
                    .as_ref()
                    .and_then(|c| c.iot_edge)
                    .unwrap_or(false)
            }));
            if let Some(reason) = status_reason.or(device.status_reason.clone()) {
                options = options.status_reason(reason);
            }
            if let Some(scope) = &device.device_scope {
                options = options.device_scope(scope.clone());
            }
            options = options.parent_scopes(device.parent_scopes.clone());
            let updated =
                replace(&registry, &device_id, &device, if_match, s, options, None).await?;
            cx.printer.print(updated)
        }
        DeviceCommand::Delete { device_id, etag } => {
            registry
                .delete_device(device_id, identity::if_match_or_any(etag))
                .await?;
            Ok(())
        }
        DeviceCommand::ConnectionString(ConnectionStringCommand::Show { device_id, key }) => {
            let device = registry.get_device(&device_id).await?;
            let host = identity::host(&cx.settings);
            let cs = match identity::existing(device.authentication.as_ref()) {
                Existing::X509(_) | Existing::Ca => {
                    format!("HostName={host};DeviceId={device_id};x509=true")
                }
                _ => {
                    let what = format!("device {device_id:?}");
                    let key = identity::key(device.authentication.as_ref(), key, &what)?;
                    format!("HostName={host};DeviceId={device_id};SharedAccessKey={key}")
                }
            };
            cx.printer.print(object([("connectionString", cs.into())]))
        }
        DeviceCommand::RenewKey {
            device_id,
            key,
            etag,
        } => {
            let device = registry.get_device(&device_id).await?;
            let if_match = identity::if_match(etag, device.etag.as_deref())?;
            let what = format!("device {device_id:?}");
            let auth = device.authentication.as_ref();
            let primary = identity::key(auth, crate::cli::KeyChoice::Primary, &what)?;
            let secondary = identity::key(auth, crate::cli::KeyChoice::Secondary, &what)?;
            let keys = identity::renewed(&primary, &secondary, key)?;
            let s = device.status.clone().unwrap_or(DeviceStatus::Enabled);
            let mut options = DeviceOptions::new().iot_edge(
                device
                    .capabilities
                    .as_ref()
                    .and_then(|c| c.iot_edge)
                    .unwrap_or(false),
            );
            if let Some(reason) = &device.status_reason {
                options = options.status_reason(reason.clone());
            }
            if let Some(scope) = &device.device_scope {
                options = options.device_scope(scope.clone());
            }
            options = options.parent_scopes(device.parent_scopes.clone());
            let updated = replace(
                &registry,
                &device_id,
                &device,
                if_match,
                s,
                options,
                Some(keys),
            )
            .await?;
            cx.printer.print(updated)
        }
    }
}

/// A device update is a replacement (PUT): its credentials are sent back as they are, or
/// the new keys.
async fn replace(
    registry: &RegistryManager,
    device_id: &str,
    device: &Device,
    if_match: IfMatch,
    status: DeviceStatus,
    options: DeviceOptions,
    new_keys: Option<iothub_registry::SasKeys>,
) -> Result<Device> {
    if let Some(keys) = new_keys {
        return Ok(registry
            .update_device_with_sas(device_id, if_match, keys, status, options)
            .await?);
    }
    Ok(match identity::existing(device.authentication.as_ref()) {
        Existing::Sas(keys) => {
            registry
                .update_device_with_sas(device_id, if_match, keys, status, options)
                .await?
        }
        Existing::X509(t) => {
            registry
                .update_device_with_x509(device_id, if_match, t, status, options)
                .await?
        }
        Existing::Ca => {
            registry
                .update_device_with_certificate_authority(device_id, if_match, status, options)
                .await?
        }
        Existing::Other(kind) => {
            return Err(CliError::Other(format!(
                "device {device_id:?} authenticates with {kind:?}, which this command cannot send back"
            )));
        }
    })
}
