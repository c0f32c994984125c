//! What the SDK reports when things go wrong, against mock servers: bulk answers that are not
//! bulk results, what is repeated after which failure, retries that find their own earlier
//! attempt applied, paging that would loop, direct methods answered 408, key rotation refused,
//! redirects, the user agent on a client of one's own.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use iothub_registry::models::{
    CloudToDeviceMethod, DeviceStatus, ErrorCode, ExportImportDevice, ImportMode,
};
use iothub_registry::{
    DeviceOptions, ETag, Error, IfMatch, NoRetry, RegistryManager, SasKeys, TwinPatch,
    X509Thumbprints,
};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::{fast_retries, registry_builder};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

fn manager(server: &MockServer) -> RegistryManager {
    let address = server.address();
    registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

/// Answers from a list in order, repeating the last one.
struct Sequence(Mutex<Vec<ResponseTemplate>>);

impl Respond for Sequence {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let mut list = self.0.lock().unwrap();
        if list.len() > 1 {
            list.remove(0)
        } else {
            list[0].clone()
        }
    }
}

async fn answering(verb: &str, answers: Vec<ResponseTemplate>) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method(verb))
        .respond_with(Sequence(Mutex::new(answers)))
        .mount(&server)
        .await;
    server
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

fn etag() -> IfMatch {
    IfMatch::from(ETag::new("AAAAAAAAAAE=").unwrap())
}

fn twin() -> serde_json::Value {
    json!({ "deviceId": "d1", "etag": "AAAAAAAAAAI=", "version": 2, "tags": { "a": 1 } })
}

fn device() -> serde_json::Value {
    json!({ "deviceId": "d1", "etag": "MQ==", "status": "enabled",
            "authentication": { "type": "selfSigned" } })
}

const SHA1: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

fn service_error(status: u16, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("iothub-errorcode", code)
        .set_body_json(json!({
            "Message": format!("ErrorCode:{code};injected"),
            "ExceptionMessage": "Tracking ID:0123456789abcdef0123456789abcdef-G:0-TimeStamp:01/02/2026 03:04:05"
        }))
}

// ---- 1. A bulk 400 is a bulk result only when it carries one -----------------------------

fn create(id: &str) -> ExportImportDevice {
    ExportImportDevice {
        id: Some(id.into()),
        import_mode: Some(ImportMode::Create),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_bulk_400_without_a_result_is_the_service_error_with_code_and_tracking_id() {
    let server = answering("POST", vec![service_error(400, "ArgumentInvalid")]).await;
    let err = manager(&server)
        .bulk_create_or_update_devices(vec![create("b1"), create("b2")])
        .await
        .expect_err("nothing was applied: not a result");
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert_eq!(err.code(), Some(&ErrorCode::ArgumentInvalid));
    assert!(
        err.service()
            .and_then(|s| s.tracking_id())
            .is_some_and(|id| id.starts_with("0123456789abcdef")),
        "{err:?}"
    );
    assert_eq!(requests(&server).await, 1);
}

#[tokio::test]
async fn a_bulk_run_is_successful_only_when_every_chunk_says_so() {
    // Chunk 1: a 400 with the service's ordinary error body (nothing applied). Chunk 2: a 200
    // saying it was not successful without naming an entry. Chunk 3: success.
    struct Hub;
    impl Respond for Hub {
        fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
            let entries: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
            match entries[0]["id"].as_str().unwrap() {
                "d0" => service_error(400, "ArgumentInvalid"),
                "d100" => {
                    ResponseTemplate::new(200).set_body_json(json!({ "isSuccessful": false }))
                }
                _ => ResponseTemplate::new(200)
                    .set_body_json(json!({ "isSuccessful": true, "errors": [], "warnings": [] })),
            }
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Hub)
        .mount(&server)
        .await;
    let report = manager(&server)
        .bulk((0..250).map(|i| create(&format!("d{i}"))))
        .send()
        .await
        .unwrap();
    assert!(!report.is_successful(), "{report:?}");
    assert_eq!(report.failed_chunks.len(), 1, "{report:?}");
    assert_eq!(report.failed_chunks[0].error.status(), Some(400));

    // Only the chunk that said nothing wrong: still not successful.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Hub)
        .mount(&server)
        .await;
    let report = manager(&server)
        .bulk((100..200).map(|i| create(&format!("d{i}"))))
        .send()
        .await
        .unwrap();
    assert!(report.errors.is_empty() && report.failed_chunks.is_empty());
    assert!(!report.is_successful(), "{report:?}");
}

// ---- 2. What is repeated after an ambiguous failure -----------------------------------------

#[tokio::test]
async fn unconditional_writes_are_not_repeated_after_an_ambiguous_failure() {
    let ok_twin = ResponseTemplate::new(200).set_body_json(twin());
    for (verb, name) in [("PATCH", "update_twin"), ("PUT", "replace_twin")] {
        let server = answering(verb, vec![ResponseTemplate::new(500), ok_twin.clone()]).await;
        let registry = manager(&server);
        let result = if verb == "PATCH" {
            registry
                .update_twin("d1", TwinPatch::new().tag("a", 1), IfMatch::Any)
                .await
        } else {
            registry
                .replace_twin("d1", TwinPatch::new().tag("a", 1).into(), IfMatch::Any)
                .await
        };
        let err = result.expect_err(name);
        assert_eq!(err.status(), Some(500), "{name}: {err:?}");
        assert_eq!(requests(&server).await, 1, "{name}: repeated");
    }
    let server = answering(
        "PUT",
        vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(200).set_body_json(device()),
        ],
    )
    .await;
    let err = manager(&server)
        .update_device_with_x509(
            "d1",
            IfMatch::Any,
            X509Thumbprints::new(SHA1, SHA1),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    assert_eq!(requests(&server).await, 1, "a forced update was repeated");
}

#[tokio::test]
async fn conditional_writes_reads_and_deletes_are_repeated_after_an_ambiguous_failure() {
    let server = answering(
        "PATCH",
        vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(200).set_body_json(twin()),
        ],
    )
    .await;
    manager(&server)
        .update_twin("d1", TwinPatch::new().tag("a", 1), etag())
        .await
        .unwrap();
    assert_eq!(requests(&server).await, 2);

    let server = answering(
        "DELETE",
        vec![ResponseTemplate::new(502), ResponseTemplate::new(204)],
    )
    .await;
    manager(&server)
        .delete_device("d1", IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(requests(&server).await, 2);
}

// ---- 3. A retry that finds its own earlier attempt applied -----------------------------------

#[tokio::test]
async fn a_delete_whose_retry_finds_the_device_gone_succeeds() {
    for first in [500, 504] {
        let server = answering(
            "DELETE",
            vec![
                ResponseTemplate::new(first),
                service_error(404, "DeviceNotFound"),
            ],
        )
        .await;
        manager(&server)
            .delete_device("d1", IfMatch::Any)
            .await
            .unwrap_or_else(|e| panic!("after {first}: {e:?}"));
        assert_eq!(requests(&server).await, 2);
    }
    let server = answering(
        "DELETE",
        vec![
            ResponseTemplate::new(500),
            service_error(404, "ModuleNotFound"),
        ],
    )
    .await;
    manager(&server)
        .delete_module("d1", "m1", etag())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_delete_answered_404_at_once_is_still_not_found() {
    let server = answering("DELETE", vec![service_error(404, "DeviceNotFound")]).await;
    let err = manager(&server)
        .delete_device("d1", IfMatch::Any)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    // After a failure that proves the request was not processed, a 404 is the truth too.
    let server = answering(
        "DELETE",
        vec![
            ResponseTemplate::new(503),
            service_error(404, "DeviceNotFound"),
        ],
    )
    .await;
    let err = manager(&server)
        .delete_device("d1", IfMatch::Any)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn a_conditional_write_whose_retry_fails_412_may_have_been_applied() {
    let server = answering(
        "PATCH",
        vec![
            ResponseTemplate::new(500),
            service_error(412, "PreconditionFailed"),
        ],
    )
    .await;
    let err = manager(&server)
        .update_twin("d1", TwinPatch::new().tag("a", 1), etag())
        .await
        .unwrap_err();
    assert_eq!(requests(&server).await, 2);
    // Not "someone changed it": the first attempt may have been the change.
    assert!(!err.is_precondition_failed(), "{err:?}");
    assert!(err.may_have_been_applied(), "{err:?}");
    assert!(
        err.to_string()
            .contains("may have been applied by an earlier attempt"),
        "{err}"
    );
    let Error::MaybeApplied {
        operation,
        error,
        earlier: Some(earlier),
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*operation, "update_twin");
    // The last answer, kept as it is...
    assert!(error.is_precondition_failed(), "{error:?}");
    assert_eq!(err.status(), Some(412));
    assert_eq!(err.code(), Some(&ErrorCode::PreconditionFailed));
    // ...and the failure that left the outcome unknown, as the source.
    assert_eq!(earlier.status(), Some(500));
    let source = std::error::Error::source(&err).unwrap();
    assert_eq!(source.to_string(), earlier.to_string());
}

#[tokio::test]
async fn any_failure_after_an_ambiguous_one_says_the_operation_may_have_been_applied() {
    // A conditional patch: lost answer (500), then 503s until the policy gives up.
    let server = answering(
        "PATCH",
        vec![ResponseTemplate::new(500), ResponseTemplate::new(503)],
    )
    .await;
    let err = manager(&server)
        .update_twin("d1", TwinPatch::new().tag("a", 1), etag())
        .await
        .unwrap_err();
    assert!(requests(&server).await > 2);
    assert!(err.may_have_been_applied(), "{err:?}");
    assert!(
        matches!(&err, Error::MaybeApplied { error, earlier: Some(_), .. } if error.status() == Some(503)),
        "{err:?}"
    );
    assert!(!err.is_throttled() && !err.is_transient(), "{err:?}");

    // A conditional delete whose retry finds another etag: unknown too.
    let server = answering(
        "DELETE",
        vec![
            ResponseTemplate::new(502),
            service_error(412, "PreconditionFailed"),
        ],
    )
    .await;
    let err = manager(&server)
        .delete_device("d1", etag())
        .await
        .unwrap_err();
    assert!(
        err.may_have_been_applied() && !err.is_precondition_failed(),
        "{err:?}"
    );

    // A create is not repeated: its own failure says it.
    let server = answering("PUT", vec![ResponseTemplate::new(500)]).await;
    let err = manager(&server)
        .create_device_with_sas(
            "d1",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(requests(&server).await, 1);
    assert!(
        matches!(err, Error::Service(_)) && err.may_have_been_applied(),
        "{err:?}"
    );
}

#[tokio::test]
async fn failures_that_prove_nothing_was_done_do_not_say_it_may_have_been() {
    let created = ResponseTemplate::new(200).set_body_json(device());
    // Throttled until the policy gives up.
    let server = answering("PUT", vec![service_error(429, "ThrottlingException")]).await;
    let registry = manager(&server);
    let create = || {
        registry.create_device_with_sas(
            "d1",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
    };
    let err = create().await.unwrap_err();
    assert!(
        err.is_throttled() && !err.may_have_been_applied(),
        "{err:?}"
    );
    // Unavailable, then a conflict: the device was there before this call.
    let server = answering(
        "PUT",
        vec![
            ResponseTemplate::new(503),
            service_error(409, "DeviceAlreadyExists"),
            created,
        ],
    )
    .await;
    let err = manager(&server)
        .create_device_with_sas(
            "d1",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict() && !err.may_have_been_applied(), "{err:?}");
    // Throttled, then 412: someone else did change the twin.
    let server = answering(
        "PATCH",
        vec![
            service_error(429, "ThrottlingException"),
            service_error(412, "PreconditionFailed"),
        ],
    )
    .await;
    let err = manager(&server)
        .update_twin("d1", TwinPatch::new().tag("a", 1), etag())
        .await
        .unwrap_err();
    assert!(
        err.is_precondition_failed() && !err.may_have_been_applied(),
        "{err:?}"
    );
    // Refused before sending.
    let err = manager(&server)
        .update_twin("", TwinPatch::new(), etag())
        .await
        .unwrap_err();
    assert!(!err.may_have_been_applied());
}

// ---- 5. Paging cannot loop or stop silently ------------------------------------------------

async fn query_server(answers: Vec<(Option<&'static str>, Option<&'static [u8]>)>) -> MockServer {
    let server = MockServer::start().await;
    let responses = answers
        .into_iter()
        .map(|(_, next)| {
            let mut response = ResponseTemplate::new(200).set_body_json(json!([{ "n": 1 }]));
            if let Some(next) = next {
                response = response.append_header(
                    "x-ms-continuation",
                    reqwest::header::HeaderValue::from_bytes(next).unwrap(),
                );
            }
            response
        })
        .collect();
    Mock::given(method("POST"))
        .and(path("/devices/query"))
        .respond_with(Sequence(Mutex::new(responses)))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_query_whose_continuation_repeats_ends_with_an_error() {
    // The same token twice in a row, forever.
    let server = query_server(vec![(None, Some(b"same"))]).await;
    let items: Vec<_> = manager(&server)
        .query("SELECT * FROM devices")
        .stream()
        .take(50)
        .collect()
        .await;
    assert!(
        items.iter().any(Result::is_err),
        "{} items, no error",
        items.len()
    );
    assert!(requests(&server).await < 10, "kept paging");

    // A cycle: a, b, a.
    let server = query_server(vec![
        (None, Some(b"a")),
        (None, Some(b"b")),
        (None, Some(b"a")),
        (None, Some(b"b")),
    ])
    .await;
    let result: Result<Vec<_>, _> = manager(&server)
        .query("SELECT * FROM devices")
        .stream()
        .take(50)
        .try_collect()
        .await;
    assert!(result.is_err(), "{result:?}");
}

#[tokio::test]
async fn a_continuation_that_is_not_ascii_is_an_error_not_the_last_page() {
    let server = query_server(vec![(None, Some("tök€n".as_bytes()))]).await;
    let result: Result<Vec<_>, _> = manager(&server)
        .query("SELECT * FROM devices")
        .stream()
        .take(50)
        .try_collect()
        .await;
    assert!(result.is_err(), "{result:?}");
    let err = manager(&server)
        .query_iot_hub("SELECT * FROM devices", None, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("continuation"), "{err}");
}

// ---- 6. A 408 from a direct method ---------------------------------------------------------

fn reboot() -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: Some("reboot".into()),
        payload: None,
        response_timeout_in_seconds: Some(5),
        connect_timeout_in_seconds: None,
    }
}

#[tokio::test]
async fn a_direct_method_answered_408_is_not_repeated_and_may_have_run() {
    for module in [None, Some("m1")] {
        let server = answering(
            "POST",
            vec![
                ResponseTemplate::new(408),
                ResponseTemplate::new(200).set_body_json(json!({ "status": 200, "payload": null })),
            ],
        )
        .await;
        let registry = manager(&server);
        let outcome = match module {
            None => registry.invoke_device_method("d1", reboot()).await,
            Some(module) => {
                registry
                    .invoke_device_module_method("d1", module, reboot())
                    .await
            }
        };
        let err = outcome.expect_err("the device may have run it: not repeated");
        assert_eq!(requests(&server).await, 1, "{module:?}");
        assert!(err.to_string().contains("may have run"), "{err}");
        assert!(err.may_have_been_applied(), "{err:?}");
        assert_eq!(err.status(), Some(408));
        assert!(
            matches!(&err, Error::MaybeApplied { earlier: None, .. }),
            "{err:?}"
        );
    }
    // Any other operation answered 408 was not processed: repeated.
    let server = answering(
        "GET",
        vec![
            ResponseTemplate::new(408),
            ResponseTemplate::new(200).set_body_json(json!({ "connectedDeviceCount": 1 })),
        ],
    )
    .await;
    manager(&server).get_service_statistics().await.unwrap();
    assert_eq!(requests(&server).await, 2);
}

// ---- 7. Updating with generated keys would rotate them ---------------------------------------

#[tokio::test]
async fn an_update_with_generated_keys_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let registry = manager(&server);
    let device = registry
        .update_device_with_sas(
            "d1",
            IfMatch::Any,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    let module = registry
        .update_module_with_sas("d1", "m1", etag(), SasKeys::generated(), None)
        .await
        .unwrap_err();
    for err in [device, module] {
        assert!(
            matches!(
                err,
                Error::InvalidArgument {
                    argument: "keys",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("SasKeys::new"), "{err}");
    }
    assert_eq!(requests(&server).await, 0);
}

// ---- 11. Redirects are not followed -------------------------------------------------------

#[tokio::test]
async fn a_redirect_is_an_error_and_not_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(device()))
        .mount(&elsewhere)
        .await;
    for status in [301, 302, 307, 308] {
        let server = answering(
            "GET",
            vec![
                ResponseTemplate::new(status)
                    .insert_header("location", format!("{}/devices/d1", elsewhere.uri())),
            ],
        )
        .await;
        let err = manager(&server).get_device("d1").await.unwrap_err();
        assert_eq!(err.status(), Some(status), "{err:?}");
        assert!(err.to_string().contains("redirect"), "{err}");
        assert_eq!(
            requests(&server).await,
            1,
            "{status}: a redirect is not retried"
        );
    }
    assert_eq!(requests(&elsewhere).await, 0, "a redirect was followed");
}

// ---- 12. The user agent on a client of one's own ------------------------------------------

#[tokio::test]
async fn a_client_of_ones_own_still_sends_our_user_agent() {
    let server = answering(
        "GET",
        vec![ResponseTemplate::new(200).set_body_json(json!({ "connectedDeviceCount": 0 }))],
    )
    .await;
    let address = server.address();
    let expected = concat!("iothub-rs/", env!("CARGO_PKG_VERSION"), " fleet-tool/2.1");
    for own in [
        reqwest::Client::new(),
        reqwest::Client::builder()
            .user_agent("theirs/1")
            .build()
            .unwrap(),
    ] {
        let registry = registry_builder(address, credential(address, "iothubowner", KEY))
            .http_client(own)
            .user_agent_suffix("fleet-tool/2.1")
            .build()
            .unwrap();
        registry.get_service_statistics().await.unwrap();
        let sent = server.received_requests().await.unwrap();
        assert_eq!(sent.last().unwrap().headers["user-agent"], expected);
    }
    // And the client the SDK builds.
    let registry = registry_builder(address, credential(address, "iothubowner", KEY))
        .user_agent_suffix("fleet-tool/2.1")
        .retry_policy(NoRetry)
        .build()
        .unwrap();
    registry.get_service_statistics().await.unwrap();
    let sent = server.received_requests().await.unwrap();
    assert_eq!(sent.last().unwrap().headers["user-agent"], expected);
}

// ---- 4. Getting a token is inside the per-attempt deadline -------------------------------

/// An Azure AD credential that never answers.
#[derive(Debug, Default)]
struct Silent {
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for Silent {
    async fn get_token(
        &self,
        _scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_never_comes_times_out_like_any_attempt() {
    let server = MockServer::start().await;
    let silent = Arc::new(Silent::default());
    let credential = iothub_registry::Credential::from_token_credential(
        server.address().to_string().parse().unwrap(),
        silent.clone(),
    );
    let registry = registry_builder(server.address(), credential)
        .timeout(Duration::from_millis(200))
        .retry_policy(NoRetry)
        .build()
        .unwrap();
    // Two calls at once: neither waits behind the other.
    let (first, second) = tokio::time::timeout(
        Duration::from_secs(3),
        futures::future::join(registry.get_device("d1"), registry.get_twin("d1")),
    )
    .await
    .expect("still pending after 3 s");
    for err in [first.unwrap_err(), second.unwrap_err()] {
        assert!(matches!(err, Error::Timeout { sent: false, .. }), "{err:?}");
        // Nothing was sent: not ambiguous, and safe to repeat.
        assert!(!err.may_have_been_applied(), "{err:?}");
        assert!(err.to_string().contains("nothing was sent"), "{err}");
    }
    assert_eq!(requests(&server).await, 0);
    // Both waited on the same request for a token, and left it running for the next call.
    assert_eq!(silent.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}
