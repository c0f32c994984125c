//! Jobs end to end: scheduled twin updates and device methods over a query condition, the job
//! query, cancellation, against the emulator over HTTPS; and an export and import of the
//! registry through Azurite (the Azure Storage emulator) as the storage account, skipped with
//! a reason when it is not running (a failure under `CI=true`).

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use iothub_emulator::{Emulator, MethodResponse};
use iothub_registry::import_export_file::{read_export, write_import_file};
use iothub_registry::models::{DeviceStatus, ExportImportDevice, ImportMode, JobStatus, JobType};
use iothub_registry::{
    DeviceMethod, DeviceOptions, IfMatch, ImportExportJob, RegistryManager, SasKeys, ScheduledJob,
    TwinPatch, bulk_entry,
};
use iothub_test_support::azurite::{self, Container};
use iothub_test_support::emulator::registry;
use serde_json::json;

async fn start() -> (Emulator, RegistryManager) {
    let hub = Emulator::builder().start().await.unwrap();
    let registry = registry(&hub);
    (hub, registry)
}

async fn devices(registry: &RegistryManager, site: &str, ids: &[&str]) {
    for id in ids {
        registry
            .create_device_with_sas(
                *id,
                SasKeys::generated(),
                DeviceStatus::Enabled,
                DeviceOptions::new(),
            )
            .await
            .unwrap();
        registry
            .update_twin(*id, TwinPatch::new().tag("site", site), IfMatch::Any)
            .await
            .unwrap();
    }
}

const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_scheduled_twin_update_reaches_every_selected_twin() {
    let (hub, registry) = start().await;
    devices(&registry, "oslo", &["oslo-1", "oslo-2"]).await;
    devices(&registry, "bergen", &["bergen-1"]).await;
    let jobs = registry.jobs();
    let patch = TwinPatch::new()
        .tag("firmware", "1.4.2")
        .desired("telemetryInterval", 60);
    let created = jobs
        .create_scheduled_job(
            "interval-60",
            ScheduledJob::twin_update("tags.site = 'oslo'", patch)
                .max_execution_time(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(created.job_id.as_deref(), Some("interval-60"));
    assert_eq!(created.type_, Some(JobType::ScheduleUpdateTwin));
    let done = jobs
        .wait_for_scheduled_job("interval-60")
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, Some(JobStatus::Completed), "{done:?}");
    let stats = done.device_job_statistics.unwrap();
    assert_eq!(
        (
            stats.device_count,
            stats.succeeded_count,
            stats.failed_count
        ),
        (Some(2), Some(2), Some(0))
    );
    for id in ["oslo-1", "oslo-2"] {
        let twin = registry.get_twin(id).await.unwrap();
        assert_eq!(twin.tags.get("firmware"), Some(&json!("1.4.2")), "{id}");
        let desired = twin.properties.unwrap().desired;
        assert_eq!(desired.get("telemetryInterval"), Some(&json!(60)), "{id}");
    }
    let untouched = registry.get_twin("bergen-1").await.unwrap();
    assert!(untouched.tags.get("firmware").is_none());
    // A second job under the same id is refused.
    let again = jobs
        .create_scheduled_job(
            "interval-60",
            ScheduledJob::twin_update("tags.site = 'oslo'", TwinPatch::new().tag("a", 1)),
        )
        .await
        .unwrap_err();
    assert!(again.is_conflict(), "{again}");
    hub.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_device_method_runs_on_online_devices_and_fails_on_offline_ones() {
    let (hub, registry) = start().await;
    devices(&registry, "lab", &["lab-1", "lab-2", "lab-3"]).await;
    for id in ["lab-1", "lab-2"] {
        hub.connect_device(id).unwrap();
        hub.set_method_response(id, None, "reboot", MethodResponse::echo());
    }
    let jobs = registry.jobs();
    let reboot = DeviceMethod::new("reboot")
        .payload(json!({ "delay": 1 }))
        .response_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::ZERO);
    jobs.create_scheduled_job(
        "reboot-lab",
        ScheduledJob::device_method("tags.site = 'lab'", reboot),
    )
    .await
    .unwrap();
    let readings = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = readings.clone();
    let done = jobs
        .wait_for_scheduled_job("reboot-lab")
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .on_progress(move |_| {
            counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .wait()
        .await
        .unwrap();
    assert!(readings.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert_eq!(done.status, Some(JobStatus::Completed), "{done:?}");
    let stats = done.device_job_statistics.unwrap();
    assert_eq!(
        (
            stats.device_count,
            stats.succeeded_count,
            stats.failed_count
        ),
        (Some(3), Some(2), Some(1)),
        "{stats:?}"
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn jobs_are_queried_by_type_and_status_across_pages_and_cancelled() {
    let (hub, registry) = start().await;
    devices(&registry, "later", &["later-1"]).await;
    let jobs = registry.jobs();
    let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
    for i in 0..3 {
        jobs.create_scheduled_job(
            format!("later-{i}"),
            ScheduledJob::twin_update("tags.site = 'later'", TwinPatch::new().tag("n", i))
                .start_time(tomorrow),
        )
        .await
        .unwrap();
    }
    jobs.create_scheduled_job(
        "ping-later",
        ScheduledJob::device_method("tags.site = 'later'", DeviceMethod::new("ping"))
            .start_time(tomorrow),
    )
    .await
    .unwrap();

    // Not started: cancel one.
    let pending = jobs.get_scheduled_job("later-1").await.unwrap();
    assert!(
        !iothub_registry::is_terminal(pending.status.as_ref().unwrap()),
        "{pending:?}"
    );
    let cancelled = jobs.cancel_scheduled_job("later-1").await.unwrap();
    assert_eq!(cancelled.status, Some(JobStatus::Cancelled));
    let read = jobs.get_scheduled_job("later-1").await.unwrap();
    assert_eq!(read.status, Some(JobStatus::Cancelled));

    // Twin updates, a page of one at a time.
    let mut ids: Vec<String> = jobs
        .query_jobs(Some(JobType::ScheduleUpdateTwin), None)
        .page_size(1)
        .stream()
        .map_ok(|job| job.job_id.unwrap_or_default())
        .try_collect()
        .await
        .unwrap();
    ids.sort();
    assert_eq!(ids, ["later-0", "later-1", "later-2"]);
    let cancelled: Vec<_> = jobs
        .query_jobs(None, Some(JobStatus::Cancelled))
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].job_id.as_deref(), Some("later-1"));
    let methods = jobs
        .query_scheduled_jobs(Some(JobType::ScheduleDeviceMethod), None, None, None)
        .await
        .unwrap();
    assert_eq!(methods.jobs.len(), 1);
    assert_eq!(methods.jobs[0].job_id.as_deref(), Some("ping-later"));

    let missing = jobs.get_scheduled_job("nope").await.unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    hub.shutdown().await;
}

/// Exports the registry to Azurite, reads the export back as a stream, deletes the devices,
/// imports them from an import file written by the helper, and finds them with their keys.
#[tokio::test]
async fn export_and_import_round_trip_through_azurite() {
    let Some(endpoint) = azurite::require("export_and_import_round_trip_through_azurite") else {
        return;
    };
    let (hub, registry) = start().await;
    let ids: Vec<String> = (0..25).map(|i| format!("fleet-{i:02}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    devices(&registry, "fleet", &refs).await;
    let keys_before = registry
        .get_device("fleet-07")
        .await
        .unwrap()
        .authentication;

    let container = Container::create(&endpoint, "export").await.unwrap();
    let jobs = registry.jobs();
    let export = jobs
        .create_import_export_job(ImportExportJob::export(container.sas_url(), false))
        .await
        .unwrap();
    assert_eq!(export.type_, Some(JobType::Export));
    let export_id = export.job_id.clone().unwrap();
    let done = jobs
        .wait_for_import_export_job(&export_id)
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, Some(JobStatus::Completed), "{done:?}");
    let listed = jobs.get_import_export_jobs().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|j| j.job_id.as_deref() == Some(export_id.as_str()))
    );

    let bytes = container
        .get("devices.txt")
        .await
        .unwrap()
        .expect("devices.txt");
    let exported: Vec<ExportImportDevice> = read_export(std::io::Cursor::new(bytes))
        .try_collect()
        .await
        .unwrap();
    let mut exported_ids: Vec<_> = exported.iter().filter_map(|d| d.id.clone()).collect();
    exported_ids.sort();
    assert_eq!(exported_ids, ids);
    let seven = exported
        .iter()
        .find(|d| d.id.as_deref() == Some("fleet-07"))
        .unwrap();
    assert_eq!(seven.authentication, keys_before, "keys exported");

    for id in &ids {
        registry
            .delete_device(id.as_str(), IfMatch::Any)
            .await
            .unwrap();
    }
    let import = Container::create(&endpoint, "import").await.unwrap();
    let mut file = Vec::new();
    let lines = write_import_file(
        &mut file,
        exported.into_iter().map(|mut device| {
            device.import_mode = Some(ImportMode::Create);
            device
        }),
    )
    .await
    .unwrap();
    assert_eq!(lines, 25);
    import.put("devices.txt", file).await.unwrap();
    let job = jobs
        .create_import_export_job(ImportExportJob::import(import.sas_url(), import.sas_url()))
        .await
        .unwrap();
    let done = jobs
        .wait_for_import_export_job(job.job_id.unwrap())
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, Some(JobStatus::Completed), "{done:?}");
    let back = registry.get_device("fleet-07").await.unwrap();
    assert_eq!(
        back.authentication, keys_before,
        "imported with the exported keys"
    );
    let stats = registry.get_device_registry_statistics().await.unwrap();
    assert_eq!(stats.total_device_count, Some(25));
    hub.shutdown().await;
}

/// An import file with a line of every import mode, written by the helper, applied by an
/// import job as the bulk API would; the line that fails (a stale etag) is in
/// `importErrors.log` of the output container, and the others are applied.
#[tokio::test]
async fn every_import_mode_through_azurite() {
    let Some(endpoint) = azurite::require("every_import_mode_through_azurite") else {
        return;
    };
    let (hub, registry) = start().await;
    let existing = [
        "m-update",
        "m-update-etag",
        "m-delete",
        "m-delete-etag",
        "m-twin",
        "m-twin-etag",
        "m-stale",
    ];
    devices(&registry, "modes", &existing).await;
    let device_etag = |id: &'static str| {
        let registry = registry.clone();
        async move { registry.get_device(id).await.unwrap().etag }
    };
    let twin_etag = registry.get_twin("m-twin-etag").await.unwrap().etag;
    let keys = SasKeys::new("AAECAwQFBgcICQoLDA0ODw==", "EBESExQVFhcYGRobHB0eHw==");
    let line = |id: &str, mode: ImportMode| {
        let mut device = bulk_entry::create(id, keys.clone());
        device.import_mode = Some(mode);
        device
    };
    let disabled = |mut device: ExportImportDevice| {
        device.status = Some(DeviceStatus::Disabled);
        device
    };
    let tagged = |mut device: ExportImportDevice, mode: &str| {
        device.authentication = None;
        device.tags = json!({ "mode": mode }).as_object().unwrap().clone();
        device
    };
    let mut lines = vec![
        line("m-new", ImportMode::Create),
        disabled(line("m-update", ImportMode::Update)),
        disabled(ExportImportDevice {
            e_tag: device_etag("m-update-etag").await,
            ..line("m-update-etag", ImportMode::UpdateIfMatchETag)
        }),
        bulk_entry::delete("m-delete"),
        ExportImportDevice {
            e_tag: device_etag("m-delete-etag").await,
            authentication: None,
            ..line("m-delete-etag", ImportMode::DeleteIfMatchETag)
        },
        tagged(line("m-twin", ImportMode::UpdateTwin), "updateTwin"),
        tagged(
            ExportImportDevice {
                twin_e_tag: twin_etag,
                ..line("m-twin-etag", ImportMode::UpdateTwinIfMatchETag)
            },
            "updateTwinIfMatchETag",
        ),
    ];
    lines.push(disabled(ExportImportDevice {
        e_tag: Some("c3RhbGU=".into()),
        ..line("m-stale", ImportMode::UpdateIfMatchETag)
    }));
    let mut file = Vec::new();
    assert_eq!(write_import_file(&mut file, lines).await.unwrap(), 8);
    let container = Container::create(&endpoint, "modes").await.unwrap();
    container.put("devices.txt", file).await.unwrap();
    let jobs = registry.jobs();
    let job = jobs
        .create_import_export_job(ImportExportJob::import(
            container.sas_url(),
            container.sas_url(),
        ))
        .await
        .unwrap();
    let done = jobs
        .wait_for_import_export_job(job.job_id.unwrap())
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .wait()
        .await
        .unwrap();
    assert!(iothub_registry::is_terminal(done.status.as_ref().unwrap()));

    let status = |id: &'static str| {
        let registry = registry.clone();
        async move { registry.get_device(id).await.map(|d| d.status) }
    };
    assert!(status("m-new").await.is_ok());
    assert_eq!(
        status("m-update").await.unwrap(),
        Some(DeviceStatus::Disabled)
    );
    assert_eq!(
        status("m-update-etag").await.unwrap(),
        Some(DeviceStatus::Disabled)
    );
    assert!(status("m-delete").await.unwrap_err().is_not_found());
    assert!(status("m-delete-etag").await.unwrap_err().is_not_found());
    for (id, mode) in [
        ("m-twin", "updateTwin"),
        ("m-twin-etag", "updateTwinIfMatchETag"),
    ] {
        let twin = registry.get_twin(id).await.unwrap();
        assert_eq!(twin.tags.get("mode"), Some(&json!(mode)), "{id}");
    }
    assert_eq!(
        status("m-stale").await.unwrap(),
        Some(DeviceStatus::Enabled)
    );
    let log = container
        .get("importErrors.log")
        .await
        .unwrap()
        .expect("importErrors.log");
    let log = String::from_utf8(log).unwrap();
    assert!(log.contains("m-stale"), "{log}");
    assert_eq!(log.lines().count(), 1, "{log}");
    hub.shutdown().await;
}

/// An export without keys, a cancel of an import/export job, and a wait that outlives its
/// deadline on a job that has not started.
#[tokio::test]
async fn an_export_without_keys_a_cancel_and_a_deadline() {
    let Some(endpoint) = azurite::require("an_export_without_keys_a_cancel_and_a_deadline") else {
        return;
    };
    let (hub, registry) = start().await;
    devices(&registry, "keys", &["k-1", "k-2"]).await;
    let jobs = registry.jobs();
    let container = Container::create(&endpoint, "nokeys").await.unwrap();
    let export = jobs
        .create_import_export_job(
            ImportExportJob::export(container.sas_url(), true).output_blob_name("keyless.txt"),
        )
        .await
        .unwrap();
    let id = export.job_id.unwrap();
    // Cancelled before it ends, or already over: either way the job is over, and the cancel
    // succeeded.
    jobs.cancel_import_export_job(id.as_str()).await.unwrap();
    let over = jobs
        .wait_for_import_export_job(id.as_str())
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .wait()
        .await
        .unwrap();
    assert!(
        matches!(
            over.status,
            Some(JobStatus::Cancelled | JobStatus::Completed)
        ),
        "{over:?}"
    );
    // Cancelling it again changes nothing.
    jobs.cancel_import_export_job(id.as_str()).await.unwrap();

    let export = jobs
        .create_import_export_job(
            ImportExportJob::export(container.sas_url(), true).output_blob_name("keyless.txt"),
        )
        .await
        .unwrap();
    let done = jobs
        .wait_for_import_export_job(export.job_id.unwrap())
        .poll_interval(POLL)
        .deadline(DEADLINE)
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, Some(JobStatus::Completed), "{done:?}");
    let bytes = container
        .get("keyless.txt")
        .await
        .unwrap()
        .expect("keyless.txt");
    let exported: Vec<ExportImportDevice> = read_export(std::io::Cursor::new(bytes))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(exported.len(), 2);
    for device in &exported {
        let keys = device
            .authentication
            .as_ref()
            .and_then(|a| a.symmetric_key.as_ref())
            .and_then(|k| k.primary_key.as_ref());
        assert!(
            keys.is_none_or(|k| k.expose_secret().is_empty()),
            "{device:?}"
        );
    }

    let tomorrow = SystemTime::now() + Duration::from_secs(24 * 3600);
    jobs.create_scheduled_job(
        "tomorrow",
        ScheduledJob::twin_update("tags.site = 'keys'", TwinPatch::new().tag("a", 1))
            .start_time(tomorrow),
    )
    .await
    .unwrap();
    let error = jobs
        .wait_for_scheduled_job("tomorrow")
        .poll_interval(POLL)
        .deadline(Duration::from_millis(300))
        .wait()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, iothub_registry::Error::JobNotFinished { job_id, status: Some(_), .. } if job_id == "tomorrow"),
        "{error:?}"
    );
    hub.shutdown().await;
}
