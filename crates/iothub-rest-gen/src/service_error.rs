//! The parser that turns an IoT Hub error response into a [`ServiceError`] without losing
//! anything the service said.
//!
//! The hub reports failures in two places: the `iothub-errorcode` header (a symbolic name) and
//! a JSON body whose layout changed over the years (legacy `ErrorCode:<Name>;<text>` strings,
//! then JSON nested in a JSON string with a 6-digit number). The parser accepts every layout a
//! peer SDK accepts and, when nothing can be read, still keeps the status and the raw body
//! (kube's "reconstruct, never lose" rule).
//!
//! It lives beside the models, outside the `client` feature: the registry's errors, users of
//! the generated client and the emulator's tests all read error responses with it.

use std::fmt;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use http::header::HeaderMap;
use serde_json::{Map, Value};

use crate::retry_after::parse_retry_after;
use crate::types::ErrorCode;

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
/// use iothub_rest_gen::ServiceError;
/// use iothub_rest_gen::types::ErrorCode;
/// // `http::HeaderMap` is also reqwest's and hyper's header map.
/// use http::HeaderMap;
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

/// The response header in which the service names the error (`DeviceNotFound`).
pub const ERROR_CODE_HEADER: &str = "iothub-errorcode";

/// How deep `Message` fields nested in one another are followed; real bodies nest twice.
const MAX_DEPTH: u8 = 4;

/// Longest plain-text body used as the message; longer ones are cut (the raw body stays whole).
const MAX_TEXT_MESSAGE: usize = 512;

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
            let contradicts = ErrorCode::from_number(number).is_some_and(|known| known != code)
                || code.number().is_some_and(|known| known != number);
            let number = if contradicts {
                code.number()
            } else {
                Some(number)
            };
            (Some(code), number)
        }
        (Some(code), None) => {
            let number = code.number();
            (Some(code), number)
        }
        (None, Some(number)) => (ErrorCode::from_number(number), Some(number)),
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
    use std::time::UNIX_EPOCH;

    use http::header::{HeaderName, HeaderValue};
    use serde_json::json;

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

    const SHAPE_A: &[u8] = br#"{"Message":"ErrorCode:DeviceNotFound;testDevice549600225","ExceptionMessage":"Tracking ID:d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56"}"#;

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
            parsed.to_string(),
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
}
