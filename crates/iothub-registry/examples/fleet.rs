//! Jobs on the embedded IoT Hub emulator: a scheduled twin update over part of a fleet, the
//! job query, and an export and import of the whole registry through blob storage, with
//! `azure_storage_blob` doing the upload and download and Azurite (the Azure Storage
//! emulator) as the storage account when it runs.
//!
//! ```sh
//! cargo run -p iothub-registry --example fleet
//! # with the export/import round trip: Azurite on its default port first
//! npm install azurite && npx azurite-blob --blobHost 127.0.0.1 --location /tmp/azurite --skipApiVersionCheck
//! ```

use std::time::Duration;

use azure_core::http::Url;
use azure_storage_blob::BlobContainerClient;
use futures::TryStreamExt;
use iothub_emulator::Emulator;
use iothub_registry::import_export_file::{import_file_bytes, read_export_stream};
use iothub_registry::models::{DeviceStatus, ExportImportDevice, ImportMode, JobType};
use iothub_registry::{
    ConnectionString, Credential, DeviceOptions, IfMatch, ImportExportJob, RegistryManager,
    SasKeys, ScheduledJob, TwinPatch,
};
// Creates a container in Azurite and signs its URL with Azurite's development account; with
// a storage account of your own, take a container SAS URL from the portal or `az storage
// container generate-sas` instead.
use iothub_test_support::azurite::{self, Container};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::builder().start().await?;
    println!(
        "started a local IoT Hub emulator at {}",
        emulator.base_url()
    );
    let cs: ConnectionString = emulator.connection_string().parse()?;
    let registry = RegistryManager::builder(Credential::from_connection_string(&cs))
        .add_root_certificate_pem(emulator.ca_certificate_pem().unwrap_or_default())
        .build()?;
    let result = tour(&registry).await;
    emulator.shutdown().await;
    result?;
    println!("\nDone.");
    Ok(())
}

async fn tour(registry: &RegistryManager) -> Result<(), BoxError> {
    step("A fleet of 20 sensors on two sites");
    for i in 0..20 {
        let id = format!("sensor-{i:02}");
        registry
            .create_device_with_sas(
                id.as_str(),
                SasKeys::generated(),
                DeviceStatus::Enabled,
                DeviceOptions::new(),
            )
            .await?;
        let site = if i % 2 == 0 { "oslo" } else { "bergen" };
        registry
            .update_twin(
                id.as_str(),
                TwinPatch::new().tag("site", site),
                IfMatch::Any,
            )
            .await?;
    }
    println!("created sensor-00 .. sensor-19, tagged site = oslo or bergen");

    step("A scheduled twin update over the Oslo sensors");
    let jobs = registry.jobs();
    let patch = TwinPatch::new().desired("telemetryInterval", 60);
    let created = jobs
        .create_scheduled_job(
            "oslo-interval-60",
            ScheduledJob::twin_update("tags.site = 'oslo'", patch)
                .max_execution_time(Duration::from_secs(600)),
        )
        .await?;
    println!("job {:?}: {:?}", created.job_id, created.status);
    let done = jobs
        .wait_for_scheduled_job("oslo-interval-60")
        .poll_interval(Duration::from_millis(200))
        .deadline(Duration::from_secs(60))
        .on_progress(|job| println!("  status {:?}", job.status))
        .wait()
        .await?;
    let stats = done.device_job_statistics.unwrap_or_default();
    println!(
        "ended {:?}: {:?} devices, {:?} succeeded, {:?} failed",
        done.status, stats.device_count, stats.succeeded_count, stats.failed_count
    );
    let twin = registry.get_twin("sensor-00").await?;
    let interval = twin
        .properties
        .and_then(|p| p.desired.get("telemetryInterval").cloned());
    println!("sensor-00 desired telemetryInterval: {interval:?}");

    step("Scheduled twin updates, queried");
    let updates: Vec<_> = jobs
        .query_jobs(Some(JobType::ScheduleUpdateTwin), None)
        .stream()
        .try_collect()
        .await?;
    for job in updates {
        println!(
            "  {:?} over {:?}: {:?}",
            job.job_id, job.query_condition, job.status
        );
    }

    step("Export and import of the registry through blob storage");
    match azurite::endpoint() {
        Some(endpoint) => round_trip(registry, &endpoint).await,
        None => {
            println!(
                "Azurite (the Azure Storage emulator) is not running, so this step is skipped.\n\
                 Get it and start it, then run this example again:\n\
                 \n    npm install azurite\n    \
                 npx azurite-blob --blobHost 127.0.0.1 --location /tmp/azurite --skipApiVersionCheck\n\
                 \n(or set AZURITE_BLOB_ENDPOINT to a running Azurite's blob endpoint)"
            );
            Ok(())
        }
    }
}

/// Exports the registry, reads the export back, deletes five devices and imports them again.
async fn round_trip(registry: &RegistryManager, endpoint: &str) -> Result<(), BoxError> {
    let jobs = registry.jobs();
    let exports = Container::create(endpoint, "fleet-export").await?;
    let export = jobs
        .create_import_export_job(ImportExportJob::export(exports.sas_url(), false))
        .await?;
    let done = jobs
        .wait_for_import_export_job(export.job_id.unwrap_or_default())
        .poll_interval(Duration::from_millis(200))
        .deadline(Duration::from_secs(120))
        .on_progress(|job| println!("  export {:?} {:?}%", job.status, job.progress))
        .wait()
        .await?;
    println!("export ended {:?}", done.status);

    // The download, with the Azure SDK's blob client, read as a stream of devices.
    let container = BlobContainerClient::new(Url::parse(&exports.sas_url())?, None, None)?;
    let download = container.blob_client("devices.txt").download(None).await?;
    let exported: Vec<ExportImportDevice> = read_export_stream(download.body).try_collect().await?;
    println!("devices.txt holds {} devices", exported.len());

    let gone: Vec<ExportImportDevice> = exported
        .into_iter()
        .filter(|d| d.id.as_deref().is_some_and(|id| id < "sensor-05"))
        .map(|mut device| {
            device.import_mode = Some(ImportMode::Create);
            device
        })
        .collect();
    for device in &gone {
        let id = device.id.clone().unwrap_or_default();
        registry.delete_device(id.as_str(), IfMatch::Any).await?;
    }
    println!("deleted {} devices", gone.len());

    // The upload of the import file, with the same blob client.
    let imports = Container::create(endpoint, "fleet-import").await?;
    let container = BlobContainerClient::new(Url::parse(&imports.sas_url())?, None, None)?;
    let file = import_file_bytes(gone)?;
    container
        .blob_client("devices.txt")
        .upload(file.into(), None)
        .await?;
    let import = jobs
        .create_import_export_job(ImportExportJob::import(
            imports.sas_url(),
            imports.sas_url(),
        ))
        .await?;
    let done = jobs
        .wait_for_import_export_job(import.job_id.unwrap_or_default())
        .poll_interval(Duration::from_millis(200))
        .deadline(Duration::from_secs(120))
        .wait()
        .await?;
    println!("import ended {:?}", done.status);
    let back = registry.get_device("sensor-03").await?;
    println!(
        "sensor-03 is back, with its keys: {}",
        back.authentication
            .and_then(|a| a.symmetric_key)
            .is_some_and(|k| k.primary_key.is_some())
    );
    let stats = registry.get_device_registry_statistics().await?;
    println!("the registry holds {:?} devices", stats.total_device_count);
    Ok(())
}
