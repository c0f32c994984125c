//! Device and module id rules, checked on the client before anything is sent.
//!
//! The service accepts 1 to 128 ASCII characters from `A-Za-z0-9` and `-:.+%_#*?!(),=@;$'`
//! and rejects anything else (non-ASCII included) with a 400 that does not say which character
//! was wrong. Checking locally gives a precise message and keeps an id that would change a
//! request path (`/`, `.`, `..`) or an AMQP address from ever reaching the wire.
//!
//! These are the rules of every crate of this SDK; each maps [`IdError`] into its own error
//! type, naming the argument at fault.
//!
//! ```
//! use iothub_auth::ids::{IdError, check_device_id, check_module_id};
//!
//! check_device_id("thermostat-1")?;
//! check_module_id("$edgeAgent")?;
//! let error = check_device_id("my device").unwrap_err();
//! assert!(matches!(error, IdError::Character { character: ' ', index: 2, .. }));
//! assert!(error.to_string().contains("index 2"));
//! # Ok::<(), IdError>(())
//! ```

/// The longest id the service accepts, in characters (all ASCII, so also in bytes).
const MAX_ID_LEN: usize = 128;

/// The characters allowed besides ASCII letters and digits.
const SPECIAL: &str = "-:.+%_#*?!(),=@;$'";

/// Why an id was rejected. Its `Display` is the reason alone (`must not be empty`), meant to
/// follow the name of the argument at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id is empty.
    #[error("must not be empty")]
    Empty,
    /// The id is `.` or `..`: allowed characters, but as a whole path segment URL
    /// normalisation would remove it and address something else entirely.
    #[error("{id:?} alone is not a usable id: URL normalisation would remove it from the path")]
    DotSegment {
        /// `"."` or `".."`.
        id: &'static str,
    },
    /// A character outside the allowed set; the first one is reported.
    #[error(
        "character {character:?} (U+{code:04X}) at index {index} is not allowed; \
         ids use ASCII letters, digits and {SPECIAL}",
        code = u32::from(*.character)
    )]
    Character {
        /// The offending character.
        character: char,
        /// Its position, counted in characters from 0.
        index: usize,
    },
    /// The id is longer than the service allows.
    #[error("is {length} characters long; at most {MAX_ID_LEN} are allowed")]
    TooLong {
        /// The id's length.
        length: usize,
    },
}

/// Checks a device id.
///
/// # Errors
///
/// [`IdError`] naming the first offending character and its index, the length, or why an
/// empty or dot-segment id is refused.
pub fn check_device_id(id: &str) -> Result<(), IdError> {
    check(id)
}

/// Checks a module id. The character set is the device one; system modules such as
/// `$edgeAgent` and `$edgeHub` are valid.
///
/// # Errors
///
/// [`IdError`], as for [`check_device_id`].
pub fn check_module_id(id: &str) -> Result<(), IdError> {
    check(id)
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || SPECIAL.contains(c)
}

fn check(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    // Both are allowed characters, but as a whole path segment URL normalisation would turn
    // `/devices/..` into `/` and address something else entirely.
    match id {
        "." => return Err(IdError::DotSegment { id: "." }),
        ".." => return Err(IdError::DotSegment { id: ".." }),
        _ => {}
    }
    // The character first: for a non-ASCII id the length in characters would be misleading.
    if let Some((index, character)) = id.chars().enumerate().find(|&(_, c)| !is_allowed(c)) {
        return Err(IdError::Character { character, index });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { length: id.len() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(result: Result<(), IdError>) -> String {
        match result {
            Err(error) => error.to_string(),
            Ok(()) => panic!("expected an IdError"),
        }
    }

    fn device_reason(id: &str) -> String {
        reason(check_device_id(id))
    }

    #[test]
    fn letters_and_digits_are_allowed() {
        check_device_id("sensor-1").unwrap();
        check_device_id("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789").unwrap();
        check_module_id("module1").unwrap();
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
                check_device_id(&id).unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
                check_module_id(&id).unwrap_or_else(|e| panic!("{id:?}: {e:?}"));
            }
        }
        // Single characters, except `.` which is a dot segment (see below).
        for c in SPECIAL.chars().filter(|&c| c != '.') {
            check_device_id(&c.to_string()).unwrap();
        }
        // The service's set (the IoT Hub documentation's device identity properties, and the
        // characters the SDKs' issues found: `#` in azure-iot-sdk-node#218, `+` in
        // azure-iot-sdk-csharp#783), spelled out independently of SPECIAL.
        assert_eq!(SPECIAL.len(), 18);
        check_device_id("-:.+%_#*?!(),=@;$'").unwrap();
    }

    #[test]
    fn system_module_ids_are_valid() {
        check_module_id("$edgeAgent").unwrap();
        check_module_id("$edgeHub").unwrap();
    }

    #[test]
    fn length_boundaries() {
        check_device_id("a").unwrap();
        check_device_id(&"a".repeat(128)).unwrap();
        check_module_id(&"a".repeat(128)).unwrap();
        let too_long = device_reason(&"a".repeat(129));
        assert!(too_long.contains("129 characters"), "{too_long}");
        assert!(too_long.contains("at most 128"), "{too_long}");
        assert!(reason(check_module_id(&"a".repeat(129))).contains("129"));
        assert_eq!(
            check_device_id(&"a".repeat(129)),
            Err(IdError::TooLong { length: 129 })
        );
    }

    #[test]
    fn empty_is_rejected() {
        assert!(device_reason("").contains("empty"));
        assert!(reason(check_module_id("")).contains("empty"));
        assert_eq!(check_device_id(""), Err(IdError::Empty));
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
            assert!(check_device_id(id).is_err(), "{id}");
        }
        assert!(reason(check_module_id("$edge/Agent")).contains("index 5"));
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
            assert!(check_device_id(id).is_err(), "{id:?}");
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
            assert!(reason(check_module_id(id)).contains("URL normalisation"));
        }
        // Dots inside an id, or three of them, are not path segments that normalise away.
        for id in ["...", ".a", "a.", "a..b", "device.1"] {
            check_device_id(id).unwrap();
        }
    }

    #[test]
    fn the_reasons_read_as_before() {
        // The exact texts the registry and the AMQP crate have always reported.
        assert_eq!(device_reason(""), "must not be empty");
        assert_eq!(
            device_reason(".."),
            "\"..\" alone is not a usable id: URL normalisation would remove it from the path"
        );
        assert_eq!(
            device_reason("a/b"),
            "character '/' (U+002F) at index 1 is not allowed; \
             ids use ASCII letters, digits and -:.+%_#*?!(),=@;$'"
        );
        assert_eq!(
            device_reason(&"a".repeat(129)),
            "is 129 characters long; at most 128 are allowed"
        );
    }
}
