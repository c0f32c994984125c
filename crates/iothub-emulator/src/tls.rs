//! Certificates for the emulator's TLS listeners: either the user's own chain and key, or a
//! locally generated CA plus a leaf certificate for the names the emulator is reached by.
//!
//! Generated material lives in one directory:
//! - `ca.pem`: the CA certificate clients trust (`REQUESTS_CA_BUNDLE=ca.pem` for Python);
//! - `server.pem`: the leaf followed by the CA, so it can also be passed to [`TlsMaterial::load`]
//!   (which serves a chain as given);
//! - `server.key`: the leaf's PKCS#8 key (mode 0600 on unix);
//! - `names.txt`: the leaf's subject alternative names and expiry. Reading SANs back from the
//!   certificate would need an X.509 parser, so this record decides reuse instead; it is written
//!   last, so an interrupted write is regenerated rather than reused.
//!
//! A generated leaf is served alone, as the service and most TLS servers serve theirs: clients
//! trust the CA, and some (Node's `UNABLE_TO_VERIFY_LEAF_SIGNATURE` checks) expect the root not
//! to be sent. The user's own chain is served as given.
//!
//! The CA's private key is never written: once the leaf is signed it is dropped, so trusting
//! `ca.pem` can never vouch for any other certificate.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

const CA_FILE: &str = "ca.pem";
const CERT_FILE: &str = "server.pem";
const KEY_FILE: &str = "server.key";
const NAMES_FILE: &str = "names.txt";

const CA_COMMON_NAME: &str = "iothub-emulator local CA";
/// Used as the leaf's CN when the first name does not fit (X.509 caps CN at 64 characters).
const FALLBACK_COMMON_NAME: &str = "iothub-emulator";
/// Names every generated leaf covers, whatever the user asked for.
const ALWAYS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const DAY: u64 = 86_400;
/// Apple platforms reject TLS server certificates valid for more than 825 days in total.
const VALIDITY: u64 = 825 * DAY;
/// Backdating absorbs clock skew between the emulator and its clients.
const BACKDATE: u64 = DAY;
/// A stored leaf this close to expiry is replaced rather than reused, so a long-running emulator
/// started now keeps working through the day.
const RENEW_MARGIN: u64 = DAY;

/// PEM certificate and key material the emulator serves with. `Debug` redacts the key.
#[derive(Clone)]
pub(crate) struct TlsMaterial {
    /// The certificate clients should trust.
    pub(crate) ca_pem: String,
    /// The chain, leaf first.
    pub(crate) cert_pem: String,
    /// The leaf's private key.
    pub(crate) key_pem: String,
    /// Serve the leaf without the rest of the chain (generated material).
    pub(crate) leaf_only: bool,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .field("leaf_only", &self.leaf_only)
            .finish()
    }
}

/// Why TLS material could not be produced, loaded or turned into a server configuration.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A PEM file (or the in-memory PEM) could not be parsed.
    #[error("invalid PEM in {origin}: {source}")]
    Pem {
        origin: String,
        #[source]
        source: pem::Error,
    },
    /// Certificate generation failed.
    #[error("cannot generate a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// rustls refused the certificate or key (for example, a key that does not match).
    #[error("invalid TLS certificate or key: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("no certificate in {0}")]
    NoCertificate(String),
    /// The key file holds no unencrypted PKCS#8, PKCS#1 or SEC1 private key.
    #[error("no unencrypted private key (PKCS#8, PKCS#1 or SEC1) in {0}")]
    NoKey(String),
    /// A requested name is neither a DNS name nor an IP address.
    #[error("not a DNS name or IP address: {0:?}")]
    InvalidName(String),
}

impl TlsMaterial {
    /// Generates a fresh CA (CN "iothub-emulator local CA") and a leaf signed by it, with SANs
    /// for `names` (DNS names or IP address literals) plus localhost, 127.0.0.1 and ::1, the
    /// serverAuth EKU, valid from a day ago for 825 days in total.
    pub(crate) fn generate(names: &[String]) -> Result<Self, TlsError> {
        Self::generate_at(names, unix_now()).map(|(material, _)| material)
    }

    /// Loads the user's PEM certificate chain (leaf first) and private key (PKCS#8, PKCS#1 or
    /// SEC1). `ca_pem` is the last certificate of the chain, which is the leaf itself when the
    /// file holds a single certificate.
    pub(crate) fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_file = read(cert_path)?;
        let origin = cert_path.display().to_string();
        let certs = parse_certs(&cert_file, &origin)?;
        let key_file = read(key_path)?;
        let key = parse_key(&key_file, &key_path.display().to_string())?;
        Self::from_der(&certs, &key)
    }

    /// Reuses `ca.pem`, `server.pem` and `server.key` in `dir` when `names.txt` says the leaf
    /// covers every requested name and is not about to expire, and the files load and match;
    /// otherwise generates new material and writes it (the key with mode 0600 on unix).
    /// Returns the material and whether it was generated.
    pub(crate) fn load_or_generate(dir: &Path, names: &[String]) -> Result<(Self, bool), TlsError> {
        let wanted = san_list(names)?;
        let now = unix_now();
        if let Some(mut material) = Self::reusable(dir, &wanted, now) {
            material.leaf_only = true;
            return Ok((material, false));
        }
        let (material, record) = Self::generate_at(names, now)?;
        material.write(dir, &record)?;
        Ok((material, true))
    }

    /// A rustls server configuration (aws-lc-rs, default protocol versions, no client
    /// authentication) serving this chain (or the leaf alone, for generated material),
    /// offering `alpn` in order of preference.
    pub(crate) fn server_config(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut certs = parse_certs(self.cert_pem.as_bytes(), "the certificate chain")?;
        if self.leaf_only {
            certs.truncate(1);
        }
        let key = parse_key(self.key_pem.as_bytes(), "the private key")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// As [`TlsMaterial::server_config`], but asking for (never requiring) a client
    /// certificate, which X.509 devices authenticate with: for the MQTT endpoint, and for the
    /// HTTPS listener, whose WebSockets carry MQTT too. A client without one (every service
    /// client) answers with none and is served as before.
    pub(crate) fn server_config_asking_client_certs(
        &self,
        alpn: &[&[u8]],
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut certs = parse_certs(self.cert_pem.as_bytes(), "the certificate chain")?;
        if self.leaf_only {
            certs.truncate(1);
        }
        let key = parse_key(self.key_pem.as_bytes(), "the private key")?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(crate::mqtt::x509::AnyClientCert::new(provider.clone()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    fn generate_at(names: &[String], now: u64) -> Result<(Self, Record), TlsError> {
        let sans = san_list(names)?;
        let not_before = now.saturating_sub(BACKDATE);
        let not_after = not_before + VALIDITY;
        let epoch = rcgen::date_time_ymd(1970, 1, 1);

        let mut ca = CertificateParams::default();
        ca.distinguished_name = DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, CA_COMMON_NAME);
        // pathlen 0: the CA signs leaves only.
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = epoch + Duration::from_secs(not_before);
        ca.not_after = epoch + Duration::from_secs(not_after);
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(sans.clone())?;
        let common_name = sans
            .first()
            .filter(|n| n.len() <= 64)
            .map_or(FALLBACK_COMMON_NAME, String::as_str);
        leaf.distinguished_name = DistinguishedName::new();
        leaf.distinguished_name
            .push(DnType::CommonName, common_name);
        leaf.is_ca = IsCa::ExplicitNoCa;
        // ECDSA keys only sign; key encipherment is an RSA key-exchange usage.
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf.use_authority_key_identifier_extension = true;
        // Same window as the CA, so the leaf is never valid outside its issuer's validity.
        leaf.not_before = epoch + Duration::from_secs(not_before);
        leaf.not_after = epoch + Duration::from_secs(not_after);
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

        // Encoded here rather than by rcgen so generated and loaded material are byte-identical
        // on every platform (rcgen writes CRLF on Windows).
        let ca_pem = to_pem("CERTIFICATE", ca_cert.der());
        let material = Self {
            cert_pem: format!("{}{ca_pem}", to_pem("CERTIFICATE", leaf_cert.der())),
            ca_pem,
            key_pem: to_pem("PRIVATE KEY", &leaf_key.serialize_der()),
            leaf_only: true,
        };
        Ok((material, Record { not_after, sans }))
    }

    fn from_der(certs: &[CertificateDer<'_>], key: &PrivateKeyDer<'_>) -> Result<Self, TlsError> {
        let label = match key {
            PrivateKeyDer::Pkcs8(_) => "PRIVATE KEY",
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => return Err(TlsError::NoKey("the private key".into())),
        };
        let Some(last) = certs.last() else {
            return Err(TlsError::NoCertificate("the certificate chain".into()));
        };
        Ok(Self {
            ca_pem: to_pem("CERTIFICATE", last),
            cert_pem: certs.iter().map(|c| to_pem("CERTIFICATE", c)).collect(),
            key_pem: to_pem(label, key.secret_der()),
            leaf_only: false,
        })
    }

    /// The stored material, if it can be served for `wanted` at `now`. Any problem (missing or
    /// unreadable files, stale record, mismatched key or CA) means "generate anew".
    fn reusable(dir: &Path, wanted: &[String], now: u64) -> Option<Self> {
        let record = Record::parse(&fs::read_to_string(dir.join(NAMES_FILE)).ok()?)?;
        if record.not_after <= now.saturating_add(RENEW_MARGIN)
            || !wanted.iter().all(|n| record.sans.contains(n))
        {
            return None;
        }
        let material = Self::load(&dir.join(CERT_FILE), &dir.join(KEY_FILE)).ok()?;
        let ca = parse_certs(&fs::read(dir.join(CA_FILE)).ok()?, CA_FILE).ok()?;
        let [ca] = ca.as_slice() else { return None };
        if to_pem("CERTIFICATE", ca) != material.ca_pem {
            return None;
        }
        // Building the configuration checks that the key belongs to the leaf.
        material.server_config(&[]).ok()?;
        Some(material)
    }

    fn write(&self, dir: &Path, record: &Record) -> Result<(), TlsError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let names = dir.join(NAMES_FILE);
        // Drop the old record first: should a write below fail, nothing is reused next time.
        match fs::remove_file(&names) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&names)(e)),
            _ => {}
        }
        let ca = dir.join(CA_FILE);
        fs::write(&ca, &self.ca_pem).map_err(io_err(&ca))?;
        let cert = dir.join(CERT_FILE);
        fs::write(&cert, &self.cert_pem).map_err(io_err(&cert))?;
        let key = dir.join(KEY_FILE);
        write_private(&key, self.key_pem.as_bytes()).map_err(io_err(&key))?;
        fs::write(&names, record.to_text()).map_err(io_err(&names))?;
        Ok(())
    }
}

/// What `names.txt` holds.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    /// Unix seconds.
    not_after: u64,
    /// Normalised, as produced by [`san_list`].
    sans: Vec<String>,
}

impl Record {
    fn to_text(&self) -> String {
        let mut text = String::from(
            "# Written by iothub-emulator: the subject alternative names of server.pem and its\n\
             # expiry (unix seconds). The files are reused while they cover the requested names;\n\
             # delete this file to get a new certificate.\n",
        );
        text.push_str(&format!("not_after={}\n", self.not_after));
        for san in &self.sans {
            text.push_str(&format!("san={san}\n"));
        }
        text
    }

    fn parse(text: &str) -> Option<Self> {
        let mut not_after = None;
        let mut sans = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=')?;
            match key {
                "not_after" => not_after = Some(value.parse().ok()?),
                "san" => sans.push(value.to_owned()),
                _ => return None,
            }
        }
        Some(Self {
            not_after: not_after?,
            sans,
        })
    }
}

/// The SANs of a leaf for `names`: each trimmed, IPv6 brackets removed, IP addresses in
/// canonical form, DNS names lowercased without a trailing dot, then the [`ALWAYS`] names,
/// without duplicates. Empty entries are skipped.
fn san_list(names: &[String]) -> Result<Vec<String>, TlsError> {
    let mut sans: Vec<String> = Vec::new();
    let requested = names.iter().map(String::as_str).chain(ALWAYS);
    for raw in requested {
        let name = raw.trim();
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if name.is_empty() {
            continue;
        }
        let normalized = match name.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => {
                let dns = name.trim_end_matches('.').to_ascii_lowercase();
                match ServerName::try_from(dns.as_str()) {
                    Ok(ServerName::DnsName(_)) => dns,
                    _ => return Err(TlsError::InvalidName(raw.to_owned())),
                }
            }
        };
        if !sans.contains(&normalized) {
            sans.push(normalized);
        }
    }
    Ok(sans)
}

fn parse_certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            origin: origin.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(origin.to_owned()));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoKey(origin.to_owned()),
        source => TlsError::Pem {
            origin: origin.to_owned(),
            source,
        },
    })
}

/// PEM with 64-character lines, as OpenSSL writes it.
fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a private key readable by the owner only.
#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a new file; tighten an existing one before writing the key.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(data)?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let mut file = fs::File::create(path)?;
    file.write_all(data)?;
    file.sync_all()
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    fn count_certs(pem: &str) -> usize {
        pem.matches("-----BEGIN CERTIFICATE-----").count()
    }

    /// Runs one TLS handshake against `server` (over IPv4 loopback, whatever name is verified)
    /// with a client trusting only `ca_pem`, and returns the negotiated ALPN protocol.
    async fn handshake(
        server: Arc<rustls::ServerConfig>,
        ca_pem: &str,
        server_name: &str,
        alpn: &[&[u8]],
    ) -> Result<Option<Vec<u8>>, io::Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            tls.write_all(b"ok").await?;
            tls.shutdown().await
        });

        let mut roots = rustls::RootCertStore::empty();
        for cert in parse_certs(ca_pem.as_bytes(), "test CA").unwrap() {
            roots.add(cert).unwrap();
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from(server_name.to_owned()).unwrap();

        let tcp = TcpStream::connect(addr).await?;
        let result = async {
            let mut tls = connector.connect(name, tcp).await?;
            let mut buf = [0u8; 2];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ok");
            Ok(tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
        }
        .await;
        // The server side fails too when the client rejects the certificate; only the client's
        // view matters here.
        let _ = server_task.await;
        result
    }

    #[test]
    fn generate_builds_a_server_config_and_a_two_certificate_chain() {
        let m = TlsMaterial::generate(&names(&["myhub.local"])).unwrap();
        assert_eq!(count_certs(&m.ca_pem), 1);
        assert_eq!(count_certs(&m.cert_pem), 2);
        assert!(m.cert_pem.ends_with(&m.ca_pem), "chain ends with the CA");
        assert!(m.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let config = m.server_config(&[b"h2", b"http/1.1"]).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // Two generations never share a CA.
        let other = TlsMaterial::generate(&[]).unwrap();
        assert_ne!(other.ca_pem, m.ca_pem);
    }

    #[test]
    fn debug_redacts_the_key() {
        let m = TlsMaterial::generate(&[]).unwrap();
        let body = m.key_pem.lines().nth(1).unwrap();
        let text = format!("{m:?}");
        assert!(text.contains("<redacted>") && !text.contains(body));
    }

    #[test]
    fn san_list_normalizes_and_always_includes_loopback() {
        let sans = san_list(&names(&[
            " MyHub.Azure-Devices.NET. ",
            "[::1]",
            "",
            "10.0.0.1",
            "0:0::1",
        ]))
        .unwrap();
        assert_eq!(
            sans,
            [
                "myhub.azure-devices.net",
                "::1",
                "10.0.0.1",
                "localhost",
                "127.0.0.1"
            ]
        );
        for bad in ["foo bar", "a..b", "-", "*", "héllo.example", "[localhost"] {
            assert!(
                matches!(san_list(&names(&[bad])), Err(TlsError::InvalidName(n)) if n == bad),
                "{bad}"
            );
            assert!(TlsMaterial::generate(&names(&[bad])).is_err());
        }
    }

    #[tokio::test]
    async fn handshake_succeeds_for_dns_and_ip_names_with_the_generated_ca() {
        let m = TlsMaterial::generate(&names(&["myhub.local", "192.168.7.9"])).unwrap();
        let config = m.server_config(&[b"h2", b"http/1.1"]).unwrap();
        for name in [
            "localhost",
            "127.0.0.1",
            "::1",
            "myhub.local",
            "MYHUB.local",
            "192.168.7.9",
        ] {
            let alpn = handshake(config.clone(), &m.ca_pem, name, &[b"http/1.1"]).await;
            assert_eq!(alpn.unwrap(), Some(b"http/1.1".to_vec()), "{name}");
        }
    }

    #[tokio::test]
    async fn handshake_fails_for_another_ca_or_an_uncovered_name() {
        let m = TlsMaterial::generate(&[]).unwrap();
        let config = m.server_config(&[]).unwrap();
        let stranger = TlsMaterial::generate(&[]).unwrap();
        let err = handshake(config.clone(), &stranger.ca_pem, "localhost", &[])
            .await
            .unwrap_err();
        // Every generated CA has the same subject, so webpki finds it and the signature fails.
        let text = err.to_string();
        assert!(
            text.contains("BadSignature") || text.contains("UnknownIssuer"),
            "{err}"
        );
        let err = handshake(config.clone(), &m.ca_pem, "myhub.local", &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
        let err = handshake(config, &m.ca_pem, "127.0.0.2", &[])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("not valid for name"), "{err}");
    }

    #[tokio::test]
    async fn loaded_material_serves_the_same_chain() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::generate(&names(&["myhub.local"])).unwrap();
        let (cert, key) = (dir.path().join("chain.pem"), dir.path().join("key.pem"));
        // Windows line endings and surrounding text, as users' files sometimes have.
        fs::write(
            &cert,
            format!("subject=leaf\r\n{}", m.cert_pem.replace('\n', "\r\n")),
        )
        .unwrap();
        fs::write(&key, &m.key_pem).unwrap();
        let loaded = TlsMaterial::load(&cert, &key).unwrap();
        assert_eq!(loaded.ca_pem, m.ca_pem);
        assert_eq!(loaded.cert_pem, m.cert_pem);
        assert_eq!(loaded.key_pem, m.key_pem);
        let config = loaded.server_config(&[]).unwrap();
        handshake(config, &loaded.ca_pem, "myhub.local", &[])
            .await
            .unwrap();
    }

    #[test]
    fn load_of_a_single_certificate_uses_it_as_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::generate(&[]).unwrap();
        let leaf_end = m.cert_pem.find("-----END CERTIFICATE-----\n").unwrap();
        let leaf = &m.cert_pem[..leaf_end + "-----END CERTIFICATE-----\n".len()];
        let (cert, key) = (dir.path().join("leaf.pem"), dir.path().join("leaf.key"));
        fs::write(&cert, leaf).unwrap();
        fs::write(&key, &m.key_pem).unwrap();
        let loaded = TlsMaterial::load(&cert, &key).unwrap();
        assert_eq!(loaded.ca_pem, leaf);
        assert_eq!(loaded.cert_pem, leaf);
        loaded.server_config(&[]).unwrap();
    }

    #[test]
    fn load_keeps_pkcs1_and_sec1_labels() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::generate(&[]).unwrap();
        let cert = dir.path().join("c.pem");
        fs::write(&cert, &m.cert_pem).unwrap();
        let key = dir.path().join("k.pem");
        for label in ["RSA PRIVATE KEY", "EC PRIVATE KEY", "PRIVATE KEY"] {
            let pem = to_pem(label, &[1, 2, 3]);
            fs::write(&key, &pem).unwrap();
            assert_eq!(TlsMaterial::load(&cert, &key).unwrap().key_pem, pem);
        }
        // A key that does not belong to the certificate is refused when serving.
        let other = TlsMaterial::generate(&[]).unwrap();
        fs::write(&key, &other.key_pem).unwrap();
        let mismatched = TlsMaterial::load(&cert, &key).unwrap();
        assert!(matches!(
            mismatched.server_config(&[]),
            Err(TlsError::Rustls(_))
        ));
    }

    #[test]
    fn load_errors_name_the_file_and_never_panic() {
        let dir = tempfile::tempdir().unwrap();
        let m = TlsMaterial::generate(&[]).unwrap();
        let cert = dir.path().join("c.pem");
        let key = dir.path().join("k.pem");
        let missing = dir.path().join("missing.pem");
        fs::write(&cert, &m.cert_pem).unwrap();
        fs::write(&key, &m.key_pem).unwrap();

        let err = TlsMaterial::load(&missing, &key).unwrap_err();
        assert!(
            matches!(&err, TlsError::Io { path, .. } if *path == missing),
            "{err}"
        );
        assert!(err.to_string().contains("missing.pem"));
        let err = TlsMaterial::load(&cert, &missing).unwrap_err();
        assert!(
            matches!(&err, TlsError::Io { path, .. } if *path == missing),
            "{err}"
        );

        // The key file has no certificate, the certificate file no key.
        assert!(matches!(
            TlsMaterial::load(&key, &key),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(
            TlsMaterial::load(&cert, &cert),
            Err(TlsError::NoKey(_))
        ));
        let encrypted = dir.path().join("enc.pem");
        fs::write(&encrypted, to_pem("ENCRYPTED PRIVATE KEY", &[1, 2, 3])).unwrap();
        assert!(matches!(
            TlsMaterial::load(&cert, &encrypted),
            Err(TlsError::NoKey(_))
        ));

        let garbage = dir.path().join("garbage.pem");
        for text in [
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n",
        ] {
            fs::write(&garbage, text).unwrap();
            let err = TlsMaterial::load(&garbage, &key).unwrap_err();
            assert!(matches!(err, TlsError::Pem { .. }), "{err}");
            assert!(err.to_string().contains("garbage.pem"), "{err}");
        }
        fs::write(&garbage, [0x30, 0x82, 0xff, 0x00, 0x01]).unwrap();
        assert!(TlsMaterial::load(&garbage, &garbage).is_err());
    }

    #[test]
    fn load_or_generate_reuses_until_a_new_name_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("tls");
        let (first, generated) =
            TlsMaterial::load_or_generate(&state, &names(&["myhub.local"])).unwrap();
        assert!(generated);
        for file in [CA_FILE, CERT_FILE, KEY_FILE, NAMES_FILE] {
            assert!(state.join(file).is_file(), "{file}");
        }
        assert_eq!(
            fs::read_to_string(state.join(CA_FILE)).unwrap(),
            first.ca_pem
        );

        let (second, generated) =
            TlsMaterial::load_or_generate(&state, &names(&["MyHub.local."])).unwrap();
        assert!(!generated);
        assert_eq!(second.ca_pem, first.ca_pem);
        assert_eq!(second.cert_pem, first.cert_pem);
        assert_eq!(second.key_pem, first.key_pem);

        // A subset of the covered names (including the implicit ones) is still covered.
        let (_, generated) =
            TlsMaterial::load_or_generate(&state, &names(&["127.0.0.1", "[::1]"])).unwrap();
        assert!(!generated);

        let (third, generated) =
            TlsMaterial::load_or_generate(&state, &names(&["myhub.local", "10.1.2.3"])).unwrap();
        assert!(generated);
        assert_ne!(third.ca_pem, first.ca_pem);
        let record = Record::parse(&fs::read_to_string(state.join(NAMES_FILE)).unwrap()).unwrap();
        assert!(record.sans.contains(&"10.1.2.3".to_owned()));
        let (fourth, generated) =
            TlsMaterial::load_or_generate(&state, &names(&["10.1.2.3"])).unwrap();
        assert!(!generated);
        assert_eq!(fourth.ca_pem, third.ca_pem);
    }

    #[test]
    fn load_or_generate_replaces_expired_or_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let names_file = dir.path().join(NAMES_FILE);

        let mut record = Record::parse(&fs::read_to_string(&names_file).unwrap()).unwrap();
        let now = unix_now();
        assert!(record.not_after > now + 820 * DAY && record.not_after <= now + 825 * DAY);
        record.not_after = now;
        fs::write(&names_file, record.to_text()).unwrap();
        let (second, generated) = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert!(generated);
        assert_ne!(second.ca_pem, first.ca_pem);

        // A key that no longer matches the certificate.
        fs::write(dir.path().join(KEY_FILE), &first.key_pem).unwrap();
        let (third, generated) = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert!(generated);
        assert_ne!(third.ca_pem, second.ca_pem);

        // A CA file that is not the chain's CA.
        fs::write(dir.path().join(CA_FILE), &first.ca_pem).unwrap();
        let (fourth, generated) = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert!(generated);

        // No record (e.g. files put there by hand).
        fs::remove_file(&names_file).unwrap();
        let (_, generated) = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert!(generated);
        assert_ne!(fourth.ca_pem, first.ca_pem);

        fs::write(&names_file, "garbage").unwrap();
        let (_, generated) = TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        assert!(generated);
    }

    #[test]
    fn load_or_generate_rejects_invalid_names_and_unwritable_dirs() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            TlsMaterial::load_or_generate(dir.path(), &names(&["not a name"])),
            Err(TlsError::InvalidName(_))
        ));
        let file = dir.path().join("a-file");
        fs::write(&file, "").unwrap();
        let err = TlsMaterial::load_or_generate(&file.join("tls"), &[]).unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join(KEY_FILE);
        // An existing, world-readable key file is tightened too.
        fs::write(&key, "old").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        TlsMaterial::load_or_generate(dir.path(), &[]).unwrap();
        let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn record_round_trips() {
        let record = Record {
            not_after: 123,
            sans: names(&["localhost", "::1"]),
        };
        assert_eq!(Record::parse(&record.to_text()), Some(record));
        assert_eq!(Record::parse("san=localhost\n"), None);
        assert_eq!(Record::parse("not_after=x\n"), None);
    }

    #[test]
    fn pem_lines_are_64_characters() {
        let pem = to_pem("CERTIFICATE", &[0xab; 100]);
        let lines: Vec<_> = pem.lines().collect();
        assert_eq!(lines[0], "-----BEGIN CERTIFICATE-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines[2].len(), 64);
        assert_eq!(lines[3].len(), 136 - 128);
        assert_eq!(lines[4], "-----END CERTIFICATE-----");
        assert_eq!(
            parse_certs(pem.as_bytes(), "x").unwrap()[0].as_ref(),
            [0xab; 100]
        );
    }
}
