//! The import/export scenario: an import job of 100,000 devices (a tiny count in smoke mode)
//! and an export of the registry, through Azurite (the Azure Storage emulator) as the storage
//! account, timed from the job's creation to its end as `JobManager` waits for it; then the
//! export read back as a stream.
//!
//! Azurite is found as the tests find it (`AZURITE_BLOB_ENDPOINT`, else a listener on
//! 127.0.0.1:10000) and never installed or started here. Without it the scenario is skipped
//! with a note, and under `CI=true` the run fails.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use iothub_registry::import_export_file::{import_file_bytes, read_export_stream};
use iothub_registry::models::{DeviceStatus, ImportMode, JobStatus};
use iothub_registry::{ImportExportJob, RegistryManager, SasKeys, bulk_entry};
use sha2::Sha256;

use crate::driver::Mode;

/// Azurite's development account and its published key (public: in Azurite's README).
const ACCOUNT: &str = "devstoreaccount1";
const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The storage API version of the requests made here.
const VERSION: &str = "2019-12-12";

/// What the scenario measured.
#[derive(Clone, Debug)]
pub(crate) struct ImportExportNumbers {
    /// Devices in the import file.
    pub(crate) imported: u64,
    /// Size of the import file.
    pub(crate) file_bytes: u64,
    /// Writing the import file (`import_file_bytes`).
    pub(crate) write_secs: f64,
    /// Uploading it to Azurite.
    pub(crate) upload_secs: f64,
    /// From creating the import job to reading it `completed`.
    pub(crate) import_secs: f64,
    /// Devices the export wrote (the whole registry: the seeded ones too).
    pub(crate) exported: u64,
    /// From creating the export job to reading it `completed`.
    pub(crate) export_secs: f64,
    /// Downloading `devices.txt` and reading it back as a stream of devices.
    pub(crate) read_secs: f64,
}

/// Azurite's blob endpoint with the account, if it is running.
fn azurite() -> Option<String> {
    if let Ok(endpoint) = std::env::var("AZURITE_BLOB_ENDPOINT")
        && !endpoint.trim().is_empty()
    {
        return Some(endpoint.trim().trim_end_matches('/').to_owned());
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], 10000));
    TcpStream::connect_timeout(&addr, Duration::from_millis(300))
        .ok()
        .map(|_| format!("http://127.0.0.1:10000/{ACCOUNT}"))
}

/// Runs the scenario; `Ok(None)` (with a note) when Azurite is not running, outside CI.
pub(crate) async fn import_export(
    registry: &RegistryManager,
    mode: Mode,
    notes: &mut Vec<String>,
) -> Result<Option<ImportExportNumbers>, String> {
    let Some(endpoint) = azurite() else {
        let why = "Azurite (the Azure Storage emulator) is not running, so the import/export \
                   scenario did not run: `npm install azurite` (or `npm ci` in \
                   crates/iothub-emulator/interop/azurite), then `npx azurite-blob --blobHost \
                   127.0.0.1 --location $(mktemp -d) --skipApiVersionCheck`, or set \
                   AZURITE_BLOB_ENDPOINT.";
        if crate::driver::ci() {
            return Err(format!("CI=true and missing: {why}"));
        }
        eprintln!("import/export: skipped: {why}");
        notes.push(why.to_owned());
        return Ok(None);
    };
    let count: u64 = if mode == Mode::Smoke { 200 } else { 100_000 };
    let http = reqwest::Client::new();
    let suffix = std::process::id();
    let input = container(&http, &endpoint, &format!("bench-import-{suffix}")).await?;
    let output = container(&http, &endpoint, &format!("bench-export-{suffix}")).await?;

    let started = Instant::now();
    let devices = (0..count).map(|i| {
        let mut device = bulk_entry::create(format!("ie-{i:06}"), SasKeys::generated());
        device.import_mode = Some(ImportMode::Create);
        device.status = Some(DeviceStatus::Enabled);
        device
    });
    let file = import_file_bytes(devices).map_err(|e| format!("import file: {e}"))?;
    let write_secs = started.elapsed().as_secs_f64();
    let file_bytes = file.len() as u64;

    let started = Instant::now();
    let response = http
        .put(format!("{input}/devices.txt?{}", account_sas()))
        .header("x-ms-version", VERSION)
        .header("x-ms-blob-type", "BlockBlob")
        .body(file)
        .send()
        .await
        .map_err(|e| format!("uploading devices.txt: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("uploading devices.txt: {}", response.status()));
    }
    let upload_secs = started.elapsed().as_secs_f64();

    let sas = |url: &str| format!("{url}?{}", account_sas());
    let started = Instant::now();
    let job = ImportExportJob::import(sas(&input), sas(&input));
    run_job(registry, job, "import").await?;
    let import_secs = started.elapsed().as_secs_f64();
    eprintln!("import/export: imported {count} devices in {import_secs:.1} s");

    let started = Instant::now();
    run_job(
        registry,
        ImportExportJob::export(sas(&output), false),
        "export",
    )
    .await?;
    let export_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let response = http
        .get(format!("{output}/devices.txt?{}", account_sas()))
        .header("x-ms-version", VERSION)
        .send()
        .await
        .map_err(|e| format!("downloading devices.txt: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("downloading devices.txt: {}", response.status()));
    }
    let exported = read_export_stream(response.bytes_stream())
        .try_fold(0u64, |n, _| async move { Ok(n + 1) })
        .await
        .map_err(|e| format!("reading the export: {e}"))?;
    let read_secs = started.elapsed().as_secs_f64();
    eprintln!("import/export: exported {exported} devices in {export_secs:.1} s");
    Ok(Some(ImportExportNumbers {
        imported: count,
        file_bytes,
        write_secs,
        upload_secs,
        import_secs,
        exported,
        export_secs,
        read_secs,
    }))
}

/// Creates an import or export job and waits for it to complete.
async fn run_job(
    registry: &RegistryManager,
    job: ImportExportJob,
    what: &str,
) -> Result<(), String> {
    let jobs = registry.jobs();
    let created = jobs
        .create_import_export_job(job)
        .await
        .map_err(|e| format!("creating the {what} job: {e}"))?;
    let id = created.job_id.unwrap_or_default();
    let done = jobs
        .wait_for_import_export_job(id)
        .poll_interval(Duration::from_millis(100))
        .deadline(Duration::from_secs(30 * 60))
        .wait()
        .await
        .map_err(|e| format!("waiting for the {what} job: {e}"))?;
    match done.status {
        Some(JobStatus::Completed) => Ok(()),
        status => Err(format!(
            "the {what} job ended {status:?}: {}",
            done.failure_reason.unwrap_or_default()
        )),
    }
}

/// Creates a container named `name` and returns its URL (without signature).
async fn container(http: &reqwest::Client, endpoint: &str, name: &str) -> Result<String, String> {
    let url = format!("{endpoint}/{name}");
    let response = http
        .put(format!("{url}?restype=container&{}", account_sas()))
        .header("x-ms-version", VERSION)
        .header("content-length", "0")
        .send()
        .await
        .map_err(|e| format!("creating container {name}: {e}"))?;
    if response.status().is_success() || response.status() == reqwest::StatusCode::CONFLICT {
        Ok(url)
    } else {
        Err(format!("creating container {name}: {}", response.status()))
    }
}

/// An account SAS of the development account (blob service; service, container and object;
/// read, write, delete, list, add, create) valid until 2099, as a query string.
fn account_sas() -> String {
    let (permissions, services, types, expiry) = ("rwdlac", "b", "sco", "2099-01-01T00:00:00Z");
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
