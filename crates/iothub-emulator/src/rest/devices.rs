//! Device identities: `GET /devices` (the list), `GET`, `PUT` and `DELETE /devices/{id}`,
//! and the bulk registry operation `POST /devices`.

use std::collections::HashSet;

use iothub_rest_gen::types as wire;
use serde_json::{Value, json};

use super::answer::{Answer, quoted, to_json};
use super::errors::ServiceError;
use super::request::{Req, if_match, json_body};
use crate::hub::Shared;
use crate::state::etag::IfMatch;
use crate::state::identity::{check_device_id, check_module_id, parse_model};

/// Most entries in one bulk request.
pub(crate) const MAX_BULK: usize = 100;
/// Most devices `GET /devices` returns.
pub(crate) const MAX_LIST: usize = 1000;

/// `GET /devices/{id}`.
pub(super) fn get_device(shared: &Shared, id: String) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let entry = devices
        .get(&id)
        .ok_or_else(|| ServiceError::device_not_found(&id))?;
    Ok(Answer::json(200, device_json(shared, &entry.device))
        .with_headers(quoted(entry.device.etag.as_deref())))
}

/// `PUT /devices/{id}`: creates or updates a device.
pub(super) fn put_device(shared: &Shared, id: String, req: &Req) -> Result<Answer, ServiceError> {
    let body = json_body(req)?;
    let mut tx = shared.store.begin();
    let device = tx.put_device(&id, &body, &if_match(req))?;
    tx.commit()?;
    Ok(Answer::json(200, to_json(&device)).with_headers(quoted(device.etag.as_deref())))
}

/// `DELETE /devices/{id}`.
pub(super) fn delete_device(
    shared: &Shared,
    id: String,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let mut tx = shared.store.begin();
    tx.delete_device(&id, &if_match(req))?;
    tx.commit()?;
    shared.methods.forget(&id);
    shared.c2d.forget(&id);
    Ok(Answer::empty(204))
}

/// A device as the service shows it, with its live cloud-to-device queue length.
fn device_json(shared: &Shared, device: &wire::Device) -> Value {
    let mut json = to_json(device);
    let id = device.device_id.as_deref().unwrap_or_default();
    json["cloudToDeviceMessageCount"] = Value::from(shared.c2d.pending(id, None));
    json
}

/// `GET /devices?top=n`: at most `n` devices. The service documents `top` as 1 to 1000 and
/// treats any other number (0 and negatives included) as 1000; what is not a number is 400.
pub(super) fn list_devices(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let top = match req.query_param("top") {
        None => MAX_LIST,
        Some(t) => parse_top(&t)?,
    };
    let devices = shared.store.read();
    let list: Vec<Value> = devices
        .values()
        .take(top)
        .map(|e| to_json(&e.device))
        .collect();
    Ok(Answer::json(200, Value::Array(list)))
}

/// `top` as the service reads it: an integer in 1..=1000, anything else numeric is 1000.
pub(super) fn parse_top(text: &str) -> Result<usize, ServiceError> {
    let digits = text.trim();
    let unsigned = digits
        .strip_prefix('-')
        .or_else(|| digits.strip_prefix('+'))
        .unwrap_or(digits);
    if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ServiceError::argument_invalid(format!(
            "Invalid value for top: '{text}'"
        )));
    }
    Ok(match digits.parse::<i64>() {
        Ok(n) if (1..=MAX_LIST as i64).contains(&n) => usize::try_from(n).unwrap_or(MAX_LIST),
        _ => MAX_LIST,
    })
}

pub(super) fn bulk(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let Value::Array(items) = json_body(req)? else {
        return Err(ServiceError::argument_invalid(
            "The bulk request must be a JSON array of devices",
        ));
    };
    if items.is_empty() {
        return Err(ServiceError::argument_invalid(
            "The bulk request has no devices",
        ));
    }
    if items.len() > MAX_BULK {
        return Err(ServiceError::too_many_devices(format!(
            "A bulk request may hold at most {MAX_BULK} devices; it held {}",
            items.len()
        )));
    }
    // Parse and check everything before applying anything.
    let mut entries = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for mut item in items {
        // Node copies the caller's object, so the etag may come as `etag`.
        if let Value::Object(map) = &mut item
            && !map.contains_key("eTag")
            && let Some(etag) = map.remove("etag")
        {
            map.insert("eTag".into(), etag);
        }
        let entry: wire::ExportImportDevice = parse_model(&item, "bulk device")?;
        let id = entry
            .id
            .clone()
            .ok_or_else(|| ServiceError::argument_null("Every bulk device needs an id"))?;
        check_device_id(&id)?;
        if let Some(mid) = &entry.module_id {
            check_module_id(mid)?;
        }
        if !seen.insert((id.clone(), entry.module_id.clone())) {
            return Err(ServiceError::device_defined_multiple_times(format!(
                "The device '{id}' appears more than once in the request"
            )));
        }
        entries.push(entry);
    }
    let mut tx = shared.store.begin();
    let mut errors = Vec::new();
    for entry in &entries {
        let savepoint = tx.savepoint(entry.id.as_deref().unwrap_or_default());
        if let Err(e) = apply_bulk_entry(&mut tx, entry) {
            tx.rollback_to(savepoint);
            let mut error = json!({
                "deviceId": entry.id,
                "errorCode": e.name,
                "errorStatus": e.message,
            });
            if let Some(mid) = &entry.module_id {
                error["moduleId"] = json!(mid);
            }
            errors.push(error);
        }
    }
    tx.commit()?;
    for entry in &entries {
        let mode = entry
            .import_mode
            .as_ref()
            .map(|m| m.as_str().to_ascii_lowercase());
        if mode.as_deref().is_some_and(|m| m.starts_with("delete")) && entry.module_id.is_none() {
            shared
                .methods
                .forget(entry.id.as_deref().unwrap_or_default());
        }
    }
    let ok = errors.is_empty();
    let body = json!({ "isSuccessful": ok, "errors": errors, "warnings": [] });
    Ok(Answer::json(if ok { 200 } else { 400 }, body))
}

/// Applies one import entry by its importMode (bulk requests and import jobs alike).
pub(crate) fn apply_bulk_entry(
    tx: &mut crate::state::store::Tx<'_>,
    e: &wire::ExportImportDevice,
) -> Result<(), ServiceError> {
    let mode = e
        .import_mode
        .as_ref()
        .map_or("createorupdate".to_owned(), |m| {
            m.as_str().to_ascii_lowercase()
        });
    let etag_cond = || -> Result<IfMatch, ServiceError> {
        let etag = e
            .e_tag
            .as_deref()
            .map(|t| t.trim_matches('"'))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ServiceError::argument_null("This importMode needs the device's eTag")
            })?;
        Ok(if etag == "*" {
            IfMatch::Any
        } else {
            IfMatch::Etag(etag.to_owned())
        })
    };
    let twin_cond = || -> Result<IfMatch, ServiceError> {
        let etag = e
            .twin_e_tag
            .as_deref()
            .map(|t| t.trim_matches('"'))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ServiceError::argument_null("This importMode needs the twin's twinETag")
            })?;
        Ok(if etag == "*" {
            IfMatch::Any
        } else {
            IfMatch::Etag(etag.to_owned())
        })
    };
    let id = e.id.as_deref().unwrap_or_default();
    match mode.as_str() {
        "create" => tx.bulk_create(e),
        "update" => tx.bulk_update(e, &IfMatch::Any, false),
        "updateifmatchetag" => tx.bulk_update(e, &etag_cond()?, false),
        "createorupdate" => tx.bulk_update(e, &IfMatch::Any, true),
        "createorupdateifmatchetag" => tx.bulk_update(e, &etag_cond()?, true),
        "delete" => tx.bulk_delete(e, &IfMatch::Any),
        "deleteifmatchetag" => tx.bulk_delete(e, &etag_cond()?),
        "updatetwin" => tx.bulk_twin(id, e.module_id.as_deref(), e, &IfMatch::Any),
        "updatetwinifmatchetag" => tx.bulk_twin(id, e.module_id.as_deref(), e, &twin_cond()?),
        other => Err(ServiceError::argument_invalid(format!(
            "Unknown importMode '{other}'"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_outside_its_range_is_the_maximum() {
        assert_eq!(parse_top("3").unwrap(), 3);
        assert_eq!(parse_top("1000").unwrap(), 1000);
        for outside in ["0", "-1", "-0", "1001", "+5000", "99999999999999999999999"] {
            assert_eq!(parse_top(outside).unwrap(), MAX_LIST, "{outside}");
        }
        for bad in ["x", "", "-", "1.5", "1e3"] {
            assert_eq!(parse_top(bad).unwrap_err().status, 400, "{bad}");
        }
    }
}
