//! The link the service sends cloud-to-device messages on (`/messages/devicebound`): each
//! message is accepted into its device's queue or rejected with the condition the SDKs map.

use std::sync::Arc;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::link::RecvError;
use fe2o3_amqp::types::definitions::{AmqpError, Error, ErrorCondition, Fields, LinkError};
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::{Symbol, Value};

use super::access::Right;
use super::address::{Recipient, candidates};
use super::connection::ConnCtx;
use super::convert::c2d_message;
use crate::faults::OpClass;
use crate::state::c2d::{MAX_MESSAGE_BYTES, MAX_QUEUE_DEPTH, Refusal};

const THROTTLED: &str = "com.microsoft:device-container-throttled";

/// Receives until the link or connection ends.
pub(crate) async fn serve(mut receiver: Receiver, ctx: Arc<ConnCtx>) {
    loop {
        let delivery = match receiver.recv::<Body<Value>>().await {
            Ok(delivery) => delivery,
            Err(RecvError::MessageDecode(e)) => {
                let error = error(AmqpError::DecodeError, "The message could not be decoded");
                let _ = receiver.reject(e.info, error).await;
                continue;
            }
            Err(_) => break,
        };
        let settled = match accept(&ctx, delivery.message()).await {
            Ok(()) => receiver.accept(&delivery).await,
            Err(Verdict::Reject(e)) => receiver.reject(&delivery, e).await,
            Err(Verdict::DropConnection) => {
                ctx.wire.kill();
                break;
            }
        };
        if settled.is_err() {
            break;
        }
    }
    let _ = receiver.close().await;
}

enum Verdict {
    Reject(Error),
    /// Fault injection: the connection goes away without an answer.
    DropConnection,
}

impl From<Error> for Verdict {
    fn from(e: Error) -> Self {
        Self::Reject(e)
    }
}

/// Decides one message, enqueuing it when it is acceptable.
async fn accept(ctx: &ConnCtx, message: &Message<Body<Value>>) -> Result<(), Verdict> {
    if !ctx.access.allows_now(Right::SendC2d) {
        return Err(error(
            AmqpError::UnauthorizedAccess,
            "The connection has no valid token that allows sending cloud-to-device messages: \
             put one on $cbs first",
        )
        .into());
    }
    let to = message
        .properties
        .as_ref()
        .and_then(|p| p.to.as_deref())
        .unwrap_or_default();
    let Some(recipient) = Recipient::parse(to) else {
        return Err(error(
            AmqpError::NotFound,
            format!("The 'to' address '{to}' is not /devices/{{id}}/messages/devicebound"),
        )
        .into());
    };
    let (device, module, generation) = find(ctx, &recipient)?;

    let shared = &ctx.shared;
    let decision = shared.faults.decide(OpClass::Other, 1);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    if decision.drop_before {
        return Err(Verdict::DropConnection);
    }
    if decision.throttle.is_some() {
        let condition = ErrorCondition::Custom(Symbol::from(THROTTLED));
        return Err(error(condition, "Injected: the device container is throttled").into());
    }
    if decision.server_error.is_some() {
        return Err(error(AmqpError::InternalError, "Injected: internal error").into());
    }

    let message = c2d_message(device, module, message);
    let queued = shared.c2d.enqueue(message, generation);
    if decision.drop_after {
        return Err(Verdict::DropConnection);
    }
    match queued {
        Ok(_) => Ok(()),
        Err(Refusal::QueueFull(what)) => Err(error(
            AmqpError::ResourceLimitExceeded,
            format!("Device {what} already has {MAX_QUEUE_DEPTH} messages waiting"),
        )
        .into()),
        Err(Refusal::TooLarge(size)) => Err(error(
            LinkError::MessageSizeExceeded,
            format!("The message body is {size} bytes; at most {MAX_MESSAGE_BYTES} are allowed"),
        )
        .into()),
        Err(Refusal::HubFull(budget)) => Err(error(
            AmqpError::ResourceLimitExceeded,
            format!(
                "The hub's cloud-to-device queues are full: they hold at most {budget} bytes \
                 of messages in all (c2d_max_total_bytes)"
            ),
        )
        .into()),
        Err(Refusal::NotStored) => Err(error(
            AmqpError::InternalError,
            "The message could not be stored; try again",
        )
        .into()),
    }
}

/// The device (and module) ids as registered, and the device's generation id.
fn find(ctx: &ConnCtx, recipient: &Recipient) -> Result<(String, Option<String>, String), Error> {
    let devices = ctx.shared.store.read();
    let found = candidates(&recipient.device)
        .into_iter()
        .find_map(|id| devices.get(&id).map(|entry| (id, entry)));
    let Some((device_id, entry)) = found else {
        return Err(error(
            AmqpError::NotFound,
            format!("Device not found: {}", recipient.device),
        ));
    };
    let generation = entry.device.generation_id.clone().unwrap_or_default();
    let module_id = match &recipient.module {
        None => None,
        Some(raw) => {
            let Some(id) = candidates(raw)
                .into_iter()
                .find(|id| entry.modules.contains_key(id))
            else {
                return Err(error(
                    AmqpError::NotFound,
                    format!("Module not found: {device_id}/{raw}"),
                ));
            };
            Some(id)
        }
    };
    Ok((device_id, module_id, generation))
}

/// A rejection error, with a tracking id in its info as the hub adds.
pub(crate) fn error(condition: impl Into<ErrorCondition>, description: impl Into<String>) -> Error {
    let mut info = Fields::new();
    info.insert(
        Symbol::from("com.microsoft:tracking-id"),
        Value::String(crate::rest::errors::tracking_id()),
    );
    Error::new(condition, Some(description.into()), Some(info))
}
