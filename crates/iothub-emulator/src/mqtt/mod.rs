//! The device-facing MQTT 3.1.1 endpoint: real device code (the official device SDKs, any
//! MQTT client) connects over TLS (port 8883 in the binary) or over WebSockets on the HTTPS
//! port (`/$iothub/websocket`, subprotocol `mqtt`) and speaks IoT Hub's topic contract:
//! telemetry, cloud-to-device messages, the twin, direct methods.
//!
//! Packets are read and written by `rumqttc`'s `mqttbytes::v4`; the session layer (who may
//! connect, which topics exist, what each does to the hub) is here, on the state the service
//! side already has: the registry and twins (`state::store`), the cloud-to-device queues and
//! their feedback (`state::c2d`), and the direct-method rendezvous (`rest::methods`).
//!
//! Bounded like the other listeners: a connection cap, an authentication deadline before
//! anything beyond one small CONNECT is read, a packet size cap, a packet rate cap, and the
//! client's own keep-alive enforced at 1.5 times.

mod registry;
mod session;
pub(crate) mod telemetry;
mod topics;
pub(crate) mod x509;

use std::sync::Arc;
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use crate::amqp::stopped;
use crate::amqp::websocket::WsBytes;
use crate::hub::Shared;

pub(crate) use registry::{Command, MethodCall, MethodRoute, Registry};

/// A WebSocket upgrade handed over by the HTTPS listener, with the client certificate of its
/// connection, if any.
type Handoff = (OnUpgrade, Option<Vec<u8>>);

/// The client certificate of the HTTPS connection a request came on, set once its TLS
/// handshake is done (a request extension): what an MQTT-over-WebSockets device
/// authenticates with.
#[derive(Clone, Default)]
pub(crate) struct ClientCertificate(pub(crate) Arc<std::sync::OnceLock<Vec<u8>>>);

/// How long a TLS handshake or WebSocket upgrade may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// WebSocket connections waiting to be picked up by the listener.
const HANDOFF_QUEUE: usize = 64;

/// What one connection may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// A connection that has not sent an accepted CONNECT this long after opening is closed;
    /// zero never closes it.
    pub(crate) auth_timeout: Duration,
    /// Most packets a connection may send in one second; more closes it (0: no limit).
    pub(crate) max_packets_per_second: u32,
}

/// The endpoint: its limits, the sessions it holds, the telemetry received, and the way in
/// for WebSocket connections, which arrive on the HTTPS listener.
pub(crate) struct Endpoint {
    pub(crate) limits: Limits,
    max_connections: usize,
    /// Connected devices and modules, and the sessions kept for CleanSession 0.
    pub(crate) registry: Registry,
    /// What devices sent.
    pub(crate) telemetry: telemetry::Telemetry,
    websockets: mpsc::Sender<Handoff>,
}

impl Endpoint {
    pub(crate) fn new(
        limits: Limits,
        max_connections: usize,
        telemetry: telemetry::Telemetry,
    ) -> (Self, mpsc::Receiver<Handoff>) {
        let (websockets, rx) = mpsc::channel(HANDOFF_QUEUE);
        (
            Self {
                limits,
                max_connections: max_connections.max(1),
                registry: Registry::default(),
                telemetry,
                websockets,
            },
            rx,
        )
    }

    /// Passes an accepted WebSocket upgrade (with the client certificate the HTTPS
    /// connection presented, if any) to the listener; false when it cannot take more.
    pub(crate) fn hand_off(&self, upgrade: OnUpgrade, client_cert: Option<Vec<u8>>) -> bool {
        self.websockets.try_send((upgrade, client_cert)).is_ok()
    }

    /// Connections open now (TLS and WebSockets).
    pub(crate) fn open_connections(&self) -> usize {
        self.registry.open()
    }
}

/// Accepts MQTT connections (and WebSocket ones handed over), at most the endpoint's cap at
/// once, until shutdown, then closes them all. At the cap a TCP client waits to be accepted
/// and a WebSocket one is closed.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut websockets: mpsc::Receiver<Handoff>,
) {
    // Subscribed before the first connection, so that no change is missed.
    let dispatcher = tokio::spawn(dispatch(
        shared.clone(),
        shared.store.watch_changes(),
        shared.c2d.watch_arrivals(),
        shutdown.clone(),
    ));
    let mut connections = JoinSet::new();
    let room = Arc::new(Semaphore::new(shared.mqtt.max_connections));
    loop {
        tokio::select! {
            accepted = async {
                let permit = room.clone().acquire_owned().await;
                (permit, listener.accept().await)
            } => match accepted {
                (Ok(permit), Ok((tcp, _))) => {
                    let _ = tcp.set_nodelay(true);
                    let shared = shared.clone();
                    let tls = tls.clone();
                    let stop = shutdown.clone();
                    connections.spawn(async move {
                        match tls {
                            Some(acceptor) => {
                                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(stream)) => {
                                    let cert = stream
                                        .get_ref()
                                        .1
                                        .peer_certificates()
                                        .and_then(|c| c.first())
                                        .map(|c| c.to_vec());
                                    session::serve(stream, cert, shared, stop).await;
                                    }
                                    Ok(Err(e)) => tracing::debug!(error = %e, "MQTT TLS handshake failed"),
                                    Err(_) => tracing::debug!("MQTT TLS handshake timed out"),
                                }
                            }
                            None => session::serve(tcp, None, shared, stop).await,
                        }
                        drop(permit);
                    });
                }
                (_, Err(e)) => {
                    tracing::warn!(error = %e, "MQTT accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                (Err(_), _) => break,
            },
            Some((upgrade, cert)) = websockets.recv() => {
                let Ok(permit) = room.clone().try_acquire_owned() else {
                    tracing::debug!("MQTT over WebSockets refused: the connection cap is reached");
                    continue;
                };
                let shared = shared.clone();
                let stop = shutdown.clone();
                connections.spawn(async move {
                    if let Ok(Ok(upgraded)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, upgrade).await {
                        let ws = WebSocketStream::from_raw_socket(
                            TokioIo::new(upgraded),
                            Role::Server,
                            None,
                        )
                        .await;
                        session::serve(WsBytes::new(ws), cert, shared, stop).await;
                    }
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
    dispatcher.abort();
}

/// Passes the hub's changes (a device's registry entry, a message queued for a device) to the
/// connections they concern, until shutdown.
async fn dispatch(
    shared: Arc<Shared>,
    mut changes: broadcast::Receiver<Arc<str>>,
    mut arrivals: broadcast::Receiver<(String, Option<String>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let registry = &shared.mqtt.registry;
    loop {
        tokio::select! {
            changed = changes.recv() => match changed {
                Ok(device) => registry.device_changed(&device),
                Err(broadcast::error::RecvError::Lagged(_)) => registry.wake_all(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            arrived = arrivals.recv() => match arrived {
                Ok((device, module)) => registry.c2d_arrived(&device, module.as_deref()),
                Err(broadcast::error::RecvError::Lagged(_)) => registry.wake_all(),
                Err(broadcast::error::RecvError::Closed) => break,
            },
            () = stopped(&mut shutdown) => break,
        }
    }
}
