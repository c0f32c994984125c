//! The HTTP(S) front: accepts connections (TLS terminated here) within the listener's limits
//! (`connections.rs`: a cap, and deadlines for slow and idle clients), and runs each request
//! through authentication (SAS, or a bearer token and the principal's roles) before routing
//! and before its body is read, then routing, api-version checks, the body (size limit and
//! deadline), fault injection, the operation and the request log.
//!
//! What is not authenticated that way is listed in one place, [`exempt`]: WebSocket upgrades
//! for AMQP (handed to the AMQP endpoint, which authenticates inside the protocol), the Entra
//! ID look-alike's endpoints (`/{tenant}/oauth2/v2.0/token`, …, authenticated by their body),
//! the health check, and the rest of the control API (its own rules, `control.rs`).

use std::convert::Infallible;
use std::future::pending;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::answer::{Answer, ResponseBody};
use super::connections::{Connections, RequestGuard, Slot, Watched, watchdog};
use super::errors::ServiceError;
use super::log::{RequestLogEntry, redact_authorization, redact_body};
use super::request::{BodyError, Req, read_body};
use super::routes::{API_VERSIONS, Route};
use crate::auth::{AuthError, Need, Permission};
use crate::faults::ConnectionFate;
use crate::hub::Shared;

/// Largest request body accepted; larger ones get 413 MessageTooLarge.
pub(crate) const MAX_BODY: usize = 512 * 1024;
/// Most request bodies read at once (the others wait, their body deadline running): with
/// [`MAX_BODY`], at most 64 MiB of bodies are in memory, however many clients send them.
pub(crate) const MAX_BODIES_READ_AT_ONCE: usize = 128;

/// Most HTTP/2 streams (requests) one connection may have open at once.
const MAX_CONCURRENT_STREAMS: u32 = 100;

/// Accepts connections, as many at once as the cap allows, until `shutdown` flips, then
/// drops every open connection.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Connections::new(shared.http_limits);
    let mut connections = JoinSet::new();
    loop {
        // At the cap, the connection idle the longest makes room; when none is idle, the
        // next client waits in the backlog until one goes.
        let room = open.make_room();
        tokio::select! {
            accepted = listener.accept(), if room => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    let slot = open.open();
                    connections.spawn(connection(tcp, tls.clone(), shared.clone(), slot));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = open.freed(), if !room => {}
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    connections.shutdown().await;
}

async fn connection(
    tcp: tokio::net::TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    slot: Slot,
) {
    let local = tcp.local_addr().ok().map(|a| a.ip());
    let activity = slot.activity().clone();
    // Fault injection closes the connection without an answer through this.
    let kill = Arc::new(ConnectionFate::default());
    let client_cert = crate::mqtt::ClientCertificate::default();
    let service = {
        let kill = kill.clone();
        let activity = activity.clone();
        let client_cert = client_cert.clone();
        service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(client_cert.clone());
            let shared = shared.clone();
            let kill = kill.clone();
            let request = activity.request();
            async move {
                let response = handle(shared.clone(), kill.clone(), local, &request, req).await;
                let (mut parts, body) = response.into_parts();
                let answered = parts.extensions.remove::<Answered>().unwrap_or_default();
                let body = Tracked {
                    body,
                    pending: Some((shared, kill, answered)),
                };
                // The request counts as in progress until its answer is written.
                let body = Held {
                    body,
                    _request: request,
                };
                Ok::<_, Infallible>(Response::from_parts(parts, body))
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http2()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    let (tcp, closer) = match with_closer(tcp) {
        Ok((tcp, closer)) => (tcp, Some(closer)),
        Err(_) => return,
    };
    let served = async {
        match tls {
            Some(acceptor) => {
                let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
                else {
                    return false;
                };
                if let Some(cert) = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                {
                    let _ = client_cert.0.set(cert.to_vec());
                }
                let io = TokioIo::new(Watched::new(stream, activity.clone()));
                let conn = builder.serve_connection_with_upgrades(io, service);
                until_dropped(conn, &kill).await
            }
            None => {
                let io = TokioIo::new(Watched::new(tcp, activity.clone()));
                let conn = builder.serve_connection_with_upgrades(io, service);
                until_dropped(conn, &kill).await
            }
        }
    };
    // Slow, idle or making room at the cap: the connection is closed (dropped).
    let dropped = tokio::select! {
        biased;
        dropped = served => dropped,
        () = watchdog(&activity, slot.limits()) => false,
    };
    if let (true, Some(closer)) = (dropped, closer) {
        close_after_drop(closer);
    }
    drop(slot);
}

/// An answer's body with its request, which counts as in progress until the body is written
/// (or dropped).
struct Held<B> {
    body: B,
    _request: RequestGuard,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Held<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `conn` until it ends (false) or a request drops it (true). The connection is
/// polled first, so that answers handed over before a drop go out with it; later ones are held
/// back (see [`Tracked`]).
async fn until_dropped(conn: impl Future<Output = impl Sized>, kill: &ConnectionFate) -> bool {
    tokio::select! {
        biased;
        _ = conn => false,
        () = kill.dropped() => true,
    }
}

/// The socket, and a second handle on it that outlives the HTTP connection.
fn with_closer(
    tcp: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let std = tcp.into_std()?;
    let closer = std.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(std)?, closer))
}

/// Closes a dropped connection the way a lost one ends: what was written reaches the client,
/// then the end of the stream, and no answer to anything else. Without the reads, closing a
/// socket that still holds unread requests would reset it, and a reset makes the client
/// discard answers it has received but not read yet: answers the fault counts would call
/// delivered.
fn close_after_drop(closer: std::net::TcpStream) {
    let _ = closer.shutdown(std::net::Shutdown::Write);
    tokio::spawn(async move {
        let Ok(mut socket) = tokio::net::TcpStream::from_std(closer) else {
            return;
        };
        let mut sink = [0u8; 16 * 1024];
        let drain = async { while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    });
}

/// What is not authenticated before routing, and why: each has its own rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exempt {
    /// `/$iothub/websocket`, `/$servicebus/websocket`: AMQP (and, one day, MQTT) over
    /// WebSockets, which authenticate inside the protocol.
    WebSocket,
    /// The Entra ID look-alike's discovery, keys and token endpoints: public documents, and a
    /// token request authenticated by the client secret in its body.
    Entra,
    /// `GET /_emulator/health`: open to whoever asks, so that orchestrators can probe it.
    Health,
    /// The rest of `/_emulator/`: the control API's own rules (host, origin, token).
    Control,
}

/// The one list of requests exempt from authentication before routing.
fn exempt(path: &str) -> Option<Exempt> {
    if crate::amqp::websocket::is_endpoint(path) {
        Some(Exempt::WebSocket)
    } else if crate::entra::is_endpoint(path) {
        Some(Exempt::Entra)
    } else if path == "/_emulator/health" || path == "/_emulator/health/" {
        Some(Exempt::Health)
    } else if path == "/_emulator" || path.starts_with("/_emulator/") {
        Some(Exempt::Control)
    } else {
        None
    }
}

/// 408, and the connection closed: the client did not send its body in time.
fn too_slow() -> Response<Full<Bytes>> {
    Answer::empty(408)
        .with_headers(vec![("connection", "close".to_owned())])
        .into_response()
}

async fn handle(
    shared: Arc<Shared>,
    kill: Arc<ConnectionFate>,
    local: Option<IpAddr>,
    request: &RequestGuard,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let body_deadline = shared.http_limits.body_read_timeout;
    match exempt(req.uri().path()) {
        Some(Exempt::WebSocket) => {
            return crate::amqp::websocket::upgrade(&shared, req).map(Into::into);
        }
        Some(Exempt::Entra) => {
            // It reads its own (smaller) bodies and logs with its redaction.
            let served = crate::entra::serve(shared, req);
            let response = if body_deadline.is_zero() {
                served.await
            } else {
                tokio::time::timeout(body_deadline, served)
                    .await
                    .unwrap_or_else(|_| too_slow())
            };
            return response.map(Into::into);
        }
        Some(Exempt::Health) => return super::control::health(&shared),
        Some(Exempt::Control) => {
            return super::control::serve(&shared, local, request, req).await;
        }
        None => {}
    }
    let (parts, body) = req.into_parts();
    if let Some(operation) = write_operation(&parts.method, parts.uri.path()) {
        shared.faults.count_request(&operation);
    }
    let mut req = Req {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        headers: parts.headers,
        body: Bytes::new(),
    };
    let write = write_operation(&req.method, &req.path);
    let mut entry = log_entry(&req);
    // Who is asking comes first, before the path is looked at or the body read.
    let route = match admit(&shared, &req) {
        Ok(route) => route,
        Err(e) => {
            entry.status = Some(e.status);
            if e.status == 401 {
                shared.log.push_short(entry);
            } else {
                shared.log.push(entry);
            }
            return answered(Answer::error(&e).into_response(), write, false);
        }
    };
    req.body = match read_body(body, MAX_BODY, body_deadline, &shared.body_readers).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            let err = ServiceError::message_too_large(format!(
                "The request body exceeds {MAX_BODY} bytes"
            ));
            entry.status = Some(err.status);
            shared.log.push(entry);
            return Answer::error(&err).into_response().map(Into::into);
        }
        Err(BodyError::TooSlow) => {
            entry.status = Some(408);
            shared.log.push(entry);
            return answered(too_slow(), write, false);
        }
        Err(BodyError::Gone) => {
            // The client went away mid-body (or another request's drop closed the
            // connection): nothing to answer, nothing applied.
            return answered(Answer::empty(400).into_response(), write, false);
        }
    };
    request.handling();
    entry.body = redact_body(&req.body);
    let answer = match service(&shared, route, &req).await {
        Ok(Flow::Answer(a)) => a,
        Ok(Flow::Drop) => {
            entry.status = None;
            shared.log.push(entry);
            kill.drop_connection();
            return pending().await;
        }
        Err(e) => Answer::error(&e),
    };
    entry.status = Some(answer.status);
    shared.log.push(entry);
    let applied = (200..300).contains(&answer.status);
    answered(answer.into_response(), write, applied)
}

/// What a service request did, carried with its answer for [`Tracked`].
#[derive(Clone, Default)]
struct Answered {
    /// Its operation, if it is a write.
    write: Option<String>,
    /// Whether it changed the hub.
    applied: bool,
}

fn answered(
    response: Response<Full<Bytes>>,
    write: Option<String>,
    applied: bool,
) -> Response<ResponseBody> {
    let mut response = response.map(ResponseBody::from);
    response
        .extensions_mut()
        .insert(Answered { write, applied });
    response
}

/// An answer's body that counts the answer as lost when another request's drop closed the
/// connection before the body was handed over: per request, as the client saw it. Once the
/// connection is dropped, a body not yet handed over is held back, never sent.
struct Tracked {
    body: ResponseBody,
    /// Until the body is handed over.
    pending: Option<(Arc<Shared>, Arc<ConnectionFate>, Answered)>,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this
            .pending
            .as_ref()
            .is_some_and(|(_, fate, _)| fate.is_dropped())
        {
            // The connection is going away: this answer is lost (counted when dropped).
            return std::task::Poll::Pending;
        }
        let frame = std::pin::Pin::new(&mut this.body).poll_frame(cx);
        if frame.is_ready() {
            this.pending = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some((shared, fate, answered)) = self.pending.take()
            && fate.is_dropped()
        {
            shared
                .faults
                .lost(answered.write.as_deref(), answered.applied, true);
        }
    }
}

enum Flow {
    Answer(Answer),
    /// Close the connection without answering.
    Drop,
}

async fn service(shared: &Shared, route: Route, req: &Req) -> Result<Flow, ServiceError> {
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
    let write = write_operation(&req.method, &req.path);
    let decision = shared.faults.decide(route.class(), 1);
    if let Some(operation) = &write {
        shared.faults.count_write(&decision, operation);
    }
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
        let applied = answer
            .as_ref()
            .is_ok_and(|a| (200..300).contains(&a.status));
        shared.faults.lost(write.as_deref(), applied, false);
        return Ok(Flow::Drop);
    }
    answer.map(Flow::Answer)
}

/// For a request that would change the hub (anything but a GET or a query), its operation as
/// the fault counts name it: method and path template, `PUT /devices/{id}`.
fn write_operation(method: &hyper::Method, path: &str) -> Option<String> {
    if method == hyper::Method::GET
        || path == "/devices/query"
        || path == "/configurations/testQueries"
    {
        return None;
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let feedback = segments[0].eq_ignore_ascii_case("messages");
    let template: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, segment)| match i {
            1 if !feedback => "{id}",
            3 if feedback => "{lockToken}",
            3 if segments[2] == "modules" => "{mid}",
            _ => segment,
        })
        .collect();
    Some(format!("{method} /{}", template.join("/")))
}

/// Anyone the hub knows: a SAS token of any policy, the fixed bearer token, or an Entra
/// token of the tenant, whatever it may do.
const ANYONE: Need = Need {
    permissions: &[
        Permission::RegistryRead,
        Permission::RegistryWrite,
        Permission::ServiceConnect,
        Permission::DeviceConnect,
    ],
    data_actions: &[],
};

/// Authenticates, routes and authorizes a service request, before its body is read: 401
/// for whoever the hub does not know, whatever the path or ids (as the service answers);
/// then 404, 405 or 400 for what is not a route; then 401 for what the token does not
/// allow; and 400 for an `If-Match` that is not ASCII (it cannot be compared, and ignoring it
/// would turn an update into a create).
fn admit(shared: &Shared, req: &Req) -> Result<Route, ServiceError> {
    let header = req.header("authorization");
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    if let Err(e) = shared.auth.authorize(header, ANYONE, now) {
        return Err(ServiceError::unauthorized(refusal_text(header, &e)));
    }
    let route = Route::parse(&req.method, &req.segments()?)?;
    authorize(shared, req, &route)?;
    if req
        .headers
        .get_all("if-match")
        .iter()
        .any(|v| v.to_str().is_err())
    {
        return Err(ServiceError::argument_invalid(
            "The If-Match header must be ASCII (a quoted etag or *)",
        ));
    }
    Ok(route)
}

/// What a 401 says: the reason, and for a device's (or module's) own token, that the
/// device side is not emulated.
fn refusal_text(header: Option<&str>, e: &AuthError) -> String {
    let device_token = matches!(e, AuthError::UnknownPolicy)
        && header.is_some_and(|h| {
            h.trim()
                .strip_prefix("SharedAccessSignature ")
                .is_some_and(|body| {
                    !body
                        .split('&')
                        .any(|field| field.trim_start().starts_with("skn="))
                })
        });
    if device_token {
        format!(
            "{e}: it is a device (or module) token, and the device-facing API (HTTPS, AMQP, \
             MQTT) is not emulated; the service API takes a shared access policy's token"
        )
    } else {
        e.to_string()
    }
}

fn authorize(shared: &Shared, req: &Req, route: &Route) -> Result<(), ServiceError> {
    let header = req.header("authorization");
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let need = Need {
        permissions: route.permissions(),
        data_actions: route.data_actions(),
    };
    match shared.auth.authorize_request(header, need, &req.path, now) {
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
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::write_operation;
    use hyper::Method;

    #[test]
    fn write_operations_are_named_by_template() {
        let named = |method, path| write_operation(&method, path);
        assert_eq!(named(Method::GET, "/devices/d1"), None);
        assert_eq!(named(Method::POST, "/devices/query"), None);
        assert_eq!(
            named(Method::POST, "/devices").as_deref(),
            Some("POST /devices")
        );
        assert_eq!(
            named(Method::PUT, "/devices/d%201").as_deref(),
            Some("PUT /devices/{id}")
        );
        assert_eq!(
            named(Method::PATCH, "/twins/d1/modules/m1").as_deref(),
            Some("PATCH /twins/{id}/modules/{mid}")
        );
        assert_eq!(
            named(Method::DELETE, "/devices/d1/commands").as_deref(),
            Some("DELETE /devices/{id}/commands")
        );
        assert_eq!(named(Method::POST, "/configurations/testQueries"), None);
        assert_eq!(
            named(Method::PUT, "/configurations/c1").as_deref(),
            Some("PUT /configurations/{id}")
        );
        assert_eq!(
            named(Method::POST, "/messages/serviceBound/feedback/t1/abandon").as_deref(),
            Some("POST /messages/serviceBound/feedback/{lockToken}/abandon")
        );
    }
}
