//! The HTTP(S) front: accepts connections (TLS terminated here), reads requests with a
//! size limit, and runs each through routing, SAS authentication, api-version checks,
//! fault injection, the operation and the request log. WebSocket upgrades for AMQP are
//! handed to the AMQP endpoint before any of that.

use std::convert::Infallible;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::Shared;
use crate::auth::AuthError;
use crate::errors::{ServiceError, tracking_id};
use crate::log::{RequestLogEntry, redact_authorization, redact_body};
use crate::service::{API_VERSIONS, Route};

/// Largest request body accepted; larger ones get 413 MessageTooLarge.
pub(crate) const MAX_BODY: usize = 512 * 1024;

/// A request, read in full.
pub(crate) struct Req {
    pub(crate) method: Method,
    /// The path as sent, still percent-encoded.
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| {
                percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }

    /// The decoded path segments, without the leading slash or one trailing slash.
    pub(crate) fn segments(&self) -> Result<Vec<String>, ServiceError> {
        let trimmed = self.path.strip_prefix('/').unwrap_or(&self.path);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        trimmed
            .split('/')
            .map(|s| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| ServiceError::argument_invalid("The path is not valid UTF-8"))
            })
            .collect()
    }
}

/// An answer before it is written.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    pub(crate) fn error(e: &ServiceError) -> Self {
        let mut headers = vec![("iothub-errorcode", e.name.to_owned())];
        if let Some(secs) = e.retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        Self {
            status: e.status,
            body: Some(e.body(&tracking_id(), Utc::now())),
            headers,
        }
    }

    fn into_response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("x-ms-request-id", request_id());
        let body = match &self.body {
            Some(v) => {
                builder = builder.header("content-type", "application/json; charset=utf-8");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                builder = builder.header(*name, value);
            }
        }
        builder
            .body(Full::new(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

fn request_id() -> String {
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

/// Accepts connections until `shutdown` flips, then drops every open connection.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(connection(tcp, tls.clone(), shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn connection(tcp: tokio::net::TcpStream, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    // Fault injection closes the connection without an answer by notifying this.
    let kill = Arc::new(Notify::new());
    let service = {
        let kill = kill.clone();
        service_fn(move |req| {
            let shared = shared.clone();
            let kill = kill.clone();
            async move { Ok::<_, Infallible>(handle(shared, kill, req).await) }
        })
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    match tls {
        Some(acceptor) => {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! { _ = conn => {}, () = kill.notified() => {} }
        }
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            tokio::select! { _ = conn => {}, () = kill.notified() => {} }
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<Notify>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    // AMQP over WebSockets authenticates itself (CBS) and is not a service request.
    if crate::amqp::websocket::is_endpoint(req.uri().path()) {
        return crate::amqp::websocket::upgrade(&shared, req);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                let err = ServiceError::message_too_large(format!(
                    "The request body exceeds {MAX_BODY} bytes"
                ));
                return Answer::error(&err).into_response();
            }
            // The client went away mid-body: nothing to answer.
            return Answer::empty(400).into_response();
        }
    };
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body,
    };
    if req.path == "/_emulator" || req.path.starts_with("/_emulator/") {
        return crate::control::handle(&shared, &req).await.into_response();
    }
    let mut entry = log_entry(&req);
    let answer = match service(&shared, &req).await {
        Ok(Flow::Answer(a)) => a,
        Ok(Flow::Drop) => {
            entry.status = None;
            shared.log.push(entry);
            kill.notify_one();
            return pending().await;
        }
        Err(e) => Answer::error(&e),
    };
    entry.status = Some(answer.status);
    shared.log.push(entry);
    answer.into_response()
}

enum Flow {
    Answer(Answer),
    /// Close the connection without answering.
    Drop,
}

async fn service(shared: &Shared, req: &Req) -> Result<Flow, ServiceError> {
    let route = Route::parse(&req.method, &req.segments()?)?;
    authorize(shared, req, &route)?;
    match req.query_param("api-version") {
        Some(v) if API_VERSIONS.contains(&v.as_str()) => {}
        Some(v) => {
            return Err(ServiceError::invalid_protocol_version(format!(
                "Invalid api-version '{v}'"
            )));
        }
        None => {
            return Err(ServiceError::invalid_protocol_version(
                "The api-version query parameter is required",
            ));
        }
    }
    let decision = shared.faults.decide(route.class(), 1);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    if decision.drop_before {
        return Ok(Flow::Drop);
    }
    if let Some(retry_after) = decision.throttle {
        return Err(ServiceError::throttled(retry_after));
    }
    match decision.server_error {
        Some(500) => return Err(ServiceError::server_error("Injected server error")),
        Some(_) => {
            return Err(ServiceError::service_unavailable(
                "Injected: the service is unavailable",
            ));
        }
        None => {}
    }
    let answer = crate::service::handle(shared, route, req).await;
    if decision.drop_after {
        return Ok(Flow::Drop);
    }
    answer.map(Flow::Answer)
}

fn authorize(shared: &Shared, req: &Req, route: &Route) -> Result<(), ServiceError> {
    let header = req.header("authorization");
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let mut first_error = None;
    for permission in route.permissions() {
        match shared.auth.authorize(header, *permission, now) {
            Ok(_) => return Ok(()),
            Err(e) => {
                let insufficient = matches!(e, AuthError::Insufficient(_));
                first_error.get_or_insert(e);
                // Only a missing permission is worth trying the alternatives for.
                if !insufficient {
                    break;
                }
            }
        }
    }
    let reason = first_error.map_or_else(|| "Unauthorized".to_owned(), |e| e.to_string());
    Err(ServiceError::unauthorized(reason))
}

fn log_entry(req: &Req) -> RequestLogEntry {
    let headers = req
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
        method: req.method.as_str().to_owned(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers,
        body: redact_body(&req.body),
        status: None,
    }
}
