//! The IoT Hub error codes by name and number: data, shared by the registry's error type,
//! users of the generated client, and the emulator's error responses, so that no two of them
//! can disagree on what 404001 is called.
//!
//! The names are the spec's `ErrorCode` enum; the numbers are not in the spec (the service
//! sends them in error bodies), so they are listed here.

use crate::types::ErrorCode;

/// Name and number of the established codes: those of the IoT Hub documentation ("Understand
/// and resolve Azure IoT Hub errors") that the peer SDKs agree on (the C# v1 `ErrorCode` enum,
/// the Java SDK's `IotHubStatus` mapping), plus the documentation's `Generic*` codes. Left out: 400020 (IotHubSuspended in the C# v2 SDK,
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

impl ErrorCode {
    /// Every established code with its 6-digit number, in numeric order.
    pub const NUMBERED: &'static [(u32, ErrorCode)] = CODE_NUMBERS;

    /// The 6-digit number of this code (`DeviceNotFound` is 404001), where it is established.
    ///
    /// ```
    /// use iothub_rest_gen::types::ErrorCode;
    ///
    /// assert_eq!(ErrorCode::DeviceNotFound.number(), Some(404001));
    /// assert_eq!(ErrorCode::from_number(429001), Some(ErrorCode::ThrottlingException));
    /// assert_eq!(ErrorCode::Other("BrandNew".into()).number(), None);
    /// ```
    pub fn number(&self) -> Option<u32> {
        CODE_NUMBERS
            .iter()
            .find(|(_, known)| known == self)
            .map(|(number, _)| *number)
    }

    /// The code a 6-digit number stands for, where it is established.
    pub fn from_number(number: u32) -> Option<Self> {
        CODE_NUMBERS
            .iter()
            .find(|(known, _)| *known == number)
            .map(|(_, code)| code.clone())
    }

    /// The HTTP status the service answers with this code: its number's first three digits.
    pub fn status(&self) -> Option<u16> {
        self.number()
            .and_then(|number| u16::try_from(number / 1000).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                http::StatusCode::from_u16(status)
                    .is_ok_and(|s| s.is_client_error() || s.is_server_error())
            );
            assert_eq!(code.status(), Some(status));
            assert_eq!(code.number(), Some(*number));
            assert_eq!(ErrorCode::from_number(*number).as_ref(), Some(code));
        }
        assert_eq!(
            ErrorCode::from_number(400020),
            None,
            "conflicting sources: left out"
        );
        assert_eq!(
            ErrorCode::from_number(403001),
            Some(ErrorCode::IotHubSuspended)
        );
        assert_eq!(ErrorCode::JobQuotaExceeded.number(), Some(403003));
        assert_eq!(ErrorCode::DeviceNotOnline.number(), Some(404103));
    }
}
