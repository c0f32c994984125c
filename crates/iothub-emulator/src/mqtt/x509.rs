//! X.509 device authentication, self-signed: the TLS listener asks for a client certificate
//! without requiring one, accepts any (the handshake still proves the client holds its
//! private key), and the session then compares the certificate's thumbprint with the
//! device's registered ones. CA-signed device certificates are later work.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// Requests, never requires, a client certificate, and accepts any: which device it
/// belongs to is decided by thumbprint after CONNECT.
#[derive(Debug)]
pub(crate) struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl AnyClientCert {
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        Self { provider }
    }
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificate's SHA-1 and SHA-256 thumbprints, uppercase hex (as the registry shows
/// them; IoT Hub accepts either kind).
pub(crate) fn thumbprints(der: &[u8]) -> [String; 2] {
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let sha256 = Sha256::digest(der);
    [hex(sha1.as_ref()), hex(&sha256)]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Whether a registered thumbprint (any case, colons or spaces allowed) is one of `presented`.
pub(crate) fn matches(registered: &str, presented: &[String; 2]) -> bool {
    let clean: String = registered
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_uppercase();
    !clean.is_empty() && presented.contains(&clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_compare_without_case_or_separators() {
        let t = thumbprints(b"abc");
        assert_eq!(t[0], "A9993E364706816ABA3E25717850C26C9CD0D89D");
        assert!(matches(
            "a9:99:3e:36:47:06:81:6a:ba:3e:25:71:78:50:c2:6c:9c:d0:d8:9d",
            &t
        ));
        assert!(matches(&t[1].to_lowercase(), &t));
        assert!(!matches("", &t));
        assert!(!matches("00", &t));
    }
}
