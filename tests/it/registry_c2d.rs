//! `RegistryManager`'s cloud-to-device methods against the emulator's AMQP endpoint: the
//! reference's property mapping as the emulator received it, typed messages to devices and
//! modules, each refusal as a typed error, the retry classes, feedback, file notifications and
//! close.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt as _;
use iothub_emulator::Emulator;
use iothub_registry::c2d::{Ack, Error as C2dError, FeedbackStatus, Message};
use iothub_registry::models::DeviceStatus;
use iothub_registry::{DeviceOptions, Error, NoRetry, RegistryManager, RetryClass, SasKeys};
use iothub_test_support::emulator::{registry, registry_builder};
use serde_json::json;

async fn start() -> (Emulator, RegistryManager) {
    let emu = Emulator::builder().start().await.unwrap();
    let rm = registry(&emu);
    (emu, rm)
}

/// Built the way the crate docs tell emulator users to (the CA for both protocols, the AMQP
/// port), without retries: each failure shows as the first attempt met it.
fn manager_without_retries(emu: &Emulator, connection_string: &str) -> RegistryManager {
    registry_builder(emu, connection_string)
        .retry_policy(NoRetry)
        .build()
        .unwrap()
}

async fn device(rm: &RegistryManager, id: &str) {
    rm.create_device_with_sas(
        id,
        SasKeys::generated(),
        DeviceStatus::Enabled,
        DeviceOptions::new(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn send_c2d_message_maps_properties_as_the_reference_does() {
    let (emu, rm) = start().await;
    device(&rm, "c2d-1").await;

    rm.send_c2d_message(
        "c2d-1",
        "{\"setpoint\":21.5}",
        [
            ("messageId", "order-17"),
            ("correlationId", "corr-9"),
            ("contentType", "application/json"),
            ("contentEncoding", "utf-8"),
            ("expiryTimeUtc", "4102444800000"),
            ("iothub-ack", "full"),
            ("color", "blue"),
        ],
    )
    .await
    .unwrap();
    // Without properties the message still gets an id, and nothing else.
    rm.send_c2d_message(
        "c2d-1",
        b"plain".to_vec(),
        BTreeMap::<String, String>::new(),
    )
    .await
    .unwrap();

    let got = emu.c2d_messages();
    assert_eq!(got.len(), 2);
    let first = &got[0];
    assert_eq!(first.device_id, "c2d-1");
    assert_eq!(first.module_id, None);
    assert_eq!(
        first.to.as_deref(),
        Some("/devices/c2d-1/messages/devicebound")
    );
    assert_eq!(first.body, b"{\"setpoint\":21.5}");
    assert_eq!(first.message_id.as_deref(), Some("order-17"));
    assert_eq!(first.correlation_id.as_deref(), Some("corr-9"));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert_eq!(first.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(first.absolute_expiry_time, Some(4_102_444_800_000));
    assert_eq!(
        first.application_properties,
        BTreeMap::from([
            ("color".to_owned(), json!("blue")),
            ("iothub-ack".to_owned(), json!("full")),
        ])
    );
    let second = &got[1];
    assert_eq!(second.body, b"plain");
    let id = second
        .message_id
        .as_deref()
        .expect("a generated message id");
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(second.correlation_id, None);
    assert_eq!(second.content_type, None);
    assert_eq!(second.absolute_expiry_time, None);
    assert!(second.application_properties.is_empty());
    rm.close().await;
}

#[tokio::test]
async fn typed_messages_reach_devices_and_modules() {
    let (emu, rm) = start().await;
    device(&rm, "c2d-2").await;
    rm.create_module_with_sas("c2d-2", "m1", SasKeys::generated(), None)
        .await
        .unwrap();

    let to_device = Message::builder("c2d-2")
        .body("reboot")
        .ack(Ack::Positive)
        .property("reason", "firmware")
        .build()
        .unwrap();
    let to_module = Message::builder("c2d-2")
        .module("m1")
        .body("restart")
        .build()
        .unwrap();
    rm.send_c2d(&to_device).await.unwrap();
    rm.send_c2d(&to_module).await.unwrap();

    assert_eq!(emu.c2d_pending("c2d-2", None), 1);
    assert_eq!(emu.c2d_pending("c2d-2", Some("m1")), 1);
    let got = emu.receive_c2d("c2d-2", None).unwrap().message;
    assert_eq!(got.message_id.as_deref(), Some(to_device.message_id()));
    assert_eq!(got.body, b"reboot");
    assert_eq!(got.application_properties["iothub-ack"], json!("positive"));
    assert_eq!(got.application_properties["reason"], json!("firmware"));
    let got = emu.receive_c2d("c2d-2", Some("m1")).unwrap().message;
    assert_eq!(
        got.to.as_deref(),
        Some("/devices/c2d-2/modules/m1/messages/devicebound")
    );
    assert_eq!(got.body, b"restart");
    rm.close().await;
}

#[tokio::test]
async fn bad_input_is_refused_before_connecting() {
    let (emu, rm) = start().await;
    let bad_id = rm
        .send_c2d_message("has/slash", "x", [("a", "b")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            bad_id,
            Error::InvalidArgument {
                argument: "device_id",
                ..
            }
        ),
        "{bad_id:?}"
    );
    let too_big = rm
        .send_c2d_message("c2d-3", vec![0u8; 64 * 1024 + 1], [("a", "b")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            too_big,
            Error::InvalidArgument {
                argument: "message",
                ..
            }
        ),
        "{too_big:?}"
    );
    let bad_expiry = rm
        .send_c2d_message("c2d-3", "x", [("expiryTimeUtc", "tomorrow")])
        .await
        .unwrap_err();
    assert!(
        matches!(bad_expiry, Error::InvalidArgument { .. }),
        "{bad_expiry:?}"
    );
    assert!(emu.c2d_messages().is_empty());
}

#[tokio::test]
async fn refusals_are_typed_and_classed_for_retries() {
    let emu = Emulator::builder().start().await.unwrap();
    let rm = manager_without_retries(&emu, &emu.connection_string());

    // Unknown device: amqp:not-found.
    let missing = rm
        .send_c2d_message("nobody", "x", [("a", "b")])
        .await
        .unwrap_err();
    assert!(missing.is_not_found(), "{missing:?}");
    assert_eq!(missing.status(), None);
    assert_eq!(missing.retry_class(), RetryClass::Permanent);
    assert_eq!(
        missing
            .c2d()
            .and_then(|e| e.rejection())
            .map(|r| r.condition()),
        Some("amqp:not-found")
    );

    // A full queue: the 51st pending message is refused, and nothing past it is queued.
    device(&rm, "c2d-4").await;
    for n in 0..50 {
        rm.send_c2d_message("c2d-4", format!("m{n}"), [("n", n.to_string())])
            .await
            .unwrap();
    }
    let full = rm
        .send_c2d_message("c2d-4", "one too many", [("n", "50")])
        .await
        .unwrap_err();
    assert!(
        matches!(full.c2d(), Some(C2dError::QueueFull(_))),
        "{full:?}"
    );
    assert_eq!(
        full.c2d()
            .and_then(|e| e.rejection())
            .map(|r| r.condition()),
        Some("amqp:resource-limit-exceeded")
    );
    assert_eq!(full.retry_class(), RetryClass::Permanent);
    assert!(full.is_transient());
    assert_eq!(emu.c2d_pending("c2d-4", None), 50);

    // A key the hub does not know: the CBS put-token is refused with 401.
    let real = emu.connection_string();
    let (head, _key) = real.split_once(";SharedAccessKey=").unwrap();
    let forged = format!("{head};SharedAccessKey=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    let impostor = manager_without_retries(&emu, &forged);
    let refused = impostor
        .send_c2d_message("c2d-4", "x", [("a", "b")])
        .await
        .unwrap_err();
    assert!(
        matches!(refused.c2d(), Some(C2dError::Unauthorized { .. })),
        "{refused:?}"
    );
    assert_eq!(refused.retry_class(), RetryClass::Permanent);
    assert_eq!(emu.c2d_pending("c2d-4", None), 50);
    rm.close().await;
}

#[tokio::test]
async fn nothing_listening_is_a_retryable_connect_failure() {
    let emu = Emulator::builder().start().await.unwrap();
    // A port with nothing behind it: bind one, note it, free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let rm = registry_builder(&emu, &emu.connection_string())
        .amqp_port(port)
        .retry_policy(NoRetry)
        .build()
        .unwrap();
    let error = rm
        .send_c2d_message("anyone", "x", [("a", "b")])
        .await
        .unwrap_err();
    assert!(
        matches!(error.c2d(), Some(C2dError::Connect { .. })),
        "{error:?}"
    );
    assert_eq!(
        error.retry_class(),
        RetryClass::NotPerformed { retry_after: None }
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn the_per_call_timeout_bounds_a_send() {
    let emu = Emulator::builder().start().await.unwrap();
    // A listener that accepts and never answers: the TLS handshake waits forever.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let rm = registry_builder(&emu, &emu.connection_string())
        .amqp_port(port)
        .retry_policy(NoRetry)
        .build()
        .unwrap();
    let limit = Duration::from_millis(300);
    let error = rm
        .with_timeout(limit)
        .send_c2d_message("anyone", "x", [("a", "b")])
        .await
        .unwrap_err();
    assert!(
        matches!(error.c2d(), Some(C2dError::Timeout { after, sent: false }) if *after == limit),
        "{error:?}"
    );
    held.abort();
}

#[tokio::test]
async fn feedback_and_file_notifications_round_trip() {
    let (emu, rm) = start().await;
    device(&rm, "c2d-5").await;
    let mut feedback = rm.feedback_receiver();

    rm.send_c2d_message(
        "c2d-5",
        "a",
        [("messageId", "ok-1"), ("iothub-ack", "full")],
    )
    .await
    .unwrap();
    rm.send_c2d_message(
        "c2d-5",
        "b",
        [("messageId", "no-2"), ("iothub-ack", "negative")],
    )
    .await
    .unwrap();
    let first = emu.receive_c2d("c2d-5", None).unwrap();
    assert!(emu.complete_c2d(&first.lock_token));
    let second = emu.receive_c2d("c2d-5", None).unwrap();
    assert!(emu.reject_c2d(&second.lock_token));

    let mut records = Vec::new();
    while records.len() < 2 {
        let batch = tokio::time::timeout(Duration::from_secs(10), feedback.next())
            .await
            .expect("feedback arrives")
            .expect("the stream is open")
            .unwrap();
        records.extend(batch.records().iter().cloned());
        batch.complete().await.unwrap();
    }
    records.sort_by(|a, b| a.original_message_id.cmp(&b.original_message_id));
    assert_eq!(records[0].original_message_id, "no-2");
    assert_eq!(records[0].status, FeedbackStatus::Rejected);
    assert_eq!(records[1].original_message_id, "ok-1");
    assert_eq!(records[1].status, FeedbackStatus::Success);
    assert!(records.iter().all(|r| r.device_id == "c2d-5"));

    emu.notify_file_upload("c2d-5", "report.csv", 2048).unwrap();
    // The hub names the blob under the device id. The receiver attaches on first poll; the
    // notification waits in the hub until then.
    let mut uploads = rm.file_notification_receiver();
    let upload = tokio::time::timeout(Duration::from_secs(10), uploads.next())
        .await
        .expect("a notification arrives")
        .expect("the stream is open")
        .unwrap();
    assert_eq!(upload.notification().device_id, "c2d-5");
    assert_eq!(upload.notification().blob_name, "c2d-5/report.csv");
    assert_eq!(upload.notification().blob_size_in_bytes, 2048);
    upload.complete().await.unwrap();

    // close() ends the receivers and refuses later sends.
    rm.close().await;
    let after = rm
        .send_c2d_message("c2d-5", "late", [("a", "b")])
        .await
        .unwrap_err();
    assert!(matches!(after.c2d(), Some(C2dError::Closed)), "{after:?}");
}
