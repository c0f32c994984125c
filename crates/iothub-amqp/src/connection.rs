//! One AMQP connection to the hub and the tasks that own it.
//!
//! fe2o3's objects need `&mut` access, so each lives in one task:
//!
//! - the **sender task** owns the `/messages/devicebound` link. It takes messages from a
//!   channel and hands each to fe2o3 with `send_batchable`, which returns once the transfer is
//!   queued and gives back a future for the outcome. The caller awaits that future, so many
//!   sends are in flight on the link at once while transfers stay in order;
//! - the **connection task** owns the connection, the session and the `$cbs` links. It renews
//!   the token before it expires, attaches receiver links on request, and notices when the
//!   connection ends (it then exits, which is how [`Live::is_closed`] knows).
//!
//! Under fe2o3 sits [`KeepAlive`], which writes empty frames when the connection is idle.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::DeliveryFut;
use fe2o3_amqp::link::{Receiver, SendError, Sender};
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Data, Message as AmqpMessage, Outcome};
use fe2o3_amqp::{Connection, Session};
use iothub_auth::Credential;
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::cbs::Cbs;
use crate::error::{Error, Result};
use crate::keepalive::KeepAlive;
use crate::link::{c2d_sender, map_send_error, receiver_link};
use crate::proxy::Proxy;
use crate::{tls, ws};

/// The default AMQPS port.
pub const AMQPS_PORT: u16 = 5671;
/// The default HTTPS (WebSocket) port.
pub const HTTPS_PORT: u16 = 443;

// Frames of at most 64 KiB, like uamqp; a 64 KB body plus properties spans two.
const MAX_FRAME_SIZE: u32 = 65_536;
// Renewals give up for a while after a failure, and never wait longer than this in one go.
const RENEWAL_RETRY: Duration = Duration::from_secs(5);
const MAX_RENEWAL_WAIT: Duration = Duration::from_secs(24 * 3600);
const MIN_RENEWAL_WAIT: Duration = Duration::from_millis(100);
// A graceful close never waits longer than this for the hub.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// How to reach the hub.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// AMQP over TLS on port 5671 (the default).
    #[default]
    Amqp,
    /// AMQP over WebSockets over TLS (`wss://{host}:443/$iothub/websocket`), for networks that
    /// block port 5671.
    WebSocket,
}

/// Everything a connection needs, fixed when the client is built.
pub(crate) struct Settings {
    pub(crate) credential: Credential,
    pub(crate) transport: Transport,
    pub(crate) port: Option<u16>,
    pub(crate) proxy: Option<Proxy>,
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    pub(crate) tls: OnceLock<Arc<ClientConfig>>,
    pub(crate) keep_alive: Duration,
    pub(crate) timeout: Duration,
}

impl Settings {
    fn tls_config(&self) -> Result<Arc<ClientConfig>> {
        if let Some(config) = self.tls.get() {
            return Ok(config.clone());
        }
        let config = tls::client_config(&self.extra_roots)?;
        Ok(self.tls.get_or_init(|| config).clone())
    }

    /// The port dialled: the configured one, else 5671 for AMQP, and for WebSockets the host
    /// name's own port (the HTTPS port of an emulator) or 443.
    pub(crate) fn port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Amqp => AMQPS_PORT,
            Transport::WebSocket => self.credential.host().port().unwrap_or(HTTPS_PORT),
        })
    }
}

type DeliveryResult = std::result::Result<Outcome, SendError>;

/// The outcome of a message handed to the connection; await it for the hub's verdict.
pub(crate) type PendingOutcome = DeliveryFut<DeliveryResult>;

struct SendRequest {
    message: AmqpMessage<Data>,
    reply: oneshot::Sender<Result<PendingOutcome>>,
}

enum Command {
    Attach {
        address: &'static str,
        reply: oneshot::Sender<Result<Receiver>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// A handle to an open connection. Dropping the last one closes the connection in the
/// background.
pub(crate) struct Live {
    sends: mpsc::Sender<SendRequest>,
    commands: mpsc::Sender<Command>,
}

impl Live {
    /// Connects, authenticates and attaches the sender. The caller bounds the time taken.
    pub(crate) async fn open(settings: &Arc<Settings>) -> Result<Live> {
        let host = settings.credential.host().host().to_owned();
        let port = settings.port();
        let target = format!("{host}:{port}");
        let tls = settings.tls_config()?;
        let server_name = tls::server_name(&host)?;

        let tcp = match &settings.proxy {
            Some(proxy) => proxy.connect(&target).await?,
            None => {
                let dial = host.trim_start_matches('[').trim_end_matches(']');
                let tcp = TcpStream::connect((dial, port))
                    .await
                    .map_err(|e| Error::connect(&target, "TCP connection failed", e))?;
                let _ = tcp.set_nodelay(true);
                tcp
            }
        };
        let stream = tls::handshake(tls, server_name, tcp)
            .await
            .map_err(|e| Error::connect(&target, "TLS handshake failed", e))?;
        tracing::debug!(%target, transport = ?settings.transport, "TLS established");

        let mut connection = match settings.transport {
            Transport::Amqp => open_amqp(&host, KeepAlive::new(stream, settings.keep_alive)).await,
            Transport::WebSocket => {
                let stream = ws::handshake(stream, &target)
                    .await
                    .map_err(|e| Error::connect(&target, "WebSocket handshake failed", e))?;
                open_amqp(&host, KeepAlive::new(stream, settings.keep_alive)).await
            }
        }?;

        // From here on, dropping `connection` on an error closes it.
        let mut session = Session::begin(&mut connection)
            .await
            .map_err(|e| Error::protocol(format!("the hub refused the AMQP session: {e}")))?;
        let mut cbs = Cbs::attach(&mut session).await?;
        let token = settings.credential.cbs_token().await?;
        cbs.put_token(&token).await?;
        let sender = c2d_sender(&mut session).await?;
        tracing::debug!(%target, "AMQP connection ready");

        let (sends, send_requests) = mpsc::channel(64);
        let (commands, command_rx) = mpsc::channel(8);
        let sender_task = tokio::spawn(run_sender(sender, send_requests));
        let task = ConnectionTask {
            settings: settings.clone(),
            connection,
            session,
            cbs,
            expires_at: token.expires_at,
            sender_task,
        };
        tokio::spawn(task.run(command_rx));
        Ok(Live { sends, commands })
    }

    /// Whether the connection has ended (the next operation must open another).
    pub(crate) fn is_closed(&self) -> bool {
        self.commands.is_closed() || self.sends.is_closed()
    }

    /// Hands a message to the sender link. `on_queued` runs once the request is in the
    /// sender task's queue, from which point it may reach the hub.
    pub(crate) async fn submit(
        &self,
        message: AmqpMessage<Data>,
        on_queued: impl FnOnce(),
    ) -> Result<PendingOutcome> {
        let (reply, outcome) = oneshot::channel();
        self.sends
            .send(SendRequest { message, reply })
            .await
            .map_err(|_| Error::lost(false, "the connection has ended"))?;
        on_queued();
        outcome
            .await
            .map_err(|_| Error::lost(true, "the connection ended while sending"))?
    }

    /// Attaches a receiver link from `address`.
    pub(crate) async fn attach(&self, address: &'static str) -> Result<Receiver> {
        let (reply, receiver) = oneshot::channel();
        self.commands
            .send(Command::Attach { address, reply })
            .await
            .map_err(|_| Error::lost(false, "the connection has ended"))?;
        receiver
            .await
            .map_err(|_| Error::lost(false, "the connection ended while attaching"))?
    }

    /// Closes the connection and waits (briefly) for the hub to confirm.
    pub(crate) async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.commands.send(Command::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn open_amqp<S>(host: &str, stream: KeepAlive<S>) -> Result<ConnectionHandle<()>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let container_id = uuid::Uuid::new_v4().to_string();
    Connection::builder()
        .container_id(container_id)
        .hostname(host)
        .sasl_profile(SaslProfile::Anonymous)
        .max_frame_size(MAX_FRAME_SIZE)
        .scheme("amqp")
        .open_with_stream(stream)
        .await
        .map_err(|e| Error::protocol(format!("the AMQP connection was refused: {e}")))
}

/// Feeds messages to the sender link, in order.
async fn run_sender(mut sender: Sender, mut requests: mpsc::Receiver<SendRequest>) {
    while let Some(SendRequest { message, reply }) = requests.recv().await {
        // The caller gave up (timeout, cancellation) before its turn: do not send late.
        if reply.is_closed() {
            continue;
        }
        match sender.send_batchable(message).await {
            Ok(outcome) => {
                let _ = reply.send(Ok(outcome));
            }
            Err(error) => {
                // Nothing was transferred, but the link is unusable from now on.
                tracing::debug!(%error, "the cloud-to-device link failed");
                let _ = reply.send(Err(map_send_error(error, false)));
                break;
            }
        }
    }
    let _ = timeout(CLOSE_GRACE, sender.close()).await;
}

struct ConnectionTask {
    settings: Arc<Settings>,
    connection: ConnectionHandle<()>,
    session: SessionHandle<()>,
    cbs: Cbs,
    expires_at: SystemTime,
    sender_task: JoinHandle<()>,
}

impl ConnectionTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut renew_at = Instant::now() + renewal_delay(SystemTime::now(), self.expires_at, true);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Attach { address, reply }) => {
                        let attached = timeout(
                            self.settings.timeout,
                            receiver_link(&mut self.session, "receiver", address, None, 1),
                        )
                        .await
                        .unwrap_or_else(|_| {
                            Err(Error::Timeout { after: self.settings.timeout, sent: false })
                        });
                        let _ = reply.send(attached);
                    }
                    Some(Command::Close { reply }) => {
                        self.close().await;
                        let _ = reply.send(());
                        return;
                    }
                    None => {
                        // Every handle is gone: the client was dropped or replaced this one.
                        self.close().await;
                        return;
                    }
                },
                () = tokio::time::sleep_until(renew_at) => {
                    renew_at = Instant::now() + self.renew().await;
                }
                result = self.connection.on_close() => {
                    match result {
                        Ok(()) => tracing::info!("the IoT Hub closed the AMQP connection"),
                        Err(error) => tracing::info!(%error, "the AMQP connection ended"),
                    }
                    self.sender_task.abort();
                    return;
                }
                _ = &mut self.sender_task => {
                    // The sender link failed: drop the whole connection so the next send
                    // starts afresh.
                    self.close().await;
                    return;
                }
            }
        }
    }

    /// Puts a fresh token; returns how long to wait before the next renewal.
    async fn renew(&mut self) -> Duration {
        let renewal = timeout(self.settings.timeout, async {
            let token = self.settings.credential.cbs_token().await?;
            if token.expires_at <= self.expires_at {
                // The credential still hands out the token already put; ask again later.
                return Ok::<_, Error>(None);
            }
            self.cbs.put_token(&token).await?;
            Ok(Some(token.expires_at))
        })
        .await;
        let now = SystemTime::now();
        match renewal {
            Ok(Ok(Some(expires_at))) => {
                tracing::debug!("renewed the CBS token");
                self.expires_at = expires_at;
                renewal_delay(now, expires_at, true)
            }
            Ok(Ok(None)) => renewal_delay(now, self.expires_at, false),
            Ok(Err(error)) => {
                tracing::warn!(%error, "could not renew the CBS token");
                RENEWAL_RETRY.min(renewal_delay(now, self.expires_at, false))
            }
            Err(_) => {
                tracing::warn!("renewing the CBS token timed out");
                RENEWAL_RETRY
            }
        }
    }

    async fn close(mut self) {
        self.sender_task.abort();
        let _ = timeout(CLOSE_GRACE, async {
            self.cbs.close().await;
            let _ = self.session.end().await;
            let _ = self.connection.close().await;
        })
        .await;
    }
}

/// How long to wait before renewing a token that expires at `expires_at`.
///
/// A token just obtained (`fresh`) is renewed once 90 % of its remaining life has passed,
/// which is when the credential's cache (renewing with a tenth of the lifetime left) hands out a
/// new one. When the credential returned the same token again, the wait halves the time left,
/// so that renewal happens close before expiry whatever the credential's margin. Never less than
/// 100 ms, never more than a day.
fn renewal_delay(now: SystemTime, expires_at: SystemTime, fresh: bool) -> Duration {
    let remaining = expires_at.duration_since(now).unwrap_or_default();
    let wait = if fresh {
        remaining.mul_f64(0.9)
    } else {
        remaining / 2
    };
    wait.clamp(MIN_RENEWAL_WAIT, MAX_RENEWAL_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn renewals_happen_before_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        assert_eq!(
            renewal_delay(now, now + hour, true),
            Duration::from_secs(3240)
        );
        assert_eq!(
            renewal_delay(now, now + hour, false),
            Duration::from_secs(1800)
        );
        assert_eq!(
            renewal_delay(now, now + Duration::from_secs(10), true),
            Duration::from_secs(9)
        );
        // Expired or about to: try again soon, but not in a busy loop.
        assert_eq!(renewal_delay(now, now, true), MIN_RENEWAL_WAIT);
        assert_eq!(renewal_delay(now, now - hour, false), MIN_RENEWAL_WAIT);
        // A fixed SAS token valid for years is looked at again daily.
        assert_eq!(
            renewal_delay(now, now + hour * 24 * 365 * 10, true),
            MAX_RENEWAL_WAIT
        );
    }
}
