//! The Entra ID look-alike's tokens: JSON Web Tokens signed RS256 (RSASSA-PKCS1-v1_5 with
//! SHA-256, what Microsoft Entra ID signs access tokens with) by a 2048-bit RSA key the
//! emulator generated, and their verification. The public half is published as a JWK.

use std::fmt;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{self, KeyPair as _, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// Tokens longer than this are not looked at (Entra's are a few kilobytes).
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token was refused. The texts are fixed: nothing taken from the token is repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JwtError {
    /// Not three base64url parts with JSON header and claims, or too long.
    Malformed,
    /// Not RS256, another key id, or a signature that does not verify.
    Signature,
}

/// The RSA key the emulator signs tokens with. Its `Debug` shows the key id only.
pub(crate) struct SigningKey {
    pair: KeyPair,
    /// `kid` of the JWT header and the JWK: base64url of the SHA-256 of the public key.
    kid: String,
    /// Modulus and exponent, big-endian without leading zeros.
    n: Vec<u8>,
    e: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh 2048-bit key (from aws-lc's CSPRNG).
    pub(crate) fn generate() -> Result<Self, String> {
        let pair = KeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| "cannot generate an RSA key".to_owned())?;
        Self::from_pair(pair)
    }

    /// A key read back from its PKCS#8 DER form.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = KeyPair::from_pkcs8(der).map_err(|e| format!("not an RSA key: {e}"))?;
        Self::from_pair(pair)
    }

    fn from_pair(pair: KeyPair) -> Result<Self, String> {
        let public = pair.public_key().as_ref();
        let (n, e) = rsa_public_components(public)
            .ok_or_else(|| "cannot read the RSA public key".to_owned())?;
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(public));
        Ok(Self {
            kid,
            n: n.to_vec(),
            e: e.to_vec(),
            pair,
        })
    }

    /// The private key as PKCS#8 DER, to keep in the data directory.
    pub(crate) fn to_pkcs8(&self) -> Result<Vec<u8>, String> {
        self.pair
            .as_der()
            .map(|der| der.as_ref().to_vec())
            .map_err(|_| "cannot serialize the RSA key".to_owned())
    }

    /// The public key as a JSON Web Key, as Entra publishes its keys.
    pub(crate) fn jwk(&self) -> Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n),
            "e": URL_SAFE_NO_PAD.encode(&self.e),
        })
    }

    /// `header.claims.signature`, the header naming RS256 and this key.
    pub(crate) fn sign(&self, claims: &Value) -> Result<String, String> {
        let header = json!({ "typ": "JWT", "alg": "RS256", "kid": self.kid });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut sig,
            )
            .map_err(|_| "cannot sign the token".to_owned())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
    }

    /// The claims of a token this key signed. Checks the form, the header (RS256, this
    /// key's id) and the signature; the claims' meaning is the caller's.
    pub(crate) fn verify(&self, token: &str) -> Result<Value, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let header = decode_json(header)?;
        if header["alg"] != "RS256" || header["kid"] != self.kid.as_str() {
            return Err(JwtError::Signature);
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| JwtError::Malformed)?;
        let (signed, _) = token.rsplit_once('.').ok_or(JwtError::Malformed)?;
        UnparsedPublicKey::new(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            self.pair.public_key().as_ref(),
        )
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
        let claims = decode_json(claims)?;
        if !claims.is_object() {
            return Err(JwtError::Malformed);
        }
        Ok(claims)
    }
}

/// Whether `token` has the shape of a JWT (three base64url parts), before any decoding.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn decode_json(part: &str) -> Result<Value, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// Modulus and exponent of a DER `RSAPublicKey` (RFC 8017: a SEQUENCE of two INTEGERs),
/// without the sign byte.
fn rsa_public_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (body, rest) = der_element(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, body) = der_element(body, 0x02)?;
    let (e, body) = der_element(body, 0x02)?;
    if !body.is_empty() {
        return None;
    }
    Some((unsigned(n), unsigned(e)))
}

/// A DER INTEGER's magnitude: without leading zero bytes (one kept for zero itself).
fn unsigned(int: &[u8]) -> &[u8] {
    let zeros = int.iter().take_while(|&&b| b == 0).count();
    &int[zeros.min(int.len().saturating_sub(1))..]
}

/// One DER element with the given tag: its contents and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, input) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || input.len() < count {
            return None;
        }
        let (len_bytes, rest) = input.split_at(count);
        input = rest;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if input.len() < len {
        return None;
    }
    Some(input.split_at(len))
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// Generating RSA keys is slow-ish: the tests share two.
    fn key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate().unwrap())
    }

    fn other_key() -> &'static SigningKey {
        static KEY: OnceLock<SigningKey> = OnceLock::new();
        KEY.get_or_init(|| SigningKey::generate().unwrap())
    }

    fn b64(json: &Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn a_signed_token_verifies_and_keeps_its_claims() {
        let claims = json!({"aud": "https://iothubs.azure.net", "exp": 1_900_000_000u64});
        let token = key().sign(&claims).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(key().verify(&token), Ok(claims));
        let header = decode_json(token.split('.').next().unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(header["kid"], key().kid.as_str());
    }

    #[test]
    fn the_jwk_verifies_signatures_independently() {
        let token = key().sign(&json!({"sub": "x"})).unwrap();
        let jwk = key().jwk();
        assert_eq!(
            (jwk["kty"].as_str(), jwk["e"].as_str()),
            (Some("RSA"), Some("AQAB"))
        );
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "2048 bits, no sign byte");
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let public = signature::RsaPublicKeyComponents { n: &n, e: &e };
        public
            .verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(sig).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn tampered_foreign_and_malformed_tokens_are_refused() {
        let token = key().sign(&json!({"roles": "reader"})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        // Claims changed after signing.
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            b64(&json!({"roles": "owner"})),
            parts[2]
        );
        assert_eq!(key().verify(&forged), Err(JwtError::Signature));
        // Signed by another key, even one claiming this key's id.
        let foreign = other_key().sign(&json!({"roles": "reader"})).unwrap();
        assert_eq!(key().verify(&foreign), Err(JwtError::Signature));
        let fparts: Vec<&str> = foreign.split('.').collect();
        let relabelled = format!("{}.{}.{}", parts[0], fparts[1], fparts[2]);
        assert_eq!(key().verify(&relabelled), Err(JwtError::Signature));
        // alg none, HS256.
        for alg in ["none", "HS256"] {
            let header = b64(&json!({"alg": alg, "kid": key().kid}));
            let t = format!("{header}.{}.{}", parts[1], parts[2]);
            assert_eq!(key().verify(&t), Err(JwtError::Signature), "{alg}");
        }
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &format!("{}.{}.", parts[0], parts[1]),
            &format!("{}.e30.{}", b64(&json!([1])), parts[2]),
            &"a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(key().verify(bad).is_err(), "{bad:.40}");
        }
        // Claims that are JSON but not an object.
        let t = key().sign(&json!([1, 2])).unwrap();
        assert_eq!(key().verify(&t), Err(JwtError::Malformed));
    }

    #[test]
    fn the_key_survives_pkcs8_and_debug_shows_no_key_material() {
        let der = key().to_pkcs8().unwrap();
        let back = SigningKey::from_pkcs8(&der).unwrap();
        assert_eq!(back.kid, key().kid);
        let token = back.sign(&json!({"a": 1})).unwrap();
        assert!(key().verify(&token).is_ok());
        assert!(SigningKey::from_pkcs8(b"not a key").is_err());
        let debug = format!("{:?}", key());
        assert!(debug.contains(&key().kid) && debug.len() < 120, "{debug}");
    }

    #[test]
    fn der_reader_refuses_truncated_input() {
        let public = key().pair.public_key().as_ref();
        assert!(rsa_public_components(public).is_some());
        for cut in [0, 1, 2, 5, public.len() - 1] {
            assert!(rsa_public_components(&public[..cut]).is_none(), "{cut}");
        }
        assert_eq!(
            der_element(&[0x02, 0x01, 0x05], 0x02),
            Some((&[5u8][..], &[][..]))
        );
        assert_eq!(der_element(&[0x02, 0x85, 1, 1, 1, 1, 1], 0x02), None);
        assert_eq!(der_element(&[0x02, 0x80], 0x02), None);
    }
}
