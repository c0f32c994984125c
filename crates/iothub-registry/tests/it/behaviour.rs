//! Errors, retries, timeouts, argument checks, the bulk helper and tracing, against mock
//! servers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub_registry::models::{
    CloudToDeviceMethod, ErrorCode, ExportImportDevice, ImportMode, Twin,
};
use iothub_registry::{Error, IfMatch, NoRetry, RegistryManager, SasKeys};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::{fast_retries, registry_builder};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Respond, ResponseTemplate};

/// A manager of the hub at `address` (plain HTTP), as its owner, with fast retries.
fn manager_at(address: &str) -> RegistryManager {
    registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

fn manager(server: &MockServer) -> RegistryManager {
    manager_at(&server.address().to_string())
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

fn sequence(list: Vec<ResponseTemplate>) -> Sequence {
    Sequence(Mutex::new(list))
}

async fn requests(server: &MockServer) -> usize {
    server.received_requests().await.unwrap().len()
}

#[tokio::test]
async fn a_missing_device_is_a_typed_not_found_with_code_and_tracking_id() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(404)
                .insert_header("iothub-errorcode", "DeviceNotFound")
                .set_body_json(json!({
                    "Message": "ErrorCode:DeviceNotFound;missing-1",
                    "ExceptionMessage": "Tracking ID:d13bed747f5645ad88344794baaa1fa7-TimeStamp:06/16/2020 22:34:56"
                })),
        )
        .mount(&server)
        .await;
    let err = manager(&server).get_device("missing-1").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.code(), Some(&ErrorCode::DeviceNotFound));
    let service = err.service().unwrap();
    assert_eq!(service.code_number(), Some(404001));
    assert!(
        service
            .tracking_id()
            .unwrap()
            .starts_with("d13bed747f5645ad88344794baaa1fa7")
    );
    assert_eq!(requests(&server).await, 1, "a 404 is not retried");
}

#[tokio::test]
async fn a_stale_etag_is_a_precondition_failure() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(
            ResponseTemplate::new(412)
                .insert_header("iothub-errorcode", "PreconditionFailed")
                .set_body_json(json!({ "Message": "ErrorCode:PreconditionFailed;ETag mismatch", "ExceptionMessage": "Tracking ID:abc" })),
        )
        .mount(&server)
        .await;
    let err = manager(&server)
        .update_twin(
            "d1",
            Twin::default(),
            IfMatch::from_current(Some("AAAAAAAAAAE=")).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err:?}");
    let sent = &server.received_requests().await.unwrap()[0];
    assert_eq!(sent.headers["if-match"], "\"AAAAAAAAAAE=\"");
}

#[tokio::test]
async fn throttling_with_retry_after_is_retried_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(sequence(vec![
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "0")
                .insert_header("iothub-errorcode", "ThrottlingException"),
            ResponseTemplate::new(200).set_body_json(json!({ "connectedDeviceCount": 4 })),
        ]))
        .mount(&server)
        .await;
    let stats = manager(&server).get_service_statistics().await.unwrap();
    assert_eq!(stats.connected_device_count, Some(4));
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn unavailable_is_retried_for_non_idempotent_calls_too() {
    // 503 says the service did not run the operation, so even a method call is repeated.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(sequence(vec![
            ResponseTemplate::new(503),
            ResponseTemplate::new(200).set_body_json(json!({ "status": 200, "payload": "ok" })),
        ]))
        .mount(&server)
        .await;
    let result = manager(&server)
        .invoke_device_method("d1", method_call())
        .await
        .unwrap();
    assert_eq!(result.payload, Some(json!("ok")));
    assert_eq!(requests(&server).await, 2);
}

#[tokio::test]
async fn a_500_is_retried_for_reads_but_not_for_method_invocations() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(sequence(vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(200).set_body_json(json!({ "connectedDeviceCount": 1 })),
        ]))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    let registry = manager(&server);
    registry.get_service_statistics().await.unwrap();
    let err = registry
        .invoke_device_method("d1", method_call())
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(500));
    let received = server.received_requests().await.unwrap();
    let posts = received
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!((received.len() - posts, posts), (2, 1));
}

fn method_call() -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: Some("reboot".into()),
        payload: None,
        response_timeout_in_seconds: Some(5),
        connect_timeout_in_seconds: None,
    }
}

/// A server that drops the first `resets` connections after reading the request, then
/// answers every request with `body`. Returns its address and the connection count.
async fn resetting_server(resets: usize, body: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let n = seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = socket.read(&mut buf).await;
                if n < resets {
                    // The request reached the server; no answer comes back.
                    drop(socket);
                    return;
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    (address, count)
}

#[tokio::test]
async fn a_reset_is_retried_for_an_idempotent_call() {
    let (address, count) = resetting_server(1, r#"{"connectedDeviceCount":2}"#).await;
    let registry = manager_at(&address);
    let stats = registry.get_service_statistics().await.unwrap();
    assert_eq!(stats.connected_device_count, Some(2));
    assert_eq!(count.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_reset_is_not_retried_for_a_method_invocation() {
    let (address, count) = resetting_server(1, r#"{"status":200,"payload":null}"#).await;
    let registry = manager_at(&address);
    let err = registry
        .invoke_device_method("d1", method_call())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    assert_eq!(
        count.load(Ordering::SeqCst),
        1,
        "the method may have run: not repeated"
    );
}

#[tokio::test]
async fn per_call_timeouts_apply_but_never_cut_a_direct_method_short() {
    let server = MockServer::start().await;
    let slow = Duration::from_millis(300);
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(slow)
                .set_body_json(json!({ "connectedDeviceCount": 1 })),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_delay(slow)
                .set_body_json(json!({ "status": 200, "payload": 1 })),
        )
        .mount(&server)
        .await;
    let address = server.address();
    let registry = registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(NoRetry)
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let err = registry.get_service_statistics().await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    // Overridden for one call.
    registry
        .with_timeout(Duration::from_secs(5))
        .get_service_statistics()
        .await
        .unwrap();
    // A method's HTTP timeout follows its own timeouts (5 s + margin), not the 50 ms default.
    registry
        .invoke_device_method("d1", method_call())
        .await
        .unwrap();
}

#[tokio::test]
async fn bad_arguments_fail_before_any_request() {
    let server = MockServer::start().await;
    let registry = manager(&server);
    let status = iothub_registry::models::DeviceStatus::Enabled;
    let options = iothub_registry::DeviceOptions::new();
    let checks: Vec<(&str, Error)> = vec![
        (
            "device_id",
            registry.get_device("has space").await.unwrap_err(),
        ),
        ("device_id", registry.get_twin("").await.unwrap_err()),
        (
            "device_id",
            registry.get_device("x".repeat(129)).await.unwrap_err(),
        ),
        (
            "module_id",
            registry.get_module("d", "m/1").await.unwrap_err(),
        ),
        ("max", registry.get_devices(Some(1001)).await.unwrap_err()),
        ("max", registry.get_devices(Some(0)).await.unwrap_err()),
        (
            "primary_key",
            registry
                .create_device_with_sas(
                    "d",
                    SasKeys::new("bm90LWVub3VnaA==", KEY),
                    status.clone(),
                    options.clone(),
                )
                .await
                .unwrap_err(),
        ),
        (
            "devices",
            registry
                .bulk_create_or_update_devices(vec![])
                .await
                .unwrap_err(),
        ),
        (
            "devices",
            registry
                .bulk_create_or_update_devices((0..101).map(|i| entry(&format!("d{i}"))).collect())
                .await
                .unwrap_err(),
        ),
        (
            "query",
            registry.query_iot_hub(" ", None, None).await.unwrap_err(),
        ),
        (
            "response_timeout_in_seconds",
            registry
                .invoke_device_method(
                    "d",
                    CloudToDeviceMethod {
                        response_timeout_in_seconds: Some(301),
                        ..method_call()
                    },
                )
                .await
                .unwrap_err(),
        ),
    ];
    for (argument, err) in checks {
        match &err {
            Error::InvalidArgument { argument: a, .. } => assert_eq!(*a, argument, "{err}"),
            other => panic!("expected InvalidArgument for {argument}, got {other:?}"),
        }
    }
    assert!(
        IfMatch::from_current(None).is_err(),
        "no etag never means unconditional"
    );
    assert_eq!(requests(&server).await, 0);
}

fn entry(id: &str) -> ExportImportDevice {
    ExportImportDevice {
        id: Some(id.into()),
        import_mode: Some(ImportMode::Create),
        ..Default::default()
    }
}

/// Answers bulk calls: the chunk holding `conflict` gets a 400 naming it, the chunk holding
/// `broken` a permanent 400 without a result body, the others success.
struct BulkHub;

impl Respond for BulkHub {
    fn respond(&self, request: &wiremock::Request) -> ResponseTemplate {
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&request.body).unwrap();
        let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
        if ids.contains(&"d150") {
            return ResponseTemplate::new(400).set_body_json(json!({
                "isSuccessful": false,
                "errors": [{ "deviceId": "d150", "errorCode": "DeviceAlreadyExists", "errorStatus": "exists", "operation": "create" }],
                "warnings": []
            }));
        }
        if ids.contains(&"d210") {
            return ResponseTemplate::new(403)
                .insert_header("iothub-errorcode", "IotHubQuotaExceeded");
        }
        ResponseTemplate::new(200)
            .set_body_json(json!({ "isSuccessful": true, "errors": [], "warnings": [] }))
    }
}

#[tokio::test]
async fn bulk_helper_chunks_merges_and_reports_progress() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/devices"))
        .respond_with(BulkHub)
        .mount(&server)
        .await;
    let registry = manager(&server);
    let progress = Arc::new(Mutex::new(Vec::new()));
    let seen = progress.clone();
    let report = registry
        .bulk((0..250).map(|i| entry(&format!("d{i}"))))
        .concurrency(2)
        .on_progress(move |p| seen.lock().unwrap().push((p.done, p.total)))
        .send()
        .await
        .unwrap();

    let received = server.received_requests().await.unwrap();
    let mut sizes: Vec<usize> = received
        .iter()
        .map(|r| {
            serde_json::from_slice::<Vec<serde_json::Value>>(&r.body)
                .unwrap()
                .len()
        })
        .collect();
    sizes.sort();
    assert_eq!(sizes, [50, 100, 100]);
    assert_eq!(report.total, 250);
    assert!(!report.is_successful());
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].device_id.as_deref(), Some("d150"));
    assert_eq!(report.failed_chunks.len(), 1);
    assert_eq!(report.failed_chunks[0].device_ids.len(), 50);
    assert_eq!(report.failed_chunks[0].device_ids[0], "d200");
    assert_eq!(report.failed_chunks[0].error.status(), Some(403));
    let progress = progress.lock().unwrap();
    assert_eq!(progress.len(), 3);
    assert_eq!(progress.last(), Some(&(250, 250)));
}

#[tokio::test]
async fn a_duplicate_in_a_bulk_run_sends_nothing() {
    let server = MockServer::start().await;
    let registry = manager(&server);
    let mut devices: Vec<_> = (0..150).map(|i| entry(&format!("d{i}"))).collect();
    devices.push(entry("d7"));
    let err = registry.bulk(devices).send().await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err:?}");
    assert_eq!(requests(&server).await, 0);
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401)
                .insert_header("iothub-errorcode", "IotHubUnauthorizedAccess"),
        )
        .mount(&server)
        .await;
    let registry = manager(&server);
    let err = registry.get_device("d1").await.unwrap_err();
    for text in [format!("{registry:?}"), format!("{err:?}"), err.to_string()] {
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains("SharedAccessSignature sr="), "{text}");
    }
    assert_eq!(err.status(), Some(401));
    let bad = RegistryManager::from_connection_string(&format!(
        "HostName=h.azure-devices.net;SharedAccessKeyName=x;SharedAccessKey={KEY}!"
    ))
    .unwrap_err();
    assert!(!bad.to_string().contains(KEY), "{bad}");
}
