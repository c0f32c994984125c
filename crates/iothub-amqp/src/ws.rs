//! AMQP over WebSockets: a byte stream over binary WebSocket messages.
//!
//! fe2o3-amqp-ws always asks for the subprotocol `amqp`, while every IoT Hub SDK asks for
//! `AMQPWSB10` (which is what the hub is known to accept), so this adapter drives
//! tokio-tungstenite directly. Each write becomes one binary message; pings are answered by
//! tungstenite; a close or the end of the stream reads as end-of-file.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Bytes, Message};

/// The subprotocol the IoT Hub SDKs ask for.
pub(crate) const SUBPROTOCOL: &str = "AMQPWSB10";

/// The hub's WebSocket path.
pub(crate) const PATH: &str = "/$iothub/websocket";

/// A WebSocket connection seen as a byte stream.
pub(crate) struct WsStream<S> {
    inner: WebSocketStream<S>,
    // Received bytes not yet read.
    pending: Bytes,
    eof: bool,
}

impl<S> fmt::Debug for WsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WsStream").finish_non_exhaustive()
    }
}

/// Runs the WebSocket handshake for `wss://{authority}{PATH}` on an established (TLS) stream.
pub(crate) async fn handshake<S>(
    stream: S,
    authority: &str,
) -> Result<WsStream<S>, tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = format!("wss://{authority}{PATH}").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    // tungstenite checks that the server picked the subprotocol we asked for.
    let (inner, _response) = tokio_tungstenite::client_async(request, stream).await?;
    Ok(WsStream {
        inner,
        pending: Bytes::new(),
        eof: false,
    })
}

fn to_io(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::ErrorKind::BrokenPipe.into()
        }
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.pending.is_empty() {
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // AMQP frames are binary; text is not expected but carries bytes all the same.
                Some(Ok(Message::Text(text))) => this.pending = Bytes::from(text.to_string()),
                // Keep polling after a close: that is what sends tungstenite's reply, and the
                // stream then ends.
                None => this.eof = true,
                Some(Ok(
                    Message::Close(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_),
                )) => {}
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => this.eof = true,
                // A peer that hangs up without the closing handshake (or while tungstenite
                // answers its close) has ended the stream all the same.
                Some(Err(tungstenite::Error::Io(error)))
                    if matches!(
                        error.kind(),
                        io::ErrorKind::BrokenPipe
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    this.eof = true
                }
                Some(Err(error)) => return Poll::Ready(Err(to_io(error))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(to_io)?;
        Pin::new(&mut this.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
// tungstenite's accept callback dictates its large error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    #[tokio::test]
    async fn bytes_round_trip_as_binary_messages_with_our_subprotocol() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut seen = None;
            let callback = |request: &Request, mut response: Response| {
                seen = Some((
                    request.uri().path().to_owned(),
                    request
                        .headers()
                        .get("Sec-WebSocket-Protocol")
                        .map(|v| v.to_str().unwrap().to_owned()),
                ));
                response.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    HeaderValue::from_static(SUBPROTOCOL),
                );
                Ok(response)
            };
            let mut ws = tokio_tungstenite::accept_hdr_async(server_io, callback)
                .await
                .unwrap();
            let first = ws.next().await.unwrap().unwrap();
            assert_eq!(
                first,
                Message::Binary(Bytes::from_static(b"AMQP\0\x01\0\0"))
            );
            ws.send(Message::Ping(Bytes::new())).await.unwrap();
            ws.send(Message::Binary(Bytes::from_static(b"hello ")))
                .await
                .unwrap();
            ws.send(Message::Binary(Bytes::from_static(b"world")))
                .await
                .unwrap();
            ws.close(None).await.unwrap();
            // Wait for the client's side of the closing handshake.
            while let Some(Ok(_)) = ws.next().await {}
            seen.unwrap()
        });

        let mut stream = handshake(client_io, "hub.example:443").await.unwrap();
        stream.write_all(b"AMQP\0\x01\0\0").await.unwrap();
        stream.flush().await.unwrap();
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received))
            .await
            .expect("the stream ends after the closing handshake")
            .unwrap();
        assert_eq!(received, b"hello world");
        let (path, protocol) = server.await.unwrap();
        assert_eq!(path, "/$iothub/websocket");
        assert_eq!(protocol.as_deref(), Some("AMQPWSB10"));
    }

    #[tokio::test]
    async fn a_server_choosing_another_subprotocol_is_refused() {
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let callback = |_: &Request, mut response: Response| {
                response
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("amqp"));
                Ok(response)
            };
            let _ = tokio_tungstenite::accept_hdr_async(server_io, callback).await;
        });
        assert!(handshake(client_io, "hub.example:443").await.is_err());
    }
}
