//! Delivery feedback over HTTP (`/messages/serviceBound/feedback`), through
//! [`HttpRuntimeManager`]: the same feedback records the AMQP receiver
//! ([`RegistryManager::feedback_receiver`](crate::RegistryManager::feedback_receiver)) gets,
//! pulled one locked batch at a time.

use std::fmt;

use futures::StreamExt;
use iothub_rest_gen::IotDateTime;
use reqwest::StatusCode;
use reqwest::header::{ETAG, HeaderMap};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::manager::{Call, RegistryManager};
use crate::retry::OperationKind;

/// The Rust counterpart of Python's `IoTHubHttpRuntimeManager`: delivery feedback for
/// cloud-to-device messages over HTTP, with the methods of the same names. Get one from
/// [`RegistryManager::http_runtime`].
///
/// A handle on its registry manager, like [`ConfigurationManager`](crate::ConfigurationManager):
/// the same credential, connection pool and retry policy.
///
/// Feedback is one queue per hub: [`receive_feedback_notification`](Self::receive_feedback_notification)
/// locks the next batch of records for this caller, and
/// [`complete_feedback_notification`](Self::complete_feedback_notification) removes it, or
/// [`abandon_feedback_notification`](Self::abandon_feedback_notification) puts it back for the
/// next receive. A batch neither completed nor abandoned returns to the queue when its lock
/// expires. The AMQP receiver reads the same queue; use one or the other.
///
/// ```no_run
/// use iothub_registry::feedback::FeedbackStatus;
///
/// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
/// let runtime = registry.http_runtime();
/// while let Some(batch) = runtime.receive_feedback_notification().await? {
///     for record in &batch.records {
///         if record.status != FeedbackStatus::Success {
///             eprintln!("{} to {}: {}", record.original_message_id, record.device_id, record.status);
///         }
///     }
///     runtime.complete_feedback_notification(&batch.lock_token).await?;
/// }
/// # Ok(()) }
/// ```
#[doc(alias = "IoTHubHttpRuntimeManager")]
#[derive(Clone, Debug)]
pub struct HttpRuntimeManager {
    registry: RegistryManager,
}

impl RegistryManager {
    /// Delivery feedback over HTTP (Python's `IoTHubHttpRuntimeManager`), over this manager's
    /// connection, credential and retry policy. Cheap; see [`HttpRuntimeManager`].
    pub fn http_runtime(&self) -> HttpRuntimeManager {
        HttpRuntimeManager {
            registry: self.clone(),
        }
    }
}

impl HttpRuntimeManager {
    /// Locks and returns the next batch of feedback records, or `None` when there is none
    /// (the hub answered 204). Complete or abandon the batch with its
    /// [`lock_token`](FeedbackNotification::lock_token).
    ///
    /// Retried after a failure that leaves its outcome unknown
    /// ([`OperationKind::Receive`]): if the lost answer had locked a batch, the repeat gets the
    /// next one, and the first comes back when its lock expires; nothing is lost.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let runtime = registry.http_runtime();
    /// if let Some(batch) = runtime.receive_feedback_notification().await? {
    ///     println!("{} records under lock {}", batch.records.len(), batch.lock_token);
    ///     runtime.complete_feedback_notification(&batch.lock_token).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] for a body that is not feedback records, [`Error::Protocol`] for a
    /// batch without its lock token (`ETag`), and the usual service and transport errors.
    pub async fn receive_feedback_notification(&self) -> Result<Option<FeedbackNotification>> {
        let call = Call::new("receive_feedback_notification", OperationKind::Receive);
        let received = self
            .registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .cloud_to_device_messages_receive_feedback_notification();
                async move {
                    let response = request.send().await?;
                    if response.status() == StatusCode::NO_CONTENT {
                        return Ok(None);
                    }
                    let headers = response.headers().clone();
                    // The body is read inside the attempt: under its timeout and the size cap.
                    let mut stream = response.into_inner_stream();
                    let mut body = Vec::new();
                    while let Some(chunk) = stream.next().await {
                        let chunk =
                            chunk.map_err(iothub_rest_gen::Error::<()>::ResponseBodyError)?;
                        body.extend_from_slice(&chunk);
                    }
                    Ok(Some((headers, body)))
                }
            })
            .await?;
        received
            .map(|(headers, body)| notification(&headers, &body))
            .transpose()
    }

    /// Completes a batch: the hub removes its records from the queue.
    ///
    /// Retried after a failure that leaves its outcome unknown ([`OperationKind::Delete`]): a
    /// repeat of a completion that was applied finds the lock token spent and fails, rather
    /// than doing anything twice; that failure is reported as
    /// [`Error::MaybeApplied`]. A batch that was not completed comes back when its lock
    /// expires.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let runtime = registry.http_runtime();
    /// if let Some(batch) = runtime.receive_feedback_notification().await? {
    ///     runtime.complete_feedback_notification(&batch.lock_token).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// From the hub, for a lock token it does not know (completed already, or expired): 404 or
    /// 412, as it answers.
    pub async fn complete_feedback_notification(&self, lock_token: &LockToken) -> Result<()> {
        let call = Call::new("complete_feedback_notification", OperationKind::Delete);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .cloud_to_device_messages_complete_feedback_notification()
                    .lock_token(lock_token.as_str());
                async move { request.send().await.map(|_| ()) }
            })
            .await
    }

    /// Abandons a batch: the hub unlocks it, and a later receive gets it again.
    ///
    /// Conditional on the lock token as a write is on an etag, it is retried after a failure
    /// that leaves its outcome unknown ([`OperationKind::ConditionalWrite`]): a repeat of an
    /// abandon that was applied finds the token spent and fails instead of applying twice.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let runtime = registry.http_runtime();
    /// if let Some(batch) = runtime.receive_feedback_notification().await? {
    ///     // Not now: give it back to the queue.
    ///     runtime.abandon_feedback_notification(&batch.lock_token).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`complete_feedback_notification`](Self::complete_feedback_notification).
    pub async fn abandon_feedback_notification(&self, lock_token: &LockToken) -> Result<()> {
        let call = Call::new(
            "abandon_feedback_notification",
            OperationKind::ConditionalWrite,
        );
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .cloud_to_device_messages_abandon_feedback_notification()
                    .lock_token(lock_token.as_str());
                async move { request.send().await.map(|_| ()) }
            })
            .await
    }
}

/// A 200 answer as a batch: the records of the body, the lock token of the `ETag` header.
fn notification(headers: &HeaderMap, body: &[u8]) -> Result<FeedbackNotification> {
    let lock_token = headers
        .get(ETAG)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| LockToken::new(value).ok())
        .ok_or_else(|| Error::Protocol {
            status: 200,
            reason: "a feedback batch came without its lock token (the `ETag` header)".into(),
        })?;
    let records = parse_records(body)
        .map_err(|source| Error::decode(200, &String::from_utf8_lossy(body), source))?;
    Ok(FeedbackNotification {
        records,
        lock_token,
    })
}

/// One batch of feedback records, locked for the caller of
/// [`receive_feedback_notification`](HttpRuntimeManager::receive_feedback_notification).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedbackNotification {
    /// What became of each message, one record per message.
    pub records: Vec<FeedbackRecord>,
    /// What completes or abandons this batch.
    pub lock_token: LockToken,
}

/// The lock token of a feedback batch: what
/// [`complete_feedback_notification`](HttpRuntimeManager::complete_feedback_notification) and
/// [`abandon_feedback_notification`](HttpRuntimeManager::abandon_feedback_notification) take.
/// The hub sends it in the `ETag` header of the batch, quoted; it is kept without the quotes.
/// Not a secret (it only settles the batch it came with), so it shows in `Debug` and
/// `Display`.
///
/// ```
/// use iothub_registry::feedback::LockToken;
///
/// let token = LockToken::new("\"5f8a2c\"")?;
/// assert_eq!(token.as_str(), "5f8a2c");
/// assert_eq!(format!("{token:?}"), "LockToken(5f8a2c)");
/// # Ok::<(), iothub_registry::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockToken(String);

impl LockToken {
    /// A lock token as the hub sent it, quoted or not (to resume settling a batch received
    /// earlier).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `lock_token`) when it is empty or holds a control
    /// character or a double quote other than one pair around the whole token.
    pub fn new(token: impl Into<String>) -> Result<Self> {
        let mut token = token.into();
        if token.len() >= 2 && token.starts_with('"') && token.ends_with('"') {
            token.pop();
            token.remove(0);
        }
        let invalid = |reason: &str| Error::InvalidArgument {
            argument: "lock_token",
            reason: reason.to_owned(),
        };
        if token.trim().is_empty() {
            return Err(invalid("must not be empty"));
        }
        if token.chars().any(|c| c == '"' || c.is_control()) {
            return Err(invalid(
                "must not hold control characters or double quotes (other than one pair around it)",
            ));
        }
        Ok(Self(token))
    }

    /// The token, without quotes.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `LockToken(<token>)`.
impl fmt::Debug for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockToken({})", self.0)
    }
}

/// The token, without quotes.
impl fmt::Display for LockToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What happened to a cloud-to-device message.
///
/// The same statuses as the AMQP receiver's `c2d::FeedbackStatus` (which converts into this
/// type): the HTTP path does not need the `amqp` feature, so it has its own copy.
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

    /// The C# SDK's enum numbers, which the service's serializer also accepts.
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

/// One message's feedback, as the hub writes it (`originalMessageId`, `deviceId`,
/// `deviceGenerationId`, `statusCode`, `description`, `enqueuedTimeUtc`).
///
/// Field for field the AMQP receiver's `c2d::FeedbackRecord`, which converts into it.
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
    pub fn enqueued_time(&self) -> Option<IotDateTime> {
        self.enqueued_time_utc.parse().ok()
    }
}

#[cfg(feature = "amqp")]
impl From<iothub_amqp::FeedbackStatus> for FeedbackStatus {
    fn from(status: iothub_amqp::FeedbackStatus) -> Self {
        use iothub_amqp::FeedbackStatus as Amqp;
        match status {
            Amqp::Success => Self::Success,
            Amqp::Expired => Self::Expired,
            Amqp::DeliveryCountExceeded => Self::DeliveryCountExceeded,
            Amqp::Rejected => Self::Rejected,
            Amqp::Purged => Self::Purged,
            Amqp::Unknown(text) => Self::Unknown(text),
            other => Self::parse(&other.to_string()),
        }
    }
}

/// A record from the AMQP receiver, so both paths can be handled as one type.
#[cfg(feature = "amqp")]
impl From<iothub_amqp::FeedbackRecord> for FeedbackRecord {
    fn from(record: iothub_amqp::FeedbackRecord) -> Self {
        Self {
            original_message_id: record.original_message_id,
            device_id: record.device_id,
            device_generation_id: record.device_generation_id,
            status: record.status.into(),
            description: record.description,
            enqueued_time_utc: record.enqueued_time_utc,
        }
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

/// The records of one batch: a JSON array (a lone object is taken as one record, as the AMQP
/// receiver takes it).
fn parse_records(body: &[u8]) -> serde_json::Result<Vec<FeedbackRecord>> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<WireRecord>),
        One(WireRecord),
    }
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

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;
    use serde_json::json;

    use super::*;

    fn headers(etag: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(etag) = etag {
            headers.insert(ETAG, HeaderValue::from_str(etag).unwrap());
        }
        headers
    }

    #[test]
    fn a_batch_has_its_records_and_the_unquoted_lock_token() {
        let body = json!([
            { "originalMessageId": "m1", "deviceId": "d1", "deviceGenerationId": "638", "statusCode": "Success",
              "description": "Success", "enqueuedTimeUtc": "2026-12-07T23:00:00.1234567Z" },
            { "originalMessageId": "m2", "deviceId": "d1", "statusCode": 3, "description": "Message rejected" },
            { "originalMessageId": "m3", "description": "Expired" },
            { "originalMessageId": "m4", "statusCode": "Teleported" },
        ]);
        let batch =
            notification(&headers(Some("\"lock-1\"")), body.to_string().as_bytes()).unwrap();
        assert_eq!(batch.lock_token.as_str(), "lock-1");
        let statuses: Vec<_> = batch.records.iter().map(|r| r.status.clone()).collect();
        assert_eq!(
            statuses,
            [
                FeedbackStatus::Success,
                FeedbackStatus::Rejected,
                FeedbackStatus::Expired,
                FeedbackStatus::Unknown("Teleported".into())
            ]
        );
        assert_eq!(batch.records[0].device_generation_id, "638");
        assert!(batch.records[0].enqueued_time().is_some());
        assert!(batch.records[1].enqueued_time().is_none());
        // A lone object is one record.
        let one = notification(&headers(Some("t")), br#"{"originalMessageId":"m"}"#).unwrap();
        assert_eq!(one.records.len(), 1);
    }

    #[test]
    fn a_batch_without_a_lock_token_or_records_is_an_error() {
        let error = notification(&headers(None), b"[]").unwrap_err();
        assert!(
            matches!(error, Error::Protocol { status: 200, .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("lock token"), "{error}");
        let error = notification(&headers(Some("\"\"")), b"[]").unwrap_err();
        assert!(matches!(error, Error::Protocol { .. }), "{error:?}");
        let error = notification(&headers(Some("t")), b"not json").unwrap_err();
        assert!(
            matches!(error, Error::Decode { status: 200, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn lock_tokens_are_checked_and_shown_tidily() {
        assert_eq!(LockToken::new("abc").unwrap().as_str(), "abc");
        assert_eq!(LockToken::new("\"abc\"").unwrap().to_string(), "abc");
        assert_eq!(
            format!("{:?}", LockToken::new("abc").unwrap()),
            "LockToken(abc)"
        );
        for bad in ["", " ", "\"\"", "a\"b", "a\nb"] {
            assert!(
                matches!(
                    LockToken::new(bad),
                    Err(Error::InvalidArgument {
                        argument: "lock_token",
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn statuses_from_the_amqp_receiver_convert() {
        use iothub_amqp::FeedbackStatus as Amqp;
        assert_eq!(FeedbackStatus::from(Amqp::Purged), FeedbackStatus::Purged);
        assert_eq!(
            FeedbackStatus::from(Amqp::Unknown("x".into())),
            FeedbackStatus::Unknown("x".into())
        );
    }
}
