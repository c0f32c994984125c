//! `iothub c2d send|purge`.

use iothub_registry::c2d::{Ack, Message};

use super::Context;
use crate::cli::{AckMode, C2dCommand};
use crate::error::Result;
use crate::output::object;

/// Runs `c2d …`.
pub(crate) async fn run(cx: &Context, command: C2dCommand) -> Result<()> {
    match command {
        C2dCommand::Send {
            device_id,
            body,
            module,
            ack,
            message_id,
            correlation_id,
            content_type,
            content_encoding,
            properties,
        } => {
            let mut builder = Message::builder(device_id).body(body);
            if let Some(module) = module {
                builder = builder.module(module);
            }
            if let Some(ack) = ack {
                builder = builder.ack(match ack {
                    AckMode::None => Ack::None,
                    AckMode::Positive => Ack::Positive,
                    AckMode::Negative => Ack::Negative,
                    AckMode::Full => Ack::Full,
                });
            }
            if let Some(id) = message_id {
                builder = builder.message_id(id);
            }
            if let Some(id) = correlation_id {
                builder = builder.correlation_id(id);
            }
            if let Some(t) = content_type {
                builder = builder.content_type(t);
            }
            if let Some(e) = content_encoding {
                builder = builder.content_encoding(e);
            }
            for (k, v) in properties {
                builder = builder.property(k, v);
            }
            // Built (and so checked: ids, size, properties) before connecting.
            let message = builder.build().map_err(iothub_registry::Error::from)?;
            let registry = cx.registry()?;
            let sent = registry.send_c2d(&message).await;
            registry.close().await;
            sent?;
            cx.printer.print(object([
                ("messageId", message.message_id().into()),
                ("deviceId", message.device_id().into()),
            ]))
        }
        C2dCommand::Purge { device_id } => {
            let registry = cx.registry()?;
            cx.printer.print(registry.purge_c2d_queue(device_id).await?)
        }
    }
}
