//! Shared access keys, decoded once so that signing cannot fail afterwards.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use crate::error::{Error, KeyError};
use crate::secret::REDACTED;

/// A shared access policy key, as shown in the portal (standard base64), held decoded.
///
/// The base64 is checked when the key is created, so signing with it never fails. The decoded
/// bytes are the HMAC key, as in every IoT Hub SDK. `Debug` prints `[REDACTED]`.
///
/// ```
/// use iothub_auth::SharedAccessKey;
///
/// let key: SharedAccessKey = "AAECAwQFBgcICQoLDA0ODw==".parse()?;
/// assert_eq!(key.len(), 16);
/// assert_eq!(format!("{key:?}"), "SharedAccessKey([REDACTED])");
/// # Ok::<(), iothub_auth::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedAccessKey(Arc<[u8]>);

impl SharedAccessKey {
    /// Decodes a base64 key. Only standard, padded base64 is accepted (which is what the portal
    /// and the CLI show); nothing is trimmed.
    pub fn new(base64: &str) -> crate::Result<Self> {
        Self::decode(base64).map_err(Error::InvalidKey)
    }

    /// Wraps key bytes that are already decoded. Fails only when `bytes` is empty.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> crate::Result<Self> {
        let bytes = bytes.into();
        if bytes.is_empty() {
            return Err(Error::InvalidKey(KeyError::Empty));
        }
        Ok(Self(bytes.into()))
    }

    /// Length of the decoded key in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always `false`: an empty key cannot be built. Present because `len` is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn decode(base64: &str) -> Result<Self, KeyError> {
        if base64.is_empty() {
            return Err(KeyError::Empty);
        }
        // The decode error names the offending byte and offset, i.e. part of the key: drop it.
        let bytes = STANDARD.decode(base64).map_err(|_| KeyError::NotBase64)?;
        if bytes.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self(bytes.into()))
    }

    /// HMAC-SHA256 of `message` keyed with the decoded key.
    pub(crate) fn sign(&self, message: &[u8]) -> [u8; 32] {
        // HMAC accepts keys of any length (long ones are hashed first), so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(message);
        mac.finalize().into_bytes().into()
    }
}

impl FromStr for SharedAccessKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

impl fmt::Debug for SharedAccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedAccessKey")
            .field(&format_args!("{REDACTED}"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_standard_base64() {
        let key = SharedAccessKey::new("AAECAwQFBgcICQoLDA0ODw==").unwrap();
        assert_eq!(&*key.0, &(0u8..16).collect::<Vec<_>>()[..]);
        assert_eq!(key.len(), 16);
        assert!(!key.is_empty());
    }

    #[test]
    fn rejects_empty_and_bad_base64_without_echoing_it() {
        assert!(matches!(
            SharedAccessKey::new(""),
            Err(Error::InvalidKey(KeyError::Empty))
        ));
        assert!(matches!(
            SharedAccessKey::from_bytes(Vec::new()),
            Err(Error::InvalidKey(KeyError::Empty))
        ));
        for bad in [
            "c2VjcmV0$$",
            "c2VjcmV0 ",
            "c2VjcmV0ZQ",
            "c2VjcmV0ZQ=",
            "c2Vj-mV0",
            "=",
        ] {
            let err = SharedAccessKey::new(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidKey(KeyError::NotBase64)),
                "{bad:?}"
            );
            assert!(!err.to_string().contains("c2Vj"), "{err}");
            assert!(!format!("{err:?}").contains("c2Vj"), "{err:?}");
        }
    }

    #[test]
    fn signs_with_the_decoded_key() {
        // RFC 4231 test case 2: key "Jefe".
        let key = SharedAccessKey::from_bytes(b"Jefe".to_vec()).unwrap();
        let mac = key.sign(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let same = SharedAccessKey::new("SmVmZQ==").unwrap();
        assert_eq!(same.sign(b"what do ya want for nothing?"), mac);
    }

    #[test]
    fn debug_is_redacted() {
        let key = SharedAccessKey::new("SmVmZQ==").unwrap();
        assert_eq!(format!("{key:?}"), "SharedAccessKey([REDACTED])");
    }
}
