//! `iothub feedback watch` and `iothub file-notifications watch`: records as they arrive,
//! each completed once printed.

use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;

use super::Context;
use crate::cli::WatchCommand;
use crate::error::Result;
use crate::output::object;

/// Waits for the next item, or `None` when `timeout` passes without one.
async fn next_within<S: futures::Stream + Unpin>(
    stream: &mut S,
    timeout: Option<Duration>,
) -> Option<S::Item> {
    match timeout {
        Some(t) => tokio::time::timeout(t, stream.next()).await.ok().flatten(),
        None => stream.next().await,
    }
}

/// Runs `feedback watch`. A batch is printed whole before it is completed, so `--max` may
/// be passed by the rest of the last batch: completing it with records unprinted would lose
/// them, and abandoning it would print the others twice.
pub(crate) async fn feedback(cx: &Context, command: WatchCommand) -> Result<()> {
    let WatchCommand::Watch { max, timeout } = command;
    let registry = cx.registry()?;
    let mut receiver = registry.feedback_receiver();
    let mut seen = 0u64;
    let outcome = async {
        while max.is_none_or(|max| seen < max) {
            let Some(batch) = next_within(&mut receiver, timeout).await else {
                break;
            };
            let batch = batch.map_err(iothub_registry::Error::from)?;
            for r in batch.records() {
                cx.printer.print_item(object([
                    ("originalMessageId", r.original_message_id.clone().into()),
                    ("deviceId", r.device_id.clone().into()),
                    ("deviceGenerationId", r.device_generation_id.clone().into()),
                    ("statusCode", r.status.to_string().into()),
                    ("description", r.description.clone().into()),
                    ("enqueuedTimeUtc", r.enqueued_time_utc.clone().into()),
                ]))?;
                seen += 1;
            }
            batch
                .complete()
                .await
                .map_err(iothub_registry::Error::from)?;
        }
        Ok(())
    }
    .await;
    registry.close().await;
    outcome
}

/// Runs `file-notifications watch`.
pub(crate) async fn file_notifications(cx: &Context, command: WatchCommand) -> Result<()> {
    let WatchCommand::Watch { max, timeout } = command;
    let registry = cx.registry()?;
    let mut receiver = registry.file_notification_receiver();
    let mut seen = 0u64;
    let outcome = async {
        while max.is_none_or(|max| seen < max) {
            let Some(message) = next_within(&mut receiver, timeout).await else {
                break;
            };
            let message = message.map_err(iothub_registry::Error::from)?;
            let n = message.notification();
            cx.printer.print_item(object([
                ("deviceId", n.device_id.clone().into()),
                ("blobUri", n.blob_uri.clone().into()),
                ("blobName", n.blob_name.clone().into()),
                ("lastUpdatedTime", n.last_updated_time.clone().into()),
                ("blobSizeInBytes", Value::from(n.blob_size_in_bytes)),
                ("enqueuedTimeUtc", n.enqueued_time_utc.clone().into()),
            ]))?;
            seen += 1;
            message
                .complete()
                .await
                .map_err(iothub_registry::Error::from)?;
        }
        Ok(())
    }
    .await;
    registry.close().await;
    outcome
}
