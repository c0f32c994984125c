//! Identity rules, as the service applies them.
//!
//! Device and module ids, checked on decoded path segments and bulk entries: 1 to 128
//! ASCII characters from `A-Za-z0-9` and `-:.+%_#*?!(),=@;$'`. And the writable fields of a
//! device or module (status, status reason, authentication mechanism with its keys or
//! thumbprints), checked and completed before the store applies them.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use iothub_rest_gen::types::{self as wire, AuthenticationType, DeviceStatus};
use serde_json::Value;

use crate::rest::errors::ServiceError;

const MAX_ID_LEN: usize = 128;
const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";

/// Checks a device id; the error is the service's 400 ArgumentInvalid.
pub(crate) fn check_device_id(id: &str) -> Result<(), ServiceError> {
    check_id("DeviceId", id)
}

/// Checks a module id (same set; `$edgeAgent` and `$edgeHub` pass).
pub(crate) fn check_module_id(id: &str) -> Result<(), ServiceError> {
    check_id("ModuleId", id)
}

/// Checks an id of the device id's form (device, module and job ids).
pub(crate) fn check_id(what: &str, id: &str) -> Result<(), ServiceError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SPECIAL.contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::argument_invalid(format!(
            "{what} is invalid. A {what} must be 1 to {MAX_ID_LEN} ASCII letters, digits or {SPECIAL}"
        )))
    }
}

/// The mutable fields of a device, validated.
pub(super) struct DeviceInput {
    pub(super) status: DeviceStatus,
    pub(super) status_reason: Option<String>,
    pub(super) authentication: wire::AuthenticationMechanism,
    pub(super) iot_edge: bool,
    pub(super) device_scope: Option<String>,
    pub(super) parent_scopes: Vec<String>,
}

impl DeviceInput {
    pub(super) fn from_body(id: &str, body: &Value) -> Result<Self, ServiceError> {
        let device: wire::Device = parse_model(body, "device")?;
        if let Some(body_id) = device.device_id.as_deref()
            && body_id != id
        {
            return Err(ServiceError::argument_invalid(format!(
                "The deviceId in the body ('{body_id}') does not match the one in the URL ('{id}')"
            )));
        }
        Ok(Self {
            status: parse_status(device.status.as_ref())?,
            status_reason: check_reason(device.status_reason)?,
            authentication: check_auth(device.authentication)?,
            iot_edge: device
                .capabilities
                .and_then(|c| c.iot_edge)
                .unwrap_or(false),
            device_scope: device.device_scope,
            parent_scopes: device.parent_scopes,
        })
    }

    pub(super) fn from_import(e: &wire::ExportImportDevice) -> Result<Self, ServiceError> {
        Ok(Self {
            status: parse_status(e.status.as_ref())?,
            status_reason: check_reason(e.status_reason.clone())?,
            authentication: check_auth(e.authentication.clone())?,
            iot_edge: e
                .capabilities
                .as_ref()
                .and_then(|c| c.iot_edge)
                .unwrap_or(false),
            device_scope: e.device_scope.clone(),
            parent_scopes: e.parent_scopes.clone(),
        })
    }
}

/// The mutable fields of a module, validated.
pub(super) struct ModuleInput {
    pub(super) authentication: wire::AuthenticationMechanism,
    pub(super) managed_by: Option<String>,
}

impl ModuleInput {
    pub(super) fn from_body(id: &str, mid: &str, body: &Value) -> Result<Self, ServiceError> {
        let module: wire::Module = parse_model(body, "module")?;
        if module.device_id.as_deref().is_some_and(|d| d != id)
            || module.module_id.as_deref().is_some_and(|m| m != mid)
        {
            return Err(ServiceError::argument_invalid(
                "The deviceId or moduleId in the body does not match the URL",
            ));
        }
        Ok(Self {
            authentication: check_auth(module.authentication)?,
            managed_by: module.managed_by,
        })
    }
}

/// Deserialises a request body into a generated model, with the service's 400 on failure.
pub(crate) fn parse_model<T: serde::de::DeserializeOwned>(
    body: &Value,
    what: &str,
) -> Result<T, ServiceError> {
    if !body.is_object() {
        return Err(ServiceError::argument_invalid(format!(
            "The {what} must be a JSON object"
        )));
    }
    serde_json::from_value(body.clone())
        .map_err(|e| ServiceError::argument_invalid(format!("Invalid {what}: {e}")))
}

fn parse_status(status: Option<&DeviceStatus>) -> Result<DeviceStatus, ServiceError> {
    match status.map(|s| s.as_str().to_ascii_lowercase()) {
        None => Ok(DeviceStatus::Enabled),
        Some(s) if s == "enabled" => Ok(DeviceStatus::Enabled),
        Some(s) if s == "disabled" => Ok(DeviceStatus::Disabled),
        Some(s) => Err(ServiceError::argument_invalid(format!(
            "Invalid device status '{s}': expected enabled or disabled"
        ))),
    }
}

fn check_reason(reason: Option<String>) -> Result<Option<String>, ServiceError> {
    match reason {
        Some(r) if r.len() > 128 => Err(ServiceError::argument_invalid(
            "statusReason is at most 128 characters",
        )),
        other => Ok(other),
    }
}

pub(super) fn default_auth() -> Result<wire::AuthenticationMechanism, ServiceError> {
    check_auth(None)
}

/// Fills in generated keys and checks what the caller gave, as the service does.
fn check_auth(
    auth: Option<wire::AuthenticationMechanism>,
) -> Result<wire::AuthenticationMechanism, ServiceError> {
    let mut auth = auth.unwrap_or_default();
    let kind = auth
        .type_
        .as_ref()
        .map_or("sas".to_owned(), |t| t.as_str().to_owned());
    match kind.as_str() {
        "sas" => {
            let keys = auth.symmetric_key.get_or_insert_with(Default::default);
            for key in [&mut keys.primary_key, &mut keys.secondary_key] {
                match key.as_ref().map(|k| k.expose_secret()) {
                    None | Some("") => *key = Some(crate::auth::random_key().into()),
                    Some(k) => check_key(k)?,
                }
            }
            auth.x509_thumbprint = None;
            auth.type_ = Some(AuthenticationType::Sas);
        }
        "selfSigned" => {
            let thumbs = auth.x509_thumbprint.get_or_insert_with(Default::default);
            let primary = thumbs.primary_thumbprint.as_deref().unwrap_or_default();
            if !is_thumbprint(primary) {
                return Err(ServiceError::argument_invalid(
                    "A self-signed device needs a primary thumbprint of 40 or 64 hex digits",
                ));
            }
            if let Some(secondary) = thumbs.secondary_thumbprint.as_deref()
                && !secondary.is_empty()
                && !is_thumbprint(secondary)
            {
                return Err(ServiceError::argument_invalid(
                    "The secondary thumbprint must have 40 or 64 hex digits",
                ));
            }
            auth.symmetric_key = None;
        }
        "certificateAuthority" | "none" => {
            auth.symmetric_key = None;
            auth.x509_thumbprint = None;
        }
        other => {
            return Err(ServiceError::argument_invalid(format!(
                "Invalid authentication type '{other}'"
            )));
        }
    }
    Ok(auth)
}

fn check_key(key: &str) -> Result<(), ServiceError> {
    match STANDARD.decode(key) {
        Ok(bytes) if (16..=64).contains(&bytes.len()) => Ok(()),
        _ => Err(ServiceError::argument_invalid(
            "A symmetric key must be base64 of 16 to 64 bytes",
        )),
    }
}

fn is_thumbprint(t: &str) -> bool {
    matches!(t.len(), 40 | 64) && t.chars().all(|c| c.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        assert!(check_device_id("a-:.+%_#*?!(),=@;$'Z9").is_ok());
        assert!(check_module_id("$edgeAgent").is_ok());
        assert!(check_device_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a\"b",
            "a&b",
            &"x".repeat(129),
        ] {
            let err = check_device_id(bad).unwrap_err();
            assert_eq!((err.status, err.name), (400, "ArgumentInvalid"), "{bad:?}");
        }
    }
}
