//! What a failure says about the operation: not found, precondition failed, throttled,
//! transient, and how it may be retried. The IoT Hub codes behind each answer are listed here;
//! the codes themselves (names and numbers) are data from `iothub-rest-gen`.

use iothub_rest_gen::types::ErrorCode;

use super::{Error, ServiceError};
use crate::retry::{OperationKind, RetryClass};

impl Error {
    /// The hub answered 404.
    ///
    /// Beware that a direct method to a device that is not connected (or has no handler) also
    /// answers 404, with code `DeviceNotOnline` (404103): the device exists. Check
    /// [`code`](Self::code) when the difference matters.
    ///
    /// False for [`Error::MaybeApplied`]: a 404 there may be the earlier attempt's own doing.
    pub fn is_not_found(&self) -> bool {
        !self.is_maybe_applied() && (self.status() == Some(404) || c2d::device_not_found(self))
    }

    /// The `If-Match` etag did not match the current one: status 412, or code
    /// `PreconditionFailed` (412001) or `EtagDoesNotMatch` (400023) with any status.
    ///
    /// False for [`Error::MaybeApplied`]: the etag may have changed because the earlier attempt
    /// made the change, not because someone else did.
    pub fn is_precondition_failed(&self) -> bool {
        !self.is_maybe_applied()
            && (self.status() == Some(412)
                || self.code().is_some_and(|code| {
                    matches!(
                        code,
                        ErrorCode::PreconditionFailed | ErrorCode::EtagDoesNotMatch
                    )
                }))
    }

    /// The hub answered 409, for example `DeviceAlreadyExists` when creating an existing device.
    /// False for [`Error::MaybeApplied`].
    pub fn is_conflict(&self) -> bool {
        !self.is_maybe_applied() && self.status() == Some(409)
    }

    /// Whether the operation may have been applied although it failed, so that its effect
    /// must be checked (read the entity back) before it is repeated or reported as not done.
    ///
    /// True for [`Error::MaybeApplied`]; for a failure whose own
    /// [`retry_class`](Self::retry_class) is [`RetryClass::MaybePerformed`] (a connection lost
    /// after the request was sent, a timeout after sending, a 500, 502 or 504); and for an
    /// [`Error::ResponseTooLarge`] with a success status. False for failures that prove the
    /// operation was not applied (a refused connection, a timeout before sending, 429, 503,
    /// any other 4xx, invalid arguments).
    ///
    /// For reads and queries it only says the request may have reached the hub.
    ///
    /// ```
    /// # async fn run(registry: iothub_registry::RegistryManager) {
    /// use iothub_registry::{IfMatch, TwinPatch};
    ///
    /// let patch = TwinPatch::new().tag("floor", 3);
    /// match registry.update_twin("sensor-1", patch, IfMatch::Any).await {
    ///     Ok(_) => println!("applied"),
    ///     Err(e) if e.may_have_been_applied() => println!("unknown: read the twin back ({e})"),
    ///     Err(e) => println!("not applied: {e}"),
    /// }
    /// # }
    /// ```
    pub fn may_have_been_applied(&self) -> bool {
        match self {
            Error::MaybeApplied { .. } => true,
            Error::ResponseTooLarge { status, .. } if (200..300).contains(status) => true,
            _ => self.retry_class() == RetryClass::MaybePerformed,
        }
    }

    fn is_maybe_applied(&self) -> bool {
        matches!(self, Error::MaybeApplied { .. })
    }

    /// The hub throttled the request: status 429, or one of the throttling codes 429000 to
    /// 429005 with any status; or a cloud-to-device message refused as throttled.
    pub fn is_throttled(&self) -> bool {
        !self.is_maybe_applied()
            && (self.service().is_some_and(service_is_throttled) || c2d::throttled(self))
    }

    /// Whether the operation may succeed if it is repeated later, unchanged.
    ///
    /// True for:
    /// - statuses 408, 429, 500, 502, 503 and 504 (the IoT Hub documentation calls 500-class
    ///   errors "most likely transient", and 502 and 504 usually come from a gateway with a
    ///   passing fault);
    /// - the codes that say so whatever the status: the throttling codes 429000 to 429005,
    ///   `ServerError` (500001), `GenericTimeout` (500008), `GenericServiceUnavailable`
    ///   (503000), `ServiceUnavailable` (503001) and `ServerBusy` (503005);
    /// - transport errors, except a request that could not even be built or a redirect loop;
    /// - [`Error::Timeout`];
    /// - [`Error::ResponseTooLarge`] with one of the statuses above;
    /// - [`Error::C2d`] when [`iothub_amqp::Error::is_transient`] says so.
    ///
    /// False for [`Error::MaybeApplied`] (whatever happened may happen again).
    ///
    /// Deliberately false for:
    /// - `DeviceNotOnline` (404103), though the C# v2 SDK calls it transient: the device is not
    ///   connected or has no handler for the method, and repeating the call within seconds
    ///   rarely finds it back;
    /// - `GatewayTimeout` (504101): the device did not answer a method within its timeout, and
    ///   an immediate repeat usually times out again (the C# v2 SDK agrees);
    /// - `IotHubQuotaExceeded` (403002): the daily message quota only resets at 00:00 UTC.
    ///
    /// This says nothing about whether repeating is *safe*; see [`retry_class`](Self::retry_class).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Service(service) => service_is_transient(service),
            Error::Transport { source } => !source.is_builder() && !source.is_redirect(),
            Error::Timeout { .. } => true,
            Error::ResponseTooLarge { status, .. } => {
                matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
            }
            #[cfg(feature = "amqp")]
            Error::C2d(error) => error.is_transient(),
            _ => false,
        }
    }

    /// How this failure may be retried, judged by what it says about the operation.
    ///
    /// - [`RetryClass::NotPerformed`] (with the `Retry-After` delay, if the hub sent one): a
    ///   status 408, 429 or 503; a throttling code (429000 to 429005),
    ///   `GenericServiceUnavailable` (503000), `ServiceUnavailable` (503001) or `ServerBusy`
    ///   (503005) with any status; a transport error while connecting, or a timeout while
    ///   getting a token (nothing was sent).
    /// - [`RetryClass::MaybePerformed`]: any other 5xx status except 501 and 505 (both say the
    ///   request can never work); the codes `ServerError` (500001) and `GenericTimeout`
    ///   (500008); any other transport error (the request may have been sent); a timeout after
    ///   sending; [`Error::MaybeApplied`].
    /// - [`RetryClass::Permanent`]: everything else: other statuses (4xx other than 408 and
    ///   429, 3xx), decode errors, invalid arguments, credential and configuration errors, and
    ///   transport errors that could not build the request or hit a redirect loop.
    ///   [`Error::ResponseTooLarge`] is classed by its status, and a success status as
    ///   permanent (the answer, not the operation, is the problem).
    ///
    /// A direct method answered 408 is [`RetryClass::MaybePerformed`] for the SDK's retries
    /// (the device may have run it), which this status-only judgement cannot see.
    ///
    /// For [`Error::C2d`]: `NotPerformed` when the message provably did not reach the hub's
    /// queue and may be accepted later (could not connect, connection found dead or timeout
    /// before the message left, throttled, released); `MaybePerformed` when the connection was
    /// lost or the time ran out after the message left; `Permanent` otherwise, a full device
    /// queue included (it drains only as fast as the device receives).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            #[cfg(feature = "amqp")]
            Error::C2d(error) => c2d::retry_class(error),
            Error::Service(service) => service_retry_class(service),
            Error::Transport { source } if source.is_connect() => {
                RetryClass::NotPerformed { retry_after: None }
            }
            Error::Transport { source } if source.is_builder() || source.is_redirect() => {
                RetryClass::Permanent
            }
            Error::Timeout { sent: false, .. } => RetryClass::NotPerformed { retry_after: None },
            Error::Transport { .. } | Error::Timeout { .. } | Error::MaybeApplied { .. } => {
                RetryClass::MaybePerformed
            }
            Error::ResponseTooLarge { status, .. } => status_retry_class(*status),
            _ => RetryClass::Permanent,
        }
    }

    /// How this failure of an operation of `kind` may be retried: [`retry_class`](Self::retry_class),
    /// except that a direct method answered 408 may have run on the device.
    pub(crate) fn retry_class_for(&self, kind: OperationKind) -> RetryClass {
        match kind {
            OperationKind::DirectMethod if self.status() == Some(408) => RetryClass::MaybePerformed,
            _ => self.retry_class(),
        }
    }
}

/// The class a status alone gives (no code, no body).
fn status_retry_class(status: u16) -> RetryClass {
    match status {
        408 | 429 | 503 => RetryClass::NotPerformed { retry_after: None },
        500..=599 if !matches!(status, 501 | 505) => RetryClass::MaybePerformed,
        _ => RetryClass::Permanent,
    }
}

/// What a cloud-to-device failure says; without the `amqp` feature there is none.
#[cfg(feature = "amqp")]
mod c2d {
    use iothub_amqp::Error as Amqp;

    use super::{Error, RetryClass};

    pub(super) fn device_not_found(error: &Error) -> bool {
        matches!(error, Error::C2d(Amqp::DeviceNotFound(_)))
    }

    pub(super) fn throttled(error: &Error) -> bool {
        matches!(error, Error::C2d(Amqp::Throttled(_)))
    }

    pub(super) fn retry_class(error: &Amqp) -> RetryClass {
        match error {
            _ if error.is_ambiguous() => RetryClass::MaybePerformed,
            Amqp::Connect { .. }
            | Amqp::ConnectionLost { .. }
            | Amqp::Timeout { .. }
            | Amqp::Throttled(_)
            | Amqp::Released => RetryClass::NotPerformed { retry_after: None },
            _ => RetryClass::Permanent,
        }
    }
}

#[cfg(not(feature = "amqp"))]
mod c2d {
    use super::Error;

    pub(super) fn device_not_found(_: &Error) -> bool {
        false
    }

    pub(super) fn throttled(_: &Error) -> bool {
        false
    }
}

fn has_code(service: &ServiceError, codes: &[ErrorCode]) -> bool {
    service.code().is_some_and(|code| codes.contains(code))
}

fn service_is_throttled(service: &ServiceError) -> bool {
    service.status() == 429 || has_code(service, THROTTLING_CODES)
}

fn service_is_transient(service: &ServiceError) -> bool {
    if service_is_throttled(service) || has_code(service, TRANSIENT_CODES) {
        return true;
    }
    if has_code(service, NEVER_TRANSIENT_CODES) {
        return false;
    }
    matches!(service.status(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn service_retry_class(service: &ServiceError) -> RetryClass {
    let status = service.status();
    if matches!(status, 408 | 429 | 503)
        || has_code(service, THROTTLING_CODES)
        || has_code(service, NOT_PERFORMED_CODES)
    {
        RetryClass::NotPerformed {
            retry_after: service.retry_after(),
        }
    } else if ((500..600).contains(&status) && !matches!(status, 501 | 505))
        || has_code(service, MAYBE_PERFORMED_CODES)
    {
        RetryClass::MaybePerformed
    } else {
        RetryClass::Permanent
    }
}

const THROTTLING_CODES: &[ErrorCode] = &[
    ErrorCode::GenericTooManyRequests,
    ErrorCode::ThrottlingException,
    ErrorCode::ThrottleBacklogLimitExceeded,
    ErrorCode::ThrottlingBacklogTimeout,
    ErrorCode::ThrottlingMaxActiveJobCountExceeded,
    ErrorCode::DeviceThrottlingLimitExceeded,
];

/// Besides throttling: the service says it did not take the request.
const NOT_PERFORMED_CODES: &[ErrorCode] = &[
    ErrorCode::GenericServiceUnavailable,
    ErrorCode::ServiceUnavailable,
    ErrorCode::ServerBusy,
];

/// The service failed inside the operation, which may have been applied.
const MAYBE_PERFORMED_CODES: &[ErrorCode] = &[ErrorCode::ServerError, ErrorCode::GenericTimeout];

/// Besides throttling: worth repeating later whatever the status says.
const TRANSIENT_CODES: &[ErrorCode] = &[
    ErrorCode::ServerError,
    ErrorCode::GenericTimeout,
    ErrorCode::GenericServiceUnavailable,
    ErrorCode::ServiceUnavailable,
    ErrorCode::ServerBusy,
];

/// Not worth repeating soon even under a transient-looking status (see `Error::is_transient`).
const NEVER_TRANSIENT_CODES: &[ErrorCode] = &[
    ErrorCode::DeviceNotOnline,
    ErrorCode::GatewayTimeout,
    ErrorCode::IotHubQuotaExceeded,
];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::{parse, service};
    use super::*;

    #[test]
    fn predicates_by_status_and_code() {
        // (status, header code, not_found, precondition, conflict, throttled, transient)
        let cases: &[(u16, Option<&str>, [bool; 5])] = &[
            (
                404,
                Some("DeviceNotFound"),
                [true, false, false, false, false],
            ),
            (
                404,
                Some("DeviceNotOnline"),
                [true, false, false, false, false],
            ),
            (
                412,
                Some("PreconditionFailed"),
                [false, true, false, false, false],
            ),
            (412, None, [false, true, false, false, false]),
            (
                400,
                Some("EtagDoesNotMatch"),
                [false, true, false, false, false],
            ),
            (
                409,
                Some("DeviceAlreadyExists"),
                [false, false, true, false, false],
            ),
            (429, None, [false, false, false, true, true]),
            (
                429,
                Some("ThrottlingException"),
                [false, false, false, true, true],
            ),
            (
                400,
                Some("ThrottlingBacklogTimeout"),
                [false, false, false, true, true],
            ),
            (
                403,
                Some("DeviceThrottlingLimitExceeded"),
                [false, false, false, true, true],
            ),
            (408, None, [false, false, false, false, true]),
            (500, None, [false, false, false, false, true]),
            (500, Some("ServerError"), [false, false, false, false, true]),
            (
                500,
                Some("GenericTimeout"),
                [false, false, false, false, true],
            ),
            (502, None, [false, false, false, false, true]),
            (503, None, [false, false, false, false, true]),
            (
                503,
                Some("ServiceUnavailable"),
                [false, false, false, false, true],
            ),
            (503, Some("ServerBusy"), [false, false, false, false, true]),
            (504, None, [false, false, false, false, true]),
            (
                504,
                Some("GatewayTimeout"),
                [false, false, false, false, false],
            ),
            (
                403,
                Some("IotHubQuotaExceeded"),
                [false, false, false, false, false],
            ),
            (501, None, [false, false, false, false, false]),
            (
                400,
                Some("ArgumentInvalid"),
                [false, false, false, false, false],
            ),
            (
                401,
                Some("IotHubUnauthorizedAccess"),
                [false, false, false, false, false],
            ),
        ];
        for (status, code, expected) in cases {
            let error = service(*status, *code);
            let actual = [
                error.is_not_found(),
                error.is_precondition_failed(),
                error.is_conflict(),
                error.is_throttled(),
                error.is_transient(),
            ];
            assert_eq!(&actual, expected, "{status} {code:?}");
            assert_eq!(error.status(), Some(*status));
        }
    }

    #[test]
    fn retry_class_by_status_and_code() {
        use RetryClass::{MaybePerformed, NotPerformed, Permanent};
        let not_performed = NotPerformed { retry_after: None };
        let cases: &[(u16, Option<&str>, RetryClass)] = &[
            (408, None, not_performed),
            (429, None, not_performed),
            (503, None, not_performed),
            (503, Some("ServiceUnavailable"), not_performed),
            (400, Some("ThrottlingBacklogTimeout"), not_performed),
            (500, Some("ServerBusy"), not_performed),
            (500, None, MaybePerformed),
            (500, Some("ServerError"), MaybePerformed),
            (502, None, MaybePerformed),
            (504, None, MaybePerformed),
            (504, Some("GatewayTimeout"), MaybePerformed),
            (507, None, MaybePerformed),
            (501, None, Permanent),
            (505, None, Permanent),
            (400, None, Permanent),
            (401, Some("IotHubUnauthorizedAccess"), Permanent),
            (403, Some("IotHubQuotaExceeded"), Permanent),
            (404, None, Permanent),
            (404, Some("DeviceNotOnline"), Permanent),
            (409, None, Permanent),
            (412, None, Permanent),
            (413, Some("TooManyDevices"), Permanent),
        ];
        for (status, code, expected) in cases {
            assert_eq!(
                service(*status, *code).retry_class(),
                *expected,
                "{status} {code:?}"
            );
        }
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn c2d_failures_are_classed_by_whether_the_message_left() {
        use iothub_amqp::{Error as Amqp, Rejection};
        use std::time::Duration;
        let not_performed = RetryClass::NotPerformed { retry_after: None };
        let lost = |sent| Amqp::ConnectionLost {
            sent,
            reason: "reset".into(),
        };
        let timeout = |sent| Amqp::Timeout {
            after: Duration::from_secs(1),
            sent,
        };
        let cases = [
            (lost(true), RetryClass::MaybePerformed),
            (timeout(true), RetryClass::MaybePerformed),
            (lost(false), not_performed),
            (timeout(false), not_performed),
            (
                Amqp::Throttled(Rejection::new(
                    "com.microsoft:device-container-throttled",
                    None,
                )),
                not_performed,
            ),
            (Amqp::Released, not_performed),
            (
                Amqp::QueueFull(Rejection::new("amqp:resource-limit-exceeded", None)),
                RetryClass::Permanent,
            ),
            (
                Amqp::DeviceNotFound(Rejection::new("amqp:not-found", None)),
                RetryClass::Permanent,
            ),
            (Amqp::Closed, RetryClass::Permanent),
        ];
        for (amqp, class) in cases {
            let shown = format!("{amqp:?}");
            assert_eq!(Error::from(amqp).retry_class(), class, "{shown}");
        }
        let throttled = Error::from(Amqp::Throttled(Rejection::new("x", None)));
        assert!(throttled.is_throttled() && throttled.is_transient());
        let missing = Error::from(Amqp::DeviceNotFound(Rejection::new("amqp:not-found", None)));
        assert!(missing.is_not_found() && !missing.is_transient());
        // Argument and size failures keep this crate's variant.
        let big = Error::from(Amqp::BodyTooLarge {
            size: 70_000,
            max: 65_536,
        });
        assert!(
            matches!(
                big,
                Error::InvalidArgument {
                    argument: "message",
                    ..
                }
            ),
            "{big:?}"
        );
    }

    #[test]
    fn retry_class_carries_retry_after() {
        let error = Error::Service(parse(429, &[("Retry-After", "5")], b""));
        assert_eq!(
            error.retry_class(),
            RetryClass::NotPerformed {
                retry_after: Some(Duration::from_secs(5))
            }
        );
    }

    #[test]
    fn every_classified_code_has_a_number() {
        for code in THROTTLING_CODES
            .iter()
            .chain(NOT_PERFORMED_CODES)
            .chain(MAYBE_PERFORMED_CODES)
            .chain(TRANSIENT_CODES)
            .chain(NEVER_TRANSIENT_CODES)
        {
            assert!(code.number().is_some(), "{code} has no number");
        }
    }
}
