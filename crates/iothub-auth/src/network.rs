//! How the SDK's connections reach the hub: extra trusted root certificates and the proxy.
//!
//! One [`NetworkOptions`] value configures both the HTTPS client (`iothub-rest-gen`) and the
//! AMQP client (`iothub-amqp`); `iothub-registry` hands the same one to both. Each transport
//! documents how it applies them.
//!
//! ```
//! use iothub_auth::network::{NetworkOptions, ProxySetting};
//!
//! # let pem = include_str!("../testdata/network_root.pem");
//! let mut network = NetworkOptions::new();
//! // An emulator's CA, or a TLS-inspecting proxy's: trusted besides the usual roots.
//! network.add_root_certificates_pem(pem)?;
//! network.set_proxy(ProxySetting::url("http://user:secret@proxy.corp.example:3128")?);
//! assert_eq!(network.root_certificates().len(), 1);
//! // The proxy's password never shows.
//! assert!(!format!("{network:?}").contains("secret"));
//! # Ok::<(), iothub_auth::network::NetworkError>(())
//! ```

use std::fmt;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use url::Url;

/// Extra root certificates and the proxy setting, shared by the SDK's transports.
///
/// The default trusts no extra roots and takes the proxy from the environment
/// ([`ProxySetting::Environment`]). Certificates are parsed from PEM once, when added. `Debug`
/// shows how many roots there are and the proxy without its credentials.
#[derive(Clone, Default)]
pub struct NetworkOptions {
    roots: Vec<CertificateDer<'static>>,
    proxy: ProxySetting,
}

impl NetworkOptions {
    /// No extra roots; the proxy from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts every certificate of a PEM document as a root, besides the transport's usual ones
    /// (e.g. an emulator's CA or a TLS-inspecting proxy's). May be called several times; on an
    /// error nothing is added.
    ///
    /// # Errors
    ///
    /// [`NetworkError::UnreadablePem`] when the document is not PEM,
    /// [`NetworkError::NoCertificate`] when it holds no certificate. Whether the DER inside is
    /// a usable certificate is checked by the transport that builds its TLS configuration.
    pub fn add_root_certificates_pem(&mut self, pem: impl AsRef<[u8]>) -> Result<(), NetworkError> {
        let certificates = CertificateDer::pem_slice_iter(pem.as_ref())
            .collect::<Result<Vec<_>, _>>()
            .map_err(NetworkError::UnreadablePem)?;
        if certificates.is_empty() {
            return Err(NetworkError::NoCertificate);
        }
        self.roots.extend(certificates);
        Ok(())
    }

    /// The extra root certificates, in DER, in the order they were added.
    pub fn root_certificates(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Replaces the proxy setting.
    pub fn set_proxy(&mut self, proxy: ProxySetting) {
        self.proxy = proxy;
    }

    /// The proxy setting.
    pub fn proxy(&self) -> &ProxySetting {
        &self.proxy
    }
}

impl fmt::Debug for NetworkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkOptions")
            .field("root_certificates", &self.roots.len())
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Which proxy connections go through. `Debug` never shows the proxy's credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum ProxySetting {
    /// Whatever the standard environment variables say (`HTTPS_PROXY`, `HTTP_PROXY`,
    /// `ALL_PROXY`, `NO_PROXY`). The default.
    #[default]
    Environment,
    /// Every connection goes through this proxy, whatever the environment says. Make one with
    /// [`ProxySetting::url`].
    Url(Url),
    /// No proxy, whatever the environment says.
    None,
}

impl ProxySetting {
    /// An explicit proxy, `http://[user:password@]host[:port]`. As most HTTP clients do, a
    /// proxy written without a scheme (`proxy.corp.example:3128`) is taken as `http://`.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidProxyUrl`] when the text is not a URL with a host; the error
    /// never repeats the text, which may hold a password.
    pub fn url(text: &str) -> Result<Self, NetworkError> {
        let parsed = Url::parse(text);
        // `proxy:3128` parses with `proxy` as its scheme and no host; `10.0.0.1:3128` does not
        // parse at all. Both mean an http proxy, as they do to reqwest and curl.
        let retried = match &parsed {
            Ok(url) if url.has_host() => return Ok(Self::Url(url.clone())),
            Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) => {
                Url::parse(&format!("http://{text}"))
            }
            Err(error) => return Err(NetworkError::InvalidProxyUrl(*error)),
        };
        match retried {
            Ok(url) if url.has_host() => Ok(Self::Url(url)),
            // What was wrong with the text as written, when it did not parse at all.
            Ok(_) => Err(NetworkError::InvalidProxyUrl(
                parsed.err().unwrap_or(url::ParseError::EmptyHost),
            )),
            Err(error) => Err(NetworkError::InvalidProxyUrl(parsed.err().unwrap_or(error))),
        }
    }
}

impl ProxySetting {
    /// The proxy for an `https` (or `wss`) connection to `host`: the explicit URL, nothing for
    /// [`ProxySetting::None`], and for [`ProxySetting::Environment`] what the variables say as
    /// reqwest reads them: `HTTPS_PROXY` (or `https_proxy`), else `ALL_PROXY` (or
    /// `all_proxy`), unless `NO_PROXY` (or `no_proxy`) names the host. `NO_PROXY` is a comma
    /// separated list of host names (matching the name and its subdomains; a leading `.` is
    /// ignored), IP addresses, or `*` for every host.
    ///
    /// # Errors
    ///
    /// [`NetworkError::InvalidProxyUrl`] when a variable holds something that is not a proxy
    /// URL.
    pub fn for_https(&self, host: &str) -> Result<Option<Url>, NetworkError> {
        self.resolve(host, |name| std::env::var(name).ok())
    }

    /// [`for_https`](Self::for_https) with the environment read through `var`.
    fn resolve(
        &self,
        host: &str,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Url>, NetworkError> {
        match self {
            Self::None => Ok(None),
            Self::Url(url) => Ok(Some(url.clone())),
            Self::Environment => {
                let first = |names: &[&str]| {
                    names
                        .iter()
                        .find_map(|name| var(name).filter(|v| !v.trim().is_empty()))
                };
                if first(&["NO_PROXY", "no_proxy"]).is_some_and(|list| no_proxy(&list, host)) {
                    return Ok(None);
                }
                match first(&["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]) {
                    None => Ok(None),
                    Some(text) => match Self::url(text.trim())? {
                        Self::Url(url) => Ok(Some(url)),
                        _ => Ok(None),
                    },
                }
            }
        }
    }
}

/// Whether a `NO_PROXY` list names `host` (without port or brackets).
fn no_proxy(list: &str, host: &str) -> bool {
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_ascii_lowercase();
    list.split(',').map(str::trim).any(|entry| {
        let entry = entry.trim_start_matches('.').to_ascii_lowercase();
        entry == "*"
            || (!entry.is_empty() && (host == entry || host.ends_with(&format!(".{entry}"))))
    })
}

impl fmt::Debug for ProxySetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Environment => f.write_str("Environment"),
            Self::None => f.write_str("None"),
            Self::Url(url) => {
                let has_credentials = !url.username().is_empty() || url.password().is_some();
                let mut shown = url.clone();
                // Both fail only for URLs that cannot have credentials, which then have none.
                let _ = shown.set_username("");
                let _ = shown.set_password(None);
                f.debug_struct("Url")
                    .field("url", &shown.as_str())
                    .field("credentials", &has_credentials.then_some("[REDACTED]"))
                    .finish()
            }
        }
    }
}

/// Why a network option was refused. The messages never repeat a proxy URL (it may hold a
/// password).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetworkError {
    /// A root certificate document is not valid PEM.
    #[error("the root certificate PEM could not be read: {0}")]
    UnreadablePem(rustls_pki_types::pem::Error),
    /// A root certificate document holds no `CERTIFICATE` section.
    #[error("the root certificate PEM holds no certificate")]
    NoCertificate,
    /// A proxy URL is not a URL with a host.
    #[error("the proxy URL is not usable: {0}")]
    InvalidProxyUrl(url::ParseError),
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = include_str!("../testdata/network_root.pem");

    fn proxy_url(text: &str) -> Url {
        match ProxySetting::url(text) {
            Ok(ProxySetting::Url(url)) => url,
            other => panic!("{text:?}: {other:?}"),
        }
    }

    #[test]
    fn the_environment_names_the_https_proxy_unless_no_proxy_names_the_host() {
        let env = |pairs: &[(&str, &str)]| {
            let vars: std::collections::HashMap<String, String> = pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect();
            move |name: &str| vars.get(name).cloned()
        };
        let resolve = |pairs: &[(&str, &str)], host: &str| {
            ProxySetting::Environment
                .resolve(host, env(pairs))
                .unwrap()
                .map(|u| u.to_string())
        };
        let hub = "hub.azure-devices.net";
        assert_eq!(resolve(&[], hub), None);
        assert_eq!(
            resolve(&[("HTTPS_PROXY", "http://p:3128")], hub).as_deref(),
            Some("http://p:3128/")
        );
        assert_eq!(
            resolve(&[("https_proxy", "p:8080")], hub).as_deref(),
            Some("http://p:8080/")
        );
        assert_eq!(
            resolve(&[("ALL_PROXY", "http://all:1")], hub).as_deref(),
            Some("http://all:1/")
        );
        // HTTP_PROXY is for http:// targets only.
        assert_eq!(resolve(&[("HTTP_PROXY", "http://p:3128")], hub), None);
        for no in [
            "azure-devices.net",
            ".azure-devices.net",
            "other, HUB.azure-devices.net",
            "*",
        ] {
            let pairs = [("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", no)];
            assert_eq!(resolve(&pairs, hub), None, "{no}");
        }
        assert!(
            resolve(
                &[
                    ("HTTPS_PROXY", "http://p:3128"),
                    ("NO_PROXY", "devices.net.example")
                ],
                hub
            )
            .is_some()
        );
        assert_eq!(
            resolve(
                &[("HTTPS_PROXY", "http://p:3128"), ("NO_PROXY", "::1")],
                "[::1]"
            ),
            None
        );
        assert!(matches!(
            ProxySetting::Environment.resolve(hub, env(&[("HTTPS_PROXY", "http://")])),
            Err(NetworkError::InvalidProxyUrl(_))
        ));
        // Explicit settings ignore the environment.
        let explicit = ProxySetting::url("http://mine:1").unwrap();
        assert_eq!(
            explicit
                .resolve(hub, env(&[("NO_PROXY", "*")]))
                .unwrap()
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://mine:1/")
        );
        assert_eq!(
            ProxySetting::None
                .resolve(hub, env(&[("HTTPS_PROXY", "http://p:1")]))
                .unwrap(),
            None
        );
    }

    #[test]
    fn the_default_adds_nothing_and_reads_the_environment() {
        let options = NetworkOptions::new();
        assert!(options.root_certificates().is_empty());
        assert_eq!(options.proxy(), &ProxySetting::Environment);
    }

    #[test]
    fn certificates_are_parsed_once_into_der() {
        let mut options = NetworkOptions::new();
        options.add_root_certificates_pem(PEM).unwrap();
        let bundle = format!("{PEM}\n{PEM}");
        options
            .add_root_certificates_pem(bundle.as_bytes())
            .unwrap();
        let roots = options.root_certificates();
        assert_eq!(roots.len(), 3);
        // DER: a SEQUENCE.
        assert_eq!(roots[0].as_ref()[0], 0x30);
        assert_eq!(roots[0], roots[2]);
    }

    #[test]
    fn a_pem_without_a_certificate_is_refused_and_adds_nothing() {
        let mut options = NetworkOptions::new();
        for pem in [&b""[..], b"not a pem"] {
            assert!(matches!(
                options.add_root_certificates_pem(pem),
                Err(NetworkError::NoCertificate)
            ));
        }
        let error = options
            .add_root_certificates_pem("-----BEGIN CERTIFICATE-----\n!!!\n")
            .unwrap_err();
        assert!(matches!(error, NetworkError::UnreadablePem(_)), "{error:?}");
        assert!(
            error
                .to_string()
                .starts_with("the root certificate PEM could not be read: "),
            "{error}"
        );
        assert!(options.root_certificates().is_empty());
    }

    #[test]
    fn proxy_urls_parse_with_or_without_a_scheme() {
        assert_eq!(
            proxy_url("http://proxy.local:3128").as_str(),
            "http://proxy.local:3128/"
        );
        assert_eq!(proxy_url("proxy:3128").as_str(), "http://proxy:3128/");
        assert_eq!(proxy_url("10.0.0.1:8080").as_str(), "http://10.0.0.1:8080/");
        assert_eq!(proxy_url("u:p@proxy:1").password(), Some("p"));
        assert_eq!(proxy_url("https://proxy").scheme(), "https");
    }

    #[test]
    fn unusable_proxy_urls_are_refused_without_repeating_them() {
        for text in ["not a url", "http://", "", "http://user:hunter2@[::1"] {
            let error = ProxySetting::url(text).unwrap_err();
            assert!(
                matches!(error, NetworkError::InvalidProxyUrl(_)),
                "{text:?}: {error:?}"
            );
            assert!(!error.to_string().contains("hunter2"), "{error}");
            assert!(!format!("{error:?}").contains("hunter2"), "{error:?}");
        }
    }

    #[test]
    fn debug_never_shows_proxy_credentials() {
        let mut options = NetworkOptions::new();
        options.set_proxy(ProxySetting::url("http://alice:hunter2@proxy.local:3128").unwrap());
        options.add_root_certificates_pem(PEM).unwrap();
        let shown = format!("{options:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("alice"), "{shown}");
        assert!(shown.contains("proxy.local:3128"), "{shown}");
        assert!(shown.contains("[REDACTED]"), "{shown}");
        assert!(shown.contains("root_certificates: 1"), "{shown}");
        // The setting alone, too, and a URL without credentials says so.
        let alone = format!("{:?}", options.proxy());
        assert!(!alone.contains("hunter2"), "{alone}");
        let plain = format!("{:?}", ProxySetting::url("http://proxy.local").unwrap());
        assert!(plain.contains("credentials: None"), "{plain}");
        assert_eq!(format!("{:?}", ProxySetting::None), "None");
    }
}
