//! AMQP and MQTT over WebSockets, as the SDKs reach them through the HTTPS port: the upgrade
//! on `/$iothub/websocket` (or `/$servicebus/websocket`) with subprotocol `AMQPWSB10` (the
//! service SDKs' AMQP) or `mqtt` (the device SDKs' MQTT), and the binary messages of the
//! socket as the byte stream either protocol runs on.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes};
use futures_core::Stream;
use futures_sink::Sink;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::hub::Shared;

/// The only subprotocol IoT Hub speaks AMQP under.
const SUBPROTOCOL: &str = "AMQPWSB10";
/// The subprotocol of MQTT over WebSockets.
const MQTT_SUBPROTOCOL: &str = "mqtt";

/// Whether a request path is the AMQP WebSocket endpoint (`$` possibly percent-encoded).
pub(crate) fn is_endpoint(path: &str) -> bool {
    let path = path.replace("%24", "$").to_ascii_lowercase();
    let path = path.strip_suffix('/').unwrap_or(&path);
    path == "/$iothub/websocket" || path == "/$servicebus/websocket"
}

/// Answers the upgrade request: 101 and the connection handed to the AMQP or the MQTT
/// listener (by the subprotocol asked for, AMQP first when both are), or 400 with the
/// reason.
pub(crate) fn upgrade(shared: &Shared, mut req: Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let has_token = |name, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if req.method() != Method::GET
        || req.version() != Version::HTTP_11
        || !has_token(UPGRADE, "websocket")
        || !has_token(CONNECTION, "upgrade")
    {
        return refuse("This endpoint only takes WebSocket upgrades (HTTP/1.1 GET)");
    }
    if header(SEC_WEBSOCKET_VERSION) != Some("13") {
        return refuse("Sec-WebSocket-Version must be 13");
    }
    let Some(key) = header(SEC_WEBSOCKET_KEY).map(|k| derive_accept_key(k.trim().as_bytes()))
    else {
        return refuse("Sec-WebSocket-Key is missing");
    };
    let offered = header(SEC_WEBSOCKET_PROTOCOL).unwrap_or_default();
    let amqp = offered.split(',').any(|p| p.trim() == SUBPROTOCOL);
    let mqtt = offered
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case(MQTT_SUBPROTOCOL));
    if !amqp && !mqtt {
        return refuse("The WebSocket subprotocol must be AMQPWSB10 or mqtt");
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let (taken, subprotocol) = if amqp {
        (shared.amqp.hand_off(upgrade), SUBPROTOCOL)
    } else {
        // The HTTPS listener asks for a client certificate: an X.509 device's is here.
        let cert = req
            .extensions()
            .get::<crate::mqtt::ClientCertificate>()
            .and_then(|c| c.0.get().cloned());
        (shared.mqtt.hand_off(upgrade, cert), MQTT_SUBPROTOCOL)
    };
    if !taken {
        let mut response = Response::new(Full::new(Bytes::from_static(b"Too many connections")));
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return response;
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(subprotocol),
    );
    if let Ok(accept) = HeaderValue::from_str(&key) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

fn refuse(reason: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(reason.as_bytes())));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// A WebSocket as a byte stream: binary messages in, one binary message per write out.
pub(crate) struct WsBytes<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
}

impl<S> WsBytes<S> {
    pub(crate) fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
        }
    }
}

impl<S> fmt::Debug for WsBytes<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsBytes")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn io_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    io::Error::other(e)
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.pending = data,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "AMQP over WebSockets takes binary messages only",
                    )));
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io_error)?;
        Pin::new(&mut self.ws)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_paths() {
        for path in [
            "/$iothub/websocket",
            "/$iothub/websocket/",
            "/%24iothub/websocket",
            "/$servicebus/websocket/",
            "/$servicebus/websocket",
            "/$IoTHub/WebSocket",
        ] {
            assert!(is_endpoint(path), "{path}");
        }
        for path in ["/", "/$iothub", "/devices/x", "/$iothub/websocket/x"] {
            assert!(!is_endpoint(path), "{path}");
        }
    }
}
