//! Delivery feedback: what became of messages sent with an [`Ack`](crate::Ack).

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures::Stream;
use serde::Deserialize;

use crate::client::ServiceClient;
use crate::error::Result;
use crate::inbox::{Disposition, Inbound, Inbox, Settlement};

/// The hub's feedback node.
pub(crate) const FEEDBACK_ADDRESS: &str = "/messages/servicebound/feedback";

/// What happened to a cloud-to-device message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FeedbackStatus {
    /// The device completed the message.
    Success,
    /// The message expired before the device received it.
    Expired,
    /// The message was delivered too many times without being completed.
    DeliveryCountExceeded,
    /// The device rejected the message.
    Rejected,
    /// The device's queue was purged.
    Purged,
    /// A status this crate does not know, as the hub sent it.
    Unknown(String),
}

impl FeedbackStatus {
    fn parse(text: &str) -> Self {
        let known = [
            ("success", Self::Success),
            ("expired", Self::Expired),
            ("deliverycountexceeded", Self::DeliveryCountExceeded),
            ("rejected", Self::Rejected),
            ("purged", Self::Purged),
        ];
        known
            .into_iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map_or_else(|| Self::Unknown(text.to_owned()), |(_, status)| status)
    }

    // The C# SDK's enum numbers, which Newtonsoft also accepts.
    fn from_number(number: i64) -> Self {
        match number {
            0 => Self::Success,
            1 => Self::Expired,
            2 => Self::DeliveryCountExceeded,
            3 => Self::Rejected,
            4 => Self::Purged,
            other => Self::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for FeedbackStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Success => "Success",
            Self::Expired => "Expired",
            Self::DeliveryCountExceeded => "DeliveryCountExceeded",
            Self::Rejected => "Rejected",
            Self::Purged => "Purged",
            Self::Unknown(other) => other,
        })
    }
}

/// One message's feedback.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedbackRecord {
    /// The `message_id` of the cloud-to-device message.
    pub original_message_id: String,
    /// The device it was sent to.
    pub device_id: String,
    /// The generation id of that device (it changes when a device is deleted and re-created).
    pub device_generation_id: String,
    /// What happened.
    pub status: FeedbackStatus,
    /// The hub's description of the status.
    pub description: String,
    /// When the feedback was enqueued, as the hub wrote it (ISO 8601, UTC); see
    /// [`enqueued_time`](Self::enqueued_time).
    pub enqueued_time_utc: String,
}

impl FeedbackRecord {
    /// [`enqueued_time_utc`](Self::enqueued_time_utc) as a time, if it parses.
    pub fn enqueued_time(&self) -> Option<SystemTime> {
        crate::time::parse(&self.enqueued_time_utc)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireRecord {
    #[serde(default)]
    original_message_id: String,
    #[serde(default)]
    device_id: String,
    #[serde(default)]
    device_generation_id: String,
    #[serde(default)]
    status_code: Option<serde_json::Value>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    enqueued_time_utc: String,
}

impl From<WireRecord> for FeedbackRecord {
    fn from(wire: WireRecord) -> Self {
        let status = match &wire.status_code {
            Some(serde_json::Value::String(text)) => FeedbackStatus::parse(text),
            Some(serde_json::Value::Number(number)) => number.as_i64().map_or_else(
                || FeedbackStatus::Unknown(number.to_string()),
                FeedbackStatus::from_number,
            ),
            // Early hubs sent only the description, which then names the status.
            None | Some(serde_json::Value::Null) => FeedbackStatus::parse(&wire.description),
            Some(other) => FeedbackStatus::Unknown(other.to_string()),
        };
        Self {
            original_message_id: wire.original_message_id,
            device_id: wire.device_id,
            device_generation_id: wire.device_generation_id,
            status,
            description: wire.description,
            enqueued_time_utc: wire.enqueued_time_utc,
        }
    }
}

/// The records of one feedback message: a JSON array (a lone object is taken as one record).
pub(crate) fn parse_feedback(body: &[u8]) -> serde_json::Result<Vec<FeedbackRecord>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<WireRecord>),
        One(WireRecord),
    }
    // Parse as an array first so that a malformed array reports its own error.
    let records = match serde_json::from_slice::<Vec<WireRecord>>(body) {
        Ok(records) => records,
        Err(error) => match serde_json::from_slice::<OneOrMany>(body) {
            Ok(OneOrMany::One(record)) => vec![record],
            Ok(OneOrMany::Many(records)) => records,
            Err(_) => return Err(error),
        },
    };
    Ok(records.into_iter().map(FeedbackRecord::from).collect())
}

impl Inbound for Vec<FeedbackRecord> {
    const ADDRESS: &'static str = FEEDBACK_ADDRESS;

    fn parse(body: &[u8]) -> serde_json::Result<Self> {
        parse_feedback(body)
    }
}

/// A stream of [`FeedbackBatch`]es, from [`ServiceClient::feedback_receiver`].
///
/// The receiver link is attached when the stream is first polled. A lost connection shows up
/// as one `Err` item, after which the stream reconnects by itself (pausing between failed
/// attempts, from 250 ms up to 30 s); it ends (`None`) only when the client is closed. Other
/// `Err` items: [`Error::Decode`](crate::Error::Decode) for a message that is not feedback
/// JSON (it is rejected, so it does not come back), and whatever attaching failed with.
///
/// Only one feedback receiver per hub gets each batch; use one per application.
///
/// ```no_run
/// use futures::StreamExt;
/// use iothub_amqp::{FeedbackStatus, ServiceClient};
///
/// # async fn run(client: ServiceClient) -> iothub_amqp::Result<()> {
/// let mut feedback = client.feedback_receiver();
/// while let Some(batch) = feedback.next().await {
///     let batch = batch?;
///     for record in batch.records() {
///         if record.status != FeedbackStatus::Success {
///             eprintln!("{} to {}: {}", record.original_message_id, record.device_id, record.status);
///         }
///     }
///     batch.complete().await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct FeedbackReceiver {
    inbox: Inbox<Vec<FeedbackRecord>>,
}

impl fmt::Debug for FeedbackReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FeedbackReceiver").finish_non_exhaustive()
    }
}

impl FeedbackReceiver {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self {
            inbox: Inbox::new(client),
        }
    }
}

impl Stream for FeedbackReceiver {
    type Item = Result<FeedbackBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inbox.poll_next(cx).map(|item| {
            item.map(|item| {
                item.map(|(records, settlement)| FeedbackBatch {
                    records,
                    settlement,
                })
            })
        })
    }
}

/// One feedback message: a batch of records (the hub batches up to 64 records, or whatever
/// arrived within 15 s).
///
/// Settle it with [`complete`](Self::complete) once the records are handled, or
/// [`abandon`](Self::abandon) to have it delivered again. Dropping it abandons it. The hub
/// sends the next batch only after this one is settled.
#[derive(Debug)]
#[must_use = "complete or abandon the batch; dropping it abandons it"]
pub struct FeedbackBatch {
    records: Vec<FeedbackRecord>,
    settlement: Settlement,
}

impl FeedbackBatch {
    /// The records.
    pub fn records(&self) -> &[FeedbackRecord] {
        &self.records
    }

    /// Removes the batch from the hub's feedback queue.
    ///
    /// Returns once the `accepted` disposition is queued on the connection. Should the
    /// connection drop before the hub reads it, the hub delivers the batch again: feedback is
    /// at-least-once, so handle records idempotently.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`](crate::Error::ConnectionLost) if the connection it came on is
    /// gone (the hub then delivers it again), [`Error::Closed`](crate::Error::Closed) after the
    /// client was closed.
    pub async fn complete(self) -> Result<()> {
        self.settlement.settle(Disposition::Complete).await
    }

    /// Returns the batch to the hub, which delivers it again.
    ///
    /// # Errors
    ///
    /// As for [`complete`](Self::complete).
    pub async fn abandon(self) -> Result<()> {
        self.settlement.settle(Disposition::Abandon).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_batch_parses_with_every_field() {
        let body =
            br#"[{"originalMessageId":"0987654321","enqueuedTimeUtc":"2015-07-28T16:24:48.789Z",
            "statusCode":"Success","description":"Success","deviceId":"123",
            "deviceGenerationId":"abcdefghijklmnopqrstuvwxyz"},
            {"originalMessageId":"m2","statusCode":"DeliveryCountExceeded","description":"too many",
            "deviceId":"d2","deviceGenerationId":"g2","enqueuedTimeUtc":"2015-07-28T16:24:48Z"}]"#;
        let records = parse_feedback(body).unwrap();
        assert_eq!(
            records[0],
            FeedbackRecord {
                original_message_id: "0987654321".into(),
                device_id: "123".into(),
                device_generation_id: "abcdefghijklmnopqrstuvwxyz".into(),
                status: FeedbackStatus::Success,
                description: "Success".into(),
                enqueued_time_utc: "2015-07-28T16:24:48.789Z".into(),
            }
        );
        assert_eq!(
            records[0].enqueued_time(),
            Some(UNIX_EPOCH + Duration::from_millis(1_438_100_688_789))
        );
        assert_eq!(records[1].status, FeedbackStatus::DeliveryCountExceeded);
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn every_status_parses_and_unknown_ones_are_kept() {
        for (text, status) in [
            ("Success", FeedbackStatus::Success),
            ("Expired", FeedbackStatus::Expired),
            (
                "DeliveryCountExceeded",
                FeedbackStatus::DeliveryCountExceeded,
            ),
            ("Rejected", FeedbackStatus::Rejected),
            ("Purged", FeedbackStatus::Purged),
            ("purged", FeedbackStatus::Purged),
            ("Teleported", FeedbackStatus::Unknown("Teleported".into())),
        ] {
            let body = format!(r#"[{{"statusCode":"{text}"}}]"#);
            assert_eq!(parse_feedback(body.as_bytes()).unwrap()[0].status, status);
        }
        assert_eq!(
            FeedbackStatus::Unknown("Teleported".into()).to_string(),
            "Teleported"
        );
        assert_eq!(
            FeedbackStatus::DeliveryCountExceeded.to_string(),
            "DeliveryCountExceeded"
        );
    }

    #[test]
    fn numeric_and_missing_statuses_are_understood() {
        let records = parse_feedback(
            br#"[{"statusCode":1},{"statusCode":9},{"description":"Expired"},{"statusCode":null,"description":"odd"}]"#,
        )
        .unwrap();
        let statuses: Vec<_> = records.into_iter().map(|r| r.status).collect();
        assert_eq!(
            statuses,
            [
                FeedbackStatus::Expired,
                FeedbackStatus::Unknown("9".into()),
                FeedbackStatus::Expired,
                FeedbackStatus::Unknown("odd".into()),
            ]
        );
    }

    #[test]
    fn extra_fields_are_ignored_and_missing_ones_are_empty() {
        let records = parse_feedback(
            br#"[{"originalMessageId":"m","statusCode":"Rejected","lockToken":"x","nested":{"a":[1]}}]"#,
        )
        .unwrap();
        assert_eq!(records[0].original_message_id, "m");
        assert_eq!(records[0].status, FeedbackStatus::Rejected);
        assert_eq!(records[0].device_id, "");
        assert_eq!(records[0].enqueued_time(), None);
    }

    #[test]
    fn a_lone_object_is_one_record_and_garbage_is_an_error() {
        let records =
            parse_feedback(br#"{"originalMessageId":"m","statusCode":"Success"}"#).unwrap();
        assert_eq!(records.len(), 1);
        assert!(parse_feedback(b"[]").unwrap().is_empty());
        for bad in [&b"not json"[..], b"[1, 2]", b"\"text\"", b""] {
            assert!(
                parse_feedback(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
