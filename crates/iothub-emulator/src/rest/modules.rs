//! Module identities: `GET /devices/{id}/modules` (the list), and `GET`, `PUT` and `DELETE
//! /devices/{id}/modules/{mid}`.

use serde_json::Value;

use super::answer::{Answer, to_json};
use super::errors::ServiceError;
use super::request::{Req, if_match, json_body};
use crate::hub::Shared;

/// `GET /devices/{id}/modules`.
pub(super) fn list_modules(shared: &Shared, id: String) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let entry = devices
        .get(&id)
        .ok_or_else(|| ServiceError::device_not_found(&id))?;
    let modules: Vec<Value> = entry.modules.values().map(|m| to_json(&m.module)).collect();
    Ok(Answer::json(200, Value::Array(modules)))
}

/// `GET /devices/{id}/modules/{mid}`.
pub(super) fn get_module(shared: &Shared, id: String, mid: String) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let entry = devices
        .get(&id)
        .ok_or_else(|| ServiceError::device_not_found(&id))?;
    let module = entry
        .modules
        .get(&mid)
        .ok_or_else(|| ServiceError::module_not_found(&id, &mid))?;
    Ok(Answer::json(200, to_json(&module.module)))
}

/// `PUT /devices/{id}/modules/{mid}`: creates or updates a module.
pub(super) fn put_module(
    shared: &Shared,
    id: String,
    mid: String,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let body = json_body(req)?;
    let mut tx = shared.store.begin();
    let module = tx.put_module(&id, &mid, &body, &if_match(req))?;
    tx.commit()?;
    Ok(Answer::json(200, to_json(&module)))
}

/// `DELETE /devices/{id}/modules/{mid}`.
pub(super) fn delete_module(
    shared: &Shared,
    id: String,
    mid: String,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let mut tx = shared.store.begin();
    tx.delete_module(&id, &mid, &if_match(req))?;
    tx.commit()?;
    Ok(Answer::empty(204))
}
