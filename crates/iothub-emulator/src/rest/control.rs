//! The control API under `/_emulator/`: what devices would do (connect, report
//! properties, answer direct methods), the request log and fault injection.
//!
//! It is not one of the service's paths and needs no token: the emulator is a local tool.

use hyper::Method;
use serde_json::{Value, json};

use super::answer::Answer;
use super::errors::ServiceError;
use super::request::Req;
use crate::faults::FaultConfig;
use crate::hub::Shared;
use crate::state::identity::{check_device_id, check_module_id};
use crate::state::methods::MethodResponse;

/// Answers one control request.
pub(crate) async fn handle(shared: &Shared, req: &Req) -> Answer {
    match run(shared, req) {
        Ok(answer) => answer,
        Err(e) => Answer::error(&e),
    }
}

fn body<T: serde::de::DeserializeOwned>(req: &Req) -> Result<T, ServiceError> {
    let bytes: &[u8] = if req.body.is_empty() {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ServiceError::argument_invalid(format!("Invalid control request body: {e}")))
}

fn run(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let segs = req.segments()?;
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let Some((&"_emulator", rest)) = segs.split_first() else {
        return Err(ServiceError::not_found("Unknown control path"));
    };
    let m = req.method.clone();
    match (m, rest) {
        (Method::GET, ["health"]) => Ok(Answer::json(
            200,
            json!({ "hubName": shared.hub_name, "hostName": shared.host_name }),
        )),
        (Method::GET, ["requests"]) => Ok(Answer::json(200, json!(shared.log.snapshot()))),
        (Method::DELETE, ["requests"]) => {
            shared.log.clear();
            Ok(Answer::empty(204))
        }
        (Method::GET, ["faults"]) => Ok(Answer::json(
            200,
            json!({ "config": shared.faults.config(), "stats": shared.faults.stats() }),
        )),
        (Method::PUT, ["faults"]) => {
            let config: FaultConfig = body(req)?;
            shared.faults.set(config.clone());
            Ok(Answer::json(200, json!({ "config": config })))
        }
        (Method::POST, ["devices", id, action @ ("connect" | "disconnect")]) => {
            check_device_id(id)?;
            shared.set_connected(id, None, *action == "connect")?;
            Ok(Answer::empty(204))
        }
        (
            Method::POST,
            [
                "devices",
                id,
                "modules",
                mid,
                action @ ("connect" | "disconnect"),
            ],
        ) => {
            check_device_id(id)?;
            check_module_id(mid)?;
            shared.set_connected(id, Some(mid), *action == "connect")?;
            Ok(Answer::empty(204))
        }
        (Method::PATCH, ["devices", id, "reported"]) => {
            check_device_id(id)?;
            let patch: Value = body(req)?;
            Ok(Answer::json(200, shared.report(id, None, &patch)?))
        }
        (Method::PATCH, ["devices", id, "modules", mid, "reported"]) => {
            check_device_id(id)?;
            check_module_id(mid)?;
            let patch: Value = body(req)?;
            Ok(Answer::json(200, shared.report(id, Some(mid), &patch)?))
        }
        (Method::PUT, ["devices", id, "methods", name]) => {
            check_device_id(id)?;
            let response: MethodResponse = body(req)?;
            shared.methods.set(id, None, name, response);
            Ok(Answer::empty(204))
        }
        (Method::PUT, ["devices", id, "modules", mid, "methods", name]) => {
            check_device_id(id)?;
            check_module_id(mid)?;
            let response: MethodResponse = body(req)?;
            shared.methods.set(id, Some(mid), name, response);
            Ok(Answer::empty(204))
        }
        (Method::DELETE, ["devices", id, "methods", name]) => {
            if shared.methods.remove(id, None, name) {
                Ok(Answer::empty(204))
            } else {
                Err(ServiceError::not_found("No such method handler"))
            }
        }
        (Method::DELETE, ["devices", id, "modules", mid, "methods", name]) => {
            if shared.methods.remove(id, Some(mid), name) {
                Ok(Answer::empty(204))
            } else {
                Err(ServiceError::not_found("No such method handler"))
            }
        }
        (Method::POST, ["devices", id, "messages", "receive"]) => Ok(receive(shared, id, None)),
        (Method::POST, ["devices", id, "modules", mid, "messages", "receive"]) => {
            Ok(receive(shared, id, Some(mid)))
        }
        (
            Method::POST,
            [
                "messages",
                lock,
                action @ ("complete" | "reject" | "abandon"),
            ],
        ) => {
            let settled = match *action {
                "complete" => shared.c2d.complete(lock),
                "reject" => shared.c2d.reject(lock),
                _ => shared.c2d.abandon(lock),
            };
            if settled {
                Ok(Answer::empty(204))
            } else {
                Err(ServiceError::not_found(
                    "No message is locked with this token",
                ))
            }
        }
        (Method::GET, ["c2d"]) => Ok(Answer::json(200, json!(shared.c2d.accepted()))),
        (Method::DELETE, ["c2d"]) => {
            shared.c2d.clear_accepted();
            Ok(Answer::empty(204))
        }
        (Method::POST, ["devices", id, "files"]) => {
            let upload: FileUpload = body(req)?;
            shared.file_uploaded(id, &upload.blob_name, upload.blob_size_in_bytes)?;
            Ok(Answer::empty(204))
        }
        _ => Err(ServiceError::not_found("Unknown control path")),
    }
}

/// A device's finished upload, as the control API takes it.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileUpload {
    blob_name: String,
    #[serde(default)]
    blob_size_in_bytes: u64,
}

fn receive(shared: &Shared, id: &str, mid: Option<&str>) -> Answer {
    match shared.c2d.receive(id, mid) {
        Some(received) => Answer::json(200, json!(received)),
        None => Answer::empty(204),
    }
}
