//! The HTTP(S) front: accepts connections (TLS terminated here), reads requests with a
//! size limit, and runs each through routing, authentication (SAS, or a bearer token and the
//! principal's roles), api-version checks, fault injection, the operation and the request
//! log. WebSocket upgrades for AMQP are handed to the AMQP endpoint before any of that, and
//! the Entra ID look-alike's endpoints (`/{tenant}/oauth2/v2.0/token`, …) to `entra`.

use std::convert::Infallible;
use std::future::pending;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::answer::Answer;
use super::errors::ServiceError;
use super::log::{RequestLogEntry, redact_authorization, redact_body};
use super::request::Req;
use super::routes::{API_VERSIONS, Route};
use crate::auth::Need;
use crate::hub::Shared;

/// Largest request body accepted; larger ones get 413 MessageTooLarge.
pub(crate) const MAX_BODY: usize = 512 * 1024;

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
    // The Entra ID look-alike reads its own (smaller) bodies and logs with its redaction.
    if crate::entra::is_endpoint(req.uri().path()) {
        return crate::entra::serve(shared, req).await;
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
        return super::control::handle(&shared, &req).await.into_response();
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
    let answer = super::routes::handle(shared, route, req).await;
    if decision.drop_after {
        return Ok(Flow::Drop);
    }
    answer.map(Flow::Answer)
}

fn authorize(shared: &Shared, req: &Req, route: &Route) -> Result<(), ServiceError> {
    let header = req.header("authorization");
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let need = Need {
        permissions: route.permissions(),
        data_actions: route.data_actions(),
    };
    match shared.auth.authorize(header, need, now) {
        Ok(_) => Ok(()),
        Err(e) => Err(ServiceError::unauthorized(e.to_string())),
    }
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
