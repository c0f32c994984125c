//! Jobs (`/jobs`, `/jobs/v2`): import and export of the whole registry through blob storage,
//! and scheduled twin updates and direct methods over the fleet, through [`JobManager`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::{Stream, TryStreamExt, stream};
use iothub_rest_gen::types::{JobProperties, JobResponse, JobStatus, JobType, QueryResult};
use iothub_rest_gen::{ClientInfo, ResponseValue};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job_requests::{ImportExportJob, ScheduledJob, validate_job_id};
use crate::manager::{Call, RegistryManager};
use crate::pager;
use crate::retry::OperationKind;

/// The Rust counterpart of Python's `IoTHubJobManager`: import and export jobs over blob
/// storage (v1), and scheduled jobs that update twins or call a direct method on the devices a
/// query selects (v2), with the methods of the same names. Get one from
/// [`RegistryManager::jobs`].
///
/// Like [`ConfigurationManager`](crate::ConfigurationManager) it is a handle on its registry
/// manager: the same credential, connection pool, retry policy, timeouts and tracing.
///
/// ```no_run
/// use std::time::Duration;
/// use iothub_registry::{ImportExportJob, RegistryManager};
///
/// # async fn run(registry: RegistryManager, container_sas_url: String) -> iothub_registry::Result<()> {
/// let jobs = registry.jobs();
/// let job = jobs.create_import_export_job(ImportExportJob::export(container_sas_url, false)).await?;
/// let job_id = job.job_id.unwrap_or_default();
/// let done = jobs
///     .wait_for_import_export_job(job_id)
///     .deadline(Duration::from_secs(30 * 60))
///     .on_progress(|job| eprintln!("{:?} {:?}%", job.status, job.progress))
///     .wait()
///     .await?;
/// println!("export {:?}: {:?}", done.status, done.failure_reason);
/// # Ok(()) }
/// ```
#[doc(alias = "IoTHubJobManager")]
#[derive(Clone, Debug)]
pub struct JobManager {
    registry: RegistryManager,
}

impl RegistryManager {
    /// Import/export and scheduled jobs (Python's `IoTHubJobManager`), over this manager's
    /// connection, credential and retry policy. Cheap; see [`JobManager`].
    pub fn jobs(&self) -> JobManager {
        JobManager {
            registry: self.clone(),
        }
    }
}

impl JobManager {
    /// Starts an import or export job (`POST /jobs/create`) and returns it as the hub accepted
    /// it, with its `job_id` and status `enqueued`. Follow it with
    /// [`wait_for_import_export_job`](Self::wait_for_import_export_job).
    ///
    /// The hub runs one import or export at a time: another while one runs fails with 429
    /// `ThrottlingMaxActiveJobCountExceeded` (retried like any throttling until the retry
    /// policy gives up). Not repeated after a failure that leaves its outcome unknown: the hub
    /// chooses the job id, so a repeat would start a second job.
    ///
    /// ```no_run
    /// use iothub_registry::ImportExportJob;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager, input: String, output: String) -> iothub_registry::Result<()> {
    /// let job = registry
    ///     .jobs()
    ///     .create_import_export_job(ImportExportJob::import(input, output))
    ///     .await?;
    /// println!("import {:?} is {:?}", job.job_id, job.status);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `job`) before sending, for what
    /// [`ImportExportJob`] refuses: neither an import nor an export, a missing or malformed
    /// container URI (shown with its signature redacted), an empty blob name.
    pub async fn create_import_export_job(&self, job: ImportExportJob) -> Result<JobProperties> {
        let properties = job.into_properties()?;
        let call = Call::new(
            "create_import_export_job",
            OperationKind::UnconditionalWrite,
        );
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .jobs_create_import_export_job()
                    .body(properties.clone());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Reads an import or export job: its status, progress (percent) and failure reason.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let job = registry.jobs().get_import_export_job("9b3c…").await?;
    /// println!("{:?}: {:?}%", job.status, job.progress);
    /// # Ok(()) }
    /// ```
    pub async fn get_import_export_job(&self, job_id: impl Into<String>) -> Result<JobProperties> {
        let id = job_id.into();
        validate_job_id(&id)?;
        let call = Call::new("get_import_export_job", OperationKind::Read).job(&id);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .jobs_get_import_export_job()
                    .id(id.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Lists the hub's import and export jobs (the hub keeps them for 30 days).
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// for job in registry.jobs().get_import_export_jobs().await? {
    ///     println!("{:?} {:?} {:?}", job.job_id, job.type_, job.status);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_import_export_jobs(&self) -> Result<Vec<JobProperties>> {
        let call = Call::new("get_import_export_jobs", OperationKind::Read);
        self.registry
            .execute(call, || {
                let request = self.registry.rest.jobs_get_import_export_jobs();
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Cancels an import or export job (`DELETE /jobs/{id}`). Read it back with
    /// [`get_import_export_job`](Self::get_import_export_job) to see where it stopped.
    ///
    /// Repeated after a failure that leaves its outcome unknown, as a delete is: cancelling a
    /// cancelled job changes nothing.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// registry.jobs().cancel_import_export_job("9b3c…").await?;
    /// # Ok(()) }
    /// ```
    pub async fn cancel_import_export_job(&self, job_id: impl Into<String>) -> Result<()> {
        let id = job_id.into();
        validate_job_id(&id)?;
        let call = Call::new("cancel_import_export_job", OperationKind::Delete).job(&id);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .jobs_cancel_import_export_job()
                    .id(id.as_str());
                async move { request.send().await.map(|_| ()) }
            })
            .await
    }

    /// Schedules a twin update or a direct method over the devices a query condition selects
    /// (`PUT /jobs/v2/{id}`), under an id of your choosing, and returns the job as the hub
    /// accepted it (status `queued`, or `scheduled` for a later start). Follow it with
    /// [`wait_for_scheduled_job`](Self::wait_for_scheduled_job).
    ///
    /// An id already in use fails with 409 ([`Error::is_conflict`]); so the call is not
    /// repeated after a failure that leaves its outcome unknown (a repeat would answer 409 for
    /// the job it created): read it back with [`get_scheduled_job`](Self::get_scheduled_job).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use iothub_registry::{DeviceMethod, ScheduledJob, TwinPatch};
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let jobs = registry.jobs();
    /// let patch = TwinPatch::new().desired("telemetryInterval", 60);
    /// jobs.create_scheduled_job("interval-60", ScheduledJob::twin_update("tags.site = 'oslo'", patch)).await?;
    /// let reboot = DeviceMethod::new("reboot").response_timeout(Duration::from_secs(60));
    /// jobs.create_scheduled_job(
    ///     "reboot-oslo",
    ///     ScheduledJob::device_method("tags.site = 'oslo'", reboot).max_execution_time(Duration::from_secs(900)),
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] before sending: an empty job id or one with white space
    /// (`job_id`), an empty query condition or one over
    /// [`MAX_QUERY_CONDITION_BYTES`](crate::MAX_QUERY_CONDITION_BYTES) (`query_condition`), an
    /// empty patch (`patch`), a method without a name or with timeouts outside the service's
    /// ranges, a start time before 1970, a maximum execution time that is not whole seconds.
    pub async fn create_scheduled_job(
        &self,
        job_id: impl Into<String>,
        job: ScheduledJob,
    ) -> Result<JobResponse> {
        let id = job_id.into();
        validate_job_id(&id)?;
        let request_body = job.into_request(&id, SystemTime::now())?;
        let call = Call::new("create_scheduled_job", OperationKind::Create).job(&id);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .jobs_create_scheduled_job()
                    .id(id.as_str())
                    .body(request_body.clone());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Reads a scheduled job: its status, and how many devices it has reached, succeeded on
    /// and failed on (`device_job_statistics`).
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let job = registry.jobs().get_scheduled_job("interval-60").await?;
    /// let stats = job.device_job_statistics.unwrap_or_default();
    /// println!("{:?}: {:?} of {:?} succeeded", job.status, stats.succeeded_count, stats.device_count);
    /// # Ok(()) }
    /// ```
    pub async fn get_scheduled_job(&self, job_id: impl Into<String>) -> Result<JobResponse> {
        let id = job_id.into();
        validate_job_id(&id)?;
        let call = Call::new("get_scheduled_job", OperationKind::Read).job(&id);
        self.registry
            .execute(call, || {
                let request = self.registry.rest.jobs_get_scheduled_job().id(id.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Cancels a scheduled job (`POST /jobs/v2/{id}/cancel`): devices it has not reached yet
    /// are not. Returns the job as cancelled.
    ///
    /// Repeated after a failure that leaves its outcome unknown, as a delete is: cancelling a
    /// cancelled job changes nothing.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let job = registry.jobs().cancel_scheduled_job("reboot-oslo").await?;
    /// println!("{:?}", job.status);
    /// # Ok(()) }
    /// ```
    pub async fn cancel_scheduled_job(&self, job_id: impl Into<String>) -> Result<JobResponse> {
        let id = job_id.into();
        validate_job_id(&id)?;
        let call = Call::new("cancel_scheduled_job", OperationKind::Delete).job(&id);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .jobs_cancel_scheduled_job()
                    .id(id.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// One page of scheduled jobs of a type and a status (either or both `None`: any), as
    /// Python's `query_scheduled_jobs` (`GET /jobs/v2/query`): pass the previous page's
    /// `continuation_token` for the next, and `max_item_count` to ask for a page size.
    /// [`query_jobs`](Self::query_jobs) streams across pages.
    ///
    /// The service sends the page as a JSON array with its continuation in
    /// `x-ms-continuation`, as the C# and Node SDKs read it; the spec's `QueryResult` object
    /// (`items`, `continuationToken`) is read too.
    ///
    /// ```no_run
    /// use iothub_registry::models::{JobStatus, JobType};
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let page = registry
    ///     .jobs()
    ///     .query_scheduled_jobs(Some(JobType::ScheduleUpdateTwin), Some(JobStatus::Completed), None, Some(50))
    ///     .await?;
    /// for job in &page.jobs {
    ///     println!("{:?}", job.job_id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn query_scheduled_jobs(
        &self,
        job_type: Option<JobType>,
        job_status: Option<JobStatus>,
        continuation_token: Option<&str>,
        max_item_count: Option<u32>,
    ) -> Result<JobQueryPage> {
        if max_item_count == Some(0) {
            return Err(Error::InvalidArgument {
                argument: "max_item_count",
                reason: "must be at least 1".into(),
            });
        }
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(status) = &job_status {
            query.push(("jobStatus", status.as_str().to_owned()));
        }
        if let Some(kind) = &job_type {
            query.push(("jobType", kind.as_str().to_owned()));
        }
        let page_size = max_item_count.map(|n| n.to_string());
        let registry = &self.registry;
        let call = Call::new("query_scheduled_jobs", OperationKind::Query);
        let read =
            registry
                .execute(call, || {
                    let rest = &registry.rest;
                    let query = query.as_slice();
                    let page_size = page_size.as_deref();
                    let limits = (registry.max_response_body, registry.max_error_body);
                    async move {
                        send_job_query(rest, query, continuation_token, page_size, limits).await
                    }
                })
                .await?;
        let (headers, body) = read?;
        job_page(&headers, &body)
    }

    /// Scheduled jobs of a type and a status (either or both `None`: any), across pages; see
    /// [`JobQuery`]. It owns a clone of the manager, so it can be moved into a task.
    ///
    /// ```no_run
    /// use futures::TryStreamExt;
    /// use iothub_registry::models::JobType;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let twin_updates: Vec<_> = registry
    ///     .jobs()
    ///     .query_jobs(Some(JobType::ScheduleUpdateTwin), None)
    ///     .page_size(100)
    ///     .stream()
    ///     .try_collect()
    ///     .await?;
    /// # let _ = twin_updates;
    /// # Ok(()) }
    /// ```
    pub fn query_jobs(&self, job_type: Option<JobType>, job_status: Option<JobStatus>) -> JobQuery {
        JobQuery {
            jobs: self.clone(),
            job_type,
            job_status,
            page_size: None,
            continuation: None,
        }
    }

    /// Waits for an import or export job to end (`completed`, `failed` or `cancelled`),
    /// reading it every 5 s for at most an hour unless told otherwise; see [`JobWait`].
    pub fn wait_for_import_export_job(&self, job_id: impl Into<String>) -> JobWait<JobProperties> {
        JobWait::new(self.clone(), job_id.into(), |jobs, id| {
            Box::pin(async move { jobs.get_import_export_job(id).await })
        })
    }

    /// Waits for a scheduled job to end (`completed`, `failed` or `cancelled`), reading it
    /// every 5 s for at most an hour unless told otherwise; see [`JobWait`].
    pub fn wait_for_scheduled_job(&self, job_id: impl Into<String>) -> JobWait<JobResponse> {
        JobWait::new(self.clone(), job_id.into(), |jobs, id| {
            Box::pin(async move { jobs.get_scheduled_job(id).await })
        })
    }
}

/// What the job query answered, before decoding: headers and body, or a body over its cap.
type JobQueryRead = std::result::Result<(reqwest::header::HeaderMap, bytes::Bytes), Error>;

/// `GET /jobs/v2/query` with its paging headers, which the spec (and so the generated client)
/// leaves out: through the generated client's HTTP client, with what its request hook adds
/// (api-version, `User-Agent`, a fresh `Authorization`) and its caps on bodies. A body over its
/// cap is returned as the inner error; an error answer as the generated client reports one.
async fn send_job_query(
    rest: &iothub_rest_gen::Client,
    query: &[(&str, String)],
    continuation: Option<&str>,
    page_size: Option<&str>,
    (max_body, max_error_body): (u64, u64),
) -> std::result::Result<JobQueryRead, iothub_rest_gen::Error<()>> {
    use iothub_rest_gen::Error as Rest;
    let context = rest.inner();
    let authorization = context
        .credential()
        .http_authorization()
        .await
        .map_err(|e| Rest::Custom(format!("cannot authorize the request: {e}")))?;
    let mut authorization = reqwest::header::HeaderValue::from_str(authorization.expose_secret())
        .map_err(|_| {
        Rest::Custom("the credential produced an invalid Authorization header".to_owned())
    })?;
    authorization.set_sensitive(true);
    let mut request = rest
        .client()
        .get(format!("{}/jobs/v2/query", rest.baseurl()))
        .query(query)
        .query(&[("api-version", context.api_version())])
        .header(reqwest::header::ACCEPT, "application/json")
        .header(reqwest::header::USER_AGENT, context.user_agent())
        .header(reqwest::header::AUTHORIZATION, authorization);
    if let Some(token) = continuation {
        request = request.header("x-ms-continuation", token);
    }
    if let Some(size) = page_size {
        request = request.header("x-ms-max-item-count", size);
    }
    let mut response = request.send().await.map_err(Rest::CommunicationError)?;
    let status = response.status();
    let limit = if status.is_success() {
        max_body
    } else {
        max_error_body
    };
    let too_large = Error::ResponseTooLarge {
        status: status.as_u16(),
        limit,
    };
    if response
        .content_length()
        .is_some_and(|length| length > limit)
    {
        return Ok(Err(too_large));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(Rest::ResponseBodyError)? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Ok(Err(too_large));
        }
        body.extend_from_slice(&chunk);
    }
    if status == reqwest::StatusCode::OK {
        return Ok(Ok((response.headers().clone(), body.into())));
    }
    // Handed back as the generated client hands back an answer it did not expect, its body
    // already read under the error cap.
    let mut rebuilt = http::Response::builder()
        .status(status)
        .body(body)
        .expect("a status from a response is valid");
    *rebuilt.headers_mut() = response.headers().clone();
    Err(Rest::UnexpectedResponse(reqwest::Response::from(rebuilt)))
}

/// A page of the job query from its headers and body: an array of jobs (the service), or a
/// `QueryResult` (the spec). The continuation is `x-ms-continuation`, else the body's; an
/// empty one ends the query, one that is not plain ASCII is an error.
fn job_page(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Result<JobQueryPage> {
    let decode = |source| Error::decode(200, &String::from_utf8_lossy(body), source);
    let value: Value = serde_json::from_slice(body).map_err(decode)?;
    let (items, body_continuation, body_type) = match value {
        Value::Array(items) => (items, None, None),
        object => {
            let result: QueryResult = serde_json::from_value(object).map_err(decode)?;
            (
                result.items,
                result.continuation_token,
                result.type_.map(|t| t.as_str().to_owned()),
            )
        }
    };
    let jobs = items
        .into_iter()
        .map(|item| JobResponse::deserialize(&item).map_err(decode))
        .collect::<Result<Vec<_>>>()?;
    let continuation_token = match headers.get("x-ms-continuation") {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Error::Paging {
                    reason: "the continuation token (x-ms-continuation) is not plain ASCII"
                        .to_owned(),
                })?
                .to_owned(),
        ),
        None => body_continuation,
    }
    .filter(|token| !token.is_empty());
    let item_type = headers
        .get("x-ms-item-type")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .or(body_type);
    Ok(JobQueryPage {
        jobs,
        continuation_token,
        item_type,
    })
}

/// One page of the scheduled-job query.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct JobQueryPage {
    /// The jobs of the page.
    pub jobs: Vec<JobResponse>,
    /// Where the next page starts; `None` on the last page. Pass it to
    /// [`JobManager::query_scheduled_jobs`] or [`JobQuery::continuation`] to resume.
    pub continuation_token: Option<String>,
    /// The item type the service reported (`x-ms-item-type`, e.g. `jobResponse`).
    pub item_type: Option<String>,
}

/// A query of scheduled jobs to run across pages; see [`JobManager::query_jobs`].
#[derive(Clone, Debug)]
#[must_use = "a query does nothing until streamed"]
pub struct JobQuery {
    jobs: JobManager,
    job_type: Option<JobType>,
    job_status: Option<JobStatus>,
    page_size: Option<u32>,
    continuation: Option<String>,
}

impl JobQuery {
    /// Asks for pages of this many jobs (`x-ms-max-item-count`), on every page.
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// Resumes where a previous run stopped ([`JobQueryPage::continuation_token`]).
    pub fn continuation(mut self, token: impl Into<String>) -> Self {
        self.continuation = Some(token.into());
        self
    }

    /// The pages, each requested when the previous one has been consumed, until the service
    /// sends no continuation. A continuation the service already sent in this run ends the
    /// stream with [`Error::Paging`] after the page that carried it: following it would never
    /// end.
    pub fn pages(self) -> impl Stream<Item = Result<JobQueryPage>> + Send + 'static {
        let start = self.continuation.clone();
        pager::pages(self, start, |query, token| {
            let query = query.clone();
            async move {
                query
                    .jobs
                    .query_scheduled_jobs(
                        query.job_type.clone(),
                        query.job_status.clone(),
                        token.as_deref(),
                        query.page_size,
                    )
                    .await
            }
        })
    }

    /// Every job of every page, in order.
    pub fn stream(self) -> impl Stream<Item = Result<JobResponse>> + Send + 'static {
        self.pages()
            .map_ok(|page| stream::iter(page.jobs.into_iter().map(Ok)))
            .try_flatten()
    }
}

/// Whether a job in this status is over: `completed`, `failed` or `cancelled`.
pub fn is_terminal(status: &JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
    )
}

/// A job as [`JobWait`] reads it: import/export jobs and scheduled jobs alike.
pub trait JobSnapshot: Send + 'static {
    /// The job's status, if the hub sent one.
    fn job_status(&self) -> Option<&JobStatus>;
}

impl JobSnapshot for JobProperties {
    fn job_status(&self) -> Option<&JobStatus> {
        self.status.as_ref()
    }
}

impl JobSnapshot for JobResponse {
    fn job_status(&self) -> Option<&JobStatus> {
        self.status.as_ref()
    }
}

type Fetch<T> = fn(JobManager, String) -> BoxFuture<'static, Result<T>>;
type ProgressFn<T> = Arc<dyn Fn(&T) + Send + Sync>;

/// Waits for a job to end: reads it every [`poll_interval`](Self::poll_interval), reports
/// each reading to [`on_progress`](Self::on_progress), and returns the job once its status is
/// terminal ([`is_terminal`]), whether `completed`, `failed` or `cancelled`: check its
/// `status` (and `failure_reason`). Past the [`deadline`](Self::deadline) it fails with
/// [`Error::JobNotFinished`]; the job goes on. Each reading runs through the manager's
/// retries, so a blip does not end the wait; a failure the retries do not overcome does.
#[must_use = "call .wait() to wait for the job"]
pub struct JobWait<T> {
    jobs: JobManager,
    job_id: String,
    interval: Duration,
    deadline: Duration,
    progress: Option<ProgressFn<T>>,
    fetch: Fetch<T>,
}

impl<T> std::fmt::Debug for JobWait<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobWait")
            .field("job_id", &self.job_id)
            .field("interval", &self.interval)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl<T: JobSnapshot> JobWait<T> {
    fn new(jobs: JobManager, job_id: String, fetch: Fetch<T>) -> Self {
        Self {
            jobs,
            job_id,
            interval: Duration::from_secs(5),
            deadline: Duration::from_secs(3600),
            progress: None,
            fetch,
        }
    }

    /// Time between readings (default 5 s; at least 10 ms). Each reading counts against the
    /// hub's jobs quota (100 operations a minute per unit on S1).
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_millis(10));
        self
    }

    /// How long to wait in all (default one hour), readings included.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Called with every reading of the job, the last (terminal) one included.
    pub fn on_progress(mut self, progress: impl Fn(&T) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Reads the job until it ends or the deadline passes.
    ///
    /// # Errors
    ///
    /// [`Error::JobNotFinished`] past the deadline; any error of reading the job (404 for an
    /// unknown id, after the manager's retries).
    pub async fn wait(self) -> Result<T> {
        validate_job_id(&self.job_id)?;
        let started = tokio::time::Instant::now();
        let until = started + self.deadline;
        let mut last: Option<JobStatus> = None;
        let not_finished = |last: Option<JobStatus>| Error::JobNotFinished {
            job_id: self.job_id.clone(),
            waited: started.elapsed(),
            status: last.map(|s| s.as_str().into()),
        };
        loop {
            let reading = (self.fetch)(self.jobs.clone(), self.job_id.clone());
            let job = match tokio::time::timeout_at(until, reading).await {
                Ok(job) => job?,
                Err(_) => return Err(not_finished(last)),
            };
            if let Some(progress) = &self.progress {
                progress(&job);
            }
            match job.job_status() {
                Some(status) if is_terminal(status) => return Ok(job),
                status => last = status.cloned(),
            }
            let next = tokio::time::Instant::now() + self.interval;
            if next >= until {
                return Err(not_finished(last));
            }
            tracing::debug!(job_id = %self.job_id, status = ?last, "job not finished; reading it again");
            tokio::time::sleep_until(next).await;
        }
    }
}

impl pager::Page for JobQueryPage {
    fn continuation(&self) -> Option<&str> {
        self.continuation_token.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderMap, HeaderValue};
    use serde_json::json;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    reqwest::header::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn a_job_page_reads_the_services_array_and_the_specs_object() {
        let array = json!([{ "jobId": "a", "status": "completed" }, { "jobId": "b", "status": "newStatus" }]);
        let page = job_page(
            &headers(&[
                ("x-ms-continuation", "c2"),
                ("x-ms-item-type", "JobResponse"),
            ]),
            array.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(page.jobs.len(), 2);
        assert_eq!(
            page.jobs[1].status,
            Some(JobStatus::Other("newStatus".into()))
        );
        assert_eq!(page.continuation_token.as_deref(), Some("c2"));
        assert_eq!(page.item_type.as_deref(), Some("JobResponse"));

        let object = json!({ "type": "jobResponse", "items": [{ "jobId": "a" }], "continuationToken": "c3" });
        let page = job_page(&HeaderMap::new(), object.to_string().as_bytes()).unwrap();
        assert_eq!(page.jobs[0].job_id.as_deref(), Some("a"));
        assert_eq!(page.continuation_token.as_deref(), Some("c3"));
        assert_eq!(page.item_type.as_deref(), Some("jobResponse"));

        // An empty continuation ends the query.
        let page = job_page(&headers(&[("x-ms-continuation", "")]), b"[]").unwrap();
        assert_eq!(page.continuation_token, None);
        assert!(matches!(
            job_page(&HeaderMap::new(), b"{\"items\": 3}"),
            Err(Error::Decode { status: 200, .. })
        ));
    }

    #[test]
    fn terminal_states() {
        for status in ["completed", "failed", "cancelled"] {
            assert!(is_terminal(&JobStatus::from(status)), "{status}");
        }
        for status in [
            "unknown",
            "enqueued",
            "running",
            "scheduled",
            "queued",
            "paused",
        ] {
            assert!(!is_terminal(&JobStatus::from(status)), "{status}");
        }
    }
}
