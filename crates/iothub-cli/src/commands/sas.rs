//! `iothub sas-token`: a token for the hub (the connection string's policy), or for a
//! device or module, signed with its own key.

use std::time::{SystemTime, UNIX_EPOCH};

use iothub_auth::{SasToken, SharedAccessKey};
use iothub_registry::HostName;

use super::{Context, identity};
use crate::cli::SasArgs;
use crate::error::{CliError, Result};
use crate::output::object;

/// Runs `sas-token`.
pub(crate) async fn run(cx: &Context, args: SasArgs) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CliError::Other("the system clock is before 1970".into()))?
        .as_secs();
    let expiry = now + args.duration;
    let token = match &args.device {
        None => {
            let cs = cx.settings.connection_string().ok_or_else(|| {
                CliError::usage(
                    "a hub token is signed with the connection string's policy key: give \
                     --connection-string, or --device for a device token",
                )
            })?;
            let (Some(name), Some(key)) = (cs.shared_access_key_name(), cs.shared_access_key())
            else {
                return Err(CliError::usage(
                    "the connection string has no SharedAccessKeyName and SharedAccessKey to sign with",
                ));
            };
            SasToken::for_http(cs.host_name(), name, key, expiry)
                .as_secret()
                .expose_secret()
                .to_owned()
        }
        Some(device_id) => {
            let registry = cx.registry()?;
            let host = identity::host(&cx.settings);
            let (auth, what) = match &args.module {
                Some(module_id) => (
                    registry
                        .get_module(device_id, module_id)
                        .await?
                        .authentication,
                    format!("module {module_id:?} of device {device_id:?}"),
                ),
                None => (
                    registry.get_device(device_id).await?.authentication,
                    format!("device {device_id:?}"),
                ),
            };
            let key = identity::key(auth.as_ref(), args.key, &what)?;
            let key: SharedAccessKey = key
                .parse()
                .map_err(|_| CliError::Other(format!("the key of {what} is not base64")))?;
            let host = host
                .parse::<HostName>()
                .map_err(|e| CliError::Config(format!("hub host name: {e}")))?;
            SasToken::for_device(&host, device_id, args.module.as_deref(), &key, expiry)
                .as_secret()
                .expose_secret()
                .to_owned()
        }
    };
    cx.printer.print(object([("sas", token.into())]))
}
