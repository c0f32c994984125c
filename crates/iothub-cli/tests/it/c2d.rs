//! `iothub method invoke`, `c2d send|purge`, `feedback watch`, `file-notifications watch`.

use iothub_emulator::MethodResponse;
use serde_json::json;

use crate::assert_text;
use crate::support::{Hub, redact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_invoke() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "m-1"]);
    let (code, _, err) = hub.run(&["method", "invoke", "m-1", "reboot"]);
    assert_eq!(code, 3, "not online is a 404");
    assert_text!("method_invoke_not_online", err);

    hub.emu.connect_device("m-1").unwrap();
    hub.emu.set_method_response(
        "m-1",
        None,
        "reboot",
        MethodResponse::fixed(200, json!({"ok": true})),
    );
    let answer = hub.json(&[
        "method",
        "invoke",
        "m-1",
        "reboot",
        "--payload",
        r#"{"delay": 5}"#,
    ]);
    insta::assert_json_snapshot!("method_invoke", answer);

    let (code, _, err) = hub.run(&["method", "invoke", "m-1", "reboot", "--payload", "{nope"]);
    assert_eq!(code, 2);
    assert_text!("method_invoke_bad_payload", err);
    let (code, _, _) = hub.run(&[
        "method",
        "invoke",
        "m-1",
        "reboot",
        "--response-timeout",
        "1",
    ]);
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c2d_send_feedback_watch_and_purge() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "c-1"]);
    let sent = hub.json(&[
        "c2d",
        "send",
        "c-1",
        "hello",
        "--ack",
        "full",
        "--message-id",
        "msg-1",
        "--property",
        "priority=high",
        "--content-type",
        "text/plain",
    ]);
    insta::assert_json_snapshot!("c2d_send", sent);
    let messages = hub.emu.c2d_messages();
    assert_eq!(messages.len(), 1);

    // The device takes and completes it: positive feedback.
    let received = hub.emu.receive_c2d("c-1", None).expect("a message");
    assert!(hub.emu.complete_c2d(&received.lock_token));
    let (code, out, err) = hub.run(&["feedback", "watch", "--max", "1", "--timeout", "20"]);
    assert_eq!(code, 0, "{err}");
    let record: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a record")).unwrap();
    insta::assert_json_snapshot!("feedback_watch", redact(record.clone()));
    assert_eq!(record["originalMessageId"], "msg-1");

    // Nothing more: --timeout ends the watch with success and no output.
    let (code, out, _) = hub.run(&["feedback", "watch", "--timeout", "1"]);
    assert_eq!((code, out.as_str()), (0, ""));

    hub.json(&["c2d", "send", "c-1", "one"]);
    hub.json(&["c2d", "send", "c-1", "two"]);
    let purged = hub.json(&["c2d", "purge", "c-1"]);
    insta::assert_json_snapshot!("c2d_purge", purged);

    let (code, _, err) = hub.run(&["c2d", "send", "nobody", "x"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = hub.run(&["c2d", "send", "c-1", "x", "--property", "novalue"]);
    assert_eq!(code, 2);
    assert_text!("c2d_send_bad_property", err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_notifications_watch() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "f-1"]);
    hub.emu
        .notify_file_upload("f-1", "logs/today.txt", 42)
        .unwrap();
    hub.emu
        .notify_file_upload("f-1", "logs/tomorrow.txt", 7)
        .unwrap();
    let (code, out, err) = hub.run(&[
        "file-notifications",
        "watch",
        "--max",
        "2",
        "--timeout",
        "20",
    ]);
    assert_eq!(code, 0, "{err}");
    let records: Vec<serde_json::Value> = out
        .lines()
        .map(|l| redact(serde_json::from_str(l).unwrap()))
        .collect();
    insta::assert_json_snapshot!("file_notifications_watch", records);
    let (code, out, _) = hub.run(&["file-notifications", "watch", "--timeout", "1"]);
    assert_eq!((code, out.as_str()), (0, ""), "both were completed");
}
