//! Twins: etags, versions, metadata, merge and replace, reported properties, limits.

use reqwest::Method;
use serde_json::json;

use crate::hub::Hub;

#[tokio::test]
async fn patch_replace_and_conditions() {
    let hub = Hub::start().await;
    hub.create("t").await;
    let r = hub.call(Method::GET, "/twins/t", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["etag"], "AAAAAAAAAAE=");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["properties"]["desired"]["$version"], 1);
    assert_eq!(
        r.body["deviceEtag"],
        hub.call(Method::GET, "/devices/t", None).await.body["etag"]
    );

    let r = hub
        .call_with(
            Method::PATCH,
            "/twins/t",
            Some(
                json!({"tags": {"loc": {"city": "Oslo"}}, "properties": {"desired": {"rate": 5}}}),
            ),
            &[("if-match", "\"AAAAAAAAAAE=\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["etag"], "AAAAAAAAAAI=");
    assert_eq!(r.body["tags"], json!({"loc": {"city": "Oslo"}}));
    assert_eq!(r.body["properties"]["desired"]["rate"], 5);
    assert_eq!(r.body["properties"]["desired"]["$version"], 2);
    assert_eq!(
        r.body["properties"]["desired"]["$metadata"]["rate"]["$lastUpdatedVersion"],
        2
    );

    // Stale quoted etag: 412 and nothing changes.
    let r = hub
        .call_with(
            Method::PATCH,
            "/twins/t",
            Some(json!({"tags": {"x": 1}})),
            &[("if-match", "\"AAAAAAAAAAE=\"")],
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    // Unquoted: ignored, the patch applies.
    let r = hub
        .call_with(
            Method::PATCH,
            "/twins/t",
            Some(json!({"tags": {"loc": null, "x": 1}})),
            &[("if-match", "nonsense")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["tags"], json!({"x": 1}));

    // PUT replaces tags and desired.
    let r = hub
        .call_with(
            Method::PUT,
            "/twins/t",
            Some(json!({"properties": {"desired": {"mode": "eco"}}})),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .get("tags")
            .is_none_or(|t| t.as_object().unwrap().is_empty())
    );
    assert!(r.body["properties"]["desired"].get("rate").is_none());
    assert_eq!(r.body["properties"]["desired"]["mode"], "eco");
    assert_eq!(r.body["version"], 4);

    // Reported properties are the device's: refused from the service, accepted from the device.
    let r = hub
        .call(
            Method::PATCH,
            "/twins/t",
            Some(json!({"properties": {"reported": {"a": 1}}})),
        )
        .await;
    assert_eq!(r.status, 400);
    let twin = hub
        .emu
        .report_properties("t", None, &json!({"temp": 21.5}))
        .unwrap();
    assert_eq!(twin["properties"]["reported"]["temp"], 21.5);
    let r = hub.call(Method::GET, "/twins/t", None).await;
    assert_eq!(r.body["properties"]["reported"]["$version"], 2);
    assert_eq!(r.body["version"], 5);
}

#[tokio::test]
async fn module_twins_and_missing_twins() {
    let hub = Hub::start().await;
    hub.create("d").await;
    hub.call(
        Method::PUT,
        "/devices/d/modules/m",
        Some(json!({"moduleId": "m"})),
    )
    .await;
    let r = hub
        .call(
            Method::PATCH,
            "/twins/d/modules/m",
            Some(json!({"properties": {"desired": {"a": 1}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["moduleId"], "m");
    assert_eq!(r.body["properties"]["desired"]["a"], 1);
    // The device twin is separate.
    let r = hub.call(Method::GET, "/twins/d", None).await;
    assert!(r.body["properties"]["desired"].get("a").is_none());
    let r = hub.call(Method::GET, "/twins/d/modules/zz", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "ModuleNotFound"));
    let r = hub.call(Method::GET, "/twins/zz", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "DeviceNotFound"));
}

#[tokio::test]
async fn limits_are_enforced() {
    let hub = Hub::start().await;
    hub.create("l").await;
    let big: serde_json::Map<String, serde_json::Value> = (0..3)
        .map(|i| (format!("k{i}"), json!("x".repeat(4000))))
        .collect();
    let r = hub
        .call(Method::PATCH, "/twins/l", Some(json!({"tags": big})))
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ArgumentInvalid")
    );
    let r = hub
        .call(Method::PATCH, "/twins/l", Some(json!({"tags": {"a.b": 1}})))
        .await;
    assert_eq!(r.status, 400);
    let r = hub.call(Method::GET, "/twins/l", None).await;
    assert_eq!(r.body["version"], 1);
}
