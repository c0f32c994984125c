//! The `$cbs` node: put-token requests arrive on a link the client sends to `$cbs`, and the
//! reply goes out on a link the client receives from `$cbs`.
//!
//! As IoT Hub: `status-code` is an AMQP int, 200 for an accepted token (401 otherwise), with
//! `status-description`, and the reply's `correlation-id` is the request's `message-id`
//! whatever its type. Replies are routed by `reply-to` and otherwise to any reply link of
//! the session, waiting a little for one: Node's reply link has no target, uamqp sends no
//! `reply-to` and pipelines its request before the reply link is attached.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fe2o3_amqp::types::messaging::{ApplicationProperties, Body, Message, Properties};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};
use fe2o3_amqp::{Receiver, Sendable, Sender};
use tokio::sync::{Notify, mpsc};

use super::access::{check, sas_field};
use super::address::normalize;
use super::connection::ConnCtx;
use super::convert::text;

/// How long a reply waits for a reply link to be attached.
const REPLY_LINK_WAIT: Duration = Duration::from_secs(2);

type Reply = Message<Body<Value>>;

/// The session's reply links, by the client's address for them.
#[derive(Debug, Default)]
pub(crate) struct ReplyLinks {
    links: Mutex<Vec<ReplyLink>>,
    changed: Notify,
}

#[derive(Debug)]
struct ReplyLink {
    id: u64,
    address: String,
    tx: mpsc::Sender<Reply>,
}

impl ReplyLinks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<ReplyLink>> {
        self.links.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, address: String, tx: mpsc::Sender<Reply>) -> u64 {
        let mut links = self.lock();
        let id = links.iter().map(|l| l.id + 1).max().unwrap_or(0);
        links.push(ReplyLink { id, address, tx });
        drop(links);
        self.changed.notify_waiters();
        id
    }

    fn remove(&self, id: u64) {
        self.lock().retain(|l| l.id != id);
    }

    /// The link named by `reply_to`, else any (skipping links whose task has ended).
    fn pick(&self, reply_to: &str) -> Option<mpsc::Sender<Reply>> {
        let mut links = self.lock();
        links.retain(|l| !l.tx.is_closed());
        links
            .iter()
            .find(|l| l.address == reply_to)
            .or_else(|| links.first())
            .map(|l| l.tx.clone())
    }

    /// Hands a reply to a reply link, waiting briefly for one to appear.
    async fn deliver(&self, reply_to: &str, mut reply: Reply) -> bool {
        let deadline = tokio::time::Instant::now() + REPLY_LINK_WAIT;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(tx) = self.pick(reply_to) {
                match tx.send(reply).await {
                    Ok(()) => return true,
                    // That link just ended; try another.
                    Err(mpsc::error::SendError(back)) => {
                        reply = back;
                        continue;
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }
}

/// Serves put-token requests on a link the client attached with target `$cbs`.
pub(crate) async fn serve_requests(
    mut receiver: Receiver,
    ctx: Arc<ConnCtx>,
    replies: Arc<ReplyLinks>,
) {
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(fe2o3_amqp::link::RecvError::MessageDecode(e)) => {
                let _ = receiver.reject(e.info, None).await;
                continue;
            }
            Err(_) => break,
        };
        if receiver.accept(&delivery).await.is_err() {
            break;
        }
        let request = delivery.message();
        let reply_to = request
            .properties
            .as_ref()
            .and_then(|p| p.reply_to.as_deref())
            .map(normalize)
            .unwrap_or_default();
        let (status, description) = answer(&ctx, request);
        tracing::debug!(status, %description, "AMQP put-token");
        let reply = reply(request, status, description);
        if !replies.deliver(&reply_to, reply).await {
            tracing::debug!(reply_to, "no $cbs reply link to answer on");
        }
    }
    let _ = receiver.close().await;
}

/// Checks a put-token request and grants the connection what its token allows (an Entra
/// token: what its principal's roles allow; 401 when they allow nothing AMQP carries).
fn answer(ctx: &ConnCtx, request: &Message<Body<Value>>) -> (i32, String) {
    let property = |name: &str| {
        request
            .application_properties
            .as_ref()
            .and_then(|p| p.0.get(name))
            .and_then(text)
    };
    if property("operation") != Some("put-token") {
        return (400, "The operation must be put-token".to_owned());
    }
    let token = match &request.body {
        Body::Value(v) => match &v.0 {
            Value::String(s) => Some(s.as_str()),
            Value::Binary(b) => std::str::from_utf8(b).ok(),
            _ => None,
        },
        _ => None,
    };
    let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
        return (
            400,
            "The token must be the message body, as a string".to_owned(),
        );
    };
    let kind = property("type").unwrap_or_default();
    // `jwt` is the Service Bus CBS name of the same token type.
    let bearer = kind.eq_ignore_ascii_case("bearer") || kind.eq_ignore_ascii_case("jwt");
    let token = if bearer
        && !token
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
    {
        // The scheme is part of the value for IoT Hub; tolerate a bare JWT.
        format!("Bearer {token}")
    } else {
        token.to_owned()
    };
    match check(&ctx.shared, &token) {
        Ok(grant) => {
            ctx.access.extend(grant);
            (200, "OK".to_owned())
        }
        Err(e) if is_device_token(&token) => (
            401,
            format!(
                "{e}: it is a device (or module) token, and device-facing AMQP (telemetry, \
                 cloud-to-device receive, methods, twin) is not emulated by iothub-emulator; \
                 the service side takes a shared access policy's token"
            ),
        ),
        Err(e) => (401, e.to_string()),
    }
}

/// A SAS token without `skn`: signed with a device's (or module's) own key, as device SDKs
/// put it on `$cbs`.
fn is_device_token(token: &str) -> bool {
    token.trim().starts_with("SharedAccessSignature ") && sas_field(token, "skn").is_none()
}

fn reply(request: &Message<Body<Value>>, status: i32, description: String) -> Reply {
    let properties = request.properties.as_ref();
    let mut reply_properties = Properties::builder();
    if let Some(id) = properties.and_then(|p| p.message_id.clone()) {
        reply_properties = reply_properties.correlation_id(id);
    }
    if let Some(to) = properties.and_then(|p| p.reply_to.clone()) {
        reply_properties = reply_properties.to(to);
    }
    Message::builder()
        .properties(reply_properties.build())
        .application_properties(
            ApplicationProperties::builder()
                .insert("status-code", SimpleValue::Int(status))
                .insert("status-description", SimpleValue::String(description))
                .build(),
        )
        .body(Body::Empty)
        .build()
}

/// Sends replies on a link the client attached with source `$cbs`.
pub(crate) async fn serve_replies(mut sender: Sender, address: String, replies: Arc<ReplyLinks>) {
    let (tx, mut rx) = mpsc::channel(16);
    let id = replies.add(address, tx);
    loop {
        tokio::select! {
            reply = rx.recv() => {
                let Some(reply) = reply else { break };
                // Pre-settled where the client allows it; either way nobody waits for the
                // client's disposition.
                let sendable = Sendable::builder().message(reply).settled(true).build();
                match sender.send_batchable(sendable).await {
                    Ok(outcome) => drop(outcome),
                    Err(_) => break,
                }
            }
            _ = sender.on_detach() => break,
        }
    }
    replies.remove(id);
    drop(rx);
    let _ = sender.close().await;
}
