//! The tenant's HTTP endpoints, on the emulator's own HTTPS port beside the service API:
//!
//! - `GET /{tenant}/v2.0/.well-known/openid-configuration`: the discovery document MSAL
//!   reads (`issuer`, `authorization_endpoint`, `token_endpoint`, `jwks_uri`, …);
//! - `POST /{tenant}/oauth2/v2.0/token`: the client-credentials grant;
//! - `GET /{tenant}/discovery/v2.0/keys`: the public signing key as a JWK set.
//!
//! Bodies are read up to [`MAX_BODY`]; every request goes to the request log with its
//! secrets (`client_secret`, `client_assertion`) redacted. Answers and refusals have Entra's
//! shape.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use serde_json::{Map, Value, json};

use super::form::{self, Form, FormError};
use super::{Directory, EntraError};
use crate::hub::Shared;
use crate::rest::errors::tracking_id;
use crate::rest::log::{RequestLogEntry, redact_authorization};

/// Largest body the endpoints read (a token request is well under 1 KB).
pub(crate) const MAX_BODY: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Discovery,
    Token,
    Keys,
}

/// The endpoint and tenant of a path, if it is one of the tenant's.
fn endpoint(path: &str) -> Option<(String, Endpoint)> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let (tenant, endpoint) = match segments.as_slice() {
        [tenant, "v2.0", ".well-known", "openid-configuration"] => (tenant, Endpoint::Discovery),
        [tenant, "oauth2", "v2.0", "token"] => (tenant, Endpoint::Token),
        [tenant, "discovery", "v2.0", "keys"] => (tenant, Endpoint::Keys),
        _ => return None,
    };
    let tenant = percent_encoding::percent_decode_str(tenant)
        .decode_utf8_lossy()
        .into_owned();
    (!tenant.is_empty() && tenant != "_emulator").then_some((tenant, endpoint))
}

/// Whether the path is one of the Entra endpoints (whatever the tenant).
pub(crate) fn is_endpoint(path: &str) -> bool {
    endpoint(path).is_some()
}

/// An answer before it is written.
struct Reply {
    status: u16,
    body: Option<Value>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn refusal(e: &EntraError, correlation: &str) -> Self {
        Self::json(e.status, error_body(e, &uuid(), correlation, Utc::now()))
            .header("cache-control", "no-store, no-cache")
            .header("pragma", "no-cache")
    }

    fn into_response(self, correlation: &str) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("x-ms-request-id", uuid())
            .header("client-request-id", correlation);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        let body = match self.body {
            Some(v) => {
                builder = builder.header("content-type", "application/json; charset=utf-8");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

/// Entra's error body: the description starts with `AADSTSnnnn:` and ends with the trace
/// and correlation ids and the time, which are also fields of their own.
fn error_body(e: &EntraError, trace: &str, correlation: &str, now: DateTime<Utc>) -> Value {
    let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
    let prefix = e.code.map(|c| format!("AADSTS{c}: ")).unwrap_or_default();
    let mut body = Map::new();
    body.insert("error".into(), json!(e.error));
    body.insert(
        "error_description".into(),
        json!(format!(
            "{prefix}{} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {timestamp}",
            e.description
        )),
    );
    body.insert(
        "error_codes".into(),
        json!(e.code.into_iter().collect::<Vec<_>>()),
    );
    body.insert("timestamp".into(), json!(timestamp));
    body.insert("trace_id".into(), json!(trace));
    body.insert("correlation_id".into(), json!(correlation));
    if let Some(code) = e.code {
        body.insert(
            "error_uri".into(),
            json!(format!(
                "https://login.microsoftonline.com/error?code={code}"
            )),
        );
    }
    Value::Object(body)
}

fn uuid() -> String {
    let id = tracking_id();
    format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}

/// The client's `client-request-id` (MSAL and azure-identity send one) when it is a plain
/// token, else a fresh id: Entra uses it as the correlation id.
fn correlation_id(req: &hyper::http::request::Parts) -> String {
    req.headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map_or_else(uuid, str::to_owned)
}

/// Answers one request to the tenant's endpoints and records it in the request log.
pub(crate) async fn serve(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let correlation = correlation_id(&parts);
    let mut entry = log_entry(&parts);
    let (reply, body) = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => {
            let body = collected.to_bytes();
            entry.body = form::redact(&body);
            (None, body)
        }
        Err(e) => {
            let reply = if e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                entry.body = format!("<not read: over {MAX_BODY} bytes>");
                let e = EntraError::new(
                    413,
                    "invalid_request",
                    None,
                    format!("The request body exceeds {MAX_BODY} bytes."),
                );
                Reply::refusal(&e, &correlation)
            } else {
                // The client went away mid-body: nothing to answer.
                Reply {
                    status: 400,
                    body: None,
                    headers: Vec::new(),
                }
            };
            (Some(reply), Bytes::new())
        }
    };
    let reply = match reply {
        Some(reply) => reply,
        None => answer(&shared, &parts, &body, &correlation).await,
    };
    entry.status = Some(reply.status);
    shared.log.push(entry);
    reply.into_response(&correlation)
}

async fn answer(
    shared: &Arc<Shared>,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    correlation: &str,
) -> Reply {
    let Some(directory) = shared.auth.entra() else {
        return Reply {
            status: 404,
            body: None,
            headers: Vec::new(),
        };
    };
    let Some((tenant, endpoint)) = endpoint(parts.uri.path()) else {
        return Reply {
            status: 404,
            body: None,
            headers: Vec::new(),
        };
    };
    if endpoint != Endpoint::Discovery && !directory.has_key() {
        // Generating an RSA key takes a moment: not on the async threads.
        let shared = shared.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(directory) = shared.auth.entra() {
                directory.signing_key();
            }
        })
        .await;
    }
    match endpoint {
        Endpoint::Discovery | Endpoint::Keys => {
            if parts.method != Method::GET {
                return Reply {
                    status: 405,
                    body: None,
                    headers: vec![("allow", "GET".to_owned())],
                };
            }
            if !tenant.eq_ignore_ascii_case(directory.tenant_id()) {
                let e = EntraError::unknown_tenant(&tenant, "invalid_tenant");
                return Reply::refusal(&e, correlation);
            }
            let document = if endpoint == Endpoint::Discovery {
                Some(directory.openid_configuration())
            } else {
                directory.jwks()
            };
            match document {
                Some(document) => Reply::json(200, document)
                    .header("cache-control", "max-age=86400, private")
                    .header("access-control-allow-origin", "*"),
                None => Reply {
                    status: 503,
                    body: None,
                    headers: Vec::new(),
                },
            }
        }
        Endpoint::Token => token(directory, &parts.method, &tenant, body, correlation),
    }
}

fn token(
    directory: &Directory,
    method: &Method,
    tenant: &str,
    body: &[u8],
    correlation: &str,
) -> Reply {
    if method != Method::POST {
        let e = EntraError::new(
            400,
            "invalid_request",
            Some(900_561),
            format!(
                "The endpoint only accepts POST, OPTIONS requests. Received a {method} request."
            ),
        );
        return Reply::refusal(&e, correlation);
    }
    let form = match Form::parse(body) {
        Ok(form) => form,
        Err(FormError::Duplicate(name)) => {
            let e = EntraError::new(
                400,
                "invalid_request",
                None,
                format!(
                    "The parameter '{}' is given more than once.",
                    super::shorten(&name)
                ),
            );
            return Reply::refusal(&e, correlation);
        }
        Err(FormError::TooMany) => {
            let e = EntraError::new(
                400,
                "invalid_request",
                None,
                "The request has too many parameters.".into(),
            );
            return Reply::refusal(&e, correlation);
        }
    };
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    match directory.token(tenant, &form, now) {
        Ok(answer) => Reply::json(200, answer)
            .header("cache-control", "no-store, no-cache")
            .header("pragma", "no-cache"),
        Err(e) => Reply::refusal(&e, correlation),
    }
}

/// The request as the log keeps it: secrets in the query and `Authorization` redacted (the
/// body is added once read).
fn log_entry(parts: &hyper::http::request::Parts) -> RequestLogEntry {
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            let value = if name == "authorization" {
                redact_authorization(&value)
            } else {
                value
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    RequestLogEntry {
        seq: 0,
        time: Utc::now().to_rfc3339(),
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: form::redact(parts.uri.query().unwrap_or_default().as_bytes()),
        headers,
        body: String::new(),
        status: None,
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    #[test]
    fn paths_of_the_tenant() {
        assert_eq!(
            endpoint("/t1/v2.0/.well-known/openid-configuration"),
            Some(("t1".into(), Endpoint::Discovery))
        );
        assert_eq!(
            endpoint("/t%2D1/oauth2/v2.0/token"),
            Some(("t-1".into(), Endpoint::Token))
        );
        assert_eq!(
            endpoint("/t1/discovery/v2.0/keys"),
            Some(("t1".into(), Endpoint::Keys))
        );
        for other in [
            "/devices/d1",
            "/t1/oauth2/v2.0/token/",
            "//oauth2/v2.0/token",
            "/_emulator/oauth2/v2.0/token",
            "/t1/oauth2/token",
            "",
        ] {
            assert!(!is_endpoint(other), "{other}");
        }
    }

    #[test]
    fn error_bodies_have_entras_fields() {
        let now = Utc.with_ymd_and_hms(2025, 4, 4, 21, 10, 4).unwrap();
        let e = EntraError::new(401, "invalid_client", Some(7_000_215), "Bad secret.".into());
        let body = error_body(&e, "trace", "corr", now);
        assert_eq!(body["error"], "invalid_client");
        assert_eq!(
            body["error_description"],
            "AADSTS7000215: Bad secret. Trace ID: trace Correlation ID: corr Timestamp: 2025-04-04 21:10:04Z"
        );
        assert_eq!(body["error_codes"], json!([7_000_215]));
        assert_eq!(body["timestamp"], "2025-04-04 21:10:04Z");
        assert_eq!(body["trace_id"], "trace");
        assert_eq!(body["correlation_id"], "corr");
        assert_eq!(
            body["error_uri"],
            "https://login.microsoftonline.com/error?code=7000215"
        );
        let e = EntraError::new(400, "invalid_request", None, "Odd.".into());
        let body = error_body(&e, "t", "c", now);
        assert_eq!(body["error_codes"], json!([]));
        assert!(body.get("error_uri").is_none());
        assert!(
            body["error_description"]
                .as_str()
                .unwrap()
                .starts_with("Odd. Trace ID")
        );
    }
}
