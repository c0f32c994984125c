//! The AMQP 1.0 endpoint the service SDKs send cloud-to-device messages on and receive
//! delivery feedback and file-upload notifications from: port 5671 (TLS from the first byte,
//! or plain TCP when the emulator serves plain HTTP), and WebSockets on the HTTPS port.
//!
//! Authentication is IoT Hub's: SASL `MSSBCBS`/`ANONYMOUS` or none, then a `$cbs` put-token;
//! or SASL `PLAIN` with a SAS token as password. What the official service SDKs do
//! differently is accepted: the C# and Node (`azure-iothub`, on rhea) SDKs send no SASL layer
//! and put a token on `$cbs`, Java sends SASL `ANONYMOUS`, Python's uamqp (azure-iot-hub 2.7.0)
//! sends `MSSBCBS` with an empty initial response, and older SDKs sent a SAS token over
//! `PLAIN` as `{policy}@sas.root.{hub}`. Every SDK reads the CBS `status-code` as an AMQP int.

mod access;
mod address;
mod cbs;
mod connection;
mod convert;
mod devicebound;
mod feedback;
mod sasl;
mod session;
pub(crate) mod websocket;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::hub::Shared;

/// How long a TLS handshake or WebSocket upgrade may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket connections waiting to be picked up by the listener.
const HANDOFF_QUEUE: usize = 64;
/// Longest idle limit honoured; longer ones are cut to it (the clock arithmetic stays far
/// from overflow, and half of it still fits the 32-bit milliseconds AMQP advertises).
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// Endpoint settings every connection reads, and the way in for WebSocket connections,
/// which arrive on the HTTPS listener.
pub(crate) struct Endpoint {
    /// Connections silent this long are closed; zero never closes them.
    pub(crate) idle_timeout: Duration,
    websockets: mpsc::Sender<OnUpgrade>,
}

impl Endpoint {
    pub(crate) fn new(idle_timeout: Duration) -> (Self, mpsc::Receiver<OnUpgrade>) {
        let (websockets, rx) = mpsc::channel(HANDOFF_QUEUE);
        (
            Self {
                idle_timeout: idle_timeout.min(MAX_IDLE_TIMEOUT),
                websockets,
            },
            rx,
        )
    }

    /// Passes an accepted WebSocket upgrade to the listener; false when it cannot take more.
    fn hand_off(&self, upgrade: OnUpgrade) -> bool {
        self.websockets.try_send(upgrade).is_ok()
    }
}

/// Accepts AMQP connections (and WebSocket ones handed over) until shutdown, then closes
/// them all.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut websockets: mpsc::Receiver<OnUpgrade>,
) {
    let mut connections = JoinSet::new();
    let for_connections = shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    connections.spawn(tcp_connection(tcp, tls.clone(), shared.clone(), for_connections.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "AMQP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(upgrade) = websockets.recv() => {
                connections.spawn(websocket_connection(upgrade, shared.clone(), for_connections.clone()));
            }
            () = stopped(&mut shutdown) => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Each connection closes itself on shutdown; give them that long, then cut the rest.
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(3), drain).await;
    connections.shutdown().await;
}

/// Resolves once the emulator stops (or is dropped).
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // Only whether it happened matters: the guard `wait_for` returns is not `Send`.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn tcp_connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    match tls {
        Some(acceptor) => {
            let Ok(Ok(stream)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            else {
                return;
            };
            connection::serve(stream, shared, shutdown).await;
        }
        None => connection::serve(tcp, shared, shutdown).await,
    }
}

async fn websocket_connection(
    upgrade: OnUpgrade,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let Ok(Ok(upgraded)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await else {
        return;
    };
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
    connection::serve(websocket::WsBytes::new(ws), shared, shutdown).await;
}
