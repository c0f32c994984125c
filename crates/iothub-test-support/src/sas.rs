//! Checks IoT Hub service SAS tokens the way the service does.
//!
//! Written independently of `iothub-auth` (this module uses none of it), so a test passing
//! against it means our tokens would be accepted, rather than merely that our signer agrees
//! with itself: client and verifier cannot share one wrong belief.
//!
//! The rules, from the Azure docs ("Control access to IoT Hub with shared access signatures"):
//! a token is `SharedAccessSignature sr={resource}&sig={signature}&se={expiry}&skn={policy}`,
//! the signature is the base64 HMAC-SHA256, under the policy's base64-decoded key, of
//! `{sr}\n{se}` with `sr` exactly as it appears in the token (URL-encoded over HTTP), and
//! `se` is in seconds since 1970.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use percent_encoding::percent_decode_str;
use sha2::Sha256;

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not `SharedAccessSignature sr=..&sig=..&se=..&skn=..`.
    Malformed,
    /// `skn` names no known policy.
    UnknownPolicy,
    /// `sr` is not this hub's host (as sent: URL-encoded or raw).
    WrongResource,
    /// `se` is in the past.
    Expired,
    /// The signature does not match.
    BadSignature,
}

/// Verifies service SAS tokens for one hub.
pub struct SasVerifier {
    host: String,
    keys: HashMap<String, Vec<u8>>,
}

impl SasVerifier {
    /// A verifier for `host` (e.g. `127.0.0.1:8443`) with one policy.
    pub fn new(host: &str, policy: &str, base64_key: &str) -> Self {
        let key = STANDARD.decode(base64_key).expect("test keys are base64");
        Self {
            host: host.to_owned(),
            keys: HashMap::from([(policy.to_owned(), key)]),
        }
    }

    /// Checks an `Authorization` header value.
    pub fn verify(&self, header: &str) -> Result<(), Rejection> {
        let fields = header
            .strip_prefix("SharedAccessSignature ")
            .ok_or(Rejection::Malformed)?;
        let mut sr = None;
        let mut sig = None;
        let mut se = None;
        let mut skn = None;
        for pair in fields.split('&') {
            let (k, v) = pair.split_once('=').ok_or(Rejection::Malformed)?;
            match k {
                "sr" => sr = Some(v),
                "sig" => sig = Some(v),
                "se" => se = Some(v),
                "skn" => skn = Some(v),
                _ => return Err(Rejection::Malformed),
            }
        }
        let (sr, sig, se, skn) = (
            sr.ok_or(Rejection::Malformed)?,
            sig.ok_or(Rejection::Malformed)?,
            se.ok_or(Rejection::Malformed)?,
            skn.ok_or(Rejection::Malformed)?,
        );
        let key = self.keys.get(skn).ok_or(Rejection::UnknownPolicy)?;
        let decoded_sr = percent_decode_str(sr).decode_utf8_lossy();
        if !decoded_sr.eq_ignore_ascii_case(&self.host) {
            return Err(Rejection::WrongResource);
        }
        let expiry: u64 = se.parse().map_err(|_| Rejection::Malformed)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        if expiry <= now {
            return Err(Rejection::Expired);
        }
        // The signature covers `sr` exactly as sent; `sig` may or may not be URL-encoded.
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length works");
        mac.update(format!("{sr}\n{se}").as_bytes());
        let expected = STANDARD.encode(mac.finalize().into_bytes());
        let given = percent_decode_str(sig).decode_utf8_lossy();
        if given != expected {
            return Err(Rejection::BadSignature);
        }
        Ok(())
    }
}
