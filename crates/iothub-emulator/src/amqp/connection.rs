//! One AMQP connection over any byte stream (TCP, TLS or WebSocket): the protocol header
//! decides between SASL and bare AMQP, then sessions are served until the client leaves,
//! its token expires, it has no token by the authentication deadline, it opens more
//! sessions or links than allowed, it stays silent past the idle limit, or the emulator
//! stops.

use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{ConnectionAcceptor, ListenerConnectionHandle, SessionAcceptor};
use fe2o3_amqp::types::definitions::{AmqpError, ConnectionError, Error};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::access::{Access, Grants};
use super::sasl::HubSasl;
use super::wire::{Wire, WireControl};
use super::{Gauge, Slot};
use crate::hub::Shared;

/// How long a client may take to send its protocol header.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SASL and the `open` exchange may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a `close` waits for the client's `close` before the socket is cut.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// What every link of a connection shares.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) access: Arc<Access>,
    pub(crate) wire: Arc<WireControl>,
    /// Links attached now on this connection.
    pub(crate) links: Arc<Gauge>,
    /// Notified when a session saw one link too many: the connection closes.
    pub(crate) too_many_links: tokio::sync::Notify,
}

impl ConnCtx {
    /// Counts a link of this connection for as long as the slot lives; None (and the
    /// connection told to close) when it already has as many as allowed.
    pub(crate) fn link_slot(&self) -> Option<Slot> {
        if self.links.get() >= self.shared.amqp.limits.max_links {
            self.too_many_links.notify_one();
            return None;
        }
        Some(Slot::take(
            &self.shared,
            |e| &e.links,
            Some(self.links.clone()),
        ))
    }
}

/// Serves one connection to its end.
pub(crate) async fn serve<S>(
    mut stream: S,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut header = [0u8; 8];
    match tokio::time::timeout(HEADER_TIMEOUT, stream.read_exact(&mut header)).await {
        Ok(Ok(_)) => {}
        _ => return,
    }
    let sasl = match header {
        SASL_HEADER => true,
        AMQP_HEADER => false,
        _ => {
            // As AMQP asks: answer with the header we do speak, then close.
            tracing::debug!(?header, "AMQP: unsupported protocol header");
            let _ = stream.write_all(&SASL_HEADER).await;
            let _ = stream.shutdown().await;
            return;
        }
    };

    let _connection = Slot::take(&shared, |e| &e.connections, None);
    let opened_at = tokio::time::Instant::now();
    let idle_limit = shared.amqp.idle_timeout;
    let control = Arc::new(WireControl::default());
    let wire = Wire::new(stream, header, idle_limit, control.clone());
    let access = Arc::new(Access::default());
    let mut builder = ConnectionAcceptor::builder()
        .container_id(format!("iothub-emulator-{}", shared.hub_name))
        .hostname(Some(shared.host_name.clone()));
    if !idle_limit.is_zero() {
        // Half the real limit, as AMQP recommends advertising.
        let advertised = (idle_limit / 2).as_millis();
        builder = builder.idle_time_out(u32::try_from(advertised).unwrap_or(u32::MAX));
    }
    let opened = tokio::time::timeout(OPEN_TIMEOUT, async {
        if sasl {
            let hub_sasl = HubSasl::new(shared.clone(), access.clone());
            builder.sasl_acceptor(hub_sasl).build().accept(wire).await
        } else {
            builder.build().accept(wire).await
        }
    })
    .await;
    let mut connection = match opened {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "AMQP open failed");
            control.kill();
            return;
        }
        Err(_) => {
            control.kill();
            return;
        }
    };

    let ctx = Arc::new(ConnCtx {
        shared,
        access,
        wire: control.clone(),
        links: Arc::new(Gauge::default()),
        too_many_links: tokio::sync::Notify::new(),
    });
    run(&mut connection, &ctx, &mut shutdown, opened_at).await;
    // Let fe2o3 finish a close the client started (its `close` answered) before cutting.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.on_close()).await;
    control.kill();
}

async fn run(
    connection: &mut ListenerConnectionHandle,
    ctx: &Arc<ConnCtx>,
    shutdown: &mut watch::Receiver<bool>,
    opened_at: tokio::time::Instant,
) {
    let limits = ctx.shared.amqp.limits;
    let mut sessions = JoinSet::new();
    let mut grants = ctx.access.subscribe();
    let mut stopping = Box::pin(super::stopped(shutdown));
    loop {
        let current = *grants.borrow_and_update();
        let expiry = current.remaining();
        let expired = async {
            match expiry {
                Some(left) => tokio::time::sleep(left).await,
                None => std::future::pending().await,
            }
        };
        // Until it presents a valid token, a connection lives only so long.
        let unauthenticated = async {
            if current == Grants::default() && !limits.auth_timeout.is_zero() {
                tokio::time::sleep_until(opened_at + limits.auth_timeout).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            incoming = connection.next_incoming_session() => {
                let Some(incoming) = incoming else { break };
                if sessions.len() >= limits.max_sessions {
                    let e = Error::new(
                        AmqpError::ResourceLimitExceeded,
                        Some(format!(
                            "A connection may have at most {} sessions open at once",
                            limits.max_sessions
                        )),
                        None,
                    );
                    close(connection, Some(e)).await;
                    break;
                }
                match SessionAcceptor::new().accept_incoming_session(incoming, connection).await {
                    Ok(session) => {
                        let slot = Slot::take(&ctx.shared, |e| &e.sessions, None);
                        let ctx = ctx.clone();
                        sessions.spawn(async move {
                            super::session::serve(session, ctx).await;
                            drop(slot);
                        });
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "AMQP begin failed");
                        break;
                    }
                }
            }
            changed = grants.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = expired => {
                let e = Error::new(
                    AmqpError::UnauthorizedAccess,
                    Some("The token has expired; put a new one on $cbs before it does".to_owned()),
                    None,
                );
                close(connection, Some(e)).await;
                break;
            }
            () = unauthenticated => {
                let e = Error::new(
                    AmqpError::UnauthorizedAccess,
                    Some(format!(
                        "No valid token was presented within {} seconds of opening the \
                         connection: put one on $cbs first",
                        limits.auth_timeout.as_secs()
                    )),
                    None,
                );
                close(connection, Some(e)).await;
                break;
            }
            () = ctx.too_many_links.notified() => {
                let e = Error::new(
                    AmqpError::ResourceLimitExceeded,
                    Some(format!(
                        "A connection may have at most {} links attached at once",
                        limits.max_links
                    )),
                    None,
                );
                close(connection, Some(e)).await;
                break;
            }
            () = ctx.wire.idle.notified() => {
                let limit = ctx.shared.amqp.idle_timeout.as_millis();
                let e = Error::new(
                    ConnectionError::ConnectionForced,
                    Some(format!(
                        "The connection was inactive for more than the allowed {limit} milliseconds and is closed"
                    )),
                    None,
                );
                close(connection, Some(e)).await;
                break;
            }
            () = &mut stopping => {
                close(connection, None).await;
                break;
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

async fn close(connection: &mut ListenerConnectionHandle, error: Option<Error>) {
    let closing = async {
        match error {
            Some(e) => connection.close_with_error(e).await,
            None => connection.close().await,
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}
