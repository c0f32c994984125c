//! `iothub sas-token`: a token for the hub (the connection string's policy), or for a
//! device or module, signed with its own key.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use iothub_auth::SasToken;
use iothub_registry::HostName;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Sha256;

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
            let (auth, resource, what) = match &args.module {
                Some(module_id) => (
                    registry
                        .get_module(device_id, module_id)
                        .await?
                        .authentication,
                    format!("{host}/devices/{device_id}/modules/{module_id}"),
                    format!("module {module_id:?} of device {device_id:?}"),
                ),
                None => (
                    registry.get_device(device_id).await?.authentication,
                    format!("{host}/devices/{device_id}"),
                    format!("device {device_id:?}"),
                ),
            };
            let key = identity::key(auth.as_ref(), args.key, &what)?;
            // Checked the way iothub-auth checks a host, so the resource is well formed.
            host.parse::<HostName>()
                .map_err(|e| CliError::Config(format!("hub host name: {e}")))?;
            identity_token(&resource, &key, expiry)?
        }
    };
    cx.printer.print(object([("sas", token.into())]))
}

/// What Python's `urllib.parse.quote(s, safe="")` leaves alone, as the SDKs encode `sr`.
const QUOTE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'_')
    .remove(b'.')
    .remove(b'-')
    .remove(b'~');

/// A device or module token, as the device SDKs and `az iot hub generate-sas-token` make
/// it: `sr` the URL-encoded resource, signed as encoded, no `skn`. iothub-auth signs only
/// hub tokens, whose resource is the host.
fn identity_token(resource: &str, key: &str, expiry: u64) -> Result<String> {
    let key = STANDARD
        .decode(key)
        .map_err(|_| CliError::Other("the identity's key is not base64".into()))?;
    let sr = utf8_percent_encode(resource, QUOTE).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| CliError::Other("the identity's key cannot sign".into()))?;
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&sig, QUOTE);
    Ok(format!(
        "SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_token_signs_the_encoded_resource() {
        let token = identity_token(
            "h.net/devices/d1",
            "AAECAwQFBgcICQoLDA0ODw==",
            1_700_000_000,
        )
        .unwrap();
        assert!(token.starts_with("SharedAccessSignature sr=h.net%2Fdevices%2Fd1&sig="));
        assert!(token.ends_with("&se=1700000000"));
        // Independently: HMAC-SHA256 of "h.net%2Fdevices%2Fd1\n1700000000".
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&STANDARD.decode("AAECAwQFBgcICQoLDA0ODw==").unwrap())
                .unwrap();
        mac.update(b"h.net%2Fdevices%2Fd1\n1700000000");
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        assert!(token.contains(&utf8_percent_encode(&sig, QUOTE).to_string()));
    }
}
