//! Device and module id rules as the service applies them to decoded path segments and
//! bulk entries: 1 to 128 ASCII characters from `A-Za-z0-9` and `-:.+%_#*?!(),=@;$'`.

use crate::errors::ServiceError;

const MAX_ID_LEN: usize = 128;
const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";

/// Checks a device id; the error is the service's 400 ArgumentInvalid.
pub(crate) fn check_device_id(id: &str) -> Result<(), ServiceError> {
    check("DeviceId", id)
}

/// Checks a module id (same set; `$edgeAgent` and `$edgeHub` pass).
pub(crate) fn check_module_id(id: &str) -> Result<(), ServiceError> {
    check("ModuleId", id)
}

fn check(what: &str, id: &str) -> Result<(), ServiceError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SPECIAL.contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::argument_invalid(format!(
            "{what} is invalid. A {what} must be 1 to {MAX_ID_LEN} ASCII letters, digits or {SPECIAL}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_allowed_character() {
        assert!(check_device_id("a-:.+%_#*?!(),=@;$'Z9").is_ok());
        assert!(check_module_id("$edgeAgent").is_ok());
        assert!(check_device_id(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "é",
            "a\"b",
            "a&b",
            &"x".repeat(129),
        ] {
            let err = check_device_id(bad).unwrap_err();
            assert_eq!((err.status, err.name), (400, "ArgumentInvalid"), "{bad:?}");
        }
    }
}
