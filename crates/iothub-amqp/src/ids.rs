//! Device and module id validation, done before anything is sent.
//!
//! The hub accepts 1 to 128 ASCII characters from `A-Za-z0-9` and `-:.+%_#*?!(),=@;$'` (the
//! same rule as `iothub-registry`). An id goes into the message's `to` address verbatim, as the
//! Python reference sends it, so a `/` must never get through.

use crate::error::Error;

const MAX_ID_LEN: usize = 128;
const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";

/// Checks a device id (`argument` names it in the error).
pub(crate) fn validate_id(argument: &'static str, id: &str) -> Result<(), Error> {
    if id.is_empty() {
        return Err(Error::invalid(argument, "must not be empty"));
    }
    if let Some((index, c)) = id
        .chars()
        .enumerate()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || SPECIAL.contains(c)))
    {
        return Err(Error::invalid(
            argument,
            format!(
                "character {c:?} (U+{:04X}) at index {index} is not allowed; \
                 ids use ASCII letters, digits and {SPECIAL}",
                u32::from(c)
            ),
        ));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(
            argument,
            format!(
                "is {} characters long; at most {MAX_ID_LEN} are allowed",
                id.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(id: &str) -> String {
        match validate_id("device_id", id) {
            Err(Error::InvalidArgument { argument, reason }) => {
                assert_eq!(argument, "device_id");
                reason
            }
            other => panic!("{id:?}: expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn allowed_ids_pass() {
        for id in [
            "sensor-1",
            "-:.+%_#*?!(),=@;$'",
            "$edgeHub",
            &"a".repeat(128),
            "ABCxyz019",
        ] {
            validate_id("device_id", id).unwrap_or_else(|e| panic!("{id:?}: {e}"));
        }
    }

    #[test]
    fn bad_ids_say_why() {
        assert_eq!(reason(""), "must not be empty");
        assert!(reason("a/b").contains("'/' (U+002F) at index 1"));
        assert!(reason("dev 1").contains("' '"));
        assert!(reason("hüb").contains("U+00FC"));
        assert_eq!(
            reason(&"a".repeat(129)),
            "is 129 characters long; at most 128 are allowed"
        );
    }
}
