//! Device and module id validation, done before anything is sent.
//!
//! The rules live in [`iothub_auth::ids`], shared with `iothub-amqp`; this maps their error to
//! [`Error::InvalidArgument`] naming the argument at fault.

use iothub_auth::ids::{IdError, check_device_id, check_module_id};

use crate::Error;

/// Checks a device id.
///
/// # Errors
///
/// [`Error::InvalidArgument`] with argument `"device_id"` and a reason naming the first
/// offending character and its index, or the length.
pub(crate) fn validate_device_id(id: &str) -> Result<(), Error> {
    check_device_id(id).map_err(|error| invalid("device_id", error))
}

/// Checks a module id. The character set is the device one; system modules such as
/// `$edgeAgent` and `$edgeHub` are valid.
///
/// # Errors
///
/// [`Error::InvalidArgument`] with argument `"module_id"`, as for [`validate_device_id`].
pub(crate) fn validate_module_id(id: &str) -> Result<(), Error> {
    check_module_id(id).map_err(|error| invalid("module_id", error))
}

fn invalid(argument: &'static str, error: IdError) -> Error {
    Error::InvalidArgument {
        argument,
        reason: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<(), Error>, expected_argument: &str) -> String {
        match result {
            Err(Error::InvalidArgument { argument, reason }) => {
                assert_eq!(argument, expected_argument);
                reason
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    // The rules themselves are tested in iothub-auth; this is the mapping.
    #[test]
    fn each_id_is_reported_under_its_argument_name_with_the_reason() {
        validate_device_id("sensor-1").unwrap();
        validate_module_id("$edgeAgent").unwrap();
        assert_eq!(
            reason(validate_device_id(""), "device_id"),
            "must not be empty"
        );
        assert_eq!(
            reason(validate_module_id("$edge/Agent"), "module_id"),
            "character '/' (U+002F) at index 5 is not allowed; \
             ids use ASCII letters, digits and -:.+%_#*?!(),=@;$'"
        );
        assert!(reason(validate_module_id(".."), "module_id").contains("URL normalisation"));
        assert_eq!(
            reason(validate_device_id(&"a".repeat(129)), "device_id"),
            "is 129 characters long; at most 128 are allowed"
        );
    }
}
