//! Jobs: import and export of the registry through blob storage (Jobs v1, `/jobs…`) and
//! scheduled twin updates and direct methods over a query condition (Jobs v2,
//! `/jobs/v2/…`), on the emulator's clock.
//!
//! - This module: the job records ([`Jobs`]), their rules, limits and durable storage, and
//!   [`drive`], the task that starts each job when it is due.
//! - `scheduled.rs`: the run of a scheduled job, device by device, through the same paths
//!   as a twin PATCH and a direct method.
//! - `blob.rs` (feature `blob`): the run of an import or export job against Azure Blob
//!   Storage (or Azurite) with `azure_storage_blob`.
//!
//! A job's state changes under one lock and are written to the data directory (when there
//! is one) in the order they happen; a runner never holds the lock across an `.await`.

#[cfg(feature = "blob")]
mod blob;
mod scheduled;

pub(crate) use scheduled::scheduled_input;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use iothub_rest_gen::IotDateTime;
use iothub_rest_gen::types::{self as wire, JobStatus, JobType};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};

use crate::hub::Shared;
use crate::rest::errors::ServiceError;
use crate::state::blocking::off_worker;
use crate::state::persist::Persist;

/// Import/export jobs kept (the oldest finished ones go first).
pub(crate) const MAX_IMPORT_EXPORT_JOBS: usize = 100;
/// Scheduled jobs kept (the oldest finished ones go first); creating one more when every
/// kept job is still queued or running answers 429 `ThrottlingMaxActiveJobCountExceeded`.
pub(crate) const MAX_SCHEDULED_JOBS: usize = 1_000;
/// Devices one scheduled job may select; a condition selecting more fails the job.
pub(crate) const MAX_DEVICES_PER_JOB: usize = 100_000;
/// Per-device records kept over all scheduled jobs (the oldest finished jobs go first).
pub(crate) const MAX_DEVICE_RECORDS: usize = 200_000;
/// The longest query condition (the service refused one of about 8,200 bytes).
pub(crate) const MAX_QUERY_CONDITION_BYTES: usize = 8 * 1024;
/// The longest `maxExecutionTimeInSeconds` taken: the emulator's choice (two days).
pub(crate) const MAX_EXECUTION_SECS: i64 = 172_800;
/// `maxExecutionTimeInSeconds` when the request has none (what the Node SDK sends).
pub(crate) const DEFAULT_EXECUTION_SECS: i64 = 3_600;
/// Why a job that was running when the emulator stopped is failed when it starts again.
pub(crate) const RESTART_REASON: &str = "The emulator restarted while the job was running; \
     what it had applied stays applied, the rest was not done";

/// A device's part in a scheduled job, as `SELECT * FROM devices.jobs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceJob {
    pub(crate) device_id: String,
    /// `pending`, `running`, `completed`, `failed` or `canceled`.
    pub(crate) status: String,
    pub(crate) created: String,
    pub(crate) updated: String,
    pub(crate) start: Option<String>,
    pub(crate) end: Option<String>,
    /// `{"deviceMethodResponse": {"status", "payload"}}` for a method job.
    pub(crate) outcome: Option<Value>,
    /// `{"code", "description"}` when the device failed.
    pub(crate) error: Option<Value>,
}

/// An import or export job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ImportExportJob {
    pub(crate) seq: u64,
    pub(crate) props: wire::JobProperties,
}

/// A scheduled job with its devices' records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ScheduledJob {
    pub(crate) seq: u64,
    pub(crate) job: wire::JobResponse,
    pub(crate) devices: Vec<DeviceJob>,
}

impl ScheduledJob {
    /// The job as the service answers it, statistics computed from the device records.
    pub(crate) fn response(&self) -> wire::JobResponse {
        let mut job = self.job.clone();
        let count = |status: &str| {
            i32::try_from(self.devices.iter().filter(|d| d.status == status).count())
                .unwrap_or(i32::MAX)
        };
        if !self.devices.is_empty() || is_terminal(job.status.as_ref()) {
            job.device_job_statistics = Some(wire::DeviceJobStatistics {
                device_count: Some(i32::try_from(self.devices.len()).unwrap_or(i32::MAX)),
                failed_count: Some(count("failed")),
                pending_count: Some(count("pending")),
                running_count: Some(count("running")),
                succeeded_count: Some(count("completed")),
            });
        }
        job
    }
}

fn is_terminal(status: Option<&JobStatus>) -> bool {
    matches!(
        status,
        Some(JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    )
}

fn v1_key(id: &str) -> String {
    format!("v1/{id}")
}

fn v2_key(id: &str) -> String {
    format!("v2/{id}")
}

#[derive(Default)]
struct Inner {
    import_export: BTreeMap<String, ImportExportJob>,
    scheduled: BTreeMap<String, ScheduledJob>,
    /// The next creation number (orders lists and queries).
    seq: u64,
    /// Keys of the jobs whose runner is at work (in memory only).
    dispatched: HashSet<String>,
}

impl Inner {
    fn device_records(&self) -> usize {
        self.scheduled.values().map(|j| j.devices.len()).sum()
    }
}

/// Every job of the hub.
pub(crate) struct Jobs {
    inner: Mutex<Inner>,
    /// Held from a change to its durable write, so writes reach the disk in order.
    writes: Mutex<()>,
    persist: Option<Arc<Persist>>,
    /// Wakes [`drive`] when a job is created.
    pub(crate) wake: Notify,
}

/// A change to write: a job's key and its new document (None: removed).
type Rows = Vec<(String, Option<Vec<u8>>)>;

impl Jobs {
    /// The jobs stored in `persist` (none in memory). A job that was running when the
    /// emulator stopped is failed ([`RESTART_REASON`]); queued ones run when due.
    pub(crate) fn open(persist: Option<Arc<Persist>>) -> Result<Self, crate::Error> {
        let mut inner = Inner::default();
        let mut fixes: Rows = Vec::new();
        if let Some(p) = &persist {
            for (key, bytes) in p.load_jobs()? {
                let damaged = |e: serde_json::Error| crate::Error::Store {
                    path: std::path::PathBuf::from(crate::state::persist::FILE_NAME),
                    message: format!(
                        "job {key:?} cannot be read (invalid at line {}, column {})",
                        e.line(),
                        e.column()
                    ),
                };
                if let Some(id) = key.strip_prefix("v1/") {
                    let mut job: ImportExportJob =
                        serde_json::from_slice(&bytes).map_err(damaged)?;
                    if job.props.status == Some(JobStatus::Running) {
                        job.props.status = Some(JobStatus::Failed);
                        job.props.failure_reason = Some(RESTART_REASON.to_owned());
                        job.props.end_time_utc = Some(IotDateTime::from(Utc::now()));
                        fixes.push((key.clone(), serde_json::to_vec(&job).ok()));
                    }
                    inner.seq = inner.seq.max(job.seq + 1);
                    inner.import_export.insert(id.to_owned(), job);
                } else if let Some(id) = key.strip_prefix("v2/") {
                    let mut job: ScheduledJob = serde_json::from_slice(&bytes).map_err(damaged)?;
                    if job.job.status == Some(JobStatus::Running) {
                        let now = service_now();
                        job.job.status = Some(JobStatus::Failed);
                        job.job.failure_reason = Some(RESTART_REASON.to_owned());
                        job.job.end_time = Some(IotDateTime::from(Utc::now()));
                        for d in &mut job.devices {
                            if d.status == "pending" || d.status == "running" {
                                d.status = "failed".into();
                                d.error = Some(device_error("JobRestarted", RESTART_REASON));
                                d.updated.clone_from(&now);
                                d.end = Some(now.clone());
                            }
                        }
                        fixes.push((key.clone(), serde_json::to_vec(&job).ok()));
                    }
                    inner.seq = inner.seq.max(job.seq + 1);
                    inner.scheduled.insert(id.to_owned(), job);
                }
            }
            if !fixes.is_empty() {
                p.write_jobs(&fixes)?;
            }
        }
        Ok(Self {
            inner: Mutex::new(inner),
            writes: Mutex::new(()),
            persist,
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `rows` durably, in the order changes were made: the write lock is taken
    /// before the state lock is let go.
    fn commit(&self, inner: MutexGuard<'_, Inner>, rows: Rows) -> Result<(), ServiceError> {
        let Some(persist) = &self.persist else {
            return Ok(());
        };
        let writes = self.writes.lock().unwrap_or_else(|e| e.into_inner());
        drop(inner);
        let written = off_worker(|| persist.write_jobs(&rows));
        drop(writes);
        written.map_err(|e| {
            tracing::error!(error = %e, "durable write of a job failed");
            ServiceError::server_error("The job could not be stored")
        })
    }

    fn v1_row(inner: &Inner, id: &str) -> (String, Option<Vec<u8>>) {
        (
            v1_key(id),
            inner
                .import_export
                .get(id)
                .and_then(|j| serde_json::to_vec(j).ok()),
        )
    }

    fn v2_row(inner: &Inner, id: &str) -> (String, Option<Vec<u8>>) {
        (
            v2_key(id),
            inner
                .scheduled
                .get(id)
                .and_then(|j| serde_json::to_vec(j).ok()),
        )
    }

    // ---- import and export (v1) ----

    /// Records a new import or export job, checked by the caller; one at a time per hub.
    pub(crate) fn create_import_export(
        &self,
        mut props: wire::JobProperties,
    ) -> Result<wire::JobProperties, ServiceError> {
        let mut inner = self.lock();
        if inner
            .import_export
            .values()
            .any(|j| !is_terminal(j.props.status.as_ref()))
        {
            return Err(ServiceError::max_active_jobs(
                "An import or export job is already running on this hub: only one import or \
                 export job can be active at a time",
            ));
        }
        let mut rows = Rows::new();
        while inner.import_export.len() >= MAX_IMPORT_EXPORT_JOBS {
            let Some(oldest) = inner
                .import_export
                .iter()
                .min_by_key(|(_, j)| j.seq)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            inner.import_export.remove(&oldest);
            rows.push((v1_key(&oldest), None));
        }
        let id = crate::rest::errors::guid();
        props.job_id = Some(id.clone());
        props.status = Some(JobStatus::Enqueued);
        props.progress = Some(0);
        props.start_time_utc = Some(IotDateTime::from(Utc::now()));
        props.end_time_utc = None;
        props.failure_reason = None;
        let seq = inner.seq;
        inner.seq += 1;
        inner.import_export.insert(
            id.clone(),
            ImportExportJob {
                seq,
                props: props.clone(),
            },
        );
        rows.push(Self::v1_row(&inner, &id));
        self.commit(inner, rows)?;
        self.wake.notify_one();
        Ok(props)
    }

    /// The import or export job with this id.
    pub(crate) fn import_export(&self, id: &str) -> Option<wire::JobProperties> {
        self.lock().import_export.get(id).map(|j| j.props.clone())
    }

    /// Every kept import or export job, oldest first.
    pub(crate) fn import_export_list(&self) -> Vec<wire::JobProperties> {
        let inner = self.lock();
        let mut jobs: Vec<&ImportExportJob> = inner.import_export.values().collect();
        jobs.sort_by_key(|j| j.seq);
        jobs.into_iter().map(|j| j.props.clone()).collect()
    }

    /// Cancels an import or export job: one not finished ends `cancelled` at once (a running
    /// one stops before its next chunk); a finished one stays as it is.
    pub(crate) fn cancel_import_export(&self, id: &str) -> Result<(), ServiceError> {
        self.update_import_export(id, |p| {
            if !is_terminal(p.status.as_ref()) {
                p.status = Some(JobStatus::Cancelled);
                p.end_time_utc = Some(IotDateTime::from(Utc::now()));
            }
        })
        .map(drop)
    }

    /// Changes an import or export job, durably; answers the job after the change.
    pub(crate) fn update_import_export(
        &self,
        id: &str,
        change: impl FnOnce(&mut wire::JobProperties),
    ) -> Result<wire::JobProperties, ServiceError> {
        let mut inner = self.lock();
        let job = inner
            .import_export
            .get_mut(id)
            .ok_or_else(|| ServiceError::job_not_found(id))?;
        change(&mut job.props);
        let props = job.props.clone();
        let row = Self::v1_row(&inner, id);
        self.commit(inner, vec![row])?;
        Ok(props)
    }

    /// Whether the job was cancelled (or is gone).
    #[cfg(feature = "blob")]
    pub(crate) fn import_export_cancelled(&self, id: &str) -> bool {
        self.lock()
            .import_export
            .get(id)
            .is_none_or(|j| j.props.status == Some(JobStatus::Cancelled))
    }

    // ---- scheduled (v2) ----

    /// Records a new scheduled job (checked by the caller) as `queued`.
    pub(crate) fn create_scheduled(
        &self,
        id: &str,
        mut job: wire::JobResponse,
    ) -> Result<wire::JobResponse, ServiceError> {
        let mut inner = self.lock();
        if inner.scheduled.contains_key(id) {
            return Err(ServiceError::job_already_exists(id));
        }
        let mut rows = Rows::new();
        if inner.scheduled.len() >= MAX_SCHEDULED_JOBS
            && !Self::evict_scheduled(&mut inner, &mut rows, 1, 0)
        {
            return Err(ServiceError::max_active_jobs(format!(
                "The hub already keeps {MAX_SCHEDULED_JOBS} scheduled jobs, none of them \
                 finished"
            )));
        }
        job.job_id = Some(id.to_owned());
        job.status = Some(JobStatus::Queued);
        job.created_time = Some(IotDateTime::from(Utc::now()));
        let seq = inner.seq;
        inner.seq += 1;
        let stored = ScheduledJob {
            seq,
            job,
            devices: Vec::new(),
        };
        let response = stored.response();
        inner.scheduled.insert(id.to_owned(), stored);
        rows.push(Self::v2_row(&inner, id));
        self.commit(inner, rows)?;
        self.wake.notify_one();
        Ok(response)
    }

    /// Drops the oldest finished scheduled jobs until `jobs` more jobs and `records` more
    /// device records fit; false when not enough finished jobs can go.
    fn evict_scheduled(inner: &mut Inner, rows: &mut Rows, jobs: usize, records: usize) -> bool {
        loop {
            let fits = inner.scheduled.len() + jobs <= MAX_SCHEDULED_JOBS
                && inner.device_records() + records <= MAX_DEVICE_RECORDS;
            if fits {
                return true;
            }
            let Some(oldest) = inner
                .scheduled
                .iter()
                .filter(|(_, j)| is_terminal(j.job.status.as_ref()))
                .min_by_key(|(_, j)| j.seq)
                .map(|(id, _)| id.clone())
            else {
                return false;
            };
            inner.scheduled.remove(&oldest);
            rows.push((v2_key(&oldest), None));
        }
    }

    /// The scheduled job with this id, as the service answers it.
    pub(crate) fn scheduled(&self, id: &str) -> Option<wire::JobResponse> {
        self.lock().scheduled.get(id).map(ScheduledJob::response)
    }

    /// The stored scheduled job (for its runner).
    fn scheduled_job(&self, id: &str) -> Option<ScheduledJob> {
        self.lock().scheduled.get(id).cloned()
    }

    /// Cancels a scheduled job: one not finished ends `cancelled` at once (its pending
    /// devices too; a device being called finishes); a finished one stays as it is.
    pub(crate) fn cancel_scheduled(&self, id: &str) -> Result<wire::JobResponse, ServiceError> {
        self.update_scheduled(id, |job| {
            if !is_terminal(job.job.status.as_ref()) {
                let now = service_now();
                job.job.status = Some(JobStatus::Cancelled);
                job.job.end_time = Some(IotDateTime::from(Utc::now()));
                for d in &mut job.devices {
                    if d.status == "pending" {
                        d.status = "canceled".into();
                        d.updated.clone_from(&now);
                    }
                }
            }
        })
    }

    /// Changes a scheduled job, durably; answers it after the change.
    fn update_scheduled(
        &self,
        id: &str,
        change: impl FnOnce(&mut ScheduledJob),
    ) -> Result<wire::JobResponse, ServiceError> {
        let mut inner = self.lock();
        let job = inner
            .scheduled
            .get_mut(id)
            .ok_or_else(|| ServiceError::job_not_found(id))?;
        change(job);
        let response = job.response();
        let row = Self::v2_row(&inner, id);
        self.commit(inner, vec![row])?;
        Ok(response)
    }

    /// Changes a scheduled job in memory only (a device's progress between durable
    /// checkpoints).
    fn touch_scheduled(&self, id: &str, change: impl FnOnce(&mut ScheduledJob)) {
        if let Some(job) = self.lock().scheduled.get_mut(id) {
            change(job);
        }
    }

    /// The scheduled jobs of `job_type` and `status` (either may be absent), oldest first.
    pub(crate) fn query_scheduled(
        &self,
        job_type: Option<&str>,
        status: Option<&str>,
    ) -> Vec<wire::JobResponse> {
        let inner = self.lock();
        let mut jobs: Vec<&ScheduledJob> = inner
            .scheduled
            .values()
            .filter(|j| {
                job_type.is_none_or(|t| {
                    j.job
                        .type_
                        .as_ref()
                        .is_some_and(|jt| jt.as_str().eq_ignore_ascii_case(t))
                })
            })
            .filter(|j| {
                status.is_none_or(|s| {
                    j.job
                        .status
                        .as_ref()
                        .is_some_and(|js| js.as_str().eq_ignore_ascii_case(s))
                })
            })
            .collect();
        jobs.sort_by_key(|j| j.seq);
        jobs.into_iter().map(ScheduledJob::response).collect()
    }

    /// Every device record of every kept scheduled job as `devices.jobs` documents, keyed
    /// for paging (job creation order, then device id).
    pub(crate) fn device_job_documents(&self) -> Vec<(String, Value)> {
        let inner = self.lock();
        let mut jobs: Vec<&ScheduledJob> = inner.scheduled.values().collect();
        jobs.sort_by_key(|j| j.seq);
        let mut out = Vec::new();
        for job in jobs {
            let job_id = job.job.job_id.clone().unwrap_or_default();
            let job_type = job.job.type_.as_ref().map(|t| t.as_str().to_owned());
            for d in &job.devices {
                let mut doc = json!({
                    "deviceId": d.device_id,
                    "jobId": job_id,
                    "jobType": job_type,
                    "status": d.status,
                    "createdDateTimeUtc": d.created,
                    "lastUpdatedDateTimeUtc": d.updated,
                });
                if let Some(start) = &d.start {
                    doc["startTimeUtc"] = json!(start);
                }
                if let Some(end) = &d.end {
                    doc["endTimeUtc"] = json!(end);
                }
                if let Some(outcome) = &d.outcome {
                    doc["outcome"] = outcome.clone();
                }
                if let Some(error) = &d.error {
                    doc["error"] = error.clone();
                }
                out.push((format!("{:020}/{}", job.seq, d.device_id), doc));
            }
        }
        out
    }

    /// Jobs due to start now that no runner has: import/export jobs `enqueued`, scheduled
    /// jobs `queued` whose start time has come. They are marked dispatched.
    fn take_due(&self, now: DateTime<Utc>) -> Vec<(bool, String)> {
        let mut inner = self.lock();
        let mut due = Vec::new();
        for (id, job) in &inner.import_export {
            if job.props.status == Some(JobStatus::Enqueued) {
                due.push((true, id.clone()));
            }
        }
        for (id, job) in &inner.scheduled {
            let start = job.job.start_time.map_or(now, |t| t.as_datetime());
            if job.job.status == Some(JobStatus::Queued) && start <= now {
                due.push((false, id.clone()));
            }
        }
        due.retain(|(v1, id)| {
            let key = if *v1 { v1_key(id) } else { v2_key(id) };
            inner.dispatched.insert(key)
        });
        due
    }

    /// A runner is done with its job.
    fn done(&self, v1: bool, id: &str) {
        let key = if v1 { v1_key(id) } else { v2_key(id) };
        self.lock().dispatched.remove(&key);
    }
}

/// `{"code", "description"}` of a failed device.
fn device_error(code: &str, description: &str) -> Value {
    json!({ "code": code, "description": description })
}

/// Now, as the service writes times.
fn service_now() -> String {
    crate::rest::errors::service_time(Utc::now())
}

/// Starts every job when it is due, until shutdown: import and export jobs at once (one at
/// a time per hub), scheduled jobs at their start time.
pub(crate) async fn drive(shared: Arc<Shared>, shutdown: watch::Receiver<bool>) {
    let mut watch = shutdown.clone();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        for (v1, id) in shared.jobs.take_due(Utc::now()) {
            let shared = shared.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                if v1 {
                    run_import_export(&shared, &id, shutdown).await;
                } else {
                    scheduled::run(&shared, &id, shutdown).await;
                }
                shared.jobs.done(v1, &id);
            });
        }
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.jobs.wake.notified() => {}
            _ = watch.changed() => return,
        }
    }
}

#[cfg(feature = "blob")]
async fn run_import_export(shared: &Arc<Shared>, id: &str, shutdown: watch::Receiver<bool>) {
    blob::run(shared, id, shutdown).await;
}

/// Without blob storage no import or export job is ever created; one found in a data
/// directory written by a build with it fails.
#[cfg(not(feature = "blob"))]
async fn run_import_export(shared: &Arc<Shared>, id: &str, _shutdown: watch::Receiver<bool>) {
    let _ = shared.jobs.update_import_export(id, |p| {
        p.status = Some(JobStatus::Failed);
        p.failure_reason = Some(NO_BLOB.to_owned());
        p.end_time_utc = Some(IotDateTime::from(Utc::now()));
    });
}

/// What an import or export job answers in a build without the `blob` feature.
pub(crate) const NO_BLOB: &str = "Import and export jobs are not emulated in this build of \
     iothub-emulator (it was built without its `blob` feature)";

/// Whether this build runs import and export jobs.
pub(crate) const BLOB_ENABLED: bool = cfg!(feature = "blob");

/// Checks a job id (the path's): 1 to 128 ASCII letters, digits or the device id's special
/// characters, as the service's job ids.
pub(crate) fn check_job_id(id: &str) -> Result<(), ServiceError> {
    crate::state::identity::check_id("JobId", id)
}

/// Checks a new import or export job and returns it with defaults filled in.
pub(crate) fn import_export_input(body: &Value) -> Result<wire::JobProperties, ServiceError> {
    let mut body = body.clone();
    let Value::Object(map) = &mut body else {
        return Err(ServiceError::argument_invalid(
            "The job must be a JSON object",
        ));
    };
    // The Node SDK sends `IdentityBased` and `type` in any case: compare without case.
    let lower = |key: &str, map: &serde_json::Map<String, Value>| {
        map.get(key)
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    if lower("storageAuthenticationType", map).as_deref() == Some("identitybased") {
        return Err(ServiceError::argument_invalid(
            "Identity-based storage access (storageAuthenticationType identityBased) is not \
             emulated by iothub-emulator: give container SAS URIs (keyBased)",
        ));
    }
    let kind = lower("type", map);
    match kind.as_deref() {
        Some("import") => {
            map.insert("type".into(), json!("import"));
        }
        Some("export") => {
            map.insert("type".into(), json!("export"));
        }
        Some(other) => {
            return Err(ServiceError::argument_invalid(format!(
                "The job type '{other}' cannot be created here: only import and export jobs \
                 are created with /jobs/create"
            )));
        }
        None => return Err(ServiceError::argument_null("The job's type is required")),
    }
    if map.contains_key("storageAuthenticationType") {
        map.insert("storageAuthenticationType".into(), json!("keyBased"));
    }
    let mut props: wire::JobProperties =
        crate::state::identity::parse_model(&body, "import/export job")?;
    let uri_ok = |uri: &Option<iothub_rest_gen::SasUri>| {
        uri.as_ref()
            .is_some_and(|u| u.expose_secret().starts_with("http"))
    };
    match props.type_ {
        Some(JobType::Import) => {
            if !uri_ok(&props.input_blob_container_uri) {
                return Err(ServiceError::argument_invalid(
                    "An import job needs inputBlobContainerUri, an http(s) container SAS URI",
                ));
            }
            if !uri_ok(&props.output_blob_container_uri) {
                return Err(ServiceError::argument_invalid(
                    "An import job needs outputBlobContainerUri, an http(s) container SAS URI \
                     (for importErrors.log)",
                ));
            }
            props
                .input_blob_name
                .get_or_insert_with(|| "devices.txt".into());
        }
        _ => {
            if !uri_ok(&props.output_blob_container_uri) {
                return Err(ServiceError::argument_invalid(
                    "An export job needs outputBlobContainerUri, an http(s) container SAS URI",
                ));
            }
            props
                .output_blob_name
                .get_or_insert_with(|| "devices.txt".into());
        }
    }
    if props.include_configurations == Some(true) {
        props
            .configurations_blob_name
            .get_or_insert_with(|| "configurations.txt".into());
    }
    for name in [
        &props.input_blob_name,
        &props.output_blob_name,
        &props.configurations_blob_name,
    ]
    .into_iter()
    .flatten()
    {
        if name.is_empty() || name.len() > 1024 || name.chars().any(char::is_control) {
            return Err(ServiceError::argument_invalid(format!(
                "The blob name '{name}' is not a valid blob name"
            )));
        }
    }
    Ok(props)
}
