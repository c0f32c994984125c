//! Cloud-to-device messages through the [`RegistryManager`], over AMQP (`iothub-amqp`).
//!
//! The manager owns one [`ServiceClient`] made from the same credential as its REST client.
//! It connects on the first send and keeps one connection and one link for every later send.
//! Feedback and file-upload notifications come from the same client
//! ([`RegistryManager::feedback_receiver`], [`RegistryManager::file_notification_receiver`]).
//!
//! The types are re-exported from `iothub-amqp`, so depending on `iothub-registry` is enough.

use std::time::Instant;

use tracing::Instrument;

pub use iothub_amqp::{
    ACK_PROPERTY, Ack, Error, FeedbackBatch, FeedbackReceiver, FeedbackRecord, FeedbackStatus,
    FileNotification, FileNotificationMessage, FileNotificationReceiver, MAX_BODY_SIZE, Message,
    MessageBuilder, Rejection, ServiceClient, ServiceClientBuilder, Transport,
};

use crate::error::Result;
use crate::ids::{validate_device_id, validate_module_id};
use crate::manager::RegistryManager;
use crate::retry::{OperationKind, RetryContext};

impl RegistryManager {
    /// Sends a cloud-to-device message to a device, like Python's
    /// `send_c2d_message(device_id, message, properties)`, and waits until the hub has queued it.
    ///
    /// `properties` are mapped as the reference maps them: `messageId`, `correlationId`,
    /// `contentType`, `contentEncoding` and `expiryTimeUtc` (milliseconds since the Unix
    /// epoch) become the AMQP message's properties; every other key, `iothub-ack` included,
    /// becomes an application property. Without `messageId` the message gets a new UUID. For a
    /// typed alternative, build a [`Message`] and call [`send_c2d`](Self::send_c2d).
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// registry
    ///     .send_c2d_message(
    ///         "thermostat-1",
    ///         r#"{"setpoint": 21.5}"#,
    ///         [("contentType", "application/json"), ("iothub-ack", "full"), ("priority", "high")],
    ///     )
    ///     .await?;
    /// // Ids built at run time are taken as they are, like every other method's.
    /// for n in 1..=3 {
    ///     registry.send_c2d_message(format!("thermostat-{n}"), "reboot", [("iothub-ack", "none")]).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Before sending: [`InvalidArgument`](crate::Error::InvalidArgument) for an invalid
    /// device id, a body over [`MAX_BODY_SIZE`], or an `expiryTimeUtc` that is not an integer.
    /// From the hub: [`C2d`](crate::Error::C2d) (see [`send_c2d`](Self::send_c2d) for retries
    /// and ambiguity).
    pub async fn send_c2d_message<I, K, V>(
        &self,
        device_id: impl Into<String>,
        message: impl Into<Vec<u8>>,
        properties: I,
    ) -> Result<()>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        let message = Message::from_reference_properties(device_id, message, properties)
            .map_err(crate::Error::from_amqp)?;
        self.send_c2d(&message).await
    }

    /// Sends a typed cloud-to-device message (to a device, or to a module with
    /// [`MessageBuilder::module`]) and waits until the hub has queued it.
    ///
    /// ```no_run
    /// use iothub_registry::c2d::{Ack, Message};
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let message = Message::builder("thermostat-1")
    ///     .body("reboot")
    ///     .ack(Ack::Full)
    ///     .property("reason", "firmware 1.4.2")
    ///     .build()?;
    /// registry.send_c2d(&message).await?;
    /// println!("queued {}", message.message_id());
    /// # Ok(()) }
    /// ```
    ///
    /// # Retries
    ///
    /// The manager's [`RetryPolicy`](crate::RetryPolicy) sees each failure as an operation
    /// named `send_c2d_message` that is not idempotent: failures that prove the message was not
    /// queued (could not connect, the connection was found dead before the message left,
    /// throttled, released) are [`RetryClass::NotPerformed`](crate::RetryClass); a connection
    /// lost or a timeout after the message left is
    /// [`RetryClass::MaybePerformed`](crate::RetryClass) (the default policy does not repeat
    /// it, since the hub may have queued the message); everything else, a full device queue
    /// included, is permanent. Resending the same [`Message`] keeps its message id, so devices
    /// that remember recent ids can drop a duplicate.
    ///
    /// # Errors
    ///
    /// [`InvalidArgument`](crate::Error::InvalidArgument) for an invalid device or module id;
    /// [`C2d`](crate::Error::C2d) for what the hub or the connection reported
    /// ([`is_not_found`](crate::Error::is_not_found) for an unknown device,
    /// [`is_throttled`](crate::Error::is_throttled), [`c2d`](crate::Error::c2d) for the rest);
    /// [`Auth`](crate::Error::Auth) when the credential cannot produce a token.
    pub async fn send_c2d(&self, message: &Message) -> Result<()> {
        validate_device_id(message.device_id())?;
        if let Some(module_id) = message.module_id() {
            validate_module_id(module_id)?;
        }
        let span = tracing::info_span!(
            "iothub_registry",
            operation = "send_c2d_message",
            device_id = message.device_id(),
            module_id = message.module_id(),
            message_id = message.message_id(),
            attempt = tracing::field::Empty,
        );
        async {
            let started = Instant::now();
            let mut attempts = 0;
            loop {
                attempts += 1;
                tracing::Span::current().record("attempt", attempts);
                // The per-attempt timeout of the manager (`with_timeout` included) bounds the
                // send as it bounds a REST attempt.
                let error = match self.c2d.send_within(message, self.timeout).await {
                    Ok(()) => return Ok(()),
                    Err(error) => crate::Error::from_amqp(error),
                };
                // Sent twice, a message is queued twice (with the same id): like a forced write,
                // it is repeated only when the failure proves it was not queued.
                let context = RetryContext::for_kind(
                    "send_c2d_message",
                    attempts,
                    started.elapsed(),
                    OperationKind::UnconditionalWrite,
                );
                if !self.wait_to_retry(&error, &context).await {
                    return Err(error);
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A stream of delivery-feedback batches for messages sent with an [`Ack`]. Complete or
    /// abandon each batch promptly: the hub sends the next one only after the previous one is
    /// settled. See [`FeedbackReceiver`].
    pub fn feedback_receiver(&self) -> FeedbackReceiver {
        self.c2d.feedback_receiver()
    }

    /// A stream of file-upload notifications, settled like feedback batches.
    pub fn file_notification_receiver(&self) -> FileNotificationReceiver {
        self.c2d.file_notification_receiver()
    }

    /// The AMQP client behind [`send_c2d`](Self::send_c2d), shared by every clone of this
    /// manager.
    pub fn c2d_client(&self) -> &ServiceClient {
        &self.c2d
    }

    /// Closes the AMQP connection, if one was opened: sends in flight get their outcome,
    /// receivers end, and later sends fail, for every clone of this manager. REST operations
    /// are not affected. Dropping the
    /// manager without calling this never hangs; it only skips the orderly close.
    pub async fn close(&self) {
        self.c2d.close().await;
    }
}
