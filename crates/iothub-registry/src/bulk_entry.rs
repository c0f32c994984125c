//! Entries for bulk registry operations ([`RegistryManager::bulk`] and
//! [`bulk_create_or_update_devices`]), one line per identity.
//!
//! ```no_run
//! use iothub_registry::{RegistryManager, SasKeys, X509Thumbprints, bulk_entry};
//!
//! # async fn run(registry: RegistryManager) -> iothub_registry::Result<()> {
//! let mut devices: Vec<_> = (0..1_000)
//!     .map(|i| bulk_entry::create(format!("sensor-{i}"), SasKeys::generated()))
//!     .collect();
//! devices.push(bulk_entry::create("camera-1", X509Thumbprints::new("A".repeat(40), "B".repeat(40))));
//! devices.push(bulk_entry::delete("retired-7"));
//! let report = registry.bulk(devices).concurrency(2).send().await?;
//! println!("{} failed", report.errors.len());
//! # Ok(()) }
//! ```
//!
//! Each returns the service's [`ExportImportDevice`] model, so anything else the service
//! accepts (a status, a module id, a twin, an etag) can be set on it afterwards.
//!
//! [`RegistryManager::bulk`]: crate::RegistryManager::bulk
//! [`bulk_create_or_update_devices`]: crate::RegistryManager::bulk_create_or_update_devices

use iothub_rest_gen::types::{AuthenticationMechanism, ExportImportDevice, ImportMode};

/// Creates a device authenticated by `authentication` ([`SasKeys`](crate::SasKeys),
/// [`X509Thumbprints`](crate::X509Thumbprints), or the model itself); the service refuses the
/// entry if the device exists.
pub fn create(
    id: impl Into<String>,
    authentication: impl Into<AuthenticationMechanism>,
) -> ExportImportDevice {
    entry(id, ImportMode::Create, Some(authentication.into()))
}

/// Creates the device, or replaces an existing one's identity, whatever its etag. Give SAS
/// keys with [`SasKeys::new`](crate::SasKeys::new): a bulk run refuses an update whose keys are
/// left to the service, since it would regenerate an existing device's keys.
pub fn create_or_update(
    id: impl Into<String>,
    authentication: impl Into<AuthenticationMechanism>,
) -> ExportImportDevice {
    entry(id, ImportMode::Update, Some(authentication.into()))
}

/// Deletes the device, whatever its etag.
pub fn delete(id: impl Into<String>) -> ExportImportDevice {
    entry(id, ImportMode::Delete, None)
}

fn entry(
    id: impl Into<String>,
    mode: ImportMode,
    authentication: Option<AuthenticationMechanism>,
) -> ExportImportDevice {
    ExportImportDevice {
        id: Some(id.into()),
        import_mode: Some(mode),
        authentication,
        ..ExportImportDevice::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{SasKeys, X509Thumbprints};

    #[test]
    fn entries_carry_what_the_single_identity_methods_send() {
        let sas = create(
            "d1",
            SasKeys::new("AAECAwQFBgcICQoLDA0ODw==", "EBESExQVFhcYGRobHB0eHw=="),
        );
        assert_eq!(
            serde_json::to_value(&sas).unwrap(),
            json!({
                "id": "d1",
                "importMode": "create",
                "authentication": {
                    "type": "sas",
                    "symmetricKey": {
                        "primaryKey": "AAECAwQFBgcICQoLDA0ODw==",
                        "secondaryKey": "EBESExQVFhcYGRobHB0eHw==",
                    },
                },
            })
        );
        let generated = create_or_update("d2", SasKeys::generated());
        assert_eq!(
            serde_json::to_value(&generated).unwrap()["authentication"],
            json!({ "type": "sas", "symmetricKey": {} })
        );
        let x509 = create("d3", X509Thumbprints::new("a".repeat(40), "b".repeat(64)));
        assert_eq!(
            serde_json::to_value(&x509).unwrap()["authentication"],
            json!({
                "type": "selfSigned",
                "x509Thumbprint": {
                    "primaryThumbprint": "a".repeat(40),
                    "secondaryThumbprint": "b".repeat(64),
                },
            })
        );
        assert_eq!(
            serde_json::to_value(delete("d4")).unwrap(),
            json!({ "id": "d4", "importMode": "delete" })
        );
    }
}
