//! Service errors as IoT Hub writes them: the `iothub-errorcode` header with the symbolic
//! name, and one of the two body shapes the service uses (shape A, `ErrorCode:<Name>;<text>`,
//! for the registry and twins; shape B, a JSON string with the 6-digit `errorCode`, for direct
//! methods; both are what the official SDKs' error parsers read).
//!
//! Which answer each situation gets is the emulator's own (independent of the SDK's beliefs);
//! the code names, numbers and statuses come from the shared table in `iothub-rest-gen`.

use chrono::{DateTime, Utc};
use iothub_rest_gen::types::ErrorCode;
use serde_json::{Value, json};

/// Which body shape an error is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `{"Message":"ErrorCode:<Name>;<text>","ExceptionMessage":"Tracking ID:…"}`.
    Legacy,
    /// `{"Message":"<json string with errorCode, trackingId, message, info, timestampUtc>","ExceptionMessage":""}`.
    Nested,
}

/// An error answer: status, code name and number, and the text for the body.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceError {
    pub(crate) status: u16,
    pub(crate) name: &'static str,
    pub(crate) number: u32,
    pub(crate) message: String,
    pub(crate) shape: Shape,
    /// The `info` object of shape B.
    pub(crate) info: Value,
    /// Seconds for a `Retry-After` header (throttling).
    pub(crate) retry_after: Option<u64>,
}

impl ServiceError {
    /// An error with `code`'s status and number from the shared table. Every constructor below
    /// names a code the table numbers (a test checks each one).
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status().unwrap_or(500),
            name: static_name(&code),
            number: code.number().unwrap_or(0),
            message: message.into(),
            shape: Shape::Legacy,
            info: json!({}),
            retry_after: None,
        }
    }

    /// Switches to body shape B (direct-method errors).
    pub(crate) fn nested(mut self, info: Value) -> Self {
        self.shape = Shape::Nested;
        self.info = info;
        self
    }

    pub(crate) fn invalid_protocol_version(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidProtocolVersion, message)
    }
    pub(crate) fn argument_invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentInvalid, message)
    }
    pub(crate) fn argument_null(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ArgumentNull, message)
    }
    pub(crate) fn format_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::IotHubFormatError, message)
    }
    pub(crate) fn device_defined_multiple_times(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::DeviceDefinedMultipleTimes, message)
    }
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::IotHubUnauthorizedAccess, message)
    }
    pub(crate) fn device_not_found(device_id: &str) -> Self {
        Self::new(ErrorCode::DeviceNotFound, device_id)
    }
    pub(crate) fn module_not_found(device_id: &str, module_id: &str) -> Self {
        Self::new(
            ErrorCode::ModuleNotFound,
            format!("Module {module_id} on device {device_id} not found"),
        )
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::GenericNotFound, message)
    }
    /// 404 for a path of the service whose feature the emulator does not emulate: the
    /// message names it (`"Jobs are not emulated …"`).
    pub(crate) fn not_emulated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::GenericNotFound, message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::GenericForbidden, message)
    }
    pub(crate) fn device_not_online(device_id: &str, timeout_secs: u64) -> Self {
        Self::new(
            ErrorCode::DeviceNotOnline,
            format!(
                "The operation failed because the requested device isn't online or hasn't registered the direct method callback. Device: {device_id}"
            ),
        )
        .nested(json!({ "timeout": hms(timeout_secs) }))
    }
    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::GenericMethodNotAllowed, message)
    }
    pub(crate) fn device_already_exists(device_id: &str) -> Self {
        Self::new(
            ErrorCode::DeviceAlreadyExists,
            format!("A device with ID '{device_id}' is already registered."),
        )
    }
    pub(crate) fn module_already_exists(device_id: &str, module_id: &str) -> Self {
        Self::new(
            ErrorCode::ModuleAlreadyExistsOnDevice,
            format!("A module with ID '{module_id}' already exists on device '{device_id}'."),
        )
    }
    pub(crate) fn configuration_not_found(id: &str) -> Self {
        Self::new(
            ErrorCode::ConfigurationNotFound,
            format!("Configuration with ID '{id}' was not found."),
        )
    }
    pub(crate) fn configuration_already_exists(id: &str) -> Self {
        Self::new(
            ErrorCode::ConfigurationAlreadyExists,
            format!("A configuration with ID '{id}' already exists."),
        )
    }
    pub(crate) fn configuration_count_limit_exceeded(limit: usize) -> Self {
        Self::new(
            ErrorCode::ConfigurationCountLimitExceeded,
            format!("The hub already has its maximum of {limit} configurations."),
        )
    }
    pub(crate) fn job_not_found(id: &str) -> Self {
        Self::new(
            ErrorCode::JobNotFound,
            format!("The job with ID '{id}' was not found."),
        )
    }
    pub(crate) fn job_already_exists(id: &str) -> Self {
        Self::new(
            ErrorCode::JobAlreadyExists,
            format!("A job with ID '{id}' already exists."),
        )
    }
    /// 429 `ThrottlingMaxActiveJobCountExceeded` (429004): the code the C# v1 and v2 SDKs
    /// and the documentation give "too many active jobs".
    pub(crate) fn max_active_jobs(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ThrottlingMaxActiveJobCountExceeded, message)
    }
    pub(crate) fn message_lock_lost(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::DeviceMessageLockLost, message)
    }
    pub(crate) fn precondition_failed(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::PreconditionFailed, message)
    }
    pub(crate) fn message_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::MessageTooLarge, message)
    }
    pub(crate) fn too_many_devices(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooManyDevices, message)
    }
    pub(crate) fn throttled(retry_after: u64) -> Self {
        let mut e = Self::new(
            ErrorCode::ThrottlingException,
            format!("The request has been throttled. Wait {retry_after} seconds and try again."),
        );
        e.retry_after = Some(retry_after);
        e
    }
    pub(crate) fn server_error(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServerError, message)
    }
    pub(crate) fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }
    pub(crate) fn gateway_timeout() -> Self {
        Self::new(
            ErrorCode::GatewayTimeout,
            "Timed out waiting for the response from device.",
        )
        .nested(json!({}))
    }

    /// The JSON body for this error, stamped with a tracking id and time.
    pub(crate) fn body(&self, tracking_id: &str, now: DateTime<Utc>) -> Value {
        let stamp = now.format("%m/%d/%Y %H:%M:%S");
        let tracking = format!("{tracking_id}-G:0-TimeStamp:{stamp}");
        match self.shape {
            Shape::Legacy => json!({
                "Message": format!("ErrorCode:{};{}", self.name, self.message),
                "ExceptionMessage": format!("Tracking ID:{tracking}"),
            }),
            Shape::Nested => {
                let inner = json!({
                    "errorCode": self.number,
                    "trackingId": tracking,
                    "message": self.message,
                    "info": self.info,
                    "timestampUtc": service_time(now),
                });
                json!({ "Message": inner.to_string(), "ExceptionMessage": "" })
            }
        }
    }
}

/// The name of a known code as a `&'static str` (the spec's enum spells every one).
fn static_name(code: &ErrorCode) -> &'static str {
    ErrorCode::KNOWN
        .iter()
        .find(|known| **known == code.as_str())
        .copied()
        .unwrap_or("ServerError")
}

/// ISO-8601 UTC with 7 fractional digits (.NET ticks), as the service writes times.
pub(crate) fn service_time(t: DateTime<Utc>) -> String {
    use chrono::Timelike as _;
    format!(
        "{}.{:07}Z",
        t.format("%Y-%m-%dT%H:%M:%S"),
        t.nanosecond() % 1_000_000_000 / 100
    )
}

/// `hh:mm:ss`, the form the service uses for timeouts in `info`.
fn hms(secs: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// A 32-hex-digit tracking id, like the service's.
pub(crate) fn tracking_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// A random GUID (`8-4-4-4-12` hex digits), as the service's request ids and lock tokens.
pub(crate) fn guid() -> String {
    let id = tracking_id();
    format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn legacy_body_has_the_name_then_the_text() {
        let now = Utc.with_ymd_and_hms(2020, 6, 16, 22, 34, 56).unwrap();
        let body = ServiceError::device_not_found("dev1").body("abc", now);
        assert_eq!(
            body,
            json!({
                "Message": "ErrorCode:DeviceNotFound;dev1",
                "ExceptionMessage": "Tracking ID:abc-G:0-TimeStamp:06/16/2020 22:34:56",
            })
        );
    }

    #[test]
    fn nested_body_holds_a_json_string_with_the_number() {
        let now = Utc.with_ymd_and_hms(2024, 3, 14, 9, 54, 49).unwrap();
        let body = ServiceError::device_not_online("d", 60).body("t", now);
        assert_eq!(body["ExceptionMessage"], "");
        let inner: Value = serde_json::from_str(body["Message"].as_str().unwrap()).unwrap();
        assert_eq!(inner["errorCode"], 404103);
        assert_eq!(inner["info"], json!({"timeout": "00:01:00"}));
        assert_eq!(inner["timestampUtc"], "2024-03-14T09:54:49.0000000Z");
        assert!(inner["trackingId"].as_str().unwrap().starts_with("t-G:0-"));
    }

    #[test]
    fn tracking_ids_are_32_hex_digits() {
        let id = tracking_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn every_answer_has_the_status_name_and_number_the_service_uses() {
        for (error, status, name, number) in [
            (
                ServiceError::invalid_protocol_version("m"),
                400,
                "InvalidProtocolVersion",
                400001,
            ),
            (
                ServiceError::argument_invalid("m"),
                400,
                "ArgumentInvalid",
                400004,
            ),
            (
                ServiceError::argument_null("m"),
                400,
                "ArgumentNull",
                400005,
            ),
            (
                ServiceError::forbidden("m"),
                403,
                "GenericForbidden",
                403000,
            ),
            (
                ServiceError::not_emulated("Jobs are not emulated"),
                404,
                "GenericNotFound",
                404000,
            ),
            (
                ServiceError::format_error("m"),
                400,
                "IotHubFormatError",
                400006,
            ),
            (
                ServiceError::device_defined_multiple_times("m"),
                400,
                "DeviceDefinedMultipleTimes",
                400011,
            ),
            (
                ServiceError::unauthorized("m"),
                401,
                "IotHubUnauthorizedAccess",
                401002,
            ),
            (
                ServiceError::configuration_not_found("c"),
                404,
                "ConfigurationNotFound",
                404301,
            ),
            (
                ServiceError::configuration_already_exists("c"),
                409,
                "ConfigurationAlreadyExists",
                409401,
            ),
            (
                ServiceError::configuration_count_limit_exceeded(100),
                413,
                "ConfigurationCountLimitExceeded",
                413101,
            ),
            (ServiceError::job_not_found("j"), 404, "JobNotFound", 404002),
            (
                ServiceError::job_already_exists("j"),
                409,
                "JobAlreadyExists",
                409104,
            ),
            (
                ServiceError::max_active_jobs("m"),
                429,
                "ThrottlingMaxActiveJobCountExceeded",
                429004,
            ),
            (
                ServiceError::message_lock_lost("m"),
                412,
                "DeviceMessageLockLost",
                412002,
            ),
            (
                ServiceError::device_not_found("d"),
                404,
                "DeviceNotFound",
                404001,
            ),
            (
                ServiceError::module_not_found("d", "m"),
                404,
                "ModuleNotFound",
                404010,
            ),
            (ServiceError::not_found("m"), 404, "GenericNotFound", 404000),
            (
                ServiceError::device_not_online("d", 30),
                404,
                "DeviceNotOnline",
                404103,
            ),
            (
                ServiceError::method_not_allowed("m"),
                405,
                "GenericMethodNotAllowed",
                405000,
            ),
            (
                ServiceError::device_already_exists("d"),
                409,
                "DeviceAlreadyExists",
                409001,
            ),
            (
                ServiceError::module_already_exists("d", "m"),
                409,
                "ModuleAlreadyExistsOnDevice",
                409301,
            ),
            (
                ServiceError::precondition_failed("m"),
                412,
                "PreconditionFailed",
                412001,
            ),
            (
                ServiceError::message_too_large("m"),
                413,
                "MessageTooLarge",
                413001,
            ),
            (
                ServiceError::too_many_devices("m"),
                413,
                "TooManyDevices",
                413002,
            ),
            (
                ServiceError::throttled(1),
                429,
                "ThrottlingException",
                429001,
            ),
            (ServiceError::server_error("m"), 500, "ServerError", 500001),
            (
                ServiceError::service_unavailable("m"),
                503,
                "ServiceUnavailable",
                503001,
            ),
            (
                ServiceError::gateway_timeout(),
                504,
                "GatewayTimeout",
                504101,
            ),
        ] {
            assert_eq!(
                (error.status, error.name, error.number),
                (status, name, number)
            );
        }
    }
}
