//! Azurite, the Azure Storage emulator, as the storage account of the import/export tests.
//!
//! Tests never install or start it: `.ci/run` does (`crates/iothub-emulator/interop/azurite`,
//! `npm ci`, then `azurite-blob` on 127.0.0.1:10000) and exports `AZURITE_BLOB_ENDPOINT`. A
//! test calls [`require`]: without Azurite it skips with the reason (a failure under
//! `CI=true`). Containers are created, and their URLs signed, with Azurite's well-known
//! development account (`devstoreaccount1` and its published key): an account SAS computed
//! here, which Azurite checks as the service would.

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Azurite's development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's published development key (public: it is in Azurite's README and every SDK's).
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The environment variable `.ci/run` sets: the blob endpoint with the account,
/// `http://127.0.0.1:10000/devstoreaccount1`.
pub const ENDPOINT_VAR: &str = "AZURITE_BLOB_ENDPOINT";
/// The storage API version of the requests made here.
const VERSION: &str = "2019-12-12";

/// The blob endpoint of a running Azurite: `AZURITE_BLOB_ENDPOINT`, else Azurite's default
/// port on loopback when something listens there.
pub fn endpoint() -> Option<String> {
    if let Ok(endpoint) = std::env::var(ENDPOINT_VAR)
        && !endpoint.trim().is_empty()
    {
        return Some(endpoint.trim().trim_end_matches('/').to_owned());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 10000));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .ok()
        .map(|_| format!("http://127.0.0.1:10000/{ACCOUNT}"))
}

/// The Azurite endpoint, or `None` after recording the skip (a failure under `CI=true`).
pub fn require(test: &str) -> Option<String> {
    let found = endpoint();
    if found.is_none() {
        crate::skip::skip(
            test,
            "Azurite is not running: `.ci/run` starts it; locally run `npm ci` in \
             crates/iothub-emulator/interop/azurite, then `npx azurite-blob --blobHost \
             127.0.0.1 --location $(mktemp -d) --skipApiVersionCheck` (or set \
             AZURITE_BLOB_ENDPOINT)",
        );
    }
    found
}

/// An account SAS (blob service; service, container and object; read, write, delete, list,
/// add, create) valid until 2099, as a query string without `?`.
pub fn account_sas() -> String {
    let (permissions, services, types, expiry) = ("rwdlac", "b", "sco", "2099-01-01T00:00:00Z");
    // The 2015-04-05 to 2020-02-10 string to sign: account, permissions, services, resource
    // types, start, expiry, IP, protocol, version, and a final newline.
    let to_sign =
        format!("{ACCOUNT}\n{permissions}\n{services}\n{types}\n\n{expiry}\n\n\n{VERSION}\n");
    let key = STANDARD.decode(ACCOUNT_KEY).unwrap_or_default();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key) else {
        return String::new();
    };
    mac.update(to_sign.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    format!(
        "sv={VERSION}&ss={services}&srt={types}&sp={permissions}&se={}&sig={}",
        enc(expiry),
        enc(&sig)
    )
}

/// A container in Azurite.
#[derive(Clone)]
pub struct Container {
    url: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for Container {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Container").field("url", &self.url).finish()
    }
}

impl Container {
    /// Creates a fresh container named `prefix` plus a random suffix at `endpoint`.
    pub async fn create(endpoint: &str, prefix: &str) -> Result<Self, String> {
        let name = format!(
            "{}-{:08x}",
            prefix.to_ascii_lowercase(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0)
        );
        let container = Self {
            url: format!("{}/{name}", endpoint.trim_end_matches('/')),
            http: reqwest::Client::new(),
        };
        let response = container
            .http
            .put(format!(
                "{}?restype=container&{}",
                container.url,
                account_sas()
            ))
            .header("x-ms-version", VERSION)
            .header("content-length", "0")
            .send()
            .await
            .map_err(|e| format!("creating container {name}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "creating container {name}: {} {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ));
        }
        Ok(container)
    }

    /// The container's URL, without a signature.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The container's SAS URL, as an import/export job takes it.
    pub fn sas_url(&self) -> String {
        format!("{}?{}", self.url, account_sas())
    }

    /// Uploads a block blob.
    pub async fn put(&self, blob: &str, bytes: impl Into<Vec<u8>>) -> Result<(), String> {
        let response = self
            .http
            .put(format!("{}/{blob}?{}", self.url, account_sas()))
            .header("x-ms-version", VERSION)
            .header("x-ms-blob-type", "BlockBlob")
            .body(bytes.into())
            .send()
            .await
            .map_err(|e| format!("uploading {blob}: {e}"))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("uploading {blob}: {}", response.status()))
        }
    }

    /// Downloads a blob; `None` when it does not exist.
    pub async fn get(&self, blob: &str) -> Result<Option<Vec<u8>>, String> {
        let response = self
            .http
            .get(format!("{}/{blob}?{}", self.url, account_sas()))
            .header("x-ms-version", VERSION)
            .send()
            .await
            .map_err(|e| format!("downloading {blob}: {e}"))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(format!("downloading {blob}: {}", response.status()));
        }
        response
            .bytes()
            .await
            .map(|b| Some(b.to_vec()))
            .map_err(|e| format!("downloading {blob}: {e}"))
    }
}
