//! The crate's one error type, and the mapping from AMQP outcomes and error conditions to it.
//!
//! The hub reports a refused cloud-to-device message as a `Rejected` outcome whose error
//! condition says why (`amqp:not-found` for an unknown device, and so on). The conditions mapped
//! to their own variants are the ones the C#, Node and Java service SDKs agree on; anything else
//! is kept verbatim in [`Error::Rejected`].

use std::fmt;
use std::time::Duration;

use fe2o3_amqp::types::definitions::{self, ErrorCondition};
use fe2o3_amqp::types::primitives::Value;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The condition the hub uses for an unknown device or module.
pub const CONDITION_NOT_FOUND: &str = "amqp:not-found";
/// The condition the hub uses when the device's queue already holds 50 messages.
pub const CONDITION_RESOURCE_LIMIT_EXCEEDED: &str = "amqp:resource-limit-exceeded";
/// The condition the hub uses for a message over its size limit.
pub const CONDITION_MESSAGE_SIZE_EXCEEDED: &str = "amqp:link:message-size-exceeded";
/// The condition the hub uses when it throttles sends to a device.
pub const CONDITION_THROTTLED: &str = "com.microsoft:device-container-throttled";
/// The condition the hub uses for a missing, expired or insufficient token.
pub const CONDITION_UNAUTHORIZED: &str = "amqp:unauthorized-access";

/// What the hub said when it refused a message or a link: the AMQP error condition and its
/// optional description, verbatim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    condition: String,
    description: Option<String>,
}

impl Rejection {
    /// A rejection with this condition and description.
    pub fn new(condition: impl Into<String>, description: Option<String>) -> Self {
        Self {
            condition: condition.into(),
            description,
        }
    }

    /// The AMQP error condition, such as `amqp:not-found`.
    pub fn condition(&self) -> &str {
        &self.condition
    }

    /// The hub's description, if it sent one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    pub(crate) fn from_amqp(error: &definitions::Error) -> Self {
        Self::new(condition_name(&error.condition), error.description.clone())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let condition = match self.condition.as_str() {
            "" => "no error condition",
            condition => condition,
        };
        match &self.description {
            Some(description) => write!(f, "{condition} ({description})"),
            None => f.write_str(condition),
        }
    }
}

/// The symbolic name of an AMQP error condition, e.g. `amqp:not-found`.
///
/// Goes through the condition's own serialization so that every variant, including those that
/// only exist with some fe2o3 features, yields its wire name.
pub(crate) fn condition_name(condition: &ErrorCondition) -> String {
    match serde_amqp::to_value(condition) {
        Ok(Value::Symbol(symbol)) => symbol.0,
        Ok(Value::String(text)) => text,
        _ => format!("{condition:?}"),
    }
}

/// The one error type of iothub-amqp.
///
/// Ask instead of matching where you can: [`is_ambiguous`](Self::is_ambiguous),
/// [`is_transient`](Self::is_transient) and [`rejection`](Self::rejection) work across variants.
/// No variant ever holds a key or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The device (or module) does not exist: the hub rejected the message with
    /// `amqp:not-found`.
    #[error("the device does not exist: the IoT Hub rejected the message with {0}")]
    DeviceNotFound(Rejection),

    /// The device's queue already holds the maximum of 50 messages: the hub rejected the message
    /// with `amqp:resource-limit-exceeded`. Sending succeeds again once the device has received
    /// or the hub has expired some of them.
    #[error("the device's queue is full: the IoT Hub rejected the message with {0}")]
    QueueFull(Rejection),

    /// The hub rejected the message as too large (`amqp:link:message-size-exceeded`).
    #[error("the message is too large: the IoT Hub rejected it with {0}")]
    MessageTooLarge(Rejection),

    /// The body is larger than the 64 KB the hub accepts for a cloud-to-device message; found
    /// before anything was sent.
    #[error("the body is {size} bytes long; cloud-to-device messages allow at most {max}")]
    BodyTooLarge {
        /// The body's length in bytes.
        size: usize,
        /// The limit, [`MAX_BODY_SIZE`](crate::MAX_BODY_SIZE).
        max: usize,
    },

    /// The hub is throttling sends (`com.microsoft:device-container-throttled`); retry later.
    #[error("the IoT Hub is throttling: it rejected the message with {0}")]
    Throttled(Rejection),

    /// The hub refused the credentials: a message or link rejected with
    /// `amqp:unauthorized-access`, or a CBS `put-token` answered with a status other than 200 or
    /// 202.
    ///
    /// For a CBS refusal the condition is `amqp:unauthorized-access` (as the C# SDK maps it)
    /// and the description is the reply's `status-description`.
    #[error("the IoT Hub refused the credentials: {}{rejection}", cbs_status(*.status))]
    Unauthorized {
        /// The CBS status code, when the refusal was a `put-token` reply.
        status: Option<i32>,
        /// The condition and the hub's description.
        rejection: Rejection,
    },

    /// The hub rejected the message with another condition, kept verbatim.
    #[error("the IoT Hub rejected the message with {0}")]
    Rejected(Rejection),

    /// The hub released the message: it was not delivered and may be sent again.
    #[error("the IoT Hub released the message without delivering it")]
    Released,

    /// The hub answered with the `modified` outcome: the message was not delivered.
    #[error("the IoT Hub did not deliver the message (outcome `modified`)")]
    Modified {
        /// The `delivery-failed` flag of the outcome.
        delivery_failed: bool,
        /// The `undeliverable-here` flag of the outcome.
        undeliverable_here: bool,
    },

    /// The connection (or the link) was lost, or closed by the hub.
    ///
    /// When `sent` is true the message had been handed to the connection, so the hub may have
    /// enqueued it: see [`is_ambiguous`](Self::is_ambiguous). The next operation reconnects.
    #[error("the AMQP connection to the IoT Hub was lost{}", lost_detail(*.sent, .reason))]
    ConnectionLost {
        /// Whether the message had already been handed to the connection.
        sent: bool,
        /// What was reported, without secrets; the hub's error condition when it sent one.
        reason: String,
    },

    /// The operation did not complete within its timeout.
    ///
    /// When `sent` is true the message had been handed to the connection, so the hub may have
    /// enqueued it: see [`is_ambiguous`](Self::is_ambiguous).
    #[error("the operation did not complete within {after:?}{}", if *.sent { " after the message was sent" } else { "" })]
    Timeout {
        /// The timeout that was exceeded.
        after: Duration,
        /// Whether the message had already been handed to the connection.
        sent: bool,
    },

    /// The connection could not be established: DNS, TCP, TLS, proxy or WebSocket failure.
    #[error("could not connect to the IoT Hub at {endpoint}: {stage}")]
    Connect {
        /// `host:port` that was dialled (the proxy's, when one is used).
        endpoint: String,
        /// What failed.
        stage: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The peer broke the AMQP protocol or refused the AMQP handshake, a session or a link.
    #[error("AMQP protocol error: {reason}")]
    Protocol {
        /// What went wrong.
        reason: String,
    },

    /// The credential could not produce a token (e.g. Azure AD failure, expired fixed SAS).
    #[error("the IoT Hub credential could not be used")]
    Auth(#[source] iothub_auth::Error),

    /// A feedback or file-upload notification whose body is not the expected JSON. The message
    /// has been rejected, so the hub does not deliver it again.
    #[error("a service-bound message does not have the expected JSON shape")]
    Decode {
        /// The body, as text (invalid UTF-8 replaced by U+FFFD).
        body: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },

    /// Rejected before anything was sent.
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The parameter at fault.
        argument: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The client's configuration is unusable (bad PEM, bad proxy URL…).
    #[error("invalid configuration: {reason}")]
    Configuration {
        /// What could not be configured.
        reason: String,
    },

    /// The client was closed with [`ServiceClient::close`](crate::ServiceClient::close).
    #[error("the client is closed")]
    Closed,
}

fn cbs_status(status: Option<i32>) -> String {
    status.map_or_else(String::new, |status| format!("CBS status {status}, "))
}

fn lost_detail(sent: bool, reason: &str) -> String {
    let sent = if sent {
        " after the message was sent"
    } else {
        ""
    };
    if reason.is_empty() {
        sent.to_owned()
    } else {
        format!("{sent}: {reason}")
    }
}

impl From<iothub_auth::Error> for Error {
    fn from(error: iothub_auth::Error) -> Self {
        Error::Auth(error)
    }
}

impl Error {
    /// Whether the message may or may not have been enqueued by the hub: the connection was lost
    /// or the timeout expired after the message had been handed to the connection.
    ///
    /// Sending again may deliver the message twice; devices can tell the copies apart by the
    /// message id, which a resend keeps. Every other error means the message was certainly not
    /// enqueued.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLost { sent: true, .. } | Error::Timeout { sent: true, .. }
        )
    }

    /// Whether the operation may succeed if it is repeated later, unchanged: a lost connection,
    /// a timeout, a connection failure, throttling, a full device queue, a released or modified
    /// message, or the hub's `com.microsoft:timeout`, `amqp:internal-error` or
    /// `amqp:link:detach-forced`.
    ///
    /// This says nothing about whether repeating is *safe*; see
    /// [`is_ambiguous`](Self::is_ambiguous).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::ConnectionLost { .. }
            | Error::Timeout { .. }
            | Error::Connect { .. }
            | Error::Throttled(_)
            | Error::QueueFull(_)
            | Error::Released
            | Error::Modified { .. } => true,
            Error::Rejected(rejection) => matches!(
                rejection.condition(),
                "com.microsoft:timeout" | "amqp:internal-error" | "amqp:link:detach-forced"
            ),
            _ => false,
        }
    }

    /// The hub's condition and description, for the variants that come from a rejection.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Error::DeviceNotFound(rejection)
            | Error::QueueFull(rejection)
            | Error::MessageTooLarge(rejection)
            | Error::Throttled(rejection)
            | Error::Rejected(rejection)
            | Error::Unauthorized { rejection, .. } => Some(rejection),
            _ => None,
        }
    }

    /// Maps a rejection to its variant by condition.
    pub(crate) fn from_rejection(rejection: Rejection) -> Self {
        match rejection.condition() {
            CONDITION_NOT_FOUND => Error::DeviceNotFound(rejection),
            CONDITION_RESOURCE_LIMIT_EXCEEDED => Error::QueueFull(rejection),
            CONDITION_MESSAGE_SIZE_EXCEEDED => Error::MessageTooLarge(rejection),
            CONDITION_THROTTLED => Error::Throttled(rejection),
            CONDITION_UNAUTHORIZED => Error::Unauthorized {
                status: None,
                rejection,
            },
            _ => Error::Rejected(rejection),
        }
    }

    pub(crate) fn invalid(argument: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            argument,
            reason: reason.into(),
        }
    }

    pub(crate) fn connect(
        endpoint: &str,
        stage: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Connect {
            endpoint: endpoint.to_owned(),
            stage,
            source: source.into(),
        }
    }

    pub(crate) fn protocol(reason: impl fmt::Display) -> Self {
        Error::Protocol {
            reason: reason.to_string(),
        }
    }

    pub(crate) fn lost(sent: bool, reason: impl fmt::Display) -> Self {
        Error::ConnectionLost {
            sent,
            reason: reason.to_string(),
        }
    }

    /// A link or session error: the hub's refusal when it gave a condition (an unauthorized
    /// detach is [`Error::Unauthorized`]), else a lost connection.
    pub(crate) fn from_link_state(error: &fe2o3_amqp::link::LinkStateError, sent: bool) -> Self {
        use fe2o3_amqp::link::LinkStateError as L;
        match error {
            L::RemoteDetachedWithError(e) | L::RemoteClosedWithError(e) => {
                let rejection = Rejection::from_amqp(e);
                match rejection.condition() {
                    CONDITION_UNAUTHORIZED => Error::Unauthorized {
                        status: None,
                        rejection,
                    },
                    _ => Error::lost(sent, format!("the link was closed with {rejection}")),
                }
            }
            other => Error::lost(sent, other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{AmqpError, LinkError};
    use fe2o3_amqp::types::primitives::Symbol;

    fn amqp_error(condition: ErrorCondition, description: Option<&str>) -> definitions::Error {
        definitions::Error::new(condition, description.map(str::to_owned), None)
    }

    #[test]
    fn condition_names_are_the_wire_symbols() {
        assert_eq!(
            condition_name(&ErrorCondition::AmqpError(AmqpError::NotFound)),
            "amqp:not-found"
        );
        assert_eq!(
            condition_name(&ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)),
            "amqp:resource-limit-exceeded"
        );
        assert_eq!(
            condition_name(&ErrorCondition::LinkError(LinkError::MessageSizeExceeded)),
            "amqp:link:message-size-exceeded"
        );
        assert_eq!(
            condition_name(&ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess)),
            "amqp:unauthorized-access"
        );
        assert_eq!(
            condition_name(&ErrorCondition::Custom(Symbol::from(
                "com.microsoft:device-container-throttled"
            ))),
            "com.microsoft:device-container-throttled"
        );
    }

    #[test]
    fn each_known_condition_maps_to_its_variant() {
        let map = |condition, description| {
            Error::from_rejection(Rejection::from_amqp(&amqp_error(condition, description)))
        };
        let error = map(
            ErrorCondition::AmqpError(AmqpError::NotFound),
            Some("Device not found: nosuch"),
        );
        assert!(matches!(&error, Error::DeviceNotFound(r)
            if r.condition() == "amqp:not-found" && r.description() == Some("Device not found: nosuch")));
        assert_eq!(
            error.to_string(),
            "the device does not exist: the IoT Hub rejected the message with \
             amqp:not-found (Device not found: nosuch)"
        );
        assert!(!error.is_transient() && !error.is_ambiguous());

        let error = map(
            ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded),
            None,
        );
        assert!(matches!(error, Error::QueueFull(_)));
        assert!(error.is_transient());

        let error = map(
            ErrorCondition::LinkError(LinkError::MessageSizeExceeded),
            None,
        );
        assert!(matches!(error, Error::MessageTooLarge(_)));

        let error = map(
            ErrorCondition::Custom(Symbol::from(CONDITION_THROTTLED)),
            Some("slow down"),
        );
        assert!(matches!(error, Error::Throttled(_)));
        assert!(error.is_transient());

        let error = map(
            ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
            Some("token expired"),
        );
        assert!(matches!(
            &error,
            Error::Unauthorized { status: None, rejection: r } if r.description() == Some("token expired")
        ));
        assert_eq!(
            error.to_string(),
            "the IoT Hub refused the credentials: amqp:unauthorized-access (token expired)"
        );
    }

    #[test]
    fn other_conditions_are_kept_verbatim() {
        let error = Error::from_rejection(Rejection::from_amqp(&amqp_error(
            ErrorCondition::Custom(Symbol::from("com.microsoft:quota-exceeded")),
            Some("daily quota"),
        )));
        let rejection = error.rejection().unwrap();
        assert_eq!(rejection.condition(), "com.microsoft:quota-exceeded");
        assert_eq!(rejection.description(), Some("daily quota"));
        assert!(matches!(error, Error::Rejected(_)));
        assert!(!error.is_transient());

        let error = Error::from_rejection(Rejection::new("com.microsoft:timeout", None));
        assert!(error.is_transient());
    }

    #[test]
    fn only_failures_after_sending_are_ambiguous() {
        let after = Duration::from_secs(1);
        assert!(Error::lost(true, "reset").is_ambiguous());
        assert!(!Error::lost(false, "reset").is_ambiguous());
        assert!(Error::Timeout { after, sent: true }.is_ambiguous());
        assert!(!Error::Timeout { after, sent: false }.is_ambiguous());
        for error in [
            Error::Released,
            Error::Closed,
            Error::BodyTooLarge { size: 1, max: 0 },
            Error::from_rejection(Rejection::new(CONDITION_NOT_FOUND, None)),
        ] {
            assert!(!error.is_ambiguous(), "{error:?}");
        }
        assert_eq!(
            Error::lost(true, "reset").to_string(),
            "the AMQP connection to the IoT Hub was lost after the message was sent: reset"
        );
    }

    #[test]
    fn unauthorized_detach_is_not_a_lost_connection() {
        use fe2o3_amqp::link::LinkStateError;
        let detach = LinkStateError::RemoteDetachedWithError(amqp_error(
            ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess),
            None,
        ));
        assert!(matches!(
            Error::from_link_state(&detach, false),
            Error::Unauthorized { .. }
        ));
        let closed = LinkStateError::RemoteClosedWithError(amqp_error(
            ErrorCondition::LinkError(LinkError::DetachForced),
            None,
        ));
        assert!(matches!(
            Error::from_link_state(&closed, true),
            Error::ConnectionLost { sent: true, .. }
        ));
    }
}
