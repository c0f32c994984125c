//! File-upload notifications: a device finished uploading a blob through the hub.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures::Stream;
use serde::Deserialize;

use crate::client::ServiceClient;
use crate::error::Result;
use crate::inbox::{Disposition, Inbound, Inbox, Settlement};

/// The hub's file-notification node.
pub(crate) const FILE_NOTIFICATIONS_ADDRESS: &str = "/messages/serviceBound/filenotifications";

/// What the hub says about an uploaded file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FileNotification {
    /// The device that uploaded the file.
    #[serde(default)]
    pub device_id: String,
    /// The blob's URI.
    #[serde(default)]
    pub blob_uri: String,
    /// The blob's name, `{deviceId}/{path}`.
    #[serde(default)]
    pub blob_name: String,
    /// When the blob was last written, as the hub wrote it (ISO 8601).
    #[serde(default)]
    pub last_updated_time: String,
    /// The blob's size.
    #[serde(default)]
    pub blob_size_in_bytes: u64,
    /// When the notification was enqueued, as the hub wrote it (ISO 8601, UTC).
    #[serde(default)]
    pub enqueued_time_utc: String,
}

impl FileNotification {
    /// [`last_updated_time`](Self::last_updated_time) as a time, if it parses.
    pub fn last_updated(&self) -> Option<SystemTime> {
        crate::time::parse(&self.last_updated_time)
    }

    /// [`enqueued_time_utc`](Self::enqueued_time_utc) as a time, if it parses.
    pub fn enqueued_time(&self) -> Option<SystemTime> {
        crate::time::parse(&self.enqueued_time_utc)
    }
}

impl Inbound for FileNotification {
    const ADDRESS: &'static str = FILE_NOTIFICATIONS_ADDRESS;

    fn parse(body: &[u8]) -> serde_json::Result<Self> {
        // serde would also fill the struct from an array; only an object is a notification.
        let value: serde_json::Value = serde_json::from_slice(body)?;
        if !value.is_object() {
            return Err(serde::de::Error::custom(
                "a file notification is a JSON object",
            ));
        }
        serde_json::from_value(value)
    }
}

/// A stream of [`FileNotificationMessage`]s, from
/// [`ServiceClient::file_notification_receiver`]; it behaves like
/// [`FeedbackReceiver`](crate::FeedbackReceiver).
///
/// ```no_run
/// use futures::StreamExt;
/// use iothub_amqp::ServiceClient;
///
/// # async fn run(client: ServiceClient) -> iothub_amqp::Result<()> {
/// let mut uploads = client.file_notification_receiver();
/// while let Some(message) = uploads.next().await {
///     let message = message?;
///     let file = message.notification();
///     println!("{} uploaded {} ({} bytes)", file.device_id, file.blob_name, file.blob_size_in_bytes);
///     message.complete().await?;
/// }
/// # Ok(())
/// # }
/// ```
pub struct FileNotificationReceiver {
    inbox: Inbox<FileNotification>,
}

impl fmt::Debug for FileNotificationReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileNotificationReceiver")
            .finish_non_exhaustive()
    }
}

impl FileNotificationReceiver {
    pub(crate) fn new(client: ServiceClient) -> Self {
        Self {
            inbox: Inbox::new(client),
        }
    }
}

impl Stream for FileNotificationReceiver {
    type Item = Result<FileNotificationMessage>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inbox.poll_next(cx).map(|item| {
            item.map(|item| {
                item.map(|(notification, settlement)| FileNotificationMessage {
                    notification,
                    settlement,
                })
            })
        })
    }
}

/// One received file-upload notification, to [`complete`](Self::complete) or
/// [`abandon`](Self::abandon); dropping it abandons it.
#[derive(Debug)]
#[must_use = "complete or abandon the notification; dropping it abandons it"]
pub struct FileNotificationMessage {
    notification: FileNotification,
    settlement: Settlement,
}

impl FileNotificationMessage {
    /// The notification.
    pub fn notification(&self) -> &FileNotification {
        &self.notification
    }

    /// Removes the notification from the hub's queue.
    ///
    /// # Errors
    ///
    /// As for [`FeedbackBatch::complete`](crate::FeedbackBatch::complete).
    pub async fn complete(self) -> Result<()> {
        self.settlement.settle(Disposition::Complete).await
    }

    /// Returns the notification to the hub, which delivers it again.
    ///
    /// # Errors
    ///
    /// As for [`FeedbackBatch::complete`](crate::FeedbackBatch::complete).
    pub async fn abandon(self) -> Result<()> {
        self.settlement.settle(Disposition::Abandon).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn a_notification_parses_with_every_field() {
        let body = br#"{"deviceId":"mydevice","blobUri":"https://store.blob.core.windows.net/c/mydevice/a.txt",
            "blobName":"mydevice/a.txt","lastUpdatedTime":"2016-06-01T21:22:41+00:00",
            "blobSizeInBytes":1234,"enqueuedTimeUtc":"2016-06-01T21:22:43.7996883Z","extra":true}"#;
        let notification = FileNotification::parse(body).unwrap();
        assert_eq!(
            notification,
            FileNotification {
                device_id: "mydevice".into(),
                blob_uri: "https://store.blob.core.windows.net/c/mydevice/a.txt".into(),
                blob_name: "mydevice/a.txt".into(),
                last_updated_time: "2016-06-01T21:22:41+00:00".into(),
                blob_size_in_bytes: 1234,
                enqueued_time_utc: "2016-06-01T21:22:43.7996883Z".into(),
            }
        );
        assert_eq!(
            notification.last_updated(),
            Some(UNIX_EPOCH + Duration::from_secs(1_464_816_161))
        );
        assert!(notification.enqueued_time().is_some());
    }

    #[test]
    fn bad_notifications_are_errors() {
        for bad in [&b"[]"[..], b"{\"blobSizeInBytes\":\"big\"}", b"nope"] {
            assert!(FileNotification::parse(bad).is_err());
        }
    }
}
