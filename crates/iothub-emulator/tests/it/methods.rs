//! Direct methods against emulated devices.

use std::time::{Duration, Instant};

use iothub_emulator::{DEFAULT_METHOD, MethodResponse};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::{Hub, Reply};

fn nested(r: &Reply) -> Value {
    serde_json::from_str(r.body["Message"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn offline_online_echo_fixed_and_timeouts() {
    let hub = Hub::start().await;
    hub.create("dev").await;
    let call = |body: Value| hub.call(Method::POST, "/twins/dev/methods", Some(body));

    let r = call(json!({"methodName": "reboot", "payload": {"x": 1}})).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "DeviceNotOnline")
    );
    assert_eq!(nested(&r)["errorCode"], 404103);
    assert_eq!(r.body["ExceptionMessage"], "");

    hub.emu.connect_device("dev").unwrap();
    // Online without any handler: still not reachable, as the service reports it.
    assert_eq!(call(json!({"methodName": "reboot"})).await.status, 404);

    hub.emu.set_method_response(
        "dev",
        None,
        "reboot",
        MethodResponse::fixed(202, json!("rebooting")),
    );
    hub.emu
        .set_method_response("dev", None, DEFAULT_METHOD, MethodResponse::echo());
    let r = call(json!({"methodName": "reboot", "payload": null})).await;
    assert_eq!(r.body, json!({"status": 202, "payload": "rebooting"}));
    let r = call(json!({"methodName": "other", "payload": {"x": [1, 2]}})).await;
    assert_eq!(r.body, json!({"status": 200, "payload": {"x": [1, 2]}}));

    // The service's smallest response timeout is 5 s: the device takes 6.
    hub.emu
        .set_method_response("dev", None, "slow", MethodResponse::echo().delayed(6_000));
    hub.emu
        .set_method_response("dev", None, "quick", MethodResponse::echo().delayed(200));
    let started = Instant::now();
    let r = call(json!({"methodName": "slow", "responseTimeoutInSeconds": 5})).await;
    assert_eq!((r.status, r.error_code().as_str()), (504, "GatewayTimeout"));
    assert_eq!(nested(&r)["errorCode"], 504101);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(5) && elapsed < Duration::from_millis(5_900),
        "answered at the timeout, not after the delay: {elapsed:?}"
    );
    let r = call(json!({"methodName": "quick", "responseTimeoutInSeconds": 5, "payload": 1})).await;
    assert_eq!(r.body, json!({"status": 200, "payload": 1}));
    assert_eq!(
        call(json!({"methodName": "x", "responseTimeoutInSeconds": 4}))
            .await
            .status,
        400
    );
    assert_eq!(
        call(json!({"methodName": "x", "responseTimeoutInSeconds": 301}))
            .await
            .status,
        400
    );
    assert_eq!(call(json!({"payload": 1})).await.status, 400);
    let r = hub
        .call(
            Method::POST,
            "/twins/nobody/methods",
            Some(json!({"methodName": "m"})),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "DeviceNotFound"));

    hub.emu.disconnect_device("dev").unwrap();
    assert_eq!(call(json!({"methodName": "reboot"})).await.status, 404);
}

#[tokio::test]
async fn connect_timeout_waits_for_the_device() {
    let hub = Hub::start().await;
    hub.create("late").await;
    hub.emu
        .set_method_response("late", None, "m", MethodResponse::fixed(200, json!(null)));
    let call = hub.call(
        Method::POST,
        "/twins/late/methods",
        Some(json!({"methodName": "m", "connectTimeoutInSeconds": 5})),
    );
    let connect = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hub.emu.connect_device("late").unwrap();
    };
    let (r, ()) = tokio::join!(call, connect);
    assert_eq!(r.status, 200, "{}", r.raw);
}

#[tokio::test]
async fn module_methods() {
    let hub = Hub::start().await;
    hub.create("d").await;
    hub.call(Method::PUT, "/devices/d/modules/m", Some(json!({})))
        .await;
    let path = "/twins/d/modules/m/methods";
    assert_eq!(
        hub.call(Method::POST, path, Some(json!({"methodName": "x"})))
            .await
            .status,
        404
    );
    hub.emu.set_module_connected("d", "m", true).unwrap();
    hub.emu.set_method_response(
        "d",
        Some("m"),
        "x",
        MethodResponse::fixed(200, json!({"ok": true})),
    );
    let r = hub
        .call(Method::POST, path, Some(json!({"methodName": "x"})))
        .await;
    assert_eq!(r.body, json!({"status": 200, "payload": {"ok": true}}));
    // The device itself has no handler.
    hub.emu.connect_device("d").unwrap();
    assert_eq!(
        hub.call(
            Method::POST,
            "/twins/d/methods",
            Some(json!({"methodName": "x"}))
        )
        .await
        .status,
        404
    );
}

#[tokio::test]
async fn the_control_api_drives_devices_over_http() {
    let hub = Hub::start().await;
    hub.create("c").await;
    let base = hub.emu.base_url();
    let r = hub
        .http
        .post(format!("{base}/_emulator/devices/c/connect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = hub
        .http
        .put(format!("{base}/_emulator/devices/c/methods/ping"))
        .body(r#"{"status": 200, "payload": "pong"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = hub
        .call(
            Method::POST,
            "/twins/c/methods",
            Some(json!({"methodName": "ping"})),
        )
        .await;
    assert_eq!(r.body, json!({"status": 200, "payload": "pong"}));
    let r = hub
        .http
        .patch(format!("{base}/_emulator/devices/c/reported"))
        .body(r#"{"fw": "1.2"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let twin = hub.call(Method::GET, "/twins/c", None).await;
    assert_eq!(twin.body["properties"]["reported"]["fw"], "1.2");
    assert_eq!(twin.body["connectionState"], "Connected");
    let r = hub
        .http
        .post(format!("{base}/_emulator/devices/nobody/connect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let log: Value = hub
        .http
        .get(format!("{base}/_emulator/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = log.as_array().unwrap().last().unwrap();
    assert_eq!(last["method"], "GET");
    assert_eq!(last["path"], "/twins/c");
    let auth = last["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "authorization")
        .unwrap();
    assert!(auth[1].as_str().unwrap().contains("sig=REDACTED"));
}
