//! Arguments shared by the device and module methods: how an identity authenticates, and the
//! optional device settings.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use iothub_rest_gen::types::{
    AuthenticationMechanism, AuthenticationType, SymmetricKey, X509Thumbprint,
};

use crate::error::{Error, Result};

/// The symmetric keys of a SAS-authenticated identity.
///
/// Keys are base64 of 16 to 64 bytes, checked before anything is sent. On create they may
/// be left to the service, which then generates both.
#[derive(Clone, Default)]
pub struct SasKeys {
    primary: Option<String>,
    secondary: Option<String>,
}

impl SasKeys {
    /// Both keys, base64.
    pub fn new(primary: impl Into<String>, secondary: impl Into<String>) -> Self {
        Self {
            primary: Some(primary.into()),
            secondary: Some(secondary.into()),
        }
    }

    /// No keys: the service generates them. For creation only: an update with it is refused
    /// before anything is sent, because the service would generate new keys for the existing
    /// identity, locking out a device still using the old ones.
    pub fn generated() -> Self {
        Self::default()
    }

    fn check(&self) -> Result<()> {
        for (argument, key) in [
            ("primary_key", &self.primary),
            ("secondary_key", &self.secondary),
        ] {
            if let Some(key) = key {
                check_key(argument, key)?;
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for SasKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |k: &Option<String>| {
            if k.is_some() {
                "[REDACTED]"
            } else {
                "generated"
            }
        };
        f.debug_struct("SasKeys")
            .field("primary", &shown(&self.primary))
            .field("secondary", &shown(&self.secondary))
            .finish()
    }
}

fn check_key(argument: &'static str, key: &str) -> Result<()> {
    // The reason never contains the key.
    let bytes = STANDARD.decode(key).map_err(|_| Error::InvalidArgument {
        argument,
        reason: "is not valid base64".into(),
    })?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(Error::InvalidArgument {
            argument,
            reason: format!(
                "decodes to {} bytes; the service takes 16 to 64",
                bytes.len()
            ),
        });
    }
    Ok(())
}

/// Checks the keys and thumbprints an `authentication` model carries (a bulk entry's), with
/// the rules of [`SasKeys`] and [`X509Thumbprints`]; empty or absent ones are the service's
/// to generate or refuse.
pub(crate) fn check_mechanism(auth: &AuthenticationMechanism) -> Result<()> {
    if let Some(keys) = &auth.symmetric_key {
        for (argument, key) in [
            ("primary_key", &keys.primary_key),
            ("secondary_key", &keys.secondary_key),
        ] {
            if let Some(key) = key.as_ref().filter(|k| !k.expose_secret().is_empty()) {
                check_key(argument, key.expose_secret())?;
            }
        }
    }
    if let Some(thumbprints) = &auth.x509_thumbprint {
        for (argument, t) in [
            ("primary_thumbprint", &thumbprints.primary_thumbprint),
            ("secondary_thumbprint", &thumbprints.secondary_thumbprint),
        ] {
            if let Some(t) = t.as_deref().filter(|t| !t.is_empty()) {
                check_thumbprint(argument, t)?;
            }
        }
    }
    Ok(())
}

/// The certificate thumbprints of a self-signed X.509 identity (hex SHA-1 or SHA-256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct X509Thumbprints {
    primary: String,
    secondary: String,
}

impl X509Thumbprints {
    /// Both thumbprints.
    pub fn new(primary: impl Into<String>, secondary: impl Into<String>) -> Self {
        Self {
            primary: primary.into(),
            secondary: secondary.into(),
        }
    }

    fn check(&self) -> Result<()> {
        check_thumbprint("primary_thumbprint", &self.primary)?;
        check_thumbprint("secondary_thumbprint", &self.secondary)
    }
}

/// The `authentication` of a SAS identity, as the `*_with_sas` methods send it: for bulk
/// entries ([`bulk_entry`](crate::bulk_entry)) and anything else that takes the model.
impl From<SasKeys> for AuthenticationMechanism {
    fn from(keys: SasKeys) -> Self {
        Auth::Sas(&keys).mechanism()
    }
}

/// The `authentication` of a self-signed X.509 identity, as the `*_with_x509` methods send it.
impl From<X509Thumbprints> for AuthenticationMechanism {
    fn from(thumbprints: X509Thumbprints) -> Self {
        Auth::X509(&thumbprints).mechanism()
    }
}

fn check_thumbprint(argument: &'static str, t: &str) -> Result<()> {
    if !matches!(t.len(), 40 | 64) || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument {
            argument,
            reason: format!(
                "{t:?} is not a hex SHA-1 (40 digits) or SHA-256 (64 digits) thumbprint"
            ),
        });
    }
    Ok(())
}

/// How an identity authenticates; one value per `*_with_*` method family.
pub(crate) enum Auth<'a> {
    Sas(&'a SasKeys),
    X509(&'a X509Thumbprints),
    CertificateAuthority,
}

impl Auth<'_> {
    pub(crate) fn check(&self) -> Result<()> {
        match self {
            Auth::Sas(keys) => keys.check(),
            Auth::X509(thumbprints) => thumbprints.check(),
            Auth::CertificateAuthority => Ok(()),
        }
    }

    /// [`check`](Self::check), and for an update no keys left to the service: the request
    /// would carry `"symmetricKey": {}`, and the service would regenerate both keys of the
    /// existing identity.
    pub(crate) fn check_update(&self) -> Result<()> {
        if let Auth::Sas(keys) = self
            && (keys.primary.is_none() || keys.secondary.is_none())
        {
            return Err(Error::InvalidArgument {
                argument: "keys",
                reason: "SasKeys::generated() on an update would make the service generate new \
                         keys, locking out whatever uses the current ones; pass the keys to keep \
                         (or new ones) with SasKeys::new(primary, secondary)"
                    .to_owned(),
            });
        }
        self.check()
    }

    /// The `authentication` object exactly as the reference sends it.
    pub(crate) fn mechanism(&self) -> AuthenticationMechanism {
        match self {
            Auth::Sas(keys) => AuthenticationMechanism {
                type_: Some(AuthenticationType::Sas),
                // Sent even when both keys are left to the service: `"symmetricKey": {}`.
                symmetric_key: Some(SymmetricKey {
                    primary_key: keys.primary.clone().map(Into::into),
                    secondary_key: keys.secondary.clone().map(Into::into),
                }),
                x509_thumbprint: None,
            },
            Auth::X509(t) => AuthenticationMechanism {
                type_: Some(AuthenticationType::SelfSigned),
                symmetric_key: None,
                x509_thumbprint: Some(X509Thumbprint {
                    primary_thumbprint: Some(t.primary.clone()),
                    secondary_thumbprint: Some(t.secondary.clone()),
                }),
            },
            Auth::CertificateAuthority => AuthenticationMechanism {
                type_: Some(AuthenticationType::CertificateAuthority),
                symmetric_key: None,
                x509_thumbprint: None,
            },
        }
    }
}

/// Optional settings of a device identity (the reference's keyword arguments).
///
/// ```
/// use iothub_registry::DeviceOptions;
///
/// let edge = DeviceOptions::new().iot_edge(true).status_reason("provisioned by CI");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceOptions {
    pub(crate) iot_edge: bool,
    pub(crate) status_reason: Option<String>,
    pub(crate) device_scope: Option<String>,
    pub(crate) parent_scopes: Vec<String>,
}

impl DeviceOptions {
    /// No options: not an IoT Edge device, no reason, no scope.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the device as an IoT Edge device (`capabilities.iotEdge`).
    pub fn iot_edge(mut self, iot_edge: bool) -> Self {
        self.iot_edge = iot_edge;
        self
    }

    /// Why the device has its status (`statusReason`).
    pub fn status_reason(mut self, reason: impl Into<String>) -> Self {
        self.status_reason = Some(reason.into());
        self
    }

    /// The scope of the device (`deviceScope`): for a child device, its parent edge device's
    /// scope.
    pub fn device_scope(mut self, scope: impl Into<String>) -> Self {
        self.device_scope = Some(scope.into());
        self
    }

    /// The scopes of the device's parents (`parentScopes`), for an edge device in a hierarchy.
    pub fn parent_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.parent_scopes = scopes.into_iter().map(Into::into).collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_lengths_are_checked_without_echoing_the_key() {
        let k16 = STANDARD.encode([7u8; 16]);
        let k64 = STANDARD.encode([7u8; 64]);
        assert!(SasKeys::new(&k16, &k64).check().is_ok());
        for (bad, reason) in [
            (STANDARD.encode([1u8; 15]), "decodes to 15 bytes"),
            (STANDARD.encode([1u8; 65]), "decodes to 65 bytes"),
            ("not base64!".to_owned(), "not valid base64"),
        ] {
            let err = SasKeys::new(&k16, &bad).check().unwrap_err().to_string();
            assert!(
                err.contains(reason) && err.contains("secondary_key"),
                "{err}"
            );
            assert!(!err.contains(&bad), "{err}");
        }
        assert!(format!("{:?}", SasKeys::new(&k16, &k16)).contains("REDACTED"));
        assert!(!format!("{:?}", SasKeys::new(&k16, &k16)).contains(&k16));
    }

    #[test]
    fn thumbprints_must_be_hex_sha1_or_sha256() {
        let sha1 = "A".repeat(40);
        let sha256 = "0".repeat(64);
        assert!(X509Thumbprints::new(&sha1, &sha256).check().is_ok());
        assert!(X509Thumbprints::new("xyz", &sha1).check().is_err());
        assert!(X509Thumbprints::new(&sha1, "G".repeat(40)).check().is_err());
    }

    #[test]
    fn mechanisms_match_the_reference_bodies() {
        let generated = Auth::Sas(&SasKeys::generated()).mechanism();
        assert_eq!(
            serde_json::to_value(generated).unwrap(),
            serde_json::json!({ "type": "sas", "symmetricKey": {} })
        );
        assert_eq!(
            serde_json::to_value(Auth::CertificateAuthority.mechanism()).unwrap(),
            serde_json::json!({ "type": "certificateAuthority" })
        );
    }
}
