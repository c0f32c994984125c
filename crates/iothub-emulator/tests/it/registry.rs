//! Devices, modules, If-Match, bulk, statistics and malformed input.

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::Hub;

fn enc(id: &str) -> String {
    utf8_percent_encode(id, NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn device_lifecycle_with_the_service_statuses() {
    let hub = Hub::start().await;
    let created = hub.create("dev1").await;
    assert_eq!(created["deviceId"], "dev1");
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["connectionState"], "Disconnected");
    assert_eq!(created["lastActivityTime"], "0001-01-01T00:00:00Z");
    assert_eq!(created["cloudToDeviceMessageCount"], 0);
    assert_eq!(created["authentication"]["type"], "sas");
    assert!(created["authentication"]["symmetricKey"]["primaryKey"].is_string());
    assert_eq!(created["capabilities"], json!({"iotEdge": false}));
    let etag = created["etag"].as_str().unwrap().to_owned();

    // PUT without If-Match is a create: 409 when the device exists.
    let r = hub
        .call(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"deviceId": "dev1"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "DeviceAlreadyExists")
    );
    // An unquoted etag is no condition, so this is a create as well.
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"deviceId": "dev1"})),
            &[("if-match", "bogus")],
        )
        .await;
    assert_eq!(r.status, 409);
    // A quoted stale etag: 412.
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"deviceId": "dev1"})),
            &[("if-match", "\"bogus\"")],
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    // The quoted current etag updates, and so does "*"; update answers 200, never 201.
    let quoted = format!("\"{etag}\"");
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"deviceId": "dev1", "status": "disabled", "statusReason": "maintenance"})),
            &[("if-match", quoted.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"], "disabled");
    assert_ne!(r.body["etag"], etag.as_str());
    assert_ne!(r.body["statusUpdatedTime"], "0001-01-01T00:00:00Z");
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/dev1",
            Some(json!({"deviceId": "dev1"})),
            &[("if-match", "\"*\"")],
        )
        .await;
    assert_eq!(r.status, 200);
    let current = r.body["etag"].as_str().unwrap().to_owned();

    let r = hub.call(Method::GET, "/devices/dev1", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(format!("\"{current}\"").as_str()));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );

    let r = hub
        .call_with(
            Method::DELETE,
            "/devices/dev1",
            None,
            &[("if-match", "\"stale\"")],
        )
        .await;
    assert_eq!(r.status, 412);
    let r = hub
        .call_with(Method::DELETE, "/devices/dev1", None, &[("if-match", "*")])
        .await;
    assert_eq!(r.status, 204);
    assert!(r.raw.is_empty());
    let r = hub.call(Method::GET, "/devices/dev1", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "DeviceNotFound"));
    assert!(
        r.body["ExceptionMessage"]
            .as_str()
            .unwrap()
            .starts_with("Tracking ID:")
    );
    let r = hub.call(Method::DELETE, "/devices/dev1", None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn ids_with_every_allowed_special_character_round_trip() {
    let hub = Hub::start().await;
    let id = "a-:.+%_#*?!(),=@;$'z";
    let r = hub
        .call(
            Method::PUT,
            &format!("/devices/{}", enc(id)),
            Some(json!({"deviceId": id})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub
        .call(Method::GET, &format!("/devices/{}", enc(id)), None)
        .await;
    assert_eq!(r.body["deviceId"], id);
    for bad in ["a%2Fb", "a%20b", "%C3%A9"] {
        let r = hub
            .call(Method::PUT, &format!("/devices/{bad}"), Some(json!({})))
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ArgumentInvalid"),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn keys_x509_and_ca_authentication() {
    let hub = Hub::start().await;
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let r = hub
        .call(
            Method::PUT,
            "/devices/sas",
            Some(json!({"deviceId": "sas", "authentication": {"type": "sas", "symmetricKey": {"primaryKey": key, "secondaryKey": key}}})),
        )
        .await;
    assert_eq!(r.body["authentication"]["symmetricKey"]["primaryKey"], key);
    let thumb = "A".repeat(40);
    let r = hub
        .call(
            Method::PUT,
            "/devices/x509",
            Some(json!({"deviceId": "x509", "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": thumb}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.body["authentication"]["x509Thumbprint"]["primaryThumbprint"],
        thumb.as_str()
    );
    assert!(r.body["authentication"].get("symmetricKey").is_none());
    let r = hub
        .call(
            Method::PUT,
            "/devices/ca",
            Some(json!({"authentication": {"type": "certificateAuthority"}})),
        )
        .await;
    assert_eq!(
        r.body["authentication"],
        json!({"type": "certificateAuthority"})
    );
    for bad in [
        json!({"authentication": {"type": "selfSigned"}}),
        json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "c2hvcnQ="}}}),
        json!({"authentication": {"type": "magic"}}),
        json!({"status": "sleeping"}),
        json!({"deviceId": "other"}),
    ] {
        let r = hub
            .call(Method::PUT, "/devices/bad", Some(bad.clone()))
            .await;
        assert_eq!(r.status, 400, "{bad} -> {}", r.raw);
    }
    assert_eq!(
        hub.call(Method::GET, "/devices/bad", None).await.status,
        404
    );
}

#[tokio::test]
async fn list_respects_top_and_the_cap() {
    let hub = Hub::start().await;
    for i in 0..5 {
        hub.create(&format!("d{i}")).await;
    }
    let r = hub.call(Method::GET, "/devices?top=3", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let r = hub.call(Method::GET, "/devices", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 5);
    let r = hub.call(Method::GET, "/devices?top=x", None).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn top_outside_one_to_a_thousand_means_a_thousand() {
    let hub = Hub::start().await;
    for i in 0..3 {
        hub.create(&format!("d{i}")).await;
    }
    for top in ["0", "-1", "1001", "-99999999999999999999"] {
        let r = hub
            .call(Method::GET, &format!("/devices?top={top}"), None)
            .await;
        assert_eq!(r.status, 200, "top={top}: {}", r.raw);
        assert_eq!(r.body.as_array().unwrap().len(), 3, "top={top}");
    }
}

#[tokio::test]
async fn device_scopes_follow_the_edge_hierarchy() {
    let hub = Hub::start().await;
    let put = |id: &'static str, body: serde_json::Value, etag: Option<&'static str>| {
        let hub = &hub;
        async move {
            let headers: Vec<(&str, &str)> =
                etag.map(|e| vec![("if-match", e)]).unwrap_or_default();
            hub.call_with(Method::PUT, &format!("/devices/{id}"), Some(body), &headers)
                .await
        }
    };
    let edge = put("edge", json!({"capabilities": {"iotEdge": true}}), None).await;
    let scope = edge.body["deviceScope"].as_str().unwrap().to_owned();
    let other = put("edge2", json!({"capabilities": {"iotEdge": true}}), None).await;
    let other_scope = other.body["deviceScope"].as_str().unwrap().to_owned();
    hub.create("plain").await;

    // An edge device's scope cannot be replaced, by any value.
    for bad in [
        other_scope.as_str(),
        "ms-azure-iot-edge://edge-1",
        "anything",
    ] {
        let r = put(
            "edge",
            json!({"capabilities": {"iotEdge": true}, "deviceScope": bad}),
            Some("*"),
        )
        .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ArgumentInvalid"),
            "{bad}: {}",
            r.raw
        );
    }
    // Repeating it, or leaving it out, keeps it (SDKs send the whole device back).
    for body in [
        json!({"capabilities": {"iotEdge": true}, "deviceScope": scope}),
        json!({"capabilities": {"iotEdge": true}, "status": "disabled"}),
    ] {
        let r = put("edge", body, Some("*")).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(r.body["deviceScope"], scope.as_str());
    }

    // A leaf's scope (and parent scopes) must be an existing edge device's scope.
    for bad in [
        "anything",
        "ms-azure-iot-edge://nobody-1",
        "ms-azure-iot-edge://plain-1",
    ] {
        let r = put("leaf", json!({"deviceScope": bad}), None).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ArgumentInvalid"),
            "{bad}"
        );
        let r = put("leaf", json!({"parentScopes": [bad]}), None).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ArgumentInvalid"),
            "{bad}"
        );
    }
    let r = put(
        "leaf",
        json!({"deviceScope": scope, "parentScopes": [scope]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["parentScopes"], json!([scope]));
    // Kept when left out or repeated; moved to another edge device; not set to junk.
    let r = put("leaf", json!({"status": "disabled"}), Some("*")).await;
    assert_eq!(
        (
            r.body["deviceScope"].as_str(),
            r.body["parentScopes"].clone()
        ),
        (Some(scope.as_str()), json!([scope]))
    );
    let r = put(
        "leaf",
        json!({"deviceScope": scope, "parentScopes": [scope]}),
        Some("*"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = put("leaf", json!({"deviceScope": "junk"}), Some("*")).await;
    assert_eq!(r.status, 400, "{}", r.raw);
    let r = put(
        "leaf",
        json!({"deviceScope": other_scope, "parentScopes": [other_scope]}),
        Some("*"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["deviceScope"], other_scope.as_str());
    // A nested edge device names its parent in parentScopes.
    let r = put(
        "child-edge",
        json!({"capabilities": {"iotEdge": true}, "parentScopes": [scope]}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["parentScopes"], json!([scope]));
    // Bulk follows the same rules.
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([{"id": "bulk-leaf", "importMode": "create", "deviceScope": "junk"}])),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(r.body["errors"][0]["errorCode"], "ArgumentInvalid");
}

#[tokio::test]
async fn modules_and_edge_devices() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let r = hub
        .call(
            Method::PUT,
            "/devices/d/modules/m1",
            Some(json!({"deviceId": "d", "moduleId": "m1", "managedBy": "me"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["managedBy"], "me");
    let etag = r.body["etag"].as_str().unwrap().to_owned();
    let r = hub
        .call(
            Method::PUT,
            "/devices/d/modules/m1",
            Some(json!({"moduleId": "m1"})),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "ModuleAlreadyExistsOnDevice")
    );
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/d/modules/m1",
            Some(json!({"moduleId": "m1"})),
            &[("if-match", "\"x\"")],
        )
        .await;
    assert_eq!(r.status, 412);
    let q = format!("\"{etag}\"");
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/d/modules/m1",
            Some(json!({"moduleId": "m1"})),
            &[("if-match", q.as_str())],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("managedBy").is_none());
    let r = hub
        .call(Method::PUT, "/devices/nope/modules/m1", Some(json!({})))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "DeviceNotFound"));
    let r = hub.call(Method::GET, "/devices/d/modules/m2", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "ModuleNotFound"));
    let r = hub.call(Method::GET, "/devices/d/modules", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    let r = hub
        .call(Method::DELETE, "/devices/d/modules/m1", None)
        .await;
    assert_eq!(r.status, 204);

    let r = hub
        .call(
            Method::PUT,
            "/devices/edge",
            Some(json!({"capabilities": {"iotEdge": true}})),
        )
        .await;
    assert!(
        r.body["deviceScope"]
            .as_str()
            .unwrap()
            .starts_with("ms-azure-iot-edge://edge-")
    );
    let r = hub.call(Method::GET, "/devices/edge/modules", None).await;
    let ids: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["moduleId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["$edgeAgent", "$edgeHub"]);
    let r = hub
        .call(Method::GET, "/twins/edge/modules/%24edgeAgent", None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["moduleId"], "$edgeAgent");
}

#[tokio::test]
async fn bulk_applies_each_entry_once_and_reports_failures() {
    let hub = Hub::start().await;
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([
                {"id": "b1", "importMode": "create"},
                {"id": "b2", "importMode": "create", "tags": {"t": 1}},
                {"id": "b3", "importMode": "CREATE"},
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(
        r.body,
        json!({"isSuccessful": true, "errors": [], "warnings": []})
    );
    let twin = hub.call(Method::GET, "/twins/b2", None).await;
    assert_eq!(twin.body["tags"], json!({"t": 1}));

    // Node's spellings, a conditional update with a stale etag, a create of an existing id.
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([
                {"id": "b1", "importMode": "Update", "status": "disabled"},
                {"id": "b2", "importMode": "UpdateIfMatchETag", "etag": "stale"},
                {"id": "b1x", "importMode": "create"},
                {"id": "b3", "importMode": "create"},
                {"id": "gone", "importMode": "Delete"},
            ])),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);
    assert_eq!(r.body["isSuccessful"], false, "{}", r.raw);
    let codes: Vec<(String, String)> = r.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["deviceId"].as_str().unwrap().into(),
                e["errorCode"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        codes,
        [
            ("b2".into(), "PreconditionFailed".into()),
            ("b3".into(), "DeviceAlreadyExists".into()),
            ("gone".into(), "DeviceNotFound".into()),
        ]
    );
    // The successful entries were applied.
    assert_eq!(
        hub.call(Method::GET, "/devices/b1", None).await.body["status"],
        "disabled"
    );
    assert_eq!(
        hub.call(Method::GET, "/devices/b1x", None).await.status,
        200
    );

    let etag = hub.call(Method::GET, "/devices/b2", None).await.body["etag"].clone();
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([
                {"id": "b2", "importMode": "deleteIfMatchETag", "eTag": etag},
                {"id": "b1", "importMode": "DELETE"},
            ])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(hub.call(Method::GET, "/devices/b2", None).await.status, 404);

    // Whole-request rejections apply nothing.
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("m{i}"), "importMode": "create"}))
        .collect();
    let r = hub
        .call(Method::POST, "/devices", Some(Value::Array(many)))
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (413, "TooManyDevices"));
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([
                {"id": "dup", "importMode": "create"},
                {"id": "dup", "importMode": "create"},
            ])),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "DeviceDefinedMultipleTimes")
    );
    let r = hub.call(Method::POST, "/devices", Some(json!([]))).await;
    assert_eq!(r.status, 400);
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([{"id": "a/b", "importMode": "create"}])),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        hub.call(Method::GET, "/devices/dup", None).await.status,
        404
    );
    assert_eq!(hub.call(Method::GET, "/devices/m0", None).await.status, 404);
}

#[tokio::test]
async fn statistics_and_purge() {
    let hub = Hub::start().await;
    hub.create("a").await;
    hub.call(
        Method::PUT,
        "/devices/b",
        Some(json!({"status": "disabled"})),
    )
    .await;
    hub.emu.connect_device("a").unwrap();
    let r = hub.call(Method::GET, "/statistics/devices", None).await;
    assert_eq!(
        r.body,
        json!({"totalDeviceCount": 2, "enabledDeviceCount": 1, "disabledDeviceCount": 1})
    );
    let r = hub.call(Method::GET, "/statistics/service", None).await;
    assert_eq!(r.body, json!({"connectedDeviceCount": 1}));
    let r = hub.call(Method::DELETE, "/devices/a/commands", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, json!({"deviceId": "a", "totalMessagesPurged": 0}));
    let r = hub.call(Method::DELETE, "/devices/zz/commands", None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn malformed_requests_get_the_service_errors() {
    let hub = Hub::start().await;
    let token = hub.token("iothubowner").await;
    let auth = [("authorization", token.as_str())];
    let put = |body: &'static str| {
        hub.http
            .put(hub.url("/devices/x"))
            .header("authorization", token.as_str())
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let r = put("{not json").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["iothub-errorcode"], "IotHubFormatError");
    let r = put("").await.unwrap();
    assert_eq!(r.status(), 400);
    let r = put("[1,2]").await.unwrap();
    assert_eq!(r.status(), 400);
    let big = format!(
        "{{\"deviceId\":\"x\",\"pad\":\"{}\"}}",
        "x".repeat(600 * 1024)
    );
    let r = hub
        .http
        .put(hub.url("/devices/x"))
        .header("authorization", token.as_str())
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let base = hub.emu.base_url();
    let r = hub
        .raw(Method::GET, &format!("{base}/devices/x"), None, &auth)
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "InvalidProtocolVersion")
    );
    let r = hub
        .raw(
            Method::GET,
            &format!("{base}/devices/x?api-version=1999-01-01"),
            None,
            &auth,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = hub.call(Method::GET, "/nowhere", None).await;
    assert_eq!(r.status, 404);
    let r = hub.call(Method::POST, "/devices/x", Some(json!({}))).await;
    assert_eq!(r.status, 405);
    // The emulator still answers after all that.
    hub.create("x").await;
}
