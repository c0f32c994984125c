//! Jobs against wiremock: the job query's paging, the waiter's progress and deadline, the
//! typed errors of job operations, and the caps on what the hand-sent job query reads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use iothub_registry::models::{JobResponse, JobStatus, JobType};
use iothub_registry::{Error, ImportExportJob, RegistryManager, ScheduledJob, TwinPatch};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::{fast_retries, registry_builder};
use serde_json::json;
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn manager(server: &MockServer) -> RegistryManager {
    let address = server.address();
    registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

const CONTAINER: &str = "https://acct.blob.core.windows.net/c?sp=racwdl&sig=bm90LXJlYWw%3D";

#[tokio::test]
async fn query_jobs_follows_continuations_replaying_type_status_and_page_size() {
    let server = MockServer::start().await;
    for (token, next, jobs) in [
        (
            None,
            Some("p2"),
            json!([{ "jobId": "a" }, { "jobId": "b" }]),
        ),
        (Some("p2"), Some("p3"), json!([{ "jobId": "c" }])),
        // The spec's shape, as some servers answer.
        (
            Some("p3"),
            None,
            json!({ "type": "jobResponse", "items": [{ "jobId": "d" }] }),
        ),
    ] {
        let mut answer = ResponseTemplate::new(200).set_body_json(jobs);
        if let Some(next) = next {
            answer = answer.insert_header("x-ms-continuation", next);
        }
        let mut mock = Mock::given(method("GET"))
            .and(path("/jobs/v2/query"))
            .and(query_param("jobType", "scheduleDeviceMethod"))
            .and(query_param("jobStatus", "completed"))
            .and(header("x-ms-max-item-count", "2"));
        mock = match token {
            Some(token) => mock.and(header("x-ms-continuation", token)),
            None => mock.and(|r: &Request| !r.headers.contains_key("x-ms-continuation")),
        };
        mock.respond_with(answer).expect(1).mount(&server).await;
    }
    let jobs: Vec<JobResponse> = manager(&server)
        .jobs()
        .query_jobs(
            Some(JobType::ScheduleDeviceMethod),
            Some(JobStatus::Completed),
        )
        .page_size(2)
        .stream()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = jobs.iter().map(|j| j.job_id.clone().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    server.verify().await;
}

#[tokio::test]
async fn a_continuation_sent_twice_ends_the_job_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs/v2/query"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{ "jobId": "a" }]))
                .insert_header("x-ms-continuation", "same"),
        )
        .mount(&server)
        .await;
    let pages: Vec<_> = futures::StreamExt::collect::<Vec<_>>(
        manager(&server).jobs().query_jobs(None, None).pages(),
    )
    .await;
    assert_eq!(pages.len(), 3, "two pages, then the error");
    assert!(
        matches!(pages[2], Err(Error::Paging { .. })),
        "{:?}",
        pages[2]
    );
}

#[tokio::test]
async fn the_job_query_reads_error_answers_and_caps_what_it_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs/v2/query"))
        .and(query_param("jobType", "export"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("iothub-errorcode", "IotHubUnauthorizedAccess")
                .set_body_json(json!({ "Message": "ErrorCode:IotHubUnauthorizedAccess;Unauthorized",
                                       "ExceptionMessage": "Tracking ID:abc-TimeStamp:12/07/2026 23:00:00" })),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/jobs/v2/query"))
        .and(query_param("jobType", "import"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!([{ "jobId": "x".repeat(500) }])),
        )
        .mount(&server)
        .await;
    let error = manager(&server)
        .jobs()
        .query_scheduled_jobs(Some(JobType::Export), None, None, None)
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(401));
    assert_eq!(
        error.code().map(|c| c.as_str()),
        Some("IotHubUnauthorizedAccess")
    );
    assert_eq!(
        error.service().and_then(|s| s.tracking_id()),
        Some("abc-TimeStamp:12/07/2026 23:00:00")
    );

    let address = server.address();
    let capped = registry_builder(address, credential(address, "iothubowner", KEY))
        .max_response_body(100)
        .build()
        .unwrap();
    let error = capped
        .jobs()
        .query_scheduled_jobs(Some(JobType::Import), None, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::ResponseTooLarge {
                status: 200,
                limit: 100
            }
        ),
        "{error:?}"
    );
    let error = capped
        .jobs()
        .query_scheduled_jobs(None, None, None, Some(0))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        Error::InvalidArgument {
            argument: "max_item_count",
            ..
        }
    ));
}

#[tokio::test]
async fn waiting_reports_every_reading_and_returns_the_ended_job() {
    let server = MockServer::start().await;
    for (status, times) in [("queued", 1), ("running", 2)] {
        Mock::given(method("GET"))
            .and(path("/jobs/v2/j1"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({ "jobId": "j1", "status": status })),
            )
            .up_to_n_times(times)
            .with_priority(if status == "queued" { 1 } else { 2 })
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/jobs/v2/j1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jobId": "j1", "status": "completed",
            "deviceJobStatistics": { "deviceCount": 2, "succeededCount": 2, "failedCount": 0 }
        })))
        .with_priority(3)
        .mount(&server)
        .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let done = manager(&server)
        .jobs()
        .wait_for_scheduled_job("j1")
        .poll_interval(Duration::from_millis(10))
        .deadline(Duration::from_secs(10))
        .on_progress(move |job: &JobResponse| {
            record
                .lock()
                .unwrap()
                .push(job.status.clone().unwrap().as_str().to_owned())
        })
        .wait()
        .await
        .unwrap();
    assert_eq!(done.status, Some(JobStatus::Completed));
    assert_eq!(done.device_job_statistics.unwrap().succeeded_count, Some(2));
    assert_eq!(
        *seen.lock().unwrap(),
        ["queued", "running", "running", "completed"]
    );
}

#[tokio::test]
async fn waiting_past_the_deadline_is_a_typed_error_naming_the_last_status() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs/e1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "jobId": "e1", "status": "running", "progress": 40 })),
        )
        .mount(&server)
        .await;
    let error = manager(&server)
        .jobs()
        .wait_for_import_export_job("e1")
        .poll_interval(Duration::from_millis(20))
        .deadline(Duration::from_millis(150))
        .wait()
        .await
        .unwrap_err();
    match &error {
        Error::JobNotFinished {
            job_id,
            waited,
            status,
        } => {
            assert_eq!(job_id, "e1");
            assert!(*waited < Duration::from_secs(2), "{waited:?}");
            assert_eq!(status.as_deref(), Some("running"));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        error.to_string().contains("its last status was running"),
        "{error}"
    );
    // A failed job is a result, not an error: its status says how it ended.
    Mock::given(method("GET"))
        .and(path("/jobs/f1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({ "jobId": "f1", "status": "failed", "failureReason": "the container does not exist" }),
        ))
        .mount(&server)
        .await;
    let failed = manager(&server)
        .jobs()
        .wait_for_import_export_job("f1")
        .wait()
        .await
        .unwrap();
    assert_eq!(failed.status, Some(JobStatus::Failed));
}

#[tokio::test]
async fn job_errors_are_typed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/jobs/v2/missing"))
        .respond_with(ResponseTemplate::new(404).insert_header("iothub-errorcode", "JobNotFound"))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/jobs/v2/taken"))
        .respond_with(
            ResponseTemplate::new(409).insert_header("iothub-errorcode", "JobAlreadyExists"),
        )
        .mount(&server)
        .await;
    // One import or export at a time: throttled, and retried until the policy gives up.
    Mock::given(method("POST"))
        .and(path("/jobs/create"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("iothub-errorcode", "ThrottlingMaxActiveJobCountExceeded"),
        )
        .mount(&server)
        .await;
    let jobs = manager(&server).jobs();
    let error = jobs.get_scheduled_job("missing").await.unwrap_err();
    assert!(error.is_not_found(), "{error}");
    let patch = TwinPatch::new().desired("interval", 30);
    let error = jobs
        .create_scheduled_job("taken", ScheduledJob::twin_update("true", patch))
        .await
        .unwrap_err();
    assert!(error.is_conflict(), "{error}");
    let error = jobs
        .create_import_export_job(ImportExportJob::export(CONTAINER, true))
        .await
        .unwrap_err();
    assert!(error.is_throttled(), "{error}");
    let creates = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.url.path() == "/jobs/create")
        .count();
    assert_eq!(creates, 5, "the default five attempts");
    for text in [error.to_string(), format!("{error:?}")] {
        assert!(!text.contains("bm90LXJlYWw"), "{text}");
    }
    // Rejected before sending.
    let error = jobs.get_scheduled_job("").await.unwrap_err();
    assert!(matches!(
        error,
        Error::InvalidArgument {
            argument: "job_id",
            ..
        }
    ));
}
