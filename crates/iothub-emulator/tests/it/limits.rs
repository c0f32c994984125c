//! The control API's input and what it keeps: numbers within sane ranges, method answers
//! only for devices that exist and within the configured totals.

use iothub_emulator::Emulator;
use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::Hub;

/// A control request (no token, as the control API takes them).
async fn control(hub: &Hub, method: Method, path: &str, body: Value) -> (u16, String) {
    let r = hub
        .http
        .request(method, format!("{}/_emulator{path}", hub.emu.base_url()))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn method_answers_are_taken_only_for_devices_that_exist_and_within_the_totals() {
    let hub = Hub::with(Emulator::builder().max_method_handlers(2)).await;
    hub.create("d").await;
    let answer = json!({"status": 200, "payload": "ok"});
    let (status, body) = control(
        &hub,
        Method::PUT,
        "/devices/nosuch/methods/m",
        answer.clone(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("DeviceNotFound"), "{body}");
    let (status, _) = control(
        &hub,
        Method::PUT,
        "/devices/d/modules/nosuch/methods/m",
        answer.clone(),
    )
    .await;
    assert_eq!(status, 404);

    assert_eq!(
        control(&hub, Method::PUT, "/devices/d/methods/a", answer.clone())
            .await
            .0,
        204
    );
    // Replacing an answer does not count twice.
    assert_eq!(
        control(&hub, Method::PUT, "/devices/d/methods/a", answer.clone())
            .await
            .0,
        204
    );
    assert_eq!(
        control(&hub, Method::PUT, "/devices/d/methods/b", answer.clone())
            .await
            .0,
        204
    );
    let (status, body) = control(&hub, Method::PUT, "/devices/d/methods/c", answer.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at most 2 method handlers"), "{body}");
    // Removing one makes room.
    assert_eq!(
        control(&hub, Method::DELETE, "/devices/d/methods/a", json!(null))
            .await
            .0,
        204
    );
    assert_eq!(
        control(&hub, Method::PUT, "/devices/d/methods/c", answer)
            .await
            .0,
        204
    );

    // A payload over the service's 128 KB, a delay no caller waits for.
    let big = json!({"payload": "x".repeat(129 * 1024)});
    assert_eq!(
        control(&hub, Method::PUT, "/devices/d/methods/c", big)
            .await
            .0,
        400
    );
    let slow = json!({"delayMs": u64::MAX});
    assert_eq!(
        control(&hub, Method::PUT, "/devices/d/methods/c", slow)
            .await
            .0,
        400
    );
}

#[tokio::test]
async fn fault_settings_out_of_range_are_refused_and_change_nothing() {
    let hub = Hub::start().await;
    hub.create("d").await;
    for bad in [
        json!({"latency_ms": u64::MAX}),
        json!({"latency_ms": 60_001}),
        json!({"latency_jitter_ms": 3_600_000}),
        json!({"throttle_rate": 1.5}),
        json!({"server_error_rate": -0.1}),
        json!({"retry_after_secs": 86_400}),
        json!({"units": 0}),
    ] {
        let (status, body) = control(&hub, Method::PUT, "/faults", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // Nothing was applied: requests are answered at once, as before.
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        hub.call(Method::GET, "/devices/d", None),
    )
    .await
    .expect("answered");
    assert_eq!(answered.status, 200);
    assert_eq!(
        control(&hub, Method::PUT, "/faults", json!({"latency_ms": 10}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn file_upload_notifications_need_a_sane_blob_name() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let long = json!({"blobName": "x".repeat(2000), "blobSizeInBytes": 1});
    assert_eq!(
        control(&hub, Method::POST, "/devices/d/files", long)
            .await
            .0,
        400
    );
    let empty = json!({"blobName": ""});
    assert_eq!(
        control(&hub, Method::POST, "/devices/d/files", empty)
            .await
            .0,
        400
    );
    let fine = json!({"blobName": "a.txt", "blobSizeInBytes": 1});
    assert_eq!(
        control(&hub, Method::POST, "/devices/d/files", fine)
            .await
            .0,
        204
    );
}
