//! Twin rendering: the twin document of a device or module, as `GET /twins` answers and
//! queries see it, built from the stored identity and twin state.

use iothub_rest_gen::IotDateTime;
use iothub_rest_gen::types::{self as wire, DeviceStatus};
use serde_json::Value;

use crate::state::store::DeviceEntry;

/// The twin document of a device (`mid == None`) or one of its modules, as GET /twins answers.
/// Panics never: a missing module renders the device twin (callers check first).
pub(crate) fn render_twin(entry: &DeviceEntry, mid: Option<&str>) -> Value {
    let d = &entry.device;
    let auth_type =
        |a: &Option<wire::AuthenticationMechanism>| a.as_ref().and_then(|a| a.type_.clone());
    let thumbprint = |a: &Option<wire::AuthenticationMechanism>| {
        Some(
            a.as_ref()
                .and_then(|a| a.x509_thumbprint.clone())
                .unwrap_or_default(),
        )
    };
    let (twin, module) = match mid.and_then(|m| entry.modules.get(m)) {
        Some(m) => (&m.twin, Some(&m.module)),
        None => (&entry.twin, None),
    };
    let properties = Some(wire::TwinProperties {
        desired: twin.desired.render(true),
        reported: twin.reported.render(false),
    });
    let doc = match module {
        None => wire::Twin {
            authentication_type: auth_type(&d.authentication),
            capabilities: d.capabilities.clone(),
            cloud_to_device_message_count: d.cloud_to_device_message_count,
            connection_state: d.connection_state.clone(),
            device_etag: d.etag.clone(),
            device_id: d.device_id.clone(),
            device_scope: d.device_scope.clone(),
            etag: Some(twin.etag()),
            last_activity_time: d.last_activity_time,
            module_id: None,
            parent_scopes: d.parent_scopes.clone(),
            properties,
            status: d.status.clone(),
            status_reason: d.status_reason.clone(),
            status_update_time: d.status_updated_time,
            tags: twin.tags.clone(),
            version: Some(i64::try_from(twin.version).unwrap_or(i64::MAX)),
            x509_thumbprint: thumbprint(&d.authentication),
        },
        Some(m) => wire::Twin {
            authentication_type: auth_type(&m.authentication),
            cloud_to_device_message_count: m.cloud_to_device_message_count,
            connection_state: m.connection_state.clone(),
            device_etag: m.etag.clone(),
            device_id: m.device_id.clone(),
            etag: Some(twin.etag()),
            last_activity_time: m.last_activity_time,
            module_id: m.module_id.clone(),
            properties,
            status: Some(DeviceStatus::Enabled),
            status_update_time: Some(IotDateTime::never()),
            tags: twin.tags.clone(),
            version: Some(i64::try_from(twin.version).unwrap_or(i64::MAX)),
            x509_thumbprint: thumbprint(&m.authentication),
            ..Default::default()
        },
    };
    let mut doc = serde_json::to_value(doc).unwrap_or(Value::Null);
    // Not in the 2021-04-12 models; the service shows it on twins of Plug and Play devices.
    if let (Some(model_id), Some(map)) = (&twin.model_id, doc.as_object_mut()) {
        map.insert("modelId".to_owned(), Value::from(model_id.as_str()));
    }
    doc
}
