//! The requests of jobs, typed and checked before anything is sent: [`ImportExportJob`]
//! (`POST /jobs/create`) and [`ScheduledJob`] (`PUT /jobs/v2/{id}`), with its
//! [`DeviceMethod`].

use std::time::{Duration, SystemTime};

use iothub_rest_gen::SasUri;
use iothub_rest_gen::types::{
    CloudToDeviceMethod, JobProperties, JobRequest, JobType, ManagedIdentity,
    StorageAuthenticationType, Twin,
};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::twin_patch::TwinPatch;

/// The longest query condition sent, in bytes. The service refuses a condition of about
/// 8,200 bytes with 412 `PreconditionFailed` (azure-iot-sdk-csharp#1680), a code that says
/// nothing about the length; refusing it here says why.
pub const MAX_QUERY_CONDITION_BYTES: usize = 8_192;

/// The range of a scheduled method's response timeout the service accepts, in seconds.
pub const METHOD_RESPONSE_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 5..=300;

/// The range of a scheduled method's connect timeout the service accepts, in seconds (0: do
/// not wait for a disconnected device).
pub const METHOD_CONNECT_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 0..=300;

/// An import or export job of the whole registry through blob storage: Python's
/// `JobProperties` for `create_import_export_job`, built for one of the two.
///
/// Container URIs are [`SasUri`]s: their signature (`sig=`) never appears in `Debug`, logs or
/// errors. `storageAuthenticationType` and the managed identity are sent as given (with
/// identity-based access the URIs carry no signature, and the hub reaches the storage account
/// as its own identity).
///
/// ```
/// use iothub_registry::ImportExportJob;
///
/// let export = ImportExportJob::export("https://acct.blob.core.windows.net/backup?sp=racwl&sig=c2VjcmV0", true)
///     .output_blob_name("fleet/devices.txt");
/// assert!(!format!("{export:?}").contains("c2VjcmV0"));
/// let import = ImportExportJob::import(
///     "https://acct.blob.core.windows.net/new-devices?sp=rl&sig=c2VjcmV0",
///     "https://acct.blob.core.windows.net/import-logs?sp=racw&sig=c2VjcmV0",
/// );
/// # let _ = import;
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a job does nothing until it is sent with create_import_export_job"]
pub struct ImportExportJob {
    properties: JobProperties,
}

impl ImportExportJob {
    /// Exports every identity (and its twin) of the registry to `devices.txt` in the container
    /// (or the blob named with [`output_blob_name`](Self::output_blob_name)), one
    /// `ExportImportDevice` JSON per line; with `exclude_keys`, without their keys.
    pub fn export(output_blob_container_uri: impl Into<SasUri>, exclude_keys: bool) -> Self {
        Self {
            properties: JobProperties {
                type_: Some(JobType::Export),
                output_blob_container_uri: Some(output_blob_container_uri.into()),
                exclude_keys_in_export: Some(exclude_keys),
                ..JobProperties::default()
            },
        }
    }

    /// Imports the identities of `devices.txt` in the input container (or the blob named with
    /// [`input_blob_name`](Self::input_blob_name)), each as its `importMode` says; the hub
    /// writes `importErrors.log` for failed lines into the output container. Write the file
    /// with [`write_import_file`](crate::import_export_file::write_import_file).
    pub fn import(
        input_blob_container_uri: impl Into<SasUri>,
        output_blob_container_uri: impl Into<SasUri>,
    ) -> Self {
        Self {
            properties: JobProperties {
                type_: Some(JobType::Import),
                input_blob_container_uri: Some(input_blob_container_uri.into()),
                output_blob_container_uri: Some(output_blob_container_uri.into()),
                ..JobProperties::default()
            },
        }
    }

    /// A job from the generated model as it is, as Python's method takes it; it is checked
    /// as the typed constructors' jobs are when sent.
    pub fn from_properties(properties: JobProperties) -> Self {
        Self { properties }
    }

    /// The blob read by an import (default `devices.txt`).
    pub fn input_blob_name(mut self, name: impl Into<String>) -> Self {
        self.properties.input_blob_name = Some(name.into());
        self
    }

    /// The blob an export writes (default `devices.txt`), or the one an import writes its
    /// errors to (default `importErrors.log`).
    pub fn output_blob_name(mut self, name: impl Into<String>) -> Self {
        self.properties.output_blob_name = Some(name.into());
        self
    }

    /// Also exports (or imports) the hub's configurations, to (or from) `configurations.txt`.
    pub fn include_configurations(mut self, include: bool) -> Self {
        self.properties.include_configurations = Some(include);
        self
    }

    /// The blob of configurations (default `configurations.txt`), with
    /// [`include_configurations`](Self::include_configurations).
    pub fn configurations_blob_name(mut self, name: impl Into<String>) -> Self {
        self.properties.configurations_blob_name = Some(name.into());
        self
    }

    /// How the hub reaches the storage account: with the SAS in the URIs (`keyBased`, the
    /// service's default) or as its managed identity (`identityBased`). Sent as given.
    pub fn storage_authentication_type(mut self, kind: StorageAuthenticationType) -> Self {
        self.properties.storage_authentication_type = Some(kind);
        self
    }

    /// The user-assigned managed identity (its resource id) the hub uses with
    /// `identityBased` storage access; without one, its system-assigned identity. Sent as
    /// given.
    pub fn identity(mut self, user_assigned_identity: impl Into<String>) -> Self {
        self.properties.identity = Some(ManagedIdentity {
            user_assigned_identity: Some(user_assigned_identity.into()),
        });
        self
    }

    /// The request as it will be sent.
    pub fn properties(&self) -> &JobProperties {
        &self.properties
    }

    /// Checks the job and returns its request: an import or an export, with the containers
    /// that kind needs as absolute `http(s)` URIs, and no empty blob name.
    pub(crate) fn into_properties(self) -> Result<JobProperties> {
        let p = &self.properties;
        let invalid = |reason: String| Error::InvalidArgument {
            argument: "job",
            reason,
        };
        match &p.type_ {
            Some(JobType::Export) => {
                check_container("output_blob_container_uri", &p.output_blob_container_uri)?;
            }
            Some(JobType::Import) => {
                check_container("input_blob_container_uri", &p.input_blob_container_uri)?;
                check_container("output_blob_container_uri", &p.output_blob_container_uri)?;
            }
            other => {
                return Err(invalid(format!(
                    "type {:?} is not an import or an export",
                    other.as_ref().map(JobType::as_str)
                )));
            }
        }
        for (field, name) in [
            ("input_blob_name", &p.input_blob_name),
            ("output_blob_name", &p.output_blob_name),
            ("configurations_blob_name", &p.configurations_blob_name),
        ] {
            if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
                return Err(invalid(format!("{field} is empty")));
            }
        }
        if p.job_id.is_some() || p.status.is_some() || p.progress.is_some() {
            return Err(invalid(
                "job_id, status and progress are the hub's to set; leave them out".into(),
            ));
        }
        Ok(self.properties)
    }
}

impl From<ImportExportJob> for JobProperties {
    fn from(job: ImportExportJob) -> Self {
        job.properties
    }
}

/// A container URI the hub can reach: absolute, `http` or `https`, with a host. The error
/// shows the URI with its signature redacted.
fn check_container(field: &str, uri: &Option<SasUri>) -> Result<()> {
    let invalid = |reason: String| Error::InvalidArgument {
        argument: "job",
        reason,
    };
    let Some(uri) = uri else {
        return Err(invalid(format!("{field} is required for this kind of job")));
    };
    match reqwest::Url::parse(uri.expose_secret()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(invalid(format!(
            "{field} {:?} is not an http(s) URI",
            uri.redacted()
        ))),
        Err(error) => Err(invalid(format!(
            "{field} {:?} is not a URI: {error}",
            uri.redacted()
        ))),
    }
}

/// A direct method to call on every device a [`ScheduledJob`] selects.
///
/// ```
/// use std::time::Duration;
/// use iothub_registry::DeviceMethod;
/// use serde_json::json;
///
/// let reboot = DeviceMethod::new("reboot")
///     .payload(json!({ "delay": 5 }))
///     .response_timeout(Duration::from_secs(30))
///     .connect_timeout(Duration::from_secs(10));
/// # let _ = reboot;
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a method does nothing until scheduled"]
pub struct DeviceMethod {
    name: String,
    payload: Option<Value>,
    response_timeout: Duration,
    connect_timeout: Option<Duration>,
}

impl DeviceMethod {
    /// Calls the method `name`, without payload (sent as `null`), with a 30 s response
    /// timeout and the service's connect timeout.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            payload: None,
            response_timeout: Duration::from_secs(30),
            connect_timeout: None,
        }
    }

    /// The method's payload, any JSON.
    pub fn payload(mut self, payload: impl Into<Value>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// How long each device has to answer: whole seconds in 5..=300 (the service's range).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long the hub waits for a disconnected device to connect: whole seconds in 0..=300.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    fn into_model(self) -> Result<CloudToDeviceMethod> {
        if self.name.trim().is_empty() {
            return Err(Error::InvalidArgument {
                argument: "method_name",
                reason: "is required".into(),
            });
        }
        let response = whole_seconds(
            "response_timeout",
            self.response_timeout,
            &METHOD_RESPONSE_TIMEOUT_SECS,
        )?;
        let connect = self
            .connect_timeout
            .map(|t| whole_seconds("connect_timeout", t, &METHOD_CONNECT_TIMEOUT_SECS))
            .transpose()?;
        Ok(CloudToDeviceMethod {
            method_name: Some(self.name),
            payload: Some(self.payload.unwrap_or(Value::Null)),
            response_timeout_in_seconds: Some(response),
            connect_timeout_in_seconds: connect,
        })
    }
}

/// `timeout` as whole seconds within `range`.
fn whole_seconds(
    argument: &'static str,
    timeout: Duration,
    range: &std::ops::RangeInclusive<u64>,
) -> Result<i32> {
    if timeout.subsec_nanos() != 0 || !range.contains(&timeout.as_secs()) {
        return Err(Error::InvalidArgument {
            argument,
            reason: format!("{timeout:?} is not a whole number of seconds in {range:?}"),
        });
    }
    // The ranges end at 300.
    Ok(timeout.as_secs() as i32)
}

/// What a scheduled job does on each device.
#[derive(Clone, Debug, PartialEq)]
enum Work {
    TwinUpdate(TwinPatch),
    DeviceMethod(DeviceMethod),
}

/// A job the hub runs over the devices a query condition selects, at a start time, within a
/// maximum execution time: a twin update or a direct method (Python's `JobRequest` for
/// `create_scheduled_job`).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use iothub_registry::{DeviceMethod, ScheduledJob, TwinPatch};
///
/// let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
/// let interval = ScheduledJob::twin_update(
///     "tags.site = 'oslo'",
///     TwinPatch::new().desired("telemetryInterval", 60),
/// )
/// .start_time(in_an_hour)
/// .max_execution_time(Duration::from_secs(600));
/// let reboot = ScheduledJob::device_method("tags.site = 'oslo'", DeviceMethod::new("reboot"));
/// # let _ = (interval, reboot);
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a job does nothing until it is sent with create_scheduled_job"]
pub struct ScheduledJob {
    work: Work,
    query_condition: String,
    start_time: Option<SystemTime>,
    max_execution_time: Option<Duration>,
}

impl ScheduledJob {
    /// Patches the tags and desired properties of every twin `query_condition` selects (the
    /// condition of a `WHERE`: `tags.site = 'oslo'`, `deviceId IN ['a', 'b']`). The twin is sent
    /// with etag `*`, as the service requires.
    pub fn twin_update(query_condition: impl Into<String>, patch: TwinPatch) -> Self {
        Self::new(query_condition, Work::TwinUpdate(patch))
    }

    /// Calls a direct method on every device `query_condition` selects.
    pub fn device_method(query_condition: impl Into<String>, method: DeviceMethod) -> Self {
        Self::new(query_condition, Work::DeviceMethod(method))
    }

    fn new(query_condition: impl Into<String>, work: Work) -> Self {
        Self {
            work,
            query_condition: query_condition.into(),
            start_time: None,
            max_execution_time: None,
        }
    }

    /// When the job starts (default: when it is created). A time in the past starts it at
    /// once. `SystemTime` converts from chrono's `DateTime<Utc>` too.
    pub fn start_time(mut self, start: SystemTime) -> Self {
        self.start_time = Some(start);
        self
    }

    /// The longest the job runs: devices it has not reached by then are not. Whole seconds,
    /// at least one (default: the service's, one hour).
    pub fn max_execution_time(mut self, limit: Duration) -> Self {
        self.max_execution_time = Some(limit);
        self
    }

    /// Checks the job and returns the request for `job_id`, starting at `now` unless a start
    /// time was given.
    pub(crate) fn into_request(self, job_id: &str, now: SystemTime) -> Result<JobRequest> {
        let condition = self.query_condition.trim();
        if condition.is_empty() {
            return Err(Error::InvalidArgument {
                argument: "query_condition",
                reason: "is empty; a job needs a condition selecting its devices".into(),
            });
        }
        if condition.len() > MAX_QUERY_CONDITION_BYTES {
            return Err(Error::InvalidArgument {
                argument: "query_condition",
                reason: format!(
                    "is {} bytes; the service takes at most about {MAX_QUERY_CONDITION_BYTES}",
                    condition.len()
                ),
            });
        }
        let start = self.start_time.unwrap_or(now);
        let start_time = start_time(start)?;
        let max_execution_time_in_seconds = match self.max_execution_time {
            None => None,
            Some(limit) if limit.subsec_nanos() == 0 && limit.as_secs() >= 1 => Some(
                i64::try_from(limit.as_secs()).map_err(|_| Error::InvalidArgument {
                    argument: "max_execution_time",
                    reason: format!("{limit:?} is too long"),
                })?,
            ),
            Some(limit) => {
                return Err(Error::InvalidArgument {
                    argument: "max_execution_time",
                    reason: format!("{limit:?} is not a whole number of seconds, at least 1"),
                });
            }
        };
        let (type_, update_twin, cloud_to_device_method) = match self.work {
            Work::TwinUpdate(patch) => {
                if patch.is_empty() {
                    return Err(Error::InvalidArgument {
                        argument: "patch",
                        reason: "changes nothing".into(),
                    });
                }
                let twin = Twin {
                    etag: Some("*".into()),
                    ..Twin::from(patch)
                };
                (JobType::ScheduleUpdateTwin, Some(twin), None)
            }
            Work::DeviceMethod(method) => (
                JobType::ScheduleDeviceMethod,
                None,
                Some(method.into_model()?),
            ),
        };
        Ok(JobRequest {
            job_id: Some(job_id.to_owned()),
            type_: Some(type_),
            query_condition: Some(condition.to_owned()),
            start_time: Some(start_time),
            max_execution_time_in_seconds,
            update_twin,
            cloud_to_device_method,
        })
    }
}

/// A start time as the service's date-time, in whole milliseconds, between 1970 and 9999.
fn start_time(start: SystemTime) -> Result<iothub_rest_gen::IotDateTime> {
    let invalid = || Error::InvalidArgument {
        argument: "start_time",
        reason: "is not between 1970 and 9999".into(),
    };
    let since = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| invalid())?;
    let millis = i64::try_from(since.as_millis()).map_err(|_| invalid())?;
    let at = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(millis).ok_or_else(invalid)?;
    if chrono::Datelike::year(&at) > 9999 {
        return Err(invalid());
    }
    Ok(at.into())
}

/// Checks a job id given by the caller (a scheduled job's, or any job's to read or cancel):
/// not empty, no white space or control characters.
pub(crate) fn validate_job_id(job_id: &str) -> Result<()> {
    let reason = if job_id.is_empty() {
        "is empty"
    } else if job_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "holds white space or control characters"
    } else if job_id.len() > 128 {
        "is longer than 128 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidArgument {
        argument: "job_id",
        reason: reason.into(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const URI: &str = "https://acct.blob.core.windows.net/c?sv=2022&sp=racwdl&sig=c2VjcmV0JTJC";

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn reason(error: Error) -> (&'static str, String) {
        match error {
            Error::InvalidArgument { argument, reason } => (argument, reason),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn export_and_import_requests_carry_what_was_asked() {
        let export = ImportExportJob::export(URI, true)
            .output_blob_name("out/devices.txt")
            .include_configurations(true)
            .storage_authentication_type(StorageAuthenticationType::IdentityBased)
            .identity("/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i");
        let sent = serde_json::to_value(export.into_properties().unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({
                "type": "export",
                "outputBlobContainerUri": URI,
                "excludeKeysInExport": true,
                "outputBlobName": "out/devices.txt",
                "includeConfigurations": true,
                "storageAuthenticationType": "identityBased",
                "identity": { "userAssignedIdentity": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/i" },
            })
        );
        let import = ImportExportJob::import(URI, URI).input_blob_name("in.txt");
        let sent = serde_json::to_value(import.into_properties().unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({ "type": "import", "inputBlobContainerUri": URI, "outputBlobContainerUri": URI, "inputBlobName": "in.txt" })
        );
    }

    #[test]
    fn import_export_jobs_are_checked_and_errors_hide_the_signature() {
        let (argument, why) = reason(
            ImportExportJob::export("not a uri?sig=c2VjcmV0JTJC", false)
                .into_properties()
                .unwrap_err(),
        );
        assert_eq!(argument, "job");
        assert!(why.contains("output_blob_container_uri"), "{why}");
        assert!(!why.contains("c2VjcmV0"), "{why}");
        let (_, why) = reason(
            ImportExportJob::export("ftp://acct/c?sig=c2VjcmV0JTJC", false)
                .into_properties()
                .unwrap_err(),
        );
        assert!(
            why.contains("not an http(s) URI") && !why.contains("c2VjcmV0"),
            "{why}"
        );
        let missing = ImportExportJob::from_properties(JobProperties {
            type_: Some(JobType::Import),
            output_blob_container_uri: Some(URI.into()),
            ..Default::default()
        });
        let (_, why) = reason(missing.into_properties().unwrap_err());
        assert!(
            why.contains("input_blob_container_uri is required"),
            "{why}"
        );
        let (_, why) = reason(
            ImportExportJob::from_properties(JobProperties::default())
                .into_properties()
                .unwrap_err(),
        );
        assert!(why.contains("not an import or an export"), "{why}");
        let (_, why) = reason(
            ImportExportJob::export(URI, false)
                .output_blob_name(" ")
                .into_properties()
                .unwrap_err(),
        );
        assert!(why.contains("output_blob_name is empty"), "{why}");
        let with_id = ImportExportJob::from_properties(JobProperties {
            job_id: Some("j".into()),
            ..ImportExportJob::export(URI, false).into()
        });
        assert!(with_id.into_properties().is_err());
        // Debug never shows the signature.
        let shown = format!("{:?}", ImportExportJob::import(URI, URI));
        assert!(
            !shown.contains("c2VjcmV0") && shown.contains("[REDACTED]"),
            "{shown}"
        );
    }

    #[test]
    fn a_twin_update_carries_etag_star_and_only_the_patch() {
        let job = ScheduledJob::twin_update(
            "  tags.site = 'oslo'  ",
            TwinPatch::new().tag("floor", 3).desired("interval", 30),
        )
        .start_time(at(1_800_000_000))
        .max_execution_time(Duration::from_secs(600));
        let sent = serde_json::to_value(job.into_request("job-1", at(0)).unwrap()).unwrap();
        assert_eq!(
            sent,
            json!({
                "jobId": "job-1",
                "type": "scheduleUpdateTwin",
                "queryCondition": "tags.site = 'oslo'",
                "startTime": "2027-01-15T08:00:00Z",
                "maxExecutionTimeInSeconds": 600,
                "updateTwin": { "etag": "*", "tags": { "floor": 3 }, "properties": { "desired": { "interval": 30 } } },
            })
        );
    }

    #[test]
    fn a_device_method_job_starts_now_by_default() {
        let job = ScheduledJob::device_method(
            "deviceId IN ['a', 'b']",
            DeviceMethod::new("reboot")
                .payload(json!({ "delay": 5 }))
                .connect_timeout(Duration::ZERO),
        );
        let sent = serde_json::to_value(
            job.into_request("j", at(1_800_000_000) + Duration::from_millis(250))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            sent,
            json!({
                "jobId": "j",
                "type": "scheduleDeviceMethod",
                "queryCondition": "deviceId IN ['a', 'b']",
                "startTime": "2027-01-15T08:00:00.250Z",
                "cloudToDeviceMethod": {
                    "methodName": "reboot", "payload": { "delay": 5 },
                    "responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": 0,
                },
            })
        );
        let no_payload = ScheduledJob::device_method("true", DeviceMethod::new("ping"));
        let sent = serde_json::to_value(no_payload.into_request("j", at(0)).unwrap()).unwrap();
        assert_eq!(sent["cloudToDeviceMethod"]["payload"], Value::Null);
    }

    #[test]
    fn scheduled_jobs_are_checked_before_sending() {
        let method = |m: DeviceMethod| {
            reason(
                ScheduledJob::device_method("true", m)
                    .into_request("j", at(0))
                    .unwrap_err(),
            )
        };
        let secs = Duration::from_secs;
        assert_eq!(method(DeviceMethod::new(" ")).0, "method_name");
        assert_eq!(
            method(DeviceMethod::new("m").response_timeout(secs(4))).0,
            "response_timeout"
        );
        assert_eq!(
            method(DeviceMethod::new("m").response_timeout(secs(301))).0,
            "response_timeout"
        );
        assert_eq!(
            method(DeviceMethod::new("m").response_timeout(Duration::from_millis(5_500))).0,
            "response_timeout"
        );
        assert_eq!(
            method(DeviceMethod::new("m").connect_timeout(secs(301))).0,
            "connect_timeout"
        );
        for ok in [5, 300] {
            let job = ScheduledJob::device_method(
                "true",
                DeviceMethod::new("m")
                    .response_timeout(secs(ok))
                    .connect_timeout(secs(300)),
            );
            assert!(job.into_request("j", at(0)).is_ok());
        }
        let twin =
            |condition: &str| ScheduledJob::twin_update(condition, TwinPatch::new().tag("a", 1));
        assert_eq!(
            reason(twin("  ").into_request("j", at(0)).unwrap_err()).0,
            "query_condition"
        );
        let long = format!("deviceId = '{}'", "x".repeat(MAX_QUERY_CONDITION_BYTES));
        let (argument, why) = reason(twin(&long).into_request("j", at(0)).unwrap_err());
        assert_eq!(argument, "query_condition");
        assert!(why.contains("bytes"), "{why}");
        let longest = "x".repeat(MAX_QUERY_CONDITION_BYTES);
        assert!(twin(&longest).into_request("j", at(0)).is_ok());
        let empty = ScheduledJob::twin_update("true", TwinPatch::new());
        assert_eq!(
            reason(empty.into_request("j", at(0)).unwrap_err()).0,
            "patch"
        );
        let before_1970 = twin("true").start_time(SystemTime::UNIX_EPOCH - secs(1));
        assert_eq!(
            reason(before_1970.into_request("j", at(0)).unwrap_err()).0,
            "start_time"
        );
        let far = twin("true").start_time(at(300_000_000_000));
        assert_eq!(
            reason(far.into_request("j", at(0)).unwrap_err()).0,
            "start_time"
        );
        for bad in [Duration::ZERO, Duration::from_millis(1_500)] {
            let job = twin("true").max_execution_time(bad);
            assert_eq!(
                reason(job.into_request("j", at(0)).unwrap_err()).0,
                "max_execution_time"
            );
        }
    }

    #[test]
    fn job_ids() {
        for ok in ["j", "job-2026-12-07T23:00", &"x".repeat(128)] {
            assert!(validate_job_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a\nb", &"x".repeat(129)] {
            assert_eq!(reason(validate_job_id(bad).unwrap_err()).0, "job_id");
        }
    }
}
