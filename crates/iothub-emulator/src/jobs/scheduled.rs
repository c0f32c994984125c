//! Scheduled jobs (Jobs v2): the rules a new one is checked against, and its run: at its
//! start time the query condition selects the devices, then each one gets the twin update
//! (through the same transaction as a twin PATCH) or the direct method (through the same
//! rendezvous as `POST /twins/{id}/methods`), one after the other, until every device is
//! done, the job is cancelled or its maximum execution time has passed.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use iothub_rest_gen::IotDateTime;
use iothub_rest_gen::types::{self as wire, JobStatus, JobType};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    DEFAULT_EXECUTION_SECS, DeviceJob, MAX_DEVICES_PER_JOB, MAX_EXECUTION_SECS,
    MAX_QUERY_CONDITION_BYTES, device_error, service_now,
};
use crate::hub::Shared;
use crate::query::Query;
use crate::rest::errors::ServiceError;
use crate::state::blocking::off_worker;
use crate::state::etag::IfMatch;
use crate::state::identity::parse_model;
use crate::state::render::render_twin;
use crate::state::twin::TwinChange;

/// Device records are written to the data directory every this many devices (and when the
/// job ends).
const CHECKPOINT: usize = 100;

/// The query a condition stands for: `SELECT * FROM devices WHERE <condition>`.
pub(crate) fn device_query(condition: &str) -> Result<Query, ServiceError> {
    Query::parse(&format!("SELECT * FROM devices WHERE {condition}"))
        .map_err(|e| ServiceError::argument_invalid(format!("The queryCondition is invalid: {e}")))
}

/// Checks a new scheduled job as the service does, and returns what is stored.
pub(crate) fn scheduled_input(id: &str, body: &Value) -> Result<wire::JobResponse, ServiceError> {
    let request: wire::JobRequest = parse_model(body, "scheduled job")?;
    if let Some(body_id) = &request.job_id
        && body_id != id
    {
        return Err(ServiceError::argument_invalid(format!(
            "The jobId in the body ('{body_id}') differs from the one in the path ('{id}')"
        )));
    }
    let condition = request
        .query_condition
        .clone()
        .filter(|c| !c.trim().is_empty())
        .ok_or_else(|| ServiceError::argument_null("queryCondition is required"))?;
    if condition.len() > MAX_QUERY_CONDITION_BYTES {
        return Err(ServiceError::argument_invalid(format!(
            "The queryCondition is {} bytes long; at most {MAX_QUERY_CONDITION_BYTES} are allowed",
            condition.len()
        )));
    }
    device_query(&condition)?;
    let max_execution = match request.max_execution_time_in_seconds {
        None => DEFAULT_EXECUTION_SECS,
        Some(s @ 1..=MAX_EXECUTION_SECS) => s,
        Some(s) => {
            return Err(ServiceError::argument_invalid(format!(
                "maxExecutionTimeInSeconds must be between 1 and {MAX_EXECUTION_SECS}; it was {s}"
            )));
        }
    };
    let mut job = wire::JobResponse {
        job_id: Some(id.to_owned()),
        query_condition: Some(condition),
        start_time: Some(
            request
                .start_time
                .unwrap_or_else(|| IotDateTime::from(Utc::now())),
        ),
        max_execution_time_in_seconds: Some(max_execution),
        type_: request.type_.clone(),
        ..Default::default()
    };
    match &request.type_ {
        Some(JobType::ScheduleUpdateTwin) => {
            let twin = request.update_twin.ok_or_else(|| {
                ServiceError::argument_null("updateTwin is required for a scheduleUpdateTwin job")
            })?;
            if twin.etag.as_deref().map(|e| e.trim_matches('"')) != Some("*") {
                return Err(ServiceError::argument_invalid(
                    "The twin of a scheduleUpdateTwin job must have etag '*'",
                ));
            }
            TwinChange::from_body(&serde_json::to_value(&twin).unwrap_or(Value::Null))?;
            job.update_twin = Some(twin);
        }
        Some(JobType::ScheduleDeviceMethod) => {
            let method = request.cloud_to_device_method.ok_or_else(|| {
                ServiceError::argument_null(
                    "cloudToDeviceMethod is required for a scheduleDeviceMethod job",
                )
            })?;
            if method.method_name.as_deref().is_none_or(str::is_empty) {
                return Err(ServiceError::argument_null(
                    "cloudToDeviceMethod.methodName is required",
                ));
            }
            if let Some(t) = method.response_timeout_in_seconds
                && !(5..=300).contains(&t)
            {
                return Err(ServiceError::argument_invalid(format!(
                    "responseTimeoutInSeconds must be between 5 and 300; it was {t}"
                )));
            }
            if let Some(t) = method.connect_timeout_in_seconds
                && !(0..=300).contains(&t)
            {
                return Err(ServiceError::argument_invalid(format!(
                    "connectTimeoutInSeconds must be between 0 and 300; it was {t}"
                )));
            }
            job.cloud_to_device_method = Some(method);
        }
        Some(other) => {
            return Err(ServiceError::argument_invalid(format!(
                "The job type '{}' cannot be scheduled: use scheduleUpdateTwin or \
                 scheduleDeviceMethod",
                other.as_str()
            )));
        }
        None => return Err(ServiceError::argument_null("The job's type is required")),
    }
    Ok(job)
}

/// What one device's part ended with.
enum Outcome {
    Done(Option<Value>),
    Failed(Value),
}

/// Runs a scheduled job that is due; returns early, leaving it `running`, on shutdown (it is
/// failed when the emulator starts again on the same data directory).
pub(super) async fn run(shared: &Arc<Shared>, id: &str, mut shutdown: watch::Receiver<bool>) {
    let jobs = &shared.jobs;
    let Some(stored) = jobs.scheduled_job(id) else {
        return;
    };
    if stored.job.status != Some(JobStatus::Queued) {
        return;
    }
    let job = stored.job;
    let condition = job.query_condition.clone().unwrap_or_default();
    let selected = match device_query(&condition) {
        Ok(query) => {
            let snapshot = shared.store.read();
            off_worker(|| {
                let mut ids = Vec::new();
                for (device, entry) in snapshot.iter() {
                    if query.matches(&render_twin(entry, None)) {
                        ids.push(device.to_owned());
                        if ids.len() > MAX_DEVICES_PER_JOB {
                            break;
                        }
                    }
                }
                ids
            })
        }
        Err(e) => {
            fail(shared, id, &e.message);
            return;
        }
    };
    if selected.len() > MAX_DEVICES_PER_JOB {
        fail(
            shared,
            id,
            &format!(
                "The queryCondition selects more than {MAX_DEVICES_PER_JOB} devices, the most \
                 one job of the emulator takes"
            ),
        );
        return;
    }
    let now = service_now();
    let started = {
        let mut inner = jobs.lock();
        let mut rows = Vec::new();
        let fits = super::Jobs::evict_scheduled(&mut inner, &mut rows, 0, selected.len());
        match inner.scheduled.get_mut(id) {
            Some(j) if j.job.status == Some(JobStatus::Queued) && fits => {
                j.job.status = Some(JobStatus::Running);
                j.devices = selected
                    .iter()
                    .map(|d| DeviceJob {
                        device_id: d.clone(),
                        status: "pending".into(),
                        created: now.clone(),
                        updated: now.clone(),
                        start: None,
                        end: None,
                        outcome: None,
                        error: None,
                    })
                    .collect();
                rows.push(super::Jobs::v2_row(&inner, id));
                jobs.commit(inner, rows).is_ok()
            }
            Some(j) if j.job.status == Some(JobStatus::Queued) => {
                drop(inner);
                fail(
                    shared,
                    id,
                    &format!(
                        "The hub's scheduled jobs would keep more than {} device records",
                        super::MAX_DEVICE_RECORDS
                    ),
                );
                false
            }
            _ => false,
        }
    };
    if !started {
        return;
    }
    let start = job.start_time.map_or_else(Utc::now, |t| t.as_datetime());
    let max = job
        .max_execution_time_in_seconds
        .unwrap_or(DEFAULT_EXECUTION_SECS);
    let deadline = start + chrono::Duration::seconds(max);
    for (index, device) in selected.iter().enumerate() {
        if *shutdown.borrow() {
            return;
        }
        let cancelled = jobs
            .scheduled_job(id)
            .is_none_or(|j| j.job.status != Some(JobStatus::Running));
        if cancelled {
            return;
        }
        if Utc::now() >= deadline {
            finish(
                shared,
                id,
                Some("The job did not finish within its maxExecutionTimeInSeconds"),
            );
            return;
        }
        let began = service_now();
        jobs.touch_scheduled(id, |j| {
            if let Some(d) = j.devices.get_mut(index)
                && d.status == "pending"
            {
                d.status = "running".into();
                d.start = Some(began.clone());
                d.updated.clone_from(&began);
            }
        });
        let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let outcome = tokio::select! {
            outcome = device_part(shared, device, &job) => outcome,
            () = tokio::time::sleep(left) => Outcome::Failed(device_error(
                "JobTimeout",
                "The job's maxExecutionTimeInSeconds passed before the device answered",
            )),
            _ = shutdown.changed() => return,
        };
        let ended = service_now();
        let record = |d: &mut DeviceJob| {
            d.end = Some(ended.clone());
            d.updated.clone_from(&ended);
            match outcome {
                Outcome::Done(outcome) => {
                    d.status = "completed".into();
                    d.outcome = outcome;
                }
                Outcome::Failed(error) => {
                    d.status = "failed".into();
                    d.error = Some(error);
                }
            }
        };
        let apply = |j: &mut super::ScheduledJob| {
            if let Some(d) = j.devices.get_mut(index) {
                record(d);
            }
        };
        if (index + 1) % CHECKPOINT == 0 {
            let _ = jobs.update_scheduled(id, apply);
        } else {
            jobs.touch_scheduled(id, apply);
        }
    }
    finish(shared, id, None);
}

/// One device's part: the twin update or the method call.
async fn device_part(shared: &Shared, device: &str, job: &wire::JobResponse) -> Outcome {
    let failed = |e: ServiceError| Outcome::Failed(device_error(e.name, &e.message));
    if let Some(twin) = &job.update_twin {
        let change = match TwinChange::from_body(&serde_json::to_value(twin).unwrap_or_default()) {
            Ok(change) => change,
            Err(e) => return failed(e),
        };
        let mut tx = shared.store.begin();
        let applied = tx
            .update_twin(device, None, &change, false, &IfMatch::Any)
            .map(drop)
            .and_then(|()| tx.commit());
        return match applied {
            Ok(()) => Outcome::Done(None),
            Err(e) => failed(e),
        };
    }
    let Some(method) = job.cloud_to_device_method.clone() else {
        return failed(ServiceError::argument_null("The job has no work"));
    };
    match crate::rest::methods::call_method(shared, device, None, method).await {
        Ok(result) => Outcome::Done(Some(json!({
            "deviceMethodResponse": {
                "status": result.status,
                "payload": result.payload,
            }
        }))),
        Err(e) => failed(e),
    }
}

/// Ends a running job: `completed`, or `failed` with `reason` (its devices not reached
/// fail too). A cancelled job stays cancelled.
fn finish(shared: &Shared, id: &str, reason: Option<&str>) {
    let _ = shared.jobs.update_scheduled(id, |j| {
        if j.job.status != Some(JobStatus::Running) {
            return;
        }
        j.job.end_time = Some(IotDateTime::from(Utc::now()));
        match reason {
            None => j.job.status = Some(JobStatus::Completed),
            Some(reason) => {
                let now = service_now();
                j.job.status = Some(JobStatus::Failed);
                j.job.failure_reason = Some(reason.to_owned());
                for d in &mut j.devices {
                    if d.status == "pending" {
                        d.status = "failed".into();
                        d.error = Some(device_error("JobTimeout", reason));
                        d.updated.clone_from(&now);
                    }
                }
            }
        }
    });
}

/// Fails a queued job before any device is reached.
fn fail(shared: &Shared, id: &str, reason: &str) {
    let _ = shared.jobs.update_scheduled(id, |j| {
        if j.job.status == Some(JobStatus::Queued) {
            j.job.status = Some(JobStatus::Failed);
            j.job.failure_reason = Some(reason.to_owned());
            j.job.end_time = Some(IotDateTime::from(Utc::now()));
        }
    });
}
