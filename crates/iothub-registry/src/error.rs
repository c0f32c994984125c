//! The crate's one error type, and the parser that turns an IoT Hub error response into a
//! [`ServiceError`] without losing anything the service said.
//!
//! The hub reports failures in two places: the `iothub-errorcode` header (a symbolic name) and
//! a JSON body whose layout changed over the years (legacy `ErrorCode:<Name>;<text>` strings,
//! then JSON nested in a JSON string with a 6-digit number). The parser accepts every layout a
//! peer SDK accepts and, when nothing can be read, still keeps the status and the raw body
//! (kube's "reconstruct, never lose" rule).

use std::fmt;
use std::time::{Duration, SystemTime};

use iothub_rest_gen::types::ErrorCode;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use crate::retry::{RetryClass, parse_retry_after};

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one error type of iothub-registry.
///
/// Ask instead of matching where you can: [`status`](Self::status), [`code`](Self::code),
/// [`is_not_found`](Self::is_not_found), [`is_precondition_failed`](Self::is_precondition_failed),
/// [`is_conflict`](Self::is_conflict), [`is_throttled`](Self::is_throttled),
/// [`is_transient`](Self::is_transient) and [`retry_class`](Self::retry_class) work across
/// variants. Causes are kept as [`source`](std::error::Error::source), so print the whole chain
/// (for example with `anyhow`'s `{:#}`) to see them. No variant ever holds a key, a token or an
/// `Authorization` header.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The hub answered with a status that is not success for the operation.
    #[error(transparent)]
    Service(ServiceError),

    /// Rejected before any request was sent.
    #[error("invalid argument `{argument}`: {reason}")]
    InvalidArgument {
        /// The parameter at fault, as named in the method's signature (`"request"` when the
        /// generated client rejected the request as a whole).
        argument: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The request could not be sent or the response not read (connect, TLS, reset).
    #[error("{}", transport_message(.source))]
    Transport {
        /// What the HTTP client reported.
        #[source]
        source: reqwest::Error,
    },

    /// An attempt exceeded its timeout.
    #[error("the request to the IoT Hub did not complete within {after:?}")]
    Timeout {
        /// The timeout that was exceeded.
        after: Duration,
    },

    /// The credential could not produce a token (e.g. Azure AD failure, expired fixed SAS), or
    /// a connection string, host name or key given to the credential was not usable.
    #[error("the IoT Hub credential could not be used")]
    Auth(#[source] iothub_auth::Error),

    /// A success response whose body does not decode.
    #[error("{}", decode_message(*.status))]
    Decode {
        /// The HTTP status of the response, or 0 when it is not known (the generated client
        /// does not report it with a payload it could not decode).
        status: u16,
        /// The body, as text (invalid UTF-8 replaced by U+FFFD).
        body: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },

    /// A cloud-to-device send (or a feedback or file-notification receiver) failed over AMQP:
    /// the hub refused the message (unknown device, full queue, throttled, unauthorized) or
    /// the connection failed. [`iothub_amqp::Error::is_ambiguous`] tells whether the message may
    /// have been queued anyway.
    #[error(transparent)]
    C2d(iothub_amqp::Error),

    /// Building the RegistryManager failed (bad endpoint, api-version, proxy...), or the
    /// request hook could not prepare a request (the generated client reports that failure
    /// only as text; it is nearly always the credential failing to sign).
    #[error("invalid configuration: {reason}")]
    Configuration {
        /// What could not be configured.
        reason: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

fn c2d_retry_class(error: &iothub_amqp::Error) -> RetryClass {
    use iothub_amqp::Error as Amqp;
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

fn transport_message(error: &reqwest::Error) -> &'static str {
    if error.is_connect() {
        "could not connect to the IoT Hub"
    } else if error.is_timeout() {
        "the HTTP request to the IoT Hub timed out"
    } else if error.is_body() || error.is_decode() {
        "the response of the IoT Hub could not be read"
    } else if error.is_builder() {
        "the HTTP request could not be built"
    } else {
        "the HTTP request to the IoT Hub failed"
    }
}

fn decode_message(status: u16) -> String {
    if status == 0 {
        "the body of the IoT Hub's response does not have the expected shape".to_owned()
    } else {
        format!("the body of the IoT Hub's {status} response does not have the expected shape")
    }
}

/// As [`RegistryManager::send_c2d`](crate::RegistryManager::send_c2d) maps them, so `?` on a
/// [`Message`](crate::c2d::Message) builder's result gives the same variants.
impl From<iothub_amqp::Error> for Error {
    fn from(error: iothub_amqp::Error) -> Self {
        Error::from_amqp(error)
    }
}

impl From<iothub_auth::Error> for Error {
    fn from(error: iothub_auth::Error) -> Self {
        Error::Auth(error)
    }
}

impl Error {
    /// The HTTP status of the response this error came from, if there was one.
    ///
    /// `None` for failures without a response (transport, timeout, arguments, credentials,
    /// configuration) and for a [`Decode`](Self::Decode) error whose status is not known.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Service(service) => Some(service.status()),
            Error::Decode { status, .. } if *status != 0 => Some(*status),
            Error::Transport { source } => source.status().map(|status| status.as_u16()),
            _ => None,
        }
    }

    /// The parsed hub error, for [`Error::Service`].
    pub fn service(&self) -> Option<&ServiceError> {
        match self {
            Error::Service(service) => Some(service),
            _ => None,
        }
    }

    /// The AMQP error, for [`Error::C2d`].
    pub fn c2d(&self) -> Option<&iothub_amqp::Error> {
        match self {
            Error::C2d(error) => Some(error),
            _ => None,
        }
    }

    /// The IoT Hub error code (`DeviceNotFound`, `ThrottlingException`, …), when the hub sent one.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.service().and_then(ServiceError::code)
    }

    /// The hub answered 404.
    ///
    /// Beware that a direct method to a device that is not connected (or has no handler) also
    /// answers 404, with code `DeviceNotOnline` (404103): the device exists. Check
    /// [`code`](Self::code) when the difference matters.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
            || matches!(self, Error::C2d(iothub_amqp::Error::DeviceNotFound(_)))
    }

    /// The `If-Match` etag did not match the current one: status 412, or code
    /// `PreconditionFailed` (412001) or `EtagDoesNotMatch` (400023) with any status.
    pub fn is_precondition_failed(&self) -> bool {
        self.status() == Some(412)
            || self.code().is_some_and(|code| {
                matches!(
                    code,
                    ErrorCode::PreconditionFailed | ErrorCode::EtagDoesNotMatch
                )
            })
    }

    /// The hub answered 409, for example `DeviceAlreadyExists` when creating an existing device.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// The hub throttled the request: status 429, or one of the throttling codes 429000 to
    /// 429005 with any status; or a cloud-to-device message refused as throttled.
    pub fn is_throttled(&self) -> bool {
        self.service().is_some_and(ServiceError::is_throttled)
            || matches!(self, Error::C2d(iothub_amqp::Error::Throttled(_)))
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
    /// - [`Error::C2d`] when [`iothub_amqp::Error::is_transient`] says so.
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
            Error::Service(service) => service.is_transient(),
            Error::Transport { source } => !source.is_builder() && !source.is_redirect(),
            Error::Timeout { .. } => true,
            Error::C2d(error) => error.is_transient(),
            _ => false,
        }
    }

    /// How this failure may be retried, judged by what it says about the operation.
    ///
    /// - [`RetryClass::NotPerformed`] (with the `Retry-After` delay, if the hub sent one): a
    ///   status 408, 429 or 503; a throttling code (429000 to 429005),
    ///   `GenericServiceUnavailable` (503000), `ServiceUnavailable` (503001) or `ServerBusy`
    ///   (503005) with any status; a transport error while connecting (nothing was sent).
    /// - [`RetryClass::MaybePerformed`]: any other 5xx status except 501 and 505 (both say the
    ///   request can never work); the codes `ServerError` (500001) and `GenericTimeout`
    ///   (500008); any other transport error (the request may have been sent); a timeout.
    /// - [`RetryClass::Permanent`]: everything else: other statuses (4xx other than 408 and
    ///   429), decode errors, invalid arguments, credential and configuration errors, and
    ///   transport errors that could not build the request or hit a redirect loop.
    ///
    /// For [`Error::C2d`]: `NotPerformed` when the message provably did not reach the hub's
    /// queue and may be accepted later (could not connect, connection found dead or timeout
    /// before the message left, throttled, released); `MaybePerformed` when the connection was
    /// lost or the time ran out after the message left; `Permanent` otherwise, a full device
    /// queue included (it drains only as fast as the device receives).
    pub fn retry_class(&self) -> RetryClass {
        match self {
            Error::C2d(error) => c2d_retry_class(error),
            Error::Service(service) => service.retry_class(),
            Error::Transport { source } if source.is_connect() => {
                RetryClass::NotPerformed { retry_after: None }
            }
            Error::Transport { source } if source.is_builder() || source.is_redirect() => {
                RetryClass::Permanent
            }
            Error::Transport { .. } | Error::Timeout { .. } => RetryClass::MaybePerformed,
            _ => RetryClass::Permanent,
        }
    }

    /// Maps an `iothub-amqp` error: argument, credential and configuration failures keep
    /// this crate's variants, so callers test for them one way whatever the transport.
    pub(crate) fn from_amqp(error: iothub_amqp::Error) -> Self {
        match error {
            iothub_amqp::Error::InvalidArgument { argument, reason } => {
                Error::InvalidArgument { argument, reason }
            }
            iothub_amqp::Error::BodyTooLarge { .. } => Error::InvalidArgument {
                argument: "message",
                reason: error.to_string(),
            },
            iothub_amqp::Error::Auth(error) => Error::Auth(error),
            iothub_amqp::Error::Configuration { reason } => Error::Configuration {
                reason,
                source: None,
            },
            error => Error::C2d(error),
        }
    }

    /// A [`Error::Configuration`] with its cause.
    pub(crate) fn configuration(
        reason: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Configuration {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// Maps what a generated operation returned. Async because an unexpected response's body
    /// still has to be read.
    ///
    /// | progenitor | registry |
    /// |---|---|
    /// | `UnexpectedResponse` | `Service`, from status, headers and body (a body that cannot be read counts as empty) |
    /// | `ErrorResponse` | `Service`, from status, headers and the typed body serialized back to JSON |
    /// | `CommunicationError`, `ResponseBodyError`, `InvalidUpgrade` | `Transport` |
    /// | `InvalidResponsePayload` | `Decode` with status 0 (progenitor does not keep it) |
    /// | `InvalidRequest` | `InvalidArgument { argument: "request" }` |
    /// | `Custom` (the request hook failed, nearly always signing) | `Configuration` without source |
    pub(crate) async fn from_rest<E: serde::Serialize>(error: progenitor_client::Error<E>) -> Self {
        use progenitor_client::Error as Rest;
        match error {
            Rest::UnexpectedResponse(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.bytes().await.unwrap_or_else(|error| {
                    tracing::debug!(%error, status, "could not read the body of an error response");
                    Default::default()
                });
                Error::Service(ServiceError::from_response(status, &headers, &body))
            }
            Rest::ErrorResponse(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                // `()` serializes as `null`, which is no body at all.
                let body = match serde_json::to_vec(&response.into_inner()) {
                    Ok(body) if body != b"null" => body,
                    _ => Vec::new(),
                };
                Error::Service(ServiceError::from_response(status, &headers, &body))
            }
            Rest::CommunicationError(source)
            | Rest::ResponseBodyError(source)
            | Rest::InvalidUpgrade(source) => Error::Transport { source },
            Rest::InvalidResponsePayload(body, source) => Error::Decode {
                status: 0,
                body: String::from_utf8_lossy(&body).into_owned(),
                source,
            },
            Rest::InvalidRequest(reason) => Error::InvalidArgument {
                argument: "request",
                reason,
            },
            Rest::Custom(reason) => Error::Configuration {
                reason: format!("the request could not be prepared: {reason}"),
                source: None,
            },
        }
    }
}

/// An error response of the IoT Hub, parsed; nothing the service sent is lost.
///
/// # Parse order
///
/// 1. The `iothub-errorcode` header, which carries the symbolic name (`DeviceNotFound`).
/// 2. The JSON body. Field names are matched case-insensitively (`Message` or `message`), and
///    every layout a peer SDK accepts is read:
///    - `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:<id>"}`: the
///      name is the text between `ErrorCode:` and the first `;` (it may also be a 6-digit
///      number), the message is the rest;
///    - `Message` holding JSON in a string, `{"errorCode":404103,"trackingId":"…","message":"…"}`,
///      with `ExceptionMessage` empty; or the same object directly as `Message`; or directly
///      as the body; `errorCode` may be a number or a string (a 6-digit number or a name);
///    - a whole `{"Message":…,"ExceptionMessage":…}` body embedded in the text of another:
///      the outer name and tracking id win, the innermost message is the message.
/// 3. Otherwise: no code; the message is the body when it is plain text (cut after 512
///    characters), else the HTTP reason phrase (for an HTML page, unknown JSON or no body).
///
/// The status and the raw body (invalid UTF-8 replaced by U+FFFD) are always kept.
///
/// # Name and number
///
/// A name gives its 6-digit number and a number its name through a table of the established
/// codes (those of the IoT Hub documentation that the peer SDKs agree on, plus the
/// documentation's `Generic*` codes). When the header (or the legacy `ErrorCode:` text) gives
/// a name and the body a number, the name wins, and the number is kept only if the table does
/// not say it belongs to another name (the C# v1 SDK's rule). Unknown names are kept as
/// [`ErrorCode::Other`].
///
/// # Tracking id
///
/// Kept whole, as the C# SDK does: `d13bed747f5645ad88344794baaa1fa7-G:5-TimeStamp:06/16/2020
/// 22:34:56`. The leading hex digits identify the request; the rest says where and when, which
/// support may ask for too.
///
/// ```
/// use iothub_registry::ServiceError;
/// use iothub_rest_gen::types::ErrorCode;
/// use reqwest::header::HeaderMap;
///
/// let body = br#"{"Message":"ErrorCode:DeviceNotFound;sensor-1","ExceptionMessage":"Tracking ID:d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56"}"#;
/// let error = ServiceError::from_response(404, &HeaderMap::new(), body);
/// assert_eq!(error.code(), Some(&ErrorCode::DeviceNotFound));
/// assert_eq!(error.code_number(), Some(404001));
/// assert_eq!(error.message(), "sensor-1");
/// assert_eq!(
///     error.tracking_id(),
///     Some("d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56")
/// );
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceError(Box<Fields>);

/// Boxed so that [`Error`], and every `Result` of the crate, stays small.
#[derive(Clone, PartialEq, Eq)]
struct Fields {
    status: u16,
    code: Option<ErrorCode>,
    code_number: Option<u32>,
    message: String,
    tracking_id: Option<String>,
    raw_body: String,
    retry_after: Option<Duration>,
}

impl ServiceError {
    /// Parses a response the hub sent with a non-success status. Never fails: whatever cannot
    /// be read is left out, and the status and raw body are always kept.
    ///
    /// `Retry-After`, in seconds or as an HTTP date, is read from `headers`; no other header
    /// but `iothub-errorcode` is looked at.
    pub fn from_response(status: u16, headers: &HeaderMap, body: &[u8]) -> Self {
        Self::parse(status, headers, body, SystemTime::now())
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.0.status
    }

    /// The IoT Hub error code by name (`DeviceNotFound`), if the hub gave one.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.0.code.as_ref()
    }

    /// The 6-digit IoT Hub error code (404001), if the hub sent it or the name is in the table.
    pub fn code_number(&self) -> Option<u32> {
        self.0.code_number
    }

    /// The tracking id to quote to Azure support, whole (see [the type's docs](Self)).
    pub fn tracking_id(&self) -> Option<&str> {
        self.0.tracking_id.as_deref()
    }

    /// The human-readable message: the hub's; else a plain-text body (a proxy's); else the HTTP
    /// reason phrase.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The body exactly as received (invalid UTF-8 replaced by U+FFFD).
    pub fn raw_body(&self) -> &str {
        &self.0.raw_body
    }

    /// The delay the hub asked for in `Retry-After`, if any; zero for a date in the past.
    pub fn retry_after(&self) -> Option<Duration> {
        self.0.retry_after
    }

    fn parse(status: u16, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Self {
        let header = header_str(headers, ERROR_CODE_HEADER).and_then(CodeToken::parse);
        let fields = read_body(body);
        let (code, code_number) = reconcile(header, &fields);
        let message = fields
            .message
            .unwrap_or_else(|| fallback_message(status, body));
        ServiceError(Box::new(Fields {
            status,
            code,
            code_number,
            message,
            tracking_id: fields.tracking_id,
            raw_body: String::from_utf8_lossy(body).into_owned(),
            retry_after: header_str(headers, "retry-after").and_then(|v| parse_retry_after(v, now)),
        }))
    }

    fn has_code(&self, codes: &[ErrorCode]) -> bool {
        self.code().is_some_and(|code| codes.contains(code))
    }

    fn is_throttled(&self) -> bool {
        self.status() == 429 || self.has_code(THROTTLING_CODES)
    }

    fn is_transient(&self) -> bool {
        if self.is_throttled() || self.has_code(TRANSIENT_CODES) {
            return true;
        }
        if self.has_code(NEVER_TRANSIENT_CODES) {
            return false;
        }
        matches!(self.status(), 408 | 429 | 500 | 502 | 503 | 504)
    }

    fn retry_class(&self) -> RetryClass {
        let status = self.status();
        if matches!(status, 408 | 429 | 503)
            || self.has_code(THROTTLING_CODES)
            || self.has_code(NOT_PERFORMED_CODES)
        {
            RetryClass::NotPerformed {
                retry_after: self.retry_after(),
            }
        } else if ((500..600).contains(&status) && !matches!(status, 501 | 505))
            || self.has_code(MAYBE_PERFORMED_CODES)
        {
            RetryClass::MaybePerformed
        } else {
            RetryClass::Permanent
        }
    }
}

impl fmt::Debug for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Fields {
            status,
            code,
            code_number,
            message,
            tracking_id,
            raw_body,
            retry_after,
        } = &*self.0;
        f.debug_struct("ServiceError")
            .field("status", status)
            .field("code", code)
            .field("code_number", code_number)
            .field("message", message)
            .field("tracking_id", tracking_id)
            .field("retry_after", retry_after)
            .field("raw_body", raw_body)
            .finish()
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status();
        let message = self.message();
        let reason = reason_phrase(status);
        write!(f, "the IoT Hub answered {status}")?;
        if let Some(reason) = reason {
            write!(f, " {reason}")?;
        }
        match (self.code(), self.code_number()) {
            (Some(code), Some(number)) => write!(f, ", error {code} ({number})")?,
            (Some(code), None) => write!(f, ", error {code}")?,
            (None, Some(number)) => write!(f, ", error {number}")?,
            (None, None) => {}
        }
        // "409 Conflict: Conflict" and "PreconditionFailed: PreconditionFailed" say nothing new.
        let repeats =
            reason == Some(message) || self.code().is_some_and(|code| code.as_str() == message);
        if !repeats {
            write!(f, ": {message}")?;
        }
        if let Some(id) = self.tracking_id() {
            write!(f, " (tracking ID {id})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// How deep `Message` fields nested in one another are followed; real bodies nest twice.
const MAX_DEPTH: u8 = 4;

/// Longest plain-text body used as the message; longer ones are cut (the raw body stays whole).
const MAX_TEXT_MESSAGE: usize = 512;

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

/// Name and number of the established codes: `reference/error-codes.md` §1.1, plus the
/// documentation's `Generic*` codes. Left out: 400020 (IotHubSuspended in the C# v2 SDK,
/// InvalidStorageEndpointOrBlob in the documentation: one source each), 408000 RequestTimeout
/// (invented by the C# v2 SDK, never sent by the service) and 0 (the SDKs' "unknown"). 403001
/// is IotHubSuspended (C# v1 and the documentation) rather than JobQuotaExceeded (C# v2 alone);
/// JobQuotaExceeded is 403003.
const CODE_NUMBERS: &[(u32, ErrorCode)] = &[
    (400000, ErrorCode::GenericBadRequest),
    (400001, ErrorCode::InvalidProtocolVersion),
    (400002, ErrorCode::DeviceInvalidResultCount),
    (400003, ErrorCode::InvalidOperation),
    (400004, ErrorCode::ArgumentInvalid),
    (400005, ErrorCode::ArgumentNull),
    (400006, ErrorCode::IotHubFormatError),
    (400011, ErrorCode::DeviceDefinedMultipleTimes),
    (400012, ErrorCode::DeserializationError),
    (400013, ErrorCode::BulkRegistryOperationFailure),
    (400023, ErrorCode::EtagDoesNotMatch),
    (401000, ErrorCode::GenericUnauthorized),
    (401001, ErrorCode::IotHubNotFound),
    (401002, ErrorCode::IotHubUnauthorizedAccess),
    (401003, ErrorCode::IotHubUnauthorized),
    (403000, ErrorCode::GenericForbidden),
    (403001, ErrorCode::IotHubSuspended),
    (403002, ErrorCode::IotHubQuotaExceeded),
    (403003, ErrorCode::JobQuotaExceeded),
    (403004, ErrorCode::DeviceMaximumQueueDepthExceeded),
    (403005, ErrorCode::IotHubMaxCbsTokenExceeded),
    (403010, ErrorCode::OperationNotAvailableInCurrentTier),
    (404000, ErrorCode::GenericNotFound),
    (404001, ErrorCode::DeviceNotFound),
    (404002, ErrorCode::JobNotFound),
    (404010, ErrorCode::ModuleNotFound),
    (404103, ErrorCode::DeviceNotOnline),
    (404301, ErrorCode::ConfigurationNotFound),
    (405000, ErrorCode::GenericMethodNotAllowed),
    (409000, ErrorCode::GenericConflict),
    (409001, ErrorCode::DeviceAlreadyExists),
    (409103, ErrorCode::DeviceJobAlreadyExists),
    (409104, ErrorCode::JobAlreadyExists),
    (409301, ErrorCode::ModuleAlreadyExistsOnDevice),
    (409401, ErrorCode::ConfigurationAlreadyExists),
    (412000, ErrorCode::GenericPreconditionFailed),
    (412001, ErrorCode::PreconditionFailed),
    (412002, ErrorCode::DeviceMessageLockLost),
    (413000, ErrorCode::GenericRequestEntityTooLarge),
    (413001, ErrorCode::MessageTooLarge),
    (413002, ErrorCode::TooManyDevices),
    (413003, ErrorCode::TooManyModulesOnDevice),
    (413101, ErrorCode::ConfigurationCountLimitExceeded),
    (415000, ErrorCode::GenericUnsupportedMediaType),
    (429000, ErrorCode::GenericTooManyRequests),
    (429001, ErrorCode::ThrottlingException),
    (429002, ErrorCode::ThrottleBacklogLimitExceeded),
    (429003, ErrorCode::ThrottlingBacklogTimeout),
    (429004, ErrorCode::ThrottlingMaxActiveJobCountExceeded),
    (429005, ErrorCode::DeviceThrottlingLimitExceeded),
    (500001, ErrorCode::ServerError),
    (500002, ErrorCode::JobCancelled),
    (500008, ErrorCode::GenericTimeout),
    (500009, ErrorCode::InvalidThrottleParameter),
    (502000, ErrorCode::GenericBadGateway),
    (503000, ErrorCode::GenericServiceUnavailable),
    (503001, ErrorCode::ServiceUnavailable),
    (503003, ErrorCode::PartitionNotFound),
    (503005, ErrorCode::ServerBusy),
    (504000, ErrorCode::GenericGatewayTimeout),
    (504101, ErrorCode::GatewayTimeout),
];

fn number_of(code: &ErrorCode) -> Option<u32> {
    CODE_NUMBERS
        .iter()
        .find(|(_, known)| known == code)
        .map(|(number, _)| *number)
}

fn code_of(number: u32) -> Option<ErrorCode> {
    CODE_NUMBERS
        .iter()
        .find(|(known, _)| *known == number)
        .map(|(_, code)| code.clone())
}

/// A code as written in a header, a legacy `ErrorCode:` text or an `errorCode` field.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CodeToken {
    Name(String),
    Number(u32),
}

impl CodeToken {
    fn parse(token: &str) -> Option<Self> {
        let token = token.trim();
        if token.len() == 6 && token.bytes().all(|b| b.is_ascii_digit()) {
            return token.parse().ok().and_then(Self::number);
        }
        let is_name = !token.is_empty()
            && token.len() <= 128
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        is_name.then(|| CodeToken::Name(token.to_owned()))
    }

    /// Only 6-digit codes: 0 is the SDKs' "unknown", and the 3-digit HTTP statuses the Java
    /// SDK also accepts say nothing the status does not.
    fn number(number: u32) -> Option<Self> {
        (100_000..1_000_000)
            .contains(&number)
            .then_some(CodeToken::Number(number))
    }

    fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Number(number) => number
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .and_then(Self::number),
            Value::String(text) => Self::parse(text),
            _ => None,
        }
    }
}

/// The service's names are PascalCase; a differently cased known name still maps to its
/// variant rather than to `Other`.
fn code_from_name(name: &str) -> ErrorCode {
    match ErrorCode::KNOWN
        .iter()
        .find(|known| known.eq_ignore_ascii_case(name))
    {
        Some(known) => ErrorCode::from(*known),
        None => ErrorCode::from(name),
    }
}

/// What the body says, before it is reconciled with the header.
#[derive(Debug, Default)]
struct BodyFields {
    name: Option<String>,
    number: Option<u32>,
    message: Option<String>,
    tracking_id: Option<String>,
}

impl BodyFields {
    fn set_code(&mut self, token: Option<CodeToken>) {
        match token {
            Some(CodeToken::Name(name)) if self.name.is_none() => self.name = Some(name),
            Some(CodeToken::Number(number)) if self.number.is_none() => self.number = Some(number),
            _ => {}
        }
    }

    /// Fills what is still missing from a more deeply nested level.
    fn fill(&mut self, inner: BodyFields) {
        self.name = self.name.take().or(inner.name);
        self.number = self.number.or(inner.number);
        self.message = self.message.take().or(inner.message);
        self.tracking_id = self.tracking_id.take().or(inner.tracking_id);
    }
}

fn read_body(body: &[u8]) -> BodyFields {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => read_object(&object, 0),
        Ok(Value::String(text)) => read_message_text(&text, 0),
        _ => BodyFields::default(),
    }
}

fn read_object(object: &Map<String, Value>, depth: u8) -> BodyFields {
    let mut fields = BodyFields::default();
    if let Some(code) = field(object, "errorCode") {
        fields.set_code(CodeToken::from_json(code));
    }
    // The outer tracking id is read before descending, so it wins over a nested one.
    fields.tracking_id = field(object, "trackingId")
        .and_then(Value::as_str)
        .and_then(non_empty)
        .or_else(|| {
            field(object, "exceptionMessage")
                .and_then(Value::as_str)
                .and_then(tracking_id_from)
        });
    match field(object, "message") {
        Some(Value::Object(inner)) if depth < MAX_DEPTH => {
            fields.fill(read_object(inner, depth + 1));
        }
        Some(Value::String(text)) => fields.fill(read_message_text(text, depth)),
        _ => {}
    }
    fields
}

/// A `Message` string: JSON (shape B), `ErrorCode:<code>;<text>` (shape A) or plain text.
fn read_message_text(text: &str, depth: u8) -> BodyFields {
    let text = text.trim();
    if text.starts_with('{')
        && depth < MAX_DEPTH
        && let Ok(Value::Object(inner)) = serde_json::from_str::<Value>(text)
    {
        return read_object(&inner, depth + 1);
    }
    let mut fields = BodyFields::default();
    let Some((code, rest)) = split_legacy(text) else {
        fields.message = non_empty(text);
        return fields;
    };
    fields.set_code(CodeToken::parse(code));
    // "ErrorCode:X;Error: BadRequest {<a whole error body>}": keep the outer code, and take
    // the innermost message, which is the one that explains.
    let nested = embedded_body(rest, depth);
    fields.message = nested
        .as_ref()
        .and_then(|inner| inner.message.clone())
        .or_else(|| non_empty(rest));
    if let Some(inner) = nested {
        fields.tracking_id = inner.tracking_id;
    }
    fields
}

/// Splits `ErrorCode:<code>;<text>` at the first `;` (the text may hold `;` and `:` itself).
fn split_legacy(text: &str) -> Option<(&str, &str)> {
    const PREFIX: &str = "errorcode:";
    let head = text.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &text[PREFIX.len()..];
    Some(match rest.split_once(';') {
        Some((code, text)) => (code.trim(), text.trim()),
        None => (rest.trim(), ""),
    })
}

/// A JSON error body starting at the first `{` of `text`, if there is one; text after the
/// object is ignored.
fn embedded_body(text: &str, depth: u8) -> Option<BodyFields> {
    if depth >= MAX_DEPTH {
        return None;
    }
    let start = text.find('{')?;
    let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    match values.next() {
        Some(Ok(Value::Object(inner))) => Some(read_object(&inner, depth + 1)),
        _ => None,
    }
}

/// `Tracking ID:<id>` from an `ExceptionMessage`, whole (see [`ServiceError`]).
fn tracking_id_from(exception_message: &str) -> Option<String> {
    const LABEL: &str = "tracking id:";
    let lower = exception_message.to_ascii_lowercase();
    let start = lower.find(LABEL)? + LABEL.len();
    let id = exception_message[start..]
        .lines()
        .next()
        .unwrap_or_default();
    non_empty(id)
}

/// The first field whose name matches, exactly or else ignoring ASCII case.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

fn non_empty(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?.trim();
    (!value.is_empty()).then_some(value)
}

/// Code and number from the header's token and the body's fields.
///
/// The name comes from the header, else the body; the number from the header (should it ever
/// carry one), else the body. A number the table assigns to another name, or a name the table
/// assigns to another number, is a contradiction: the name wins and the number is dropped
/// (the C# v1 SDK's rule), then recomputed from the name where the table knows it. The raw
/// body keeps what was dropped.
fn reconcile(header: Option<CodeToken>, body: &BodyFields) -> (Option<ErrorCode>, Option<u32>) {
    let (header_name, header_number) = match header {
        Some(CodeToken::Name(name)) => (Some(name), None),
        Some(CodeToken::Number(number)) => (None, Some(number)),
        None => (None, None),
    };
    let name = header_name
        .or_else(|| body.name.clone())
        .map(|name| code_from_name(&name));
    let number = header_number.or(body.number);
    match (name, number) {
        (Some(code), Some(number)) => {
            let contradicts = code_of(number).is_some_and(|known| known != code)
                || number_of(&code).is_some_and(|known| known != number);
            let number = if contradicts {
                number_of(&code)
            } else {
                Some(number)
            };
            (Some(code), number)
        }
        (Some(code), None) => {
            let number = number_of(&code);
            (Some(code), number)
        }
        (None, Some(number)) => (code_of(number), Some(number)),
        (None, None) => (None, None),
    }
}

fn reason_phrase(status: u16) -> Option<&'static str> {
    StatusCode::from_u16(status).ok()?.canonical_reason()
}

/// The message when the body has none: short plain text as is (a proxy's "upstream connect
/// error"), else the reason phrase (an HTML page or unknown JSON is in the raw body).
fn fallback_message(status: u16, body: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(body) {
        let text = text.trim();
        if !text.is_empty() && !text.starts_with(['<', '{', '[']) {
            return truncate(text, MAX_TEXT_MESSAGE);
        }
    }
    match reason_phrase(status) {
        Some(reason) => reason.to_owned(),
        None => format!("HTTP status {status}"),
    }
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};
    use std::time::UNIX_EPOCH;

    use progenitor_client::{Error as Rest, ResponseValue};
    use reqwest::header::{HeaderName, HeaderValue};
    use serde_json::json;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;

    fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn parse(status: u16, pairs: &[(&str, &str)], body: &[u8]) -> ServiceError {
        ServiceError::from_response(status, &header_map(pairs), body)
    }

    fn service(status: u16, code: Option<&str>) -> Error {
        let pairs: Vec<_> = code.map(|c| ("iothub-errorcode", c)).into_iter().collect();
        Error::Service(parse(status, &pairs, b""))
    }

    const SHAPE_A: &[u8] = br#"{"Message":"ErrorCode:DeviceNotFound;testDevice549600225","ExceptionMessage":"Tracking ID:d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56"}"#;

    // ---- fixtures -------------------------------------------------------------------------

    fn fixtures() -> Vec<PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/errors");
        let mut bodies: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                !matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("headers" | "md")
                )
            })
            .collect();
        bodies.sort();
        bodies
    }

    /// `HTTP/1.1 404 Not Found` then `Name: value` lines.
    fn read_head(path: &Path) -> (u16, HeaderMap) {
        let text = std::fs::read_to_string(path).unwrap();
        let mut lines = text.lines();
        let status_line = lines.next().unwrap();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let pairs: Vec<(&str, &str)> = lines
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim(), value.trim())
            })
            .collect();
        (status, header_map(&pairs))
    }

    fn summary(parsed: &ServiceError) -> Value {
        let error = Error::Service(parsed.clone());
        json!({
            "status": parsed.status(),
            "code": parsed.code().map(ErrorCode::as_str),
            "code_is_known": parsed.code().map(ErrorCode::is_known),
            "code_number": parsed.code_number(),
            "message": parsed.message(),
            "tracking_id": parsed.tracking_id(),
            "retry_after_secs": parsed.retry_after().map(|d| d.as_secs()),
            "display": error.to_string(),
            "is_not_found": error.is_not_found(),
            "is_precondition_failed": error.is_precondition_failed(),
            "is_conflict": error.is_conflict(),
            "is_throttled": error.is_throttled(),
            "is_transient": error.is_transient(),
            "retry_class": format!("{:?}", error.retry_class()),
        })
    }

    #[test]
    fn every_fixture_parses_as_snapshotted() {
        let bodies = fixtures();
        assert!(bodies.len() >= 20, "fixtures not found: {bodies:?}");
        for path in bodies {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let (status, headers) = read_head(&path.with_extension("headers"));
            let body = std::fs::read(&path).unwrap();
            let parsed = ServiceError::from_response(status, &headers, &body);
            assert_eq!(parsed.raw_body().as_bytes(), body, "{name}: raw body kept");
            insta::assert_json_snapshot!(format!("fixture__{name}"), summary(&parsed));
        }
    }

    // ---- body shapes and the header --------------------------------------------------------

    #[test]
    fn shape_a_gives_name_number_text_and_whole_tracking_id() {
        let parsed = parse(404, &[("iothub-errorcode", "DeviceNotFound")], SHAPE_A);
        assert_eq!(parsed.status(), 404);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(parsed.code_number(), Some(404001));
        assert_eq!(parsed.message(), "testDevice549600225");
        assert_eq!(
            parsed.tracking_id(),
            Some("d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56")
        );
        assert_eq!(parsed.raw_body().as_bytes(), SHAPE_A);
        assert_eq!(parsed.retry_after(), None);
    }

    #[test]
    fn shape_a_text_may_hold_colons_and_semicolons() {
        let body = json!({
            "Message": "ErrorCode:PreconditionFailed;Precondition failed: a;b:c",
            "ExceptionMessage": "Tracking ID:abc-G:10-TimeStamp:06/26/2017 20:56:33",
        });
        let parsed = parse(412, &[], body.to_string().as_bytes());
        assert_eq!(parsed.code(), Some(&ErrorCode::PreconditionFailed));
        assert_eq!(parsed.message(), "Precondition failed: a;b:c");
        assert_eq!(
            parsed.tracking_id(),
            Some("abc-G:10-TimeStamp:06/26/2017 20:56:33")
        );
    }

    #[test]
    fn shape_a_without_text_falls_back_to_the_reason_phrase() {
        let parsed = parse(409, &[], br#"{"Message":"ErrorCode:DeviceAlreadyExists"}"#);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceAlreadyExists));
        assert_eq!(parsed.message(), "Conflict");
        assert_eq!(parsed.tracking_id(), None);
    }

    #[test]
    fn shape_b_gives_number_then_name() {
        let inner = json!({
            "errorCode": 404103,
            "trackingId": "aa761f96-TimeStamp:03/14/2024 09:54:49",
            "message": "The operation failed because the device is not online.",
            "info": {"timeout": "00:00:00"},
            "timestampUtc": "2024-03-14T09:54:49.6536567Z",
        });
        let body = json!({"Message": inner.to_string(), "ExceptionMessage": ""});
        let parsed = parse(404, &[], body.to_string().as_bytes());
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotOnline));
        assert_eq!(parsed.code_number(), Some(404103));
        assert_eq!(
            parsed.message(),
            "The operation failed because the device is not online."
        );
        assert_eq!(
            parsed.tracking_id(),
            Some("aa761f96-TimeStamp:03/14/2024 09:54:49")
        );
    }

    #[test]
    fn message_object_numeric_string_and_top_level_shapes() {
        let object = br#"{"Message":{"errorCode":404010,"trackingId":"t1","message":"no module"}}"#;
        let parsed = parse(404, &[], object);
        assert_eq!(parsed.code(), Some(&ErrorCode::ModuleNotFound));
        assert_eq!(
            (parsed.message(), parsed.tracking_id()),
            ("no module", Some("t1"))
        );

        let string_code = br#"{"Message":"{\"errorCode\":\"429001\",\"message\":\"slow down\"}"}"#;
        let parsed = parse(429, &[], string_code);
        assert_eq!(parsed.code(), Some(&ErrorCode::ThrottlingException));
        assert_eq!(parsed.code_number(), Some(429001));

        let name_code = br#"{"errorCode":"DeviceNotFound","message":"gone"}"#;
        let parsed = parse(404, &[], name_code);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(parsed.code_number(), Some(404001));

        let top = br#"{"errorCode":401002,"trackingId":"t2","message":"Unauthorized"}"#;
        let parsed = parse(401, &[], top);
        assert_eq!(parsed.code(), Some(&ErrorCode::IotHubUnauthorizedAccess));
        assert_eq!(
            (parsed.message(), parsed.tracking_id()),
            ("Unauthorized", Some("t2"))
        );
    }

    #[test]
    fn nested_shape_a_keeps_the_outer_name_and_tracking_id_and_the_inner_message() {
        let inner = json!({
            "Message": "ErrorCode:ArgumentNull;the inner explanation",
            "ExceptionMessage": "Tracking ID:inner",
        });
        let body = json!({
            "Message": format!("ErrorCode:ArgumentInvalid;Error: BadRequest {inner}"),
            "ExceptionMessage": "Tracking ID:outer-G:10-TimeStamp:06/26/2017 20:56:33",
        });
        let parsed = parse(400, &[], body.to_string().as_bytes());
        assert_eq!(parsed.code(), Some(&ErrorCode::ArgumentInvalid));
        assert_eq!(parsed.code_number(), Some(400004));
        assert_eq!(parsed.message(), "the inner explanation");
        assert_eq!(
            parsed.tracking_id(),
            Some("outer-G:10-TimeStamp:06/26/2017 20:56:33")
        );

        // Without an outer tracking id, the inner one is better than none.
        let body = json!({
            "Message": format!("ErrorCode:ArgumentInvalid;Error: BadRequest {inner} trailing"),
        });
        let parsed = parse(400, &[], body.to_string().as_bytes());
        assert_eq!(parsed.tracking_id(), Some("inner"));
    }

    #[test]
    fn field_names_are_case_insensitive_and_exact_names_win() {
        let body =
            br#"{"message":"ErrorCode:DeviceNotFound;d1","exceptionmessage":"tracking id:t3"}"#;
        let parsed = parse(404, &[], body);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!((parsed.message(), parsed.tracking_id()), ("d1", Some("t3")));

        // Both spellings at once never happens; the camelCase one is looked up first.
        let both = br#"{"Message":"ErrorCode:DeviceNotFound;upper","message":"lower"}"#;
        assert_eq!(parse(404, &[], both).message(), "lower");
    }

    #[test]
    fn plain_message_strings_and_json_string_bodies_are_read() {
        let parsed = parse(400, &[], br#"{"Message":"Something went wrong"}"#);
        assert_eq!(
            (parsed.code(), parsed.message()),
            (None, "Something went wrong")
        );

        let parsed = parse(404, &[], br#""ErrorCode:DeviceNotFound;d1""#);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(parsed.message(), "d1");
    }

    #[test]
    fn header_only_gives_code_number_and_reason() {
        let parsed = parse(
            401,
            &[("iothub-errorcode", "IotHubUnauthorizedAccess")],
            b"",
        );
        assert_eq!(parsed.code(), Some(&ErrorCode::IotHubUnauthorizedAccess));
        assert_eq!(parsed.code_number(), Some(401002));
        assert_eq!(parsed.message(), "Unauthorized");
        assert_eq!((parsed.tracking_id(), parsed.raw_body()), (None, ""));
        assert_eq!(
            Error::Service(parsed).to_string(),
            "the IoT Hub answered 401 Unauthorized, error IotHubUnauthorizedAccess (401002)"
        );
    }

    #[test]
    fn header_and_body_agreeing_keep_the_body_number() {
        // CS1's ExceptionHandlingHelperTests pairs exactly these.
        let parsed = parse(
            404,
            &[("iothub-errorcode", "DeviceNotFound")],
            br#"{"Message":"{\"errorCode\":404001}"}"#,
        );
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(parsed.code_number(), Some(404001));
    }

    #[test]
    fn header_wins_over_a_disagreeing_body() {
        let shape_b = br#"{"Message":"{\"errorCode\":404103,\"message\":\"offline\"}","ExceptionMessage":""}"#;
        let parsed = parse(404, &[("iothub-errorcode", "DeviceNotFound")], shape_b);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(
            parsed.code_number(),
            Some(404001),
            "the table's number, not the body's"
        );
        assert_eq!(parsed.message(), "offline");

        let shape_a = br#"{"Message":"ErrorCode:ModuleNotFound;m1"}"#;
        let parsed = parse(404, &[("iothub-errorcode", "DeviceNotFound")], shape_a);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(parsed.code_number(), Some(404001));
        assert_eq!(parsed.message(), "m1");
    }

    #[test]
    fn unknown_names_become_other_and_unknown_numbers_are_kept_unless_contradicted() {
        let parsed = parse(418, &[("iothub-errorcode", "BrandNewThing")], b"");
        assert_eq!(
            parsed.code(),
            Some(&ErrorCode::Other("BrandNewThing".into()))
        );
        assert_eq!(parsed.code_number(), None);

        // Neither side is in the table: nothing contradicts, both are kept.
        let parsed = parse(
            418,
            &[("iothub-errorcode", "BrandNewThing")],
            br#"{"errorCode":418123}"#,
        );
        assert_eq!(
            parsed.code(),
            Some(&ErrorCode::Other("BrandNewThing".into()))
        );
        assert_eq!(parsed.code_number(), Some(418123));

        // 404001 belongs to DeviceNotFound: dropped.
        let parsed = parse(
            404,
            &[("iothub-errorcode", "BrandNewThing")],
            br#"{"errorCode":404001}"#,
        );
        assert_eq!(parsed.code_number(), None);

        // A number alone that the table does not know: no name.
        let parsed = parse(404, &[], br#"{"errorCode":404999}"#);
        assert_eq!((parsed.code(), parsed.code_number()), (None, Some(404999)));

        // Known names are matched whatever their case; odd header values are ignored.
        let parsed = parse(404, &[("iothub-errorcode", "devicenotfound")], b"");
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        let parsed = parse(404, &[("iothub-errorcode", "Device Not Found")], SHAPE_A);
        assert_eq!(
            parsed.code(),
            Some(&ErrorCode::DeviceNotFound),
            "from the body"
        );
        let parsed = parse(404, &[("iothub-errorcode", "404001")], b"");
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
    }

    #[test]
    fn codes_that_are_not_six_digits_are_ignored() {
        for code in ["0", "404", "4040010", "-404001", "404001.5"] {
            let body = format!(r#"{{"errorCode":{code}}}"#);
            let parsed = parse(404, &[], body.as_bytes());
            assert_eq!(
                (parsed.code(), parsed.code_number()),
                (None, None),
                "{code}"
            );
        }
    }

    #[test]
    fn empty_body_without_header_keeps_the_status() {
        let parsed = parse(503, &[], b"");
        assert_eq!(parsed.status(), 503);
        assert_eq!((parsed.code(), parsed.code_number()), (None, None));
        assert_eq!(parsed.message(), "Service Unavailable");
        assert_eq!(parse(599, &[], b"").message(), "HTTP status 599");
    }

    #[test]
    fn non_json_bodies_keep_the_raw_body() {
        let html = b"<html><body><h1>502 Bad Gateway</h1></body></html>";
        let parsed = parse(502, &[], html);
        assert_eq!(parsed.message(), "Bad Gateway");
        assert_eq!(parsed.raw_body().as_bytes(), html);

        let parsed = parse(503, &[], b"  upstream connect error\n");
        assert_eq!(parsed.message(), "upstream connect error");

        let long = "x".repeat(600);
        let message = parse(500, &[], long.as_bytes()).message().to_owned();
        assert_eq!(message.chars().count(), MAX_TEXT_MESSAGE + 1);
        assert!(message.ends_with('…'));

        let unknown_json = br#"{"error":{"code":"Nope","message":"not an IoT Hub body"}}"#;
        let parsed = parse(400, &[], unknown_json);
        assert_eq!((parsed.code(), parsed.message()), (None, "Bad Request"));
    }

    #[test]
    fn non_utf8_bodies_are_kept_lossily() {
        let parsed = parse(500, &[], b"\xff\xfe oops \xc3");
        assert_eq!(parsed.raw_body(), "\u{fffd}\u{fffd} oops \u{fffd}");
        assert_eq!(parsed.message(), "Internal Server Error");
        assert_eq!(parsed.code(), None);
    }

    #[test]
    fn deep_nesting_stops_without_failing() {
        // Each level escapes the one inside, doubling its size: keep the count small.
        let mut body = json!({"Message": "ErrorCode:DeviceNotFound;deepest"});
        for _ in 0..10 {
            body = json!({ "Message": body.to_string() });
        }
        let parsed = parse(404, &[], body.to_string().as_bytes());
        assert_eq!(parsed.status(), 404);
        assert_eq!(parsed.code(), None, "too deep to be a real body");
    }

    #[test]
    fn tracking_id_is_read_only_after_its_label() {
        let body = br#"{"Message":"ErrorCode:ServerError;x","ExceptionMessage":"something else"}"#;
        assert_eq!(parse(500, &[], body).tracking_id(), None);
        let body = br#"{"Message":"ErrorCode:ServerError;x","ExceptionMessage":"Tracking ID:"}"#;
        assert_eq!(parse(500, &[], body).tracking_id(), None);
    }

    // ---- Retry-After -----------------------------------------------------------------------

    #[test]
    fn retry_after_in_seconds_or_as_an_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT is 784111777 s after the epoch.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        let retry_after = |value: &str| {
            ServiceError::parse(429, &header_map(&[("Retry-After", value)]), b"", now).retry_after()
        };
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:48:37 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        assert_eq!(retry_after("-5"), Some(Duration::ZERO));
        for bad in ["soon", "1.5", "Sun, 06 Nov 1994"] {
            assert_eq!(retry_after(bad), None, "{bad}");
        }
        assert_eq!(
            ServiceError::from_response(429, &HeaderMap::new(), b"").retry_after(),
            None
        );
    }

    // ---- predicates and retry classes ------------------------------------------------------

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

    fn decode_error() -> serde_json::Error {
        serde_json::from_str::<u32>("\"x\"").unwrap_err()
    }

    #[test]
    fn errors_without_a_response() {
        let timeout = Error::Timeout {
            after: Duration::from_secs(60),
        };
        assert_eq!(timeout.retry_class(), RetryClass::MaybePerformed);
        assert!(timeout.is_transient());
        assert_eq!(timeout.status(), None);
        assert_eq!(
            timeout.to_string(),
            "the request to the IoT Hub did not complete within 60s"
        );

        let auth: Error = ""
            .parse::<iothub_auth::ConnectionString>()
            .unwrap_err()
            .into();
        assert!(matches!(auth, Error::Auth(_)));
        assert_eq!(auth.retry_class(), RetryClass::Permanent);
        assert!(!auth.is_transient());
        assert!(std::error::Error::source(&auth).is_some());

        let invalid = Error::InvalidArgument {
            argument: "device_id",
            reason: "is empty".into(),
        };
        assert_eq!(invalid.retry_class(), RetryClass::Permanent);
        assert_eq!(
            invalid.to_string(),
            "invalid argument `device_id`: is empty"
        );

        let decode = Error::Decode {
            status: 200,
            body: "[]".into(),
            source: decode_error(),
        };
        assert_eq!(decode.retry_class(), RetryClass::Permanent);
        assert_eq!(decode.status(), Some(200));
        assert_eq!(
            decode.to_string(),
            "the body of the IoT Hub's 200 response does not have the expected shape"
        );

        let configuration = Error::configuration("invalid proxy URL", "no scheme");
        assert_eq!(configuration.retry_class(), RetryClass::Permanent);
        assert_eq!(
            configuration.to_string(),
            "invalid configuration: invalid proxy URL"
        );
        let source = std::error::Error::source(&configuration).unwrap();
        assert_eq!(source.to_string(), "no scheme");

        for error in [&timeout, &auth, &invalid, &decode, &configuration] {
            assert!(error.service().is_none() && error.code().is_none());
            assert!(!error.is_not_found() && !error.is_throttled() && !error.is_conflict());
        }
    }

    /// A port nothing listens on.
    fn closed_port() -> u16 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn transport_errors_by_what_was_sent() {
        let refused = reqwest::get(format!("http://127.0.0.1:{}/", closed_port()))
            .await
            .unwrap_err();
        assert!(refused.is_connect());
        let refused = Error::Transport { source: refused };
        assert_eq!(
            refused.retry_class(),
            RetryClass::NotPerformed { retry_after: None }
        );
        assert!(refused.is_transient());
        assert_eq!(refused.to_string(), "could not connect to the IoT Hub");

        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
            .mount(&server)
            .await;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(100))
            .build()
            .unwrap();
        let sent = client.get(server.uri()).send().await.unwrap_err();
        assert!(!sent.is_connect() && sent.is_timeout());
        let sent = Error::Transport { source: sent };
        assert_eq!(sent.retry_class(), RetryClass::MaybePerformed);
        assert!(sent.is_transient());

        let unbuildable = reqwest::Client::new()
            .get("not a url")
            .send()
            .await
            .unwrap_err();
        assert!(unbuildable.is_builder());
        let unbuildable = Error::Transport {
            source: unbuildable,
        };
        assert_eq!(unbuildable.retry_class(), RetryClass::Permanent);
        assert!(!unbuildable.is_transient());
    }

    // ---- from_rest -------------------------------------------------------------------------

    #[tokio::test]
    async fn from_rest_reads_an_unexpected_response_and_never_the_authorization() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(404)
                    .insert_header("iothub-errorcode", "DeviceNotFound")
                    .set_body_raw(SHAPE_A, "application/json; charset=utf-8"),
            )
            .mount(&server)
            .await;
        let secret = "SharedAccessSignature sr=hub&sig=SECRET&se=1&skn=owner";
        let response = reqwest::Client::new()
            .get(format!("{}/devices/missing", server.uri()))
            .header("authorization", secret)
            .send()
            .await
            .unwrap();
        let error = Error::from_rest::<()>(Rest::UnexpectedResponse(response)).await;
        let parsed = error.service().unwrap();
        assert_eq!(parsed.status(), 404);
        assert_eq!(parsed.code(), Some(&ErrorCode::DeviceNotFound));
        assert_eq!(parsed.raw_body().as_bytes(), SHAPE_A);
        assert!(error.is_not_found());
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert_eq!(
            error.to_string(),
            "the IoT Hub answered 404 Not Found, error DeviceNotFound (404001): \
             testDevice549600225 (tracking ID d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56)"
        );
    }

    #[tokio::test]
    async fn from_rest_keeps_what_is_known_when_the_body_cannot_be_read() {
        // Announces 100 bytes, sends 7, hangs up.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).unwrap();
            stream
                .write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\n\
                      iothub-errorcode: ServerError\r\n\
                      content-length: 100\r\n\r\npartial",
                )
                .unwrap();
        });
        let response = reqwest::get(format!("http://{address}/")).await.unwrap();
        server.join().unwrap();
        let error = Error::from_rest::<()>(Rest::UnexpectedResponse(response)).await;
        let parsed = error.service().unwrap();
        assert_eq!((parsed.status(), parsed.raw_body()), (500, ""));
        assert_eq!(parsed.code(), Some(&ErrorCode::ServerError));
        assert_eq!(error.retry_class(), RetryClass::MaybePerformed);
    }

    #[tokio::test]
    async fn from_rest_maps_every_other_variant() {
        let headers = header_map(&[("iothub-errorcode", "BulkRegistryOperationFailure")]);
        let typed = json!({"isSuccessful": false, "errors": [], "warnings": []});
        let response = ResponseValue::new(typed.clone(), StatusCode::BAD_REQUEST, headers);
        let error = Error::from_rest(Rest::ErrorResponse(response)).await;
        let parsed = error.service().unwrap();
        assert_eq!(parsed.status(), 400);
        assert_eq!(
            parsed.code(),
            Some(&ErrorCode::BulkRegistryOperationFailure)
        );
        assert_eq!(parsed.raw_body(), typed.to_string());

        let unit = ResponseValue::new((), StatusCode::SERVICE_UNAVAILABLE, HeaderMap::new());
        let error = Error::from_rest(Rest::ErrorResponse(unit)).await;
        assert_eq!(error.service().unwrap().raw_body(), "");
        assert_eq!(error.service().unwrap().message(), "Service Unavailable");

        let refused = reqwest::get(format!("http://127.0.0.1:{}/", closed_port()))
            .await
            .unwrap_err();
        let error = Error::from_rest::<()>(Rest::CommunicationError(refused)).await;
        assert!(matches!(error, Error::Transport { .. }));

        let payload = Rest::<()>::InvalidResponsePayload(b"\"x\"".to_vec().into(), decode_error());
        let error = Error::from_rest(payload).await;
        assert!(matches!(&error, Error::Decode { status: 0, body, .. } if body == "\"x\""));
        assert_eq!(error.status(), None);
        assert_eq!(
            error.to_string(),
            "the body of the IoT Hub's response does not have the expected shape"
        );

        let error = Error::from_rest::<()>(Rest::InvalidRequest("id is missing".into())).await;
        assert!(matches!(
            &error,
            Error::InvalidArgument { argument: "request", reason } if reason == "id is missing"
        ));

        let hook = Rest::<()>::Custom("cannot authorize the request: expired".into());
        let error = Error::from_rest(hook).await;
        assert!(matches!(error, Error::Configuration { source: None, .. }));
        assert_eq!(
            error.to_string(),
            "invalid configuration: the request could not be prepared: \
             cannot authorize the request: expired"
        );
        assert_eq!(error.retry_class(), RetryClass::Permanent);
    }

    #[test]
    fn errors_stay_small() {
        // Every `Result` of the crate carries one; clippy's `result_large_err` limit is 128.
        assert!(size_of::<Error>() <= 64, "{}", size_of::<Error>());
    }

    // ---- the code table --------------------------------------------------------------------

    #[test]
    fn the_code_table_is_consistent() {
        let mut numbers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for (number, code) in CODE_NUMBERS {
            assert!(code.is_known(), "{code} is not in the spec's enum");
            assert!(numbers.insert(*number), "{number} twice");
            assert!(names.insert(code.as_str()), "{code} twice");
            let status = u16::try_from(number / 1000).unwrap();
            assert!(
                StatusCode::from_u16(status)
                    .is_ok_and(|s| s.is_client_error() || s.is_server_error())
            );
            assert_eq!(number_of(code), Some(*number));
            assert_eq!(code_of(*number).as_ref(), Some(code));
        }
        for code in THROTTLING_CODES
            .iter()
            .chain(NOT_PERFORMED_CODES)
            .chain(MAYBE_PERFORMED_CODES)
            .chain(TRANSIENT_CODES)
            .chain(NEVER_TRANSIENT_CODES)
        {
            assert!(number_of(code).is_some(), "{code} has no number");
        }
        assert_eq!(code_of(400020), None, "conflicting sources: left out");
        assert_eq!(code_of(403001), Some(ErrorCode::IotHubSuspended));
        assert_eq!(number_of(&ErrorCode::JobQuotaExceeded), Some(403003));
        assert_eq!(number_of(&ErrorCode::DeviceNotOnline), Some(404103));
    }
}
