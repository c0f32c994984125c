//! Device and module id validation, done before anything is sent.
//!
//! The service accepts 1 to 128 ASCII characters from `A-Za-z0-9` and `-:.+%_#*?!(),=@;$'`
//! and rejects anything else (non-ASCII included) with a 400 that does not say which character
//! was wrong. Checking locally gives a precise message and keeps an id that would change the
//! request path (`/`, `.`, `..`) from ever reaching the wire.

use crate::Error;

/// The longest id the service accepts, in characters (all ASCII, so also in bytes).
const MAX_ID_LEN: usize = 128;

/// The characters allowed besides ASCII letters and digits.
const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";

/// Checks a device id.
///
/// # Errors
///
/// [`Error::InvalidArgument`] with argument `"device_id"` and a reason naming the first
/// offending character and its index, or the length.
pub(crate) fn validate_device_id(id: &str) -> Result<(), Error> {
    validate("device_id", id)
}

/// Checks a module id. The character set is the device one; system modules such as
/// `$edgeAgent` and `$edgeHub` are valid.
///
/// # Errors
///
/// [`Error::InvalidArgument`] with argument `"module_id"`, as for [`validate_device_id`].
pub(crate) fn validate_module_id(id: &str) -> Result<(), Error> {
    validate("module_id", id)
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || SPECIAL.contains(c)
}

fn validate(argument: &'static str, id: &str) -> Result<(), Error> {
    let invalid = |reason: String| Error::InvalidArgument { argument, reason };
    if id.is_empty() {
        return Err(invalid("must not be empty".to_owned()));
    }
    // Both are allowed characters, but as a whole path segment URL normalisation would turn
    // `/devices/..` into `/` and address something else entirely.
    if id == "." || id == ".." {
        return Err(invalid(format!(
            "{id:?} alone is not a usable id: URL normalisation would remove it from the path"
        )));
    }
    // The character first: for a non-ASCII id the length in characters would be misleading.
    if let Some((index, c)) = id.chars().enumerate().find(|&(_, c)| !is_allowed(c)) {
        return Err(invalid(format!(
            "character {c:?} (U+{:04X}) at index {index} is not allowed; \
             ids use ASCII letters, digits and {SPECIAL}",
            u32::from(c)
        )));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(format!(
            "is {} characters long; at most {MAX_ID_LEN} are allowed",
            id.len()
        )));
    }
    Ok(())
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

    fn device_reason(id: &str) -> String {
        reason(validate_device_id(id), "device_id")
    }

    #[test]
    fn letters_and_digits_are_allowed() {
        validate_device_id("sensor-1").unwrap();
        validate_device_id("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
            .unwrap();
        validate_module_id("module1").unwrap();
    }

    #[test]
    fn every_special_character_is_allowed() {
        for c in SPECIAL.chars() {
            for id in [
                format!("a{c}b"),
                format!("{c}{c}{c}"),
                format!("{c}x"),
                format!("x{c}"),
            ] {
                validate_device_id(&id).unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
                validate_module_id(&id).unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
            }
        }
        // Single characters, except `.` which is a dot segment (see below).
        for c in SPECIAL.chars().filter(|&c| c != '.') {
            validate_device_id(&c.to_string()).unwrap();
        }
        // The set from peers.md item 12, spelled out independently of SPECIAL.
        assert_eq!(SPECIAL.len(), 18);
        validate_device_id("-:.+%_#*?!(),=@;$'").unwrap();
    }

    #[test]
    fn system_module_ids_are_valid() {
        validate_module_id("$edgeAgent").unwrap();
        validate_module_id("$edgeHub").unwrap();
    }

    #[test]
    fn length_boundaries() {
        validate_device_id("a").unwrap();
        validate_device_id(&"a".repeat(128)).unwrap();
        validate_module_id(&"a".repeat(128)).unwrap();
        let too_long = device_reason(&"a".repeat(129));
        assert!(too_long.contains("129 characters"), "{too_long}");
        assert!(too_long.contains("at most 128"), "{too_long}");
        assert!(reason(validate_module_id(&"a".repeat(129)), "module_id").contains("129"));
    }

    #[test]
    fn empty_is_rejected() {
        assert!(device_reason("").contains("empty"));
        assert!(reason(validate_module_id(""), "module_id").contains("empty"));
    }

    #[test]
    fn space_is_rejected_with_its_position() {
        let reason = device_reason("my device");
        assert!(reason.contains("' '"), "{reason}");
        assert!(reason.contains("U+0020"), "{reason}");
        assert!(reason.contains("index 2"), "{reason}");
    }

    #[test]
    fn slash_and_other_path_characters_are_rejected() {
        assert!(device_reason("a/b").contains("'/' (U+002F) at index 1"));
        for id in [
            "a\\b", "a&b", "a<b", "a\"b", "a`b", "a[b]", "a{b}", "a|b", "a^b", "a~b",
        ] {
            assert!(validate_device_id(id).is_err(), "{id}");
        }
        assert!(reason(validate_module_id("$edge/Agent"), "module_id").contains("index 5"));
    }

    #[test]
    fn non_ascii_is_rejected_with_its_character_index() {
        let reason = device_reason("capteur-é");
        assert!(reason.contains("'é'"), "{reason}");
        assert!(reason.contains("U+00E9"), "{reason}");
        // Counted in characters, not bytes.
        assert!(device_reason("éé").contains("index 0"));
        assert!(device_reason("aé").contains("index 1"));
        // A look-alike of an allowed character.
        assert!(device_reason("a\u{2010}b").contains("U+2010"));
    }

    #[test]
    fn control_characters_are_rejected() {
        for id in ["a\nb", "a\0", "\t", "a\u{7f}"] {
            assert!(validate_device_id(id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn a_bad_character_is_reported_before_the_length() {
        let reason = device_reason(&format!("a b{}", "c".repeat(200)));
        assert!(reason.contains("index 1"), "{reason}");
    }

    #[test]
    fn dot_segments_are_rejected() {
        for id in [".", ".."] {
            assert!(device_reason(id).contains("URL normalisation"), "{id}");
            assert!(reason(validate_module_id(id), "module_id").contains("URL normalisation"));
        }
        // Dots inside an id, or three of them, are not path segments that normalise away.
        for id in ["...", ".a", "a.", "a..b", "device.1"] {
            validate_device_id(id).unwrap();
        }
    }
}
