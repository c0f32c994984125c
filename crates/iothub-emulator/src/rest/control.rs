//! The control API under `/_emulator/`: what devices would do (connect, report
//! properties, answer direct methods), the request log and fault injection.
//!
//! It is not one of the service's paths, and who may use it is its own rule
//! ([`ControlAccess`]): requests that name a host other than the emulator's own (DNS
//! rebinding) or come from a foreign web page (`Origin`) are refused with 403; a token, when
//! there is one, is required (401 without it). On a loopback bind no token is needed; on any
//! other one is required (configured, or generated at start). The health check is open to
//! everyone: it tells nothing but the hub's name and host.
//!
//! Its input is checked: bodies of at most 16 KB (a direct-method answer: its 128 KB payload
//! and a little more), read only once the request is admitted and within the body deadline;
//! numbers within sane ranges (400 otherwise); method answers only for devices (and
//! modules) that exist and within the limits on what it keeps.

use std::net::IpAddr;

use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::answer::{Answer, ResponseBody, log_response};
use super::connections::RequestGuard;
use super::errors::ServiceError;
use super::request::{BodyError, Req, read_body};
use crate::faults::FaultConfig;
use crate::hub::Shared;
use crate::state::identity::{check_device_id, check_module_id};
use crate::state::methods::MethodResponse;

/// Longest blob name a file-upload notification takes (Azure Storage's limit).
const MAX_BLOB_NAME: usize = 1024;
/// Largest control request body.
const MAX_BODY: usize = 16 * 1024;
/// Largest body of a direct-method answer: its payload may take the service's 128 KB.
const MAX_METHOD_ANSWER_BODY: usize = 132 * 1024;
/// The header that carries the control-API token.
pub(crate) const TOKEN_HEADER: &str = "x-emulator-control-token";

/// Who may use the control API: the names it answers to, and the token it requires.
pub(crate) struct ControlAccess {
    /// Host names and addresses a request may name, normalized (lowercase, no port, no
    /// brackets, no trailing dot).
    hosts: Vec<String>,
    /// SHA-256 of the required token, so that comparing takes the same time wherever the
    /// presented one differs.
    token: Option<[u8; 32]>,
}

impl std::fmt::Debug for ControlAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlAccess")
            .field("hosts", &self.hosts)
            .field("token", &self.token.map(|_| "<redacted>"))
            .finish()
    }
}

impl ControlAccess {
    /// `names`: the emulator's host name, bind address and other names; `localhost` is
    /// always one of them.
    pub(crate) fn new(names: impl IntoIterator<Item = String>, token: Option<&str>) -> Self {
        let mut hosts: Vec<String> = names
            .into_iter()
            .chain(["localhost".to_owned()])
            .map(|n| normalize_host(&n))
            .filter(|n| !n.is_empty())
            .collect();
        hosts.sort();
        hosts.dedup();
        Self {
            hosts,
            token: token.map(|t| Sha256::digest(t.as_bytes()).into()),
        }
    }

    fn own(&self, host: &str, local: Option<IpAddr>) -> bool {
        let host = normalize_host(host);
        self.hosts.contains(&host)
            || local.is_some_and(|ip| host.parse::<IpAddr>().is_ok_and(|h| h == ip))
    }

    /// Why the request may not use the control API, if it may not. `local`: the address the
    /// connection came in on.
    fn check(&self, req: &Request<Incoming>, local: Option<IpAddr>) -> Result<(), ServiceError> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        };
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| header("host"));
        if !host.is_some_and(|h| self.own(authority_host(h), local)) {
            return Err(ServiceError::forbidden(
                "The control API answers requests for the emulator's own host name, its \
                 address or localhost only",
            ));
        }
        if let Some(origin) = header("origin") {
            let host = origin
                .split_once("://")
                .map(|(_, rest)| authority_host(rest.split('/').next().unwrap_or_default()));
            if !host.is_some_and(|h| self.own(h, local)) {
                return Err(ServiceError::forbidden(
                    "The control API does not take requests from other sites' pages (Origin)",
                ));
            }
        }
        if let Some(expected) = self.token {
            let presented: [u8; 32] = Sha256::digest(
                req.headers()
                    .get(TOKEN_HEADER)
                    .map(|v| v.as_bytes())
                    .unwrap_or_default(),
            )
            .into();
            let diff = expected
                .iter()
                .zip(presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff != 0 {
                return Err(ServiceError::unauthorized(format!(
                    "Unauthorized: the control API needs its token in the {TOKEN_HEADER} header"
                )));
            }
        }
        Ok(())
    }
}

/// The host of an authority (`host`, `host:port`, `[v6]:port`).
fn authority_host(authority: &str) -> &str {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match authority.rsplit_once(':') {
        // More than one colon and no brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => authority,
    }
}

/// Lowercase, without brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    let host = host.strip_suffix('.').unwrap_or(host);
    host.to_ascii_lowercase()
}

/// `GET /_emulator/health`: the hub's name and host, to anyone.
pub(crate) fn health(shared: &Shared) -> Response<ResponseBody> {
    Answer::json(
        200,
        json!({ "hubName": shared.hub_name, "hostName": shared.host_name }),
    )
    .into_response()
    .map(Into::into)
}

/// Answers one control request: admitted by [`ControlAccess`], its body read (bounded),
/// then run. The request log is streamed.
pub(crate) async fn serve(
    shared: &Shared,
    local: Option<IpAddr>,
    request: &RequestGuard,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    if let Err(e) = shared.control.check(&req, local) {
        return Answer::error(&e).into_response().map(Into::into);
    }
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if parts.method == Method::GET && matches!(path, "/_emulator/requests" | "/_emulator/requests/")
    {
        request.handling();
        return log_response(shared.log.stream());
    }
    let max = if parts.method == Method::PUT && path.contains("/methods/") {
        MAX_METHOD_ANSWER_BODY
    } else {
        MAX_BODY
    };
    let deadline = shared.http_limits.body_read_timeout;
    let body = match read_body(body, max, deadline, &shared.body_readers).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let e = ServiceError::message_too_large(format!(
                "A control request body is at most {max} bytes"
            ));
            return Answer::error(&e).into_response().map(Into::into);
        }
        Err(BodyError::TooSlow) => {
            return Answer::empty(408)
                .with_headers(vec![("connection", "close".to_owned())])
                .into_response()
                .map(Into::into);
        }
        Err(BodyError::Gone) => return Answer::empty(400).into_response().map(Into::into),
    };
    request.handling();
    let req = Req {
        method: parts.method,
        path: path.to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
    };
    let answer = match run(shared, &req) {
        Ok(answer) => answer,
        Err(e) => Answer::error(&e),
    };
    answer.into_response().map(Into::into)
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
            crate::config::check_faults(&config).map_err(ServiceError::argument_invalid)?;
            shared.faults.set(config.clone());
            Ok(Answer::json(200, json!({ "config": config })))
        }
        (Method::POST, ["devices", id, action @ ("connect" | "disconnect")]) => {
            check_device_id(id)?;
            let connect = *action == "connect";
            // Optional: an empty (or `null`) body connects without announcing a model.
            let options: Option<ConnectOptions> = body(req)?;
            let model_id = options.and_then(|o| o.model_id).filter(|m| !m.is_empty());
            shared.set_connected(id, None, connect)?;
            if let (true, Some(model_id)) = (connect, model_id) {
                shared.set_model_id(id, None, &model_id);
            }
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
            set_method(shared, id, None, name, response)
        }
        (Method::PUT, ["devices", id, "modules", mid, "methods", name]) => {
            check_device_id(id)?;
            check_module_id(mid)?;
            let response: MethodResponse = body(req)?;
            set_method(shared, id, Some(mid), name, response)
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
        // Telemetry real devices sent over MQTT, oldest first.
        (Method::GET, ["devices", id, "messages"]) => Ok(Answer::json(
            200,
            json!(shared.mqtt.telemetry.list(Some(id), None)),
        )),
        (Method::GET, ["devices", id, "modules", mid, "messages"]) => Ok(Answer::json(
            200,
            json!(shared.mqtt.telemetry.list(Some(id), Some(mid))),
        )),
        (Method::DELETE, ["messages"]) => {
            shared.mqtt.telemetry.clear();
            Ok(Answer::empty(204))
        }
        (Method::GET, ["c2d"]) => Ok(Answer::json(200, json!(shared.c2d.accepted()))),
        (Method::DELETE, ["c2d"]) => {
            shared.c2d.clear_accepted();
            Ok(Answer::empty(204))
        }
        (Method::POST, ["devices", id, "files"]) => {
            let upload: FileUpload = body(req)?;
            if upload.blob_name.is_empty() || upload.blob_name.len() > MAX_BLOB_NAME {
                return Err(ServiceError::argument_invalid(format!(
                    "blobName must be 1 to {MAX_BLOB_NAME} bytes"
                )));
            }
            shared.file_uploaded(id, &upload.blob_name, upload.blob_size_in_bytes)?;
            Ok(Answer::empty(204))
        }
        _ => Err(ServiceError::not_found("Unknown control path")),
    }
}

/// Registers a method answer for a device (or module) that exists, within the limits.
fn set_method(
    shared: &Shared,
    id: &str,
    mid: Option<&str>,
    name: &str,
    response: MethodResponse,
) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let entry = devices
        .get(id)
        .ok_or_else(|| ServiceError::device_not_found(id))?;
    if let Some(mid) = mid
        && !entry.modules.contains_key(mid)
    {
        return Err(ServiceError::module_not_found(id, mid));
    }
    drop(devices);
    shared
        .methods
        .set_checked(id, mid, name, response)
        .map_err(|e| ServiceError::argument_invalid(format!("Method handler refused: {e}")))?;
    Ok(Answer::empty(204))
}

/// What a puppet device may announce when it connects: the Plug and Play model id a real
/// device gives in its MQTT username (`model-id`), shown as its twin's `modelId`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConnectOptions {
    #[serde(default)]
    model_id: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_compared_without_port_case_or_brackets() {
        let access = ControlAccess::new(
            [
                "myhub.local".to_owned(),
                "127.0.0.2".to_owned(),
                "::1".to_owned(),
            ],
            None,
        );
        for (authority, own) in [
            ("localhost", true),
            ("LOCALHOST:8443", true),
            ("myhub.local.:443", true),
            ("127.0.0.2", true),
            ("[::1]:8443", true),
            ("user@localhost:1", true),
            ("127.0.0.3:443", false),
            ("attacker.example", false),
            ("localhost.attacker.example", false),
            ("", false),
        ] {
            assert_eq!(
                access.own(authority_host(authority), None),
                own,
                "{authority}"
            );
        }
        let local: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(access.own(authority_host("10.1.2.3:8443"), Some(local)));
        assert!(!access.own(authority_host("10.1.2.4:8443"), Some(local)));
        assert!(!format!("{:?}", ControlAccess::new([], Some("s3cret"))).contains("s3cret"));
    }
}
