//! Digital twins (IoT Plug and Play): `GET` and `PATCH /digitaltwins/{id}`, and commands,
//! `POST /digitaltwins/{id}/commands/{name}` and
//! `/digitaltwins/{id}/components/{component}/commands/{name}`.
//!
//! The digital twin is derived from the device twin (`state/digital_twin.rs`); a patch is
//! applied to its desired properties as a twin PATCH is, so MQTT devices are notified the
//! same way; a command is a direct method named as the service names it (`command` at the
//! root, `component*command` in a component), through the direct-method rendezvous.

use iothub_rest_gen::types as wire;
use serde_json::{Value, json};

use super::answer::Answer;
use super::errors::{ServiceError, guid};
use super::methods::call_method;
use super::request::{Req, json_body};
use crate::hub::Shared;
use crate::state::digital_twin::{apply_patch, derive, merge_diff};
use crate::state::etag::IfMatch;
use crate::state::twin::TwinChange;

/// The `ETag` header of a digital twin: the device twin's etag, quoted.
fn etag_header(etag: &str) -> (&'static str, String) {
    ("etag", format!("\"{etag}\""))
}

/// `GET /digitaltwins/{id}`.
pub(super) fn get(shared: &Shared, id: &str) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let entry = devices
        .get(id)
        .ok_or_else(|| ServiceError::device_not_found(id))?;
    Ok(Answer::json(200, derive(id, &entry.twin))
        .with_headers(vec![etag_header(&entry.twin.etag())]))
}

/// The `If-Match` of a digital twin update. Python's `DigitalTwinClient` sends the etag as
/// given, so an unquoted etag is a condition here too (the twin routes ignore unquoted ones,
/// as the service did there).
fn dt_if_match(req: &Req) -> IfMatch {
    match IfMatch::parse(req.header("if-match")) {
        IfMatch::Absent => match req.header("if-match").map(str::trim) {
            Some(raw) if !raw.is_empty() && raw != "\"\"" => IfMatch::Etag(raw.to_owned()),
            _ => IfMatch::Absent,
        },
        other => other,
    }
}

/// `PATCH /digitaltwins/{id}`: a JSON Patch of desired properties; 202 with the new `ETag`
/// and the digital twin's `Location`.
pub(super) fn update(shared: &Shared, id: &str, req: &Req) -> Result<Answer, ServiceError> {
    let patch = json_body(req)?;
    let cond = dt_if_match(req);
    let mut tx = shared.store.begin();
    let entry = tx
        .get(id)
        .ok_or_else(|| ServiceError::device_not_found(id))?;
    let old = entry.twin.desired.props.clone();
    let new = apply_patch(&old, &patch)?;
    let diff = merge_diff(&old, &new);
    // Through the twin rules: the same key and size checks, `$version` and `$metadata`.
    let change = TwinChange::from_body(&json!({ "properties": { "desired": diff } }))?;
    let twin = tx.update_twin(id, None, &change, false, &cond)?;
    tx.commit()?;
    let etag = twin.get("etag").and_then(Value::as_str).unwrap_or_default();
    Ok(Answer::empty(202).with_headers(vec![
        etag_header(etag),
        ("location", format!("/digitaltwins/{id}")),
    ]))
}

/// `POST /digitaltwins/{id}/commands/{name}` (`component == None`) and
/// `/digitaltwins/{id}/components/{component}/commands/{name}`: the device's payload, with
/// its status in `x-ms-command-statuscode`.
pub(super) async fn invoke(
    shared: &Shared,
    id: &str,
    component: Option<&str>,
    name: &str,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let timeout = |param: &str| -> Result<Option<i32>, ServiceError> {
        match req.query_param(param) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ServiceError::argument_invalid(format!("{param} must be an integer; it was {v:?}"))
            }),
        }
    };
    // The body is the command's payload, any JSON; none is null.
    let payload = if req.body.is_empty() {
        Value::Null
    } else {
        json_body(req)?
    };
    let method_name = match component {
        None => name.to_owned(),
        Some(c) => format!("{c}*{name}"),
    };
    let call = wire::CloudToDeviceMethod {
        connect_timeout_in_seconds: timeout("connectTimeoutInSeconds")?,
        method_name: Some(method_name),
        payload: Some(payload),
        response_timeout_in_seconds: timeout("responseTimeoutInSeconds")?,
    };
    let result = call_method(shared, id, None, call).await?;
    let status = result.status.unwrap_or(200);
    Ok(
        Answer::json(200, result.payload.unwrap_or(Value::Null)).with_headers(vec![
            ("x-ms-command-statuscode", status.to_string()),
            ("x-ms-request-id", guid()),
        ]),
    )
}
