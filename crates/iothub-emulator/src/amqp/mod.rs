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
//!
//! What a connection may hold is bounded: it is closed when it has no valid token some time
//! after it opened, or when it opens more sessions or links than allowed; what it held goes
//! with it (the counts are kept, for tests and the soak, in [`Endpoint`]). How many
//! connections are served at once is bounded too (TCP and WebSocket together).

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
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
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

/// What one connection may do and hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections silent this long are closed; zero never closes them.
    pub(crate) idle_timeout: Duration,
    /// Connections without a valid token this long after opening are closed; zero never.
    pub(crate) auth_timeout: Duration,
    /// Most sessions open at once on one connection.
    pub(crate) max_sessions: usize,
    /// Most links attached at once on one connection.
    pub(crate) max_links: usize,
}

/// How many of something are open now; a [`Slot`] holds one.
#[derive(Debug, Default)]
pub(crate) struct Gauge(AtomicUsize);

impl Gauge {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// One open connection, session or link, counted while it lives (in the endpoint's gauge
/// and, for links, in its connection's count).
pub(crate) struct Slot {
    shared: Arc<Shared>,
    which: fn(&Endpoint) -> &Gauge,
    connection: Option<Arc<Gauge>>,
}

impl Slot {
    pub(crate) fn take(
        shared: &Arc<Shared>,
        which: fn(&Endpoint) -> &Gauge,
        connection: Option<Arc<Gauge>>,
    ) -> Self {
        which(&shared.amqp).0.fetch_add(1, Ordering::SeqCst);
        if let Some(c) = &connection {
            c.0.fetch_add(1, Ordering::SeqCst);
        }
        Self {
            shared: shared.clone(),
            which,
            connection,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        (self.which)(&self.shared.amqp)
            .0
            .fetch_sub(1, Ordering::SeqCst);
        if let Some(c) = &self.connection {
            c.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Endpoint settings every connection reads, what is open now, and the way in for WebSocket
/// connections, which arrive on the HTTPS listener.
pub(crate) struct Endpoint {
    /// Connections silent this long are closed; zero never closes them.
    pub(crate) idle_timeout: Duration,
    pub(crate) limits: Limits,
    /// Connections open now.
    pub(crate) connections: Gauge,
    /// Sessions open now, over all connections.
    pub(crate) sessions: Gauge,
    /// Links attached now, over all connections.
    pub(crate) links: Gauge,
    /// Most connections served at once (TCP and WebSocket together).
    max_connections: usize,
    websockets: mpsc::Sender<OnUpgrade>,
}

impl Endpoint {
    pub(crate) fn new(limits: Limits, max_connections: usize) -> (Self, mpsc::Receiver<OnUpgrade>) {
        let (websockets, rx) = mpsc::channel(HANDOFF_QUEUE);
        (
            Self {
                idle_timeout: limits.idle_timeout.min(MAX_IDLE_TIMEOUT),
                limits: Limits {
                    idle_timeout: limits.idle_timeout.min(MAX_IDLE_TIMEOUT),
                    auth_timeout: limits.auth_timeout.min(MAX_IDLE_TIMEOUT),
                    ..limits
                },
                connections: Gauge::default(),
                sessions: Gauge::default(),
                links: Gauge::default(),
                max_connections: max_connections.max(1),
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

/// Accepts AMQP connections (and WebSocket ones handed over), at most the endpoint's cap at
/// once, until shutdown, then closes them all. At the cap a TCP client waits to be accepted
/// and a WebSocket one is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut websockets: mpsc::Receiver<OnUpgrade>,
) {
    let mut connections = JoinSet::new();
    let for_connections = shutdown.clone();
    let room = Arc::new(Semaphore::new(shared.amqp.max_connections));
    loop {
        tokio::select! {
            accepted = async {
                let permit = room.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => match accepted {
                (Ok(permit), Ok((tcp, _))) => {
                    let _ = tcp.set_nodelay(true);
                    let connection = tcp_connection(tcp, tls.clone(), shared.clone(), for_connections.clone());
                    connections.spawn(async move {
                        connection.await;
                        drop(permit);
                    });
                }
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "AMQP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (Err(_), _) => break,
            },
            Some(upgrade) = websockets.recv() => {
                let Ok(permit) = room.clone().try_acquire_owned() else {
                    tracing::debug!("AMQP over WebSockets refused: the connection cap is reached");
                    continue;
                };
                let connection = websocket_connection(upgrade, shared.clone(), for_connections.clone());
                connections.spawn(async move {
                    connection.await;
                    drop(permit);
                });
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
