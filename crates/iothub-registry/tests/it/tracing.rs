//! Each operation runs in a `tracing` span with its name, ids, attempt and status, and no
//! secret reaches the logs.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iothub_registry::ExponentialRetry;
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::registry_builder;
use serde_json::json;
use tracing_subscriber::fmt::format::FmtSpan;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn spans_name_the_operation_ids_attempts_and_status_without_secrets() {
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // tracing-core asks only the calling thread's subscriber about a callsite (and the level to
    // record) while a single dispatcher is registered; the other tests' threads have none, and
    // would switch this test's callsites off. With a second one registered, every registered
    // dispatcher is asked.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    tracing::callsite::rebuild_interest_cache();

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "moduleId": "m1" })))
        .mount(&server)
        .await;
    let address = server.address();
    let registry = registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(ExponentialRetry::new().initial_delay(Duration::from_millis(1)))
        .build()
        .unwrap();
    registry.get_module("dev-1", "m1").await.unwrap();
    registry
        .configurations()
        .get_configuration("cfg-1")
        .await
        .unwrap();

    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("operation=\"get_module\""), "{logs}");
    assert!(logs.contains("device_id=\"dev-1\""), "{logs}");
    assert!(logs.contains("module_id=\"m1\""), "{logs}");
    assert!(logs.contains("configuration_id=\"cfg-1\""), "{logs}");
    assert!(logs.contains("attempt=2"), "{logs}");
    assert!(logs.contains("status=\"ok\""), "{logs}");
    assert!(logs.contains("retrying"), "{logs}");
    assert!(!logs.contains(KEY), "{logs}");
    assert!(!logs.contains("SharedAccessSignature"), "{logs}");

    // A delete whose retry finds the device gone after an attempt whose outcome was unknown
    // succeeds, and an event says so. (Here rather than in its own test: two tests with
    // subscribers of their own, run in parallel, can each miss events.)
    buffer.0.lock().unwrap().clear();
    let server = MockServer::start().await;
    Mock::given(method("DELETE"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(
            ResponseTemplate::new(404).insert_header("iothub-errorcode", "DeviceNotFound"),
        )
        .mount(&server)
        .await;
    let address = server.address();
    let registry = registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(ExponentialRetry::new().initial_delay(Duration::from_millis(1)))
        .build()
        .unwrap();
    registry
        .delete_device("dev-2", iothub_registry::IfMatch::Any)
        .await
        .unwrap();
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|line| line.contains("already gone"))
        .unwrap_or_else(|| panic!("no event in:\n{logs}"));
    assert!(
        line.contains("INFO") && line.contains("delete_device"),
        "{line}"
    );
    assert!(line.contains("dev-2") && line.contains("500"), "{line}");
}
