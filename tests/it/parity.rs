//! Wire parity with the reference: the same calls, with the same inputs, through the
//! official Python `IoTHubRegistryManager` (`tests/parity/python_ops.py`) and through
//! `iothub-registry`, each against a fresh emulator; then the two request logs are compared
//! request by request: method, raw path, query, `If-Match` and the `x-ms-*` headers, and the
//! JSON body with key order ignored.
//!
//! Differences we intend are in [`NOT_COMPARED`], each with its reason. Anything else fails.
//! Locally a missing Python with `azure-iot-hub` skips with a message; with `CI=true` it
//! fails.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use iothub_emulator::{C2dMessage, Emulator, MethodResponse, RequestLogEntry};
use iothub_registry::models::{
    AuthenticationMechanism, AuthenticationType, CloudToDeviceMethod, DeviceStatus,
    ExportImportDevice, ImportMode, SymmetricKey, Twin,
};
use iothub_registry::{DeviceOptions, IfMatch, RegistryManager, SasKeys, X509Thumbprints};
use iothub_test_support::emulator::registry;
use iothub_test_support::skip::skip;
use iothub_test_support::{loopback, sdk};
use serde_json::{Value, json};

const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

/// Headers not compared, each an intended difference with its reason. Every other header
/// (`x-ms-*`, `if-match`, `accept`, …) must match the reference exactly.
const NOT_COMPARED: &[(&str, &str)] = &[
    (
        "authorization",
        "we cache a SAS token for its lifetime instead of minting one per request, so `se` \
         differs (and `sr` names another emulator's port); the signature is checked by the \
         emulator on every request",
    ),
    (
        "user-agent",
        "ours names iothub-rs; the reference's names python and msrest",
    ),
    (
        "content-type",
        "we send `application/json`; the reference adds `; charset=utf-8`, which JSON does not \
         need (RFC 8259 makes UTF-8 the only encoding)",
    ),
    (
        "content-length",
        "whitespace in the JSON differs; the bodies are compared as JSON",
    ),
    (
        "accept-encoding",
        "requests offers gzip and deflate; we do not ask for compression",
    ),
    (
        "connection",
        "an HTTP/1.1 hop-by-hop header; we speak HTTP/2 when the server offers it",
    ),
    (
        "host",
        "HTTP/1.1 sends Host; HTTP/2 sends :authority instead",
    ),
];

fn twin(value: Value) -> Twin {
    serde_json::from_value(value).unwrap()
}

fn sas_entry(id: &str, mode: ImportMode) -> ExportImportDevice {
    ExportImportDevice {
        id: Some(id.to_owned()),
        import_mode: Some(mode),
        status: Some(DeviceStatus::Enabled),
        authentication: Some(AuthenticationMechanism {
            type_: Some(AuthenticationType::Sas),
            symmetric_key: Some(SymmetricKey {
                primary_key: Some(K1.into()),
                secondary_key: Some(K2.into()),
            }),
            x509_thumbprint: None,
        }),
        ..Default::default()
    }
}

/// The same list as python_ops.py, in the same order; failing calls are part of it.
async fn rust_ops(emu: &Emulator, rm: &RegistryManager) {
    let keys = || SasKeys::new(K1, K2);
    let swapped = || SasKeys::new(K2, K1);
    let thumbs = || X509Thumbprints::new("A".repeat(40), "B".repeat(40));
    let none = DeviceOptions::new;
    let stale = || IfMatch::try_from("c3RhbGU=").unwrap();
    let twin1 = || IfMatch::try_from("AAAAAAAAAAE=").unwrap();
    let enabled = DeviceStatus::Enabled;

    rm.create_device_with_sas("p-sas", keys(), enabled.clone(), none())
        .await
        .unwrap();
    rm.create_device_with_sas("p-sas", keys(), enabled.clone(), none())
        .await
        .unwrap_err();
    rm.create_device_with_x509("p-x509", thumbs(), enabled.clone(), none())
        .await
        .unwrap();
    rm.create_device_with_certificate_authority(
        "p-ca",
        DeviceStatus::Disabled,
        none().iot_edge(true).status_reason("r"),
    )
    .await
    .unwrap();
    rm.update_device_with_sas(
        "p-sas",
        IfMatch::Any,
        swapped(),
        DeviceStatus::Disabled,
        none().status_reason("maintenance"),
    )
    .await
    .unwrap();
    let d = rm.get_device("p-sas").await.unwrap();
    let etag = IfMatch::from_current(d.etag.as_deref()).unwrap();
    rm.update_device_with_sas("p-sas", etag, keys(), enabled.clone(), none())
        .await
        .unwrap();
    rm.update_device_with_sas("p-sas", stale(), keys(), enabled.clone(), none())
        .await
        .unwrap_err();
    let swapped_thumbs = X509Thumbprints::new("B".repeat(40), "A".repeat(40));
    rm.update_device_with_x509(
        "p-x509",
        IfMatch::Any,
        swapped_thumbs,
        enabled.clone(),
        none(),
    )
    .await
    .unwrap();
    rm.update_device_with_certificate_authority("p-ca", IfMatch::Any, enabled.clone(), none())
        .await
        .unwrap();
    rm.get_device("p-missing").await.unwrap_err();
    rm.get_devices(Some(5)).await.unwrap();
    rm.get_devices(None).await.unwrap();
    rm.create_module_with_sas("p-sas", "m-sas", keys(), Some("owner"))
        .await
        .unwrap();
    rm.create_module_with_x509("p-sas", "m-x509", thumbs(), None)
        .await
        .unwrap();
    rm.create_module_with_certificate_authority("p-sas", "m-ca", None)
        .await
        .unwrap();
    let m = rm.get_module("p-sas", "m-sas").await.unwrap();
    let etag = IfMatch::from_current(m.etag.as_deref()).unwrap();
    rm.update_module_with_sas("p-sas", "m-sas", etag, swapped(), Some("other"))
        .await
        .unwrap();
    let swapped_thumbs = X509Thumbprints::new("B".repeat(40), "A".repeat(40));
    rm.update_module_with_x509("p-sas", "m-x509", IfMatch::Any, swapped_thumbs, None)
        .await
        .unwrap();
    rm.get_modules("p-sas").await.unwrap();
    rm.get_twin("p-sas").await.unwrap();
    rm.update_twin(
        "p-sas",
        twin(json!({"tags": {"a": 1}, "properties": {"desired": {"d": 1}}})),
        twin1(),
    )
    .await
    .unwrap();
    rm.update_twin("p-sas", twin(json!({"tags": {"a": 2}})), twin1())
        .await
        .unwrap_err();
    rm.replace_twin(
        "p-sas",
        twin(json!({"tags": {"b": 1}, "properties": {"desired": {"e": 2}}})),
        IfMatch::Any,
    )
    .await
    .unwrap();
    rm.get_module_twin("p-sas", "m-sas").await.unwrap();
    rm.update_module_twin(
        "p-sas",
        "m-sas",
        twin(json!({"properties": {"desired": {"x": 1}}})),
        twin1(),
    )
    .await
    .unwrap();
    rm.replace_module_twin(
        "p-sas",
        "m-sas",
        twin(json!({"tags": {"y": 2}})),
        IfMatch::Any,
    )
    .await
    .unwrap();
    let page = rm
        .query_iot_hub("SELECT * FROM devices", None, Some(2))
        .await
        .unwrap();
    rm.query_iot_hub(
        "SELECT * FROM devices",
        page.continuation_token.as_deref(),
        Some(2),
    )
    .await
    .unwrap();
    rm.query_iot_hub("SELECT COUNT() AS n FROM devices", None, None)
        .await
        .unwrap();
    rm.get_device_registry_statistics().await.unwrap();
    rm.get_service_statistics().await.unwrap();
    let method =
        |payload: Option<Value>, response: Option<i32>, connect: Option<i32>| CloudToDeviceMethod {
            method_name: Some("m".into()),
            payload,
            response_timeout_in_seconds: response,
            connect_timeout_in_seconds: connect,
        };
    rm.invoke_device_method("p-sas", method(None, None, None))
        .await
        .unwrap_err();
    emu.connect_device("p-sas").unwrap();
    emu.set_method_response("p-sas", None, "m", MethodResponse::echo());
    rm.invoke_device_method(
        "p-sas",
        method(Some(json!({"k": [1, 2]})), Some(30), Some(5)),
    )
    .await
    .unwrap();
    emu.set_module_connected("p-sas", "m-sas", true).unwrap();
    emu.set_method_response("p-sas", Some("m-sas"), "m", MethodResponse::echo());
    rm.invoke_device_module_method("p-sas", "m-sas", method(Some(json!("hi")), None, None))
        .await
        .unwrap();
    let r = rm
        .bulk_create_or_update_devices(vec![
            sas_entry("p-b1", ImportMode::Create),
            sas_entry("p-b2", ImportMode::Create),
        ])
        .await
        .unwrap();
    assert_eq!(r.is_successful, Some(true));
    let r = rm
        .bulk_create_or_update_devices(vec![sas_entry("p-b1", ImportMode::Create)])
        .await
        .unwrap();
    assert_eq!(r.is_successful, Some(false));
    rm.bulk_create_or_update_devices(vec![
        sas_entry("p-b1", ImportMode::Delete),
        sas_entry("p-b2", ImportMode::Delete),
    ])
    .await
    .unwrap();
    rm.delete_module("p-sas", "m-x509", IfMatch::Any)
        .await
        .unwrap();
    let m = rm.get_module("p-sas", "m-ca").await.unwrap();
    rm.delete_module(
        "p-sas",
        "m-ca",
        IfMatch::from_current(m.etag.as_deref()).unwrap(),
    )
    .await
    .unwrap();
    rm.delete_device("p-x509", stale()).await.unwrap_err();
    rm.delete_device("p-x509", IfMatch::Any).await.unwrap();
    rm.delete_device("p-missing", IfMatch::Any)
        .await
        .unwrap_err();
    rm.send_c2d_message(
        "p-sas",
        "hello",
        [
            ("messageId", "p-c2d-1"),
            ("correlationId", "c-1"),
            ("contentType", "application/json"),
            ("contentEncoding", "utf-8"),
            ("expiryTimeUtc", "4102444800000"),
            ("iothub-ack", "full"),
            ("color", "blue"),
        ],
    )
    .await
    .unwrap();
    rm.send_c2d_message("p-sas", "plain", BTreeMap::<String, String>::new())
        .await
        .unwrap();
    rm.close().await;
}

/// What is compared of a cloud-to-device message, as the emulator queued it: every AMQP
/// property and application property. A message id the SDK generated is compared by shape.
fn c2d_seen(message: &C2dMessage) -> Value {
    let message_id = match message.message_id.as_deref() {
        Some(id) if uuid_shaped(id) => "<generated uuid>".to_owned(),
        other => format!("{other:?}"),
    };
    json!({
        "device_id": message.device_id,
        "module_id": message.module_id,
        "message_id": message_id,
        "correlation_id": message.correlation_id,
        "user_id": message.user_id,
        "to": message.to,
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "absolute_expiry_time": message.absolute_expiry_time,
        "application_properties": message.application_properties,
        "body": String::from_utf8_lossy(&message.body),
    })
}

fn uuid_shaped(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// What is compared of one request.
#[derive(Debug, PartialEq)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: BTreeMap<String, String>,
    body: Option<Value>,
}

/// Identity etags are random per emulator: a quoted one that is not `"*"` or a twin etag
/// (base64 of a 64-bit version, deterministic) is compared as `"<identity etag>"`.
fn normalize_if_match(value: &str) -> String {
    let inner = value.trim_matches('"');
    let twin_etag = inner.len() == 12 && inner.starts_with("AAAAAAAA");
    if inner == "*" || twin_etag || inner == "c3RhbGU=" {
        value.to_owned()
    } else {
        "\"<identity etag>\"".to_owned()
    }
}

fn seen(entry: &RequestLogEntry) -> Seen {
    let headers = entry
        .headers
        .iter()
        .filter(|(name, _)| !NOT_COMPARED.iter().any(|(n, _)| n == name))
        .map(|(name, value)| {
            let value = if name == "if-match" {
                normalize_if_match(value)
            } else {
                value.clone()
            };
            (name.clone(), value)
        })
        .collect();
    Seen {
        method: entry.method.clone(),
        path: entry.path.clone(),
        query: entry.query.clone(),
        headers,
        body: entry.json(),
    }
}

/// Compares two requests; returns the differences that are not allowed.
fn compare(index: usize, python: &Seen, ours: &Seen) -> Vec<String> {
    let mut out = Vec::new();
    let mut differ = |what: String, p: String, o: String| {
        out.push(format!(
            "request {index} ({} {}): {what}: python {p}, ours {o}",
            python.method, python.path
        ));
    };
    if python.method != ours.method {
        differ("method".into(), python.method.clone(), ours.method.clone());
    }
    if python.path != ours.path {
        differ("path".into(), python.path.clone(), ours.path.clone());
    }
    if python.query != ours.query {
        differ("query".into(), python.query.clone(), ours.query.clone());
    }
    let names: std::collections::BTreeSet<&String> =
        python.headers.keys().chain(ours.headers.keys()).collect();
    for name in names {
        let (p, o) = (python.headers.get(name), ours.headers.get(name));
        if p != o {
            differ(format!("header {name}"), format!("{p:?}"), format!("{o:?}"));
        }
    }
    // serde_json's Value compares objects as maps: key order is ignored.
    if python.body != ours.body {
        differ(
            "body".into(),
            python.body.as_ref().map_or("none".into(), Value::to_string),
            ours.body.as_ref().map_or("none".into(), Value::to_string),
        );
    }
    out
}

#[tokio::test]
async fn every_reference_call_sends_what_the_python_sdk_sends() {
    let Some(py) = sdk::python() else {
        return skip(
            "parity::every_reference_call_sends_what_the_python_sdk_sends",
            sdk::NO_PYTHON,
        );
    };
    let dir = tempfile::tempdir().unwrap();
    // The Python SDK dials port 5671 of the hub's host for C2D, whatever the REST port: a
    // loopback address of this test's own keeps that port free of other tests.
    let python_hub = Emulator::builder()
        .bind(SocketAddr::from((loopback::PARITY, 0)))
        .amqp_bind(SocketAddr::from((loopback::PARITY, 5671)))
        .host_name(loopback::PARITY.to_string())
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("parity/python_ops.py");
    let ca = python_hub.ca_certificate_path().unwrap().to_owned();
    let cs = python_hub.connection_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(script)
            .env("IOTHUB_CONNECTION_STRING", cs)
            .env("REQUESTS_CA_BUNDLE", ca)
            .env_remove("CURL_CA_BUNDLE")
            .env("NO_PROXY", "*")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ours_hub = Emulator::builder().start().await.unwrap();
    let rm = registry(&ours_hub);
    rust_ops(&ours_hub, &rm).await;

    let python: Vec<Seen> = python_hub.request_log().iter().map(seen).collect();
    let ours: Vec<Seen> = ours_hub.request_log().iter().map(seen).collect();
    let calls: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("parity: "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the script printed its call count");
    // Python sends each call once: no retries happened against a healthy emulator.
    assert_eq!(python.len(), calls, "python requests vs calls");
    assert_eq!(ours.len(), python.len(), "number of requests");
    let differences: Vec<String> = python
        .iter()
        .zip(&ours)
        .enumerate()
        .flat_map(|(i, (p, o))| compare(i, p, o))
        .collect();
    assert!(
        differences.is_empty(),
        "{} unexpected differences:\n{}",
        differences.len(),
        differences.join("\n")
    );

    let python_c2d: Vec<Value> = python_hub.c2d_messages().iter().map(c2d_seen).collect();
    let ours_c2d: Vec<Value> = ours_hub.c2d_messages().iter().map(c2d_seen).collect();
    assert_eq!(python_c2d.len(), 2, "{python_c2d:#?}");
    assert_eq!(
        python_c2d, ours_c2d,
        "cloud-to-device messages differ (python, then ours)"
    );
    println!(
        "parity: {} requests and {} cloud-to-device messages compared, {} headers excluded \
         with a reason",
        ours.len(),
        ours_c2d.len(),
        NOT_COMPARED.len()
    );
}
