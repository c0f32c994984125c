//! The links the hub sends on: delivery feedback (`/messages/servicebound/feedback`, batches
//! of up to 64 records as one JSON array) and file-upload notifications
//! (`/messages/servicebound/filenotifications`, one JSON object each).
//!
//! Like the service, the next message goes out only once the previous one is settled. What
//! the client does not accept (released, modified, rejected, not settled within the feedback
//! lock duration, or the link or connection lost first) goes back to the front of the hub's
//! queue, to be offered again up to the feedback's maximum delivery count.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use fe2o3_amqp::Sender;
use fe2o3_amqp::types::messaging::{Data, Message, MessageAnnotations, Outcome, Properties};
use fe2o3_amqp::types::primitives::{Binary, Timestamp, Value};
use serde_json::Value as Json;
use tokio::sync::Notify;

use super::connection::ConnCtx;
use crate::hub::Shared;
use crate::state::c2d::FeedbackRecord;

const FEEDBACK_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.feedback.json";
const FILE_CONTENT_TYPE: &str = "application/vnd.microsoft.iothub.filenotification.json";

/// Pause before offering again what the client did not accept, so a client that releases
/// everything does not make the hub spin.
const REDELIVERY_PAUSE: Duration = Duration::from_millis(100);

/// Which of the hub's outgoing streams a link carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    Feedback,
    FileNotifications,
}

/// Records taken from the hub's queue; they go back unless the client accepted them.
struct Taken {
    shared: Arc<Shared>,
    records: Option<Records>,
}

enum Records {
    Feedback(Vec<FeedbackRecord>),
    File(Json),
}

impl Taken {
    fn take(shared: &Arc<Shared>, stream: Stream) -> Option<Self> {
        let records = match stream {
            Stream::Feedback => {
                let batch = shared.c2d.take_feedback();
                (!batch.is_empty()).then_some(Records::Feedback(batch))?
            }
            Stream::FileNotifications => Records::File(shared.c2d.take_file_notification()?),
        };
        Some(Self {
            shared: shared.clone(),
            records: Some(records),
        })
    }

    fn body(&self) -> Vec<u8> {
        match &self.records {
            Some(Records::Feedback(batch)) => {
                Json::Array(batch.iter().map(|r| r.record.clone()).collect())
                    .to_string()
                    .into_bytes()
            }
            Some(Records::File(notification)) => notification.to_string().into_bytes(),
            None => Vec::new(),
        }
    }

    fn done(mut self) {
        if let Some(Records::Feedback(batch)) = self.records.take() {
            self.shared.c2d.complete_feedback(&batch);
        }
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        match self.records.take() {
            Some(Records::Feedback(batch)) => self.shared.c2d.return_feedback(batch),
            Some(Records::File(notification)) => {
                self.shared.c2d.return_file_notification(notification);
            }
            None => {}
        }
    }
}

fn ready(shared: &Shared, stream: Stream) -> &Notify {
    match stream {
        Stream::Feedback => &shared.c2d.feedback_ready,
        Stream::FileNotifications => &shared.c2d.files_ready,
    }
}

fn message(shared: &Shared, stream: Stream, body: Vec<u8>) -> Message<Data> {
    let content_type = match stream {
        Stream::Feedback => FEEDBACK_CONTENT_TYPE,
        Stream::FileNotifications => FILE_CONTENT_TYPE,
    };
    let properties = Properties::builder()
        .message_id(crate::rest::errors::tracking_id())
        .content_type(content_type)
        .user_id(Binary::from(shared.hub_name.as_bytes().to_vec()))
        .build();
    let annotations = MessageAnnotations::builder()
        .insert(
            "iothub-enqueuedtime",
            Value::Timestamp(Timestamp::from_milliseconds(Utc::now().timestamp_millis())),
        )
        .build();
    Message::builder()
        .properties(properties)
        .message_annotations(annotations)
        .data(Binary::from(body))
        .build()
}

/// Sends what the hub has for this stream until the link or connection ends; waits for the
/// connection to be authorized before sending anything.
pub(crate) async fn serve(mut sender: Sender, ctx: Arc<ConnCtx>, stream: Stream) {
    let shared = ctx.shared.clone();
    let mut grants = ctx.access.subscribe();
    loop {
        if !ctx.access.allows_now(stream) {
            tokio::select! {
                changed = grants.changed() => if changed.is_err() { break } else { continue },
                _ = sender.on_detach() => break,
            }
        }
        let ready = ready(&shared, stream).notified();
        tokio::pin!(ready);
        ready.as_mut().enable();
        let Some(taken) = Taken::take(&shared, stream) else {
            tokio::select! {
                () = ready => continue,
                _ = sender.on_detach() => break,
            }
        };
        let message = message(&shared, stream, taken.body());
        let lock = shared.c2d.settings().feedback_lock_duration;
        match tokio::time::timeout(lock, sender.send(message)).await {
            Ok(Ok(Outcome::Accepted(_))) => taken.done(),
            Ok(Ok(outcome)) => {
                tracing::debug!(?outcome, ?stream, "not accepted; offered again later");
                drop(taken);
                tokio::time::sleep(REDELIVERY_PAUSE).await;
            }
            Err(_) => {
                tracing::debug!(
                    ?stream,
                    "not settled within the lock duration; offered again"
                );
                drop(taken);
            }
            // The link or connection went away; `taken` goes back.
            Ok(Err(_)) => break,
        }
    }
    let _ = sender.close().await;
}
