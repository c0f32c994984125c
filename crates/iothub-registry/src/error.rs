//! The crate's one error type, and what a failure says about repeating the operation.
//!
//! Error responses are parsed by [`ServiceError`] (from `iothub-rest-gen`, where the error
//! codes and the parser live for every crate that reads them); which codes mean throttling,
//! "not performed" or "maybe performed" is this crate's judgement and lives here.

use std::time::Duration;

use iothub_rest_gen::ResponseTooLarge;
pub use iothub_rest_gen::ServiceError;
use iothub_rest_gen::types::ErrorCode;

mod classify;

/// `Result` with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one error type of iothub-registry.
///
/// Ask instead of matching where you can: [`status`](Self::status), [`code`](Self::code),
/// [`is_not_found`](Self::is_not_found), [`is_precondition_failed`](Self::is_precondition_failed),
/// [`is_conflict`](Self::is_conflict), [`is_throttled`](Self::is_throttled),
/// [`is_transient`](Self::is_transient), [`retry_class`](Self::retry_class) and
/// [`may_have_been_applied`](Self::may_have_been_applied) work across variants. Causes are kept as [`source`](std::error::Error::source), so print the whole chain
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

    /// An attempt exceeded its timeout. The timeout covers getting a token, sending the
    /// request and reading the whole response.
    #[error("{}", timeout_message(*.after, *.sent))]
    Timeout {
        /// The timeout that was exceeded.
        after: Duration,
        /// Whether the request had started to be sent: false when the time ran out while
        /// getting a token, so the service never saw it.
        sent: bool,
    },

    /// The operation failed, and it may have been applied all the same: an attempt failed in
    /// a way that leaves its outcome unknown (its connection was lost after the request was
    /// sent, it timed out, the hub answered 500), and a later attempt failed too. That later
    /// failure is not the whole truth: a retry answered 412 because the earlier attempt had
    /// already made the change, or 503 after it had. Read the entity back to know.
    ///
    /// Also returned, without an earlier attempt, for a direct method the hub answered 408:
    /// the device may have run the method.
    ///
    /// [`may_have_been_applied`](Self::may_have_been_applied) is true. The predicates that
    /// would blame someone else ([`is_precondition_failed`](Self::is_precondition_failed),
    /// [`is_not_found`](Self::is_not_found), [`is_conflict`](Self::is_conflict)) are false;
    /// [`status`](Self::status), [`service`](Self::service) and [`code`](Self::code) describe
    /// the last answer.
    ///
    /// ```
    /// # fn handle(error: iothub_registry::Error) {
    /// use iothub_registry::Error;
    ///
    /// match error {
    ///     Error::MaybeApplied { operation, error, earlier, .. } => {
    ///         eprintln!("{operation}: outcome unknown; last attempt: {error}");
    ///         if let Some(earlier) = earlier {
    ///             eprintln!("the attempt that may have been applied failed with: {earlier}");
    ///         }
    ///     }
    ///     other => eprintln!("{other}"),
    /// }
    /// # }
    /// ```
    #[error("{}", maybe_applied_message(.operation, .error, .earlier.is_some()))]
    MaybeApplied {
        /// The operation's name (`update_twin`, `invoke_device_method`…).
        operation: &'static str,
        /// The failure of the last attempt.
        error: Box<Error>,
        /// The first failure after which the request may have been applied; `None` when the
        /// last attempt's own failure leaves the outcome unknown (a direct method answered 408).
        #[source]
        earlier: Option<Box<Error>>,
    },

    /// A response body was larger than the cap for its status
    /// ([`RegistryManagerBuilder::max_response_body`](crate::RegistryManagerBuilder::max_response_body),
    /// [`max_error_body`](crate::RegistryManagerBuilder::max_error_body)), or its
    /// `Content-Length` said it would be; reading stopped there. With a success status the
    /// operation was carried out: [`may_have_been_applied`](Self::may_have_been_applied) says
    /// so.
    #[error("the IoT Hub's {status} response has a body larger than {limit} bytes")]
    ResponseTooLarge {
        /// The status of the response.
        status: u16,
        /// The cap that applied, in bytes.
        limit: u64,
    },

    /// Paging cannot go on: the service sent a continuation token that is not plain ASCII
    /// (ending there would drop the rest of the results silently), or one it had already sent
    /// in the same run (following it would never end).
    #[error("the IoT Hub's paging cannot go on: {reason}")]
    Paging {
        /// What is wrong with the continuation.
        reason: String,
    },

    /// The response was a redirect (3xx). The service never redirects; something on the way
    /// did, and the SDK does not follow it: the request (and its credentials) would go where
    /// it was not meant to, and whatever answers there would be taken for the hub's answer.
    #[error("{}", redirect_message(*.status, .location.as_deref()))]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// The `Location` it pointed to, without its query (which could hold a signature).
        location: Option<String>,
    },

    /// A success response that lacks what the operation needs: a feedback batch without its
    /// lock token (the `ETag` header). The hub did what it answered; the answer cannot be used.
    #[error("the IoT Hub's {status} response cannot be used: {reason}")]
    Protocol {
        /// The status of the response.
        status: u16,
        /// What is missing or wrong.
        reason: String,
    },

    /// A job did not end (`completed`, `failed` or `cancelled`) within the deadline of
    /// [`JobWait`](crate::JobWait). The job goes on; read it, wait again, or cancel it.
    #[error("{}", job_not_finished_message(.job_id, *.waited, .status.as_deref()))]
    JobNotFinished {
        /// The job waited for.
        job_id: String,
        /// How long it was waited for.
        waited: Duration,
        /// Its status at the last reading, as the hub spells it.
        status: Option<Box<str>>,
    },

    /// A line of an export file (`devices.txt`) could not be read as a device: it is not an
    /// `ExportImportDevice` JSON object, or it is longer than the reader's limit. The reason
    /// says where, never what the line holds (it may hold keys).
    #[error("line {line} of the export: {reason}")]
    ExportLine {
        /// The line, counted from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// Reading an export file or writing an import file failed in the reader or writer given
    /// (the blob download or upload under it).
    #[error("the import or export file could not be read or written")]
    FileIo(#[source] std::io::Error),

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
        /// The body, as text (invalid UTF-8 replaced by U+FFFD), with keys and signatures
        /// replaced by `[REDACTED]` (see [`iothub_rest_gen::redact_secrets`]): a device's
        /// body holds its keys, and this error is printed and logged.
        body: String,
        /// Why it did not decode.
        #[source]
        source: serde_json::Error,
    },

    /// A cloud-to-device send (or a feedback or file-notification receiver) failed over AMQP:
    /// the hub refused the message (unknown device, full queue, throttled, unauthorized) or
    /// the connection failed. [`iothub_amqp::Error::is_ambiguous`] tells whether the message may
    /// have been queued anyway. (With the `amqp` feature, on by default.)
    #[cfg(feature = "amqp")]
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

/// A redirect's `Location` without what could hold a credential: user info, query, fragment.
fn shown_location(location: &str) -> String {
    match reqwest::Url::parse(location) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        // Relative: only the path.
        Err(_) => location.split(['?', '#']).next().unwrap_or("").to_owned(),
    }
}

fn timeout_message(after: Duration, sent: bool) -> String {
    if sent {
        format!("the request to the IoT Hub did not complete within {after:?}")
    } else {
        format!("no token for the IoT Hub within {after:?}; nothing was sent")
    }
}

fn maybe_applied_message(operation: &str, error: &Error, earlier: bool) -> String {
    if earlier {
        format!(
            "{operation} may have been applied by an earlier attempt whose outcome is unknown; \
             the last attempt failed: {error}"
        )
    } else {
        format!("{operation}: the device may have run the method; {error}")
    }
}

fn redirect_message(status: u16, location: Option<&str>) -> String {
    match location {
        Some(location) => format!(
            "the response was a {status} redirect to {location}, which is not followed: \
             the IoT Hub never redirects"
        ),
        None => format!(
            "the response was a {status} redirect, which is not followed: the IoT Hub never \
             redirects"
        ),
    }
}

fn job_not_finished_message(job_id: &str, waited: Duration, status: Option<&str>) -> String {
    match status {
        Some(status) => {
            format!("job {job_id:?} did not end within {waited:?}; its last status was {status}")
        }
        None => format!("job {job_id:?} did not end within {waited:?}"),
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
#[cfg(feature = "amqp")]
impl From<iothub_amqp::Error> for Error {
    fn from(error: iothub_amqp::Error) -> Self {
        Error::from_amqp(error)
    }
}

impl From<ResponseTooLarge> for Error {
    fn from(too_large: ResponseTooLarge) -> Self {
        Error::ResponseTooLarge {
            status: too_large.status,
            limit: too_large.limit,
        }
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
            Error::ResponseTooLarge { status, .. }
            | Error::Redirect { status, .. }
            | Error::Protocol { status, .. } => Some(*status),
            Error::MaybeApplied { error, .. } => error.status(),
            _ => None,
        }
    }

    /// The parsed hub error, for [`Error::Service`] (and the last answer of
    /// [`Error::MaybeApplied`]).
    pub fn service(&self) -> Option<&ServiceError> {
        match self {
            Error::Service(service) => Some(service),
            Error::MaybeApplied { error, .. } => error.service(),
            _ => None,
        }
    }

    /// The AMQP error, for [`Error::C2d`].
    #[cfg(feature = "amqp")]
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

    /// Maps an `iothub-amqp` error: argument, credential and configuration failures keep
    /// this crate's variants, so callers test for them one way whatever the transport.
    #[cfg(feature = "amqp")]
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

    /// A [`Error::Decode`], its body redacted.
    pub(crate) fn decode(status: u16, body: &str, source: serde_json::Error) -> Self {
        Error::Decode {
            status,
            body: iothub_rest_gen::redact_secrets(body),
            source,
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
    /// | `UnexpectedResponse` with a 3xx status | `Redirect` |
    /// | `UnexpectedResponse` | `Service`, from status, headers and body (a body that cannot be read counts as empty; one over the cap is `ResponseTooLarge`) |
    /// | `ErrorResponse` | `Service`, from status, headers and the typed body serialized back to JSON |
    /// | `CommunicationError`, `ResponseBodyError`, `InvalidUpgrade` | `Transport`, or `ResponseTooLarge` when the body was over the cap |
    /// | `InvalidResponsePayload` | `Decode` with status 0 (progenitor does not keep it) |
    /// | `InvalidRequest` | `InvalidArgument { argument: "request" }` |
    /// | `Custom` (the request hook failed, nearly always signing) | `Configuration` without source |
    pub(crate) async fn from_rest<E: serde::Serialize>(error: iothub_rest_gen::Error<E>) -> Self {
        use iothub_rest_gen::Error as Rest;
        match error {
            Rest::UnexpectedResponse(response) if response.status().is_redirection() => {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|value| value.to_str().ok())
                    .map(shown_location);
                Error::Redirect {
                    status: response.status().as_u16(),
                    location,
                }
            }
            Rest::UnexpectedResponse(response) => {
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = match response.bytes().await {
                    Ok(body) => body,
                    Err(error) => {
                        if let Some(too_large) = ResponseTooLarge::find(&error) {
                            return too_large.into();
                        }
                        tracing::debug!(%error, status, "could not read the body of an error response");
                        Default::default()
                    }
                };
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
            | Rest::InvalidUpgrade(source) => match ResponseTooLarge::find(&source) {
                Some(too_large) => too_large.into(),
                None => Error::Transport { source },
            },
            Rest::InvalidResponsePayload(body, source) => {
                Error::decode(0, &String::from_utf8_lossy(&body), source)
            }
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::path::{Path, PathBuf};

    use iothub_rest_gen::{Error as Rest, ResponseValue};
    use reqwest::header::{HeaderName, HeaderValue};
    use serde_json::json;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;
    use serde_json::Value;

    use super::*;
    use crate::retry::RetryClass;

    pub(super) fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let header = |(name, value): &(&str, &str)| {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            (name, HeaderValue::from_str(value).unwrap())
        };
        pairs.iter().map(header).collect()
    }

    pub(super) fn parse(status: u16, pairs: &[(&str, &str)], body: &[u8]) -> ServiceError {
        ServiceError::from_response(status, &header_map(pairs), body)
    }

    pub(super) fn service(status: u16, code: Option<&str>) -> Error {
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

    fn decode_error() -> serde_json::Error {
        serde_json::from_str::<u32>("\"x\"").unwrap_err()
    }

    #[test]
    fn errors_without_a_response() {
        let timeout = Error::Timeout {
            after: Duration::from_secs(60),
            sent: true,
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
    fn a_redirects_location_is_shown_without_credentials() {
        assert_eq!(
            shown_location("https://user:pw@elsewhere.example:8443/devices/d1?sig=SECRET#x"),
            "https://elsewhere.example:8443/devices/d1"
        );
        assert_eq!(shown_location("/devices/d1?sig=SECRET"), "/devices/d1");
        let error = Error::Redirect {
            status: 307,
            location: Some(shown_location("https://elsewhere.example/?sig=SECRET")),
        };
        assert_eq!(error.status(), Some(307));
        assert_eq!(error.retry_class(), RetryClass::Permanent);
        assert!(!error.to_string().contains("SECRET"), "{error}");
        assert!(error.to_string().contains("not followed"), "{error}");
    }

    #[test]
    fn errors_stay_small() {
        // Every `Result` of the crate carries one; clippy's `result_large_err` limit is 128.
        assert!(size_of::<Error>() <= 64, "{}", size_of::<Error>());
    }
}
