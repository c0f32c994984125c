//! Implicit TLS, done here rather than by fe2o3-amqp, whose TLS first sends the AMQP TLS
//! protocol header (`AMQP 2 1 0 0`) that Azure never expects.
//!
//! rustls with the aws-lc-rs provider, as in the rest of the workspace. Trust is what the
//! SDK's HTTPS client (reqwest) trusts, through the same verifier: the operating system's
//! roots (`rustls-platform-verifier`; on Linux the system store, or `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` when set) plus any roots the user adds (an emulator's CA, a corporate
//! TLS-inspecting proxy's CA), parsed from PEM by `iothub_auth::network::NetworkOptions`. So
//! behind a TLS-inspecting proxy whose CA the machine trusts, C2D works wherever REST does.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls_platform_verifier::Verifier;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::error::{Error, Result};

/// The client configuration: the operating system's roots plus `extra_roots`.
pub(crate) fn client_config(extra_roots: &[CertificateDer<'static>]) -> Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Verifier::new_with_extra_roots(extra_roots.iter().cloned(), provider.clone())
        .map_err(|error| Error::Configuration {
            reason: format!("the trusted roots are not usable: {error}"),
        })?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Configuration {
            reason: format!("TLS could not be configured: {error}"),
        })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name the server certificate must match: the host without port or IPv6 brackets.
pub(crate) fn server_name(host: &str) -> Result<ServerName<'static>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    ServerName::try_from(bare.to_owned()).map_err(|error| Error::Configuration {
        reason: format!("{host:?} is not a valid TLS server name: {error}"),
    })
}

/// Runs the TLS handshake on `stream`.
pub(crate) async fn handshake<S>(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    stream: S,
) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    TlsConnector::from(config).connect(name, stream).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_drop_brackets() {
        assert!(matches!(
            server_name("[::1]").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("127.0.0.1").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("hub.azure-devices.net").unwrap(),
            ServerName::DnsName(_)
        ));
    }

    #[test]
    fn bad_pem_is_a_configuration_error() {
        let cs: iothub_auth::ConnectionString = "HostName=h;SharedAccessKeyName=service;\
                                                 SharedAccessKey=AAECAwQFBgcICQoLDA0ODw=="
            .parse()
            .unwrap();
        for pem in [
            &b""[..],
            b"not a pem",
            b"-----BEGIN CERTIFICATE-----\n!!!\n",
            // PEM, but the DER inside is no certificate.
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            let built =
                crate::ServiceClient::builder(iothub_auth::Credential::from_connection_string(&cs))
                    .add_root_certificate_pem(pem)
                    .build();
            assert!(matches!(built, Err(Error::Configuration { .. })));
        }
    }

    #[test]
    fn the_default_config_builds() {
        client_config(&[]).unwrap();
    }
}
