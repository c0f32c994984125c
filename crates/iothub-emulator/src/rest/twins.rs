//! Device and module twins: `GET`, `PATCH` and `PUT /twins/{id}` and
//! `/twins/{id}/modules/{mid}`, and the twin document with its live queue length.

use serde_json::Value;

use super::answer::Answer;
use super::errors::ServiceError;
use super::request::{Req, if_match, json_body};
use crate::hub::Shared;
use crate::state::render::render_twin;
use crate::state::store::DeviceEntry;
use crate::state::twin::TwinChange;

/// `GET /twins/{id}` and `GET /twins/{id}/modules/{mid}`.
pub(super) fn get_twin(
    shared: &Shared,
    id: String,
    mid: Option<String>,
) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let entry = devices
        .get(&id)
        .ok_or_else(|| ServiceError::device_not_found(&id))?;
    check_module(entry, &id, mid.as_deref())?;
    Ok(Answer::json(200, twin_json(shared, entry, mid.as_deref())))
}

/// `PATCH` (`replace == false`) or `PUT /twins/{id}`, and the same on
/// `/twins/{id}/modules/{mid}`.
pub(super) fn update_twin(
    shared: &Shared,
    id: String,
    mid: Option<String>,
    replace: bool,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let change = TwinChange::from_body(&json_body(req)?)?;
    let mut tx = shared.store.begin();
    let twin = tx.update_twin(&id, mid.as_deref(), &change, replace, &if_match(req))?;
    tx.commit()?;
    Ok(Answer::json(200, twin))
}

/// A twin document with the live cloud-to-device queue length.
pub(super) fn twin_json(shared: &Shared, entry: &DeviceEntry, mid: Option<&str>) -> Value {
    let mut doc = render_twin(entry, mid);
    let id = entry.device.device_id.as_deref().unwrap_or_default();
    doc["cloudToDeviceMessageCount"] = Value::from(shared.c2d.pending(id, mid));
    doc
}

fn check_module(entry: &DeviceEntry, id: &str, mid: Option<&str>) -> Result<(), ServiceError> {
    match mid {
        Some(mid) if !entry.modules.contains_key(mid) => {
            Err(ServiceError::module_not_found(id, mid))
        }
        _ => Ok(()),
    }
}
