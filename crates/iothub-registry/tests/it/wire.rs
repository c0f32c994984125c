//! Every public method of `RegistryManager` against wiremock: the exact request (method, raw
//! path with encoded ids, query, If-Match and x-ms-* headers, JSON body) is pinned in an insta
//! snapshot per case (`snapshots/it__wire__<case>.snap`), and a realistic response decodes.
//!
//! The snapshots were compared, when accepted, with what the official Python SDK
//! (`azure-iot-hub` 2.7.0, `IoTHubRegistryManager`) sends: device bodies carry `deviceId`,
//! `status`, `authentication` and `capabilities.iotEdge` always, the options only when given;
//! module bodies `moduleId`, `deviceId`, `managedBy` when given and `authentication`; If-Match
//! is `"*"` or the quoted etag; a missing method payload is `""`.
//!
//! Configurations and HTTP feedback are compared with `IoTHubConfigurationManager` and
//! `IoTHubHttpRuntimeManager`, with one deliberate difference: Python sends a configuration's
//! `If-Match` unquoted, which the service takes as no precondition at all (an update then
//! answers 409, azure-iot-sdk-python#983); we quote it as for every other write.
//!
//! Jobs are compared with `IoTHubJobManager` (import/export bodies carry what was set, the
//! container URIs whole) and with the Node and C# job clients for the job query: Python's
//! generated `query_scheduled_jobs` sends neither `x-ms-continuation` nor
//! `x-ms-max-item-count`, and so cannot page; those two (and the service's array answer with
//! `x-ms-continuation`) are what the Node `JobClient.createQuery` sends and reads.

use futures::TryStreamExt;
use futures::future::BoxFuture;
use iothub_registry::feedback::LockToken;
use iothub_registry::models::{
    CloudToDeviceMethod, Configuration, ConfigurationQueriesTestInput, DeviceStatus,
    ExportImportDevice, ImportMode, JobStatus, JobType, StorageAuthenticationType, Twin,
};
use iothub_registry::{
    ConfigurationBuilder, DeviceMethod, DeviceOptions, ETag, IfMatch, ImportExportJob, JsonPatch,
    RegistryManager, SasKeys, ScheduledJob, TwinPatch, X509Thumbprints,
};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::{case, fast_retries, record, registry_builder};
use serde::Serialize;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const PRIMARY: &str = "cHJpbWFyeS1rZXktb2YtdGhlLWRldmljZS0zMmJ5dGU=";
const SECONDARY: &str = "c2Vjb25kYXJ5LWtleS1vZi10aGUtZGV2aWNlLTMyYnk=";
const SHA1: &str = "0123456789ABCDEF0123456789ABCDEF01234567";
const SHA256: &str = "00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF";

/// Every special character the service allows in an id.
const DEVICE: &str = "d-:.+%_#*?!(),=@;$'";
const DEVICE_RAW: &str = "d-%3A.%2B%25_%23%2A%3F%21%28%29%2C%3D%40%3B%24%27";
const MODULE: &str = "$edgeAgent";
const MODULE_RAW: &str = "%24edgeAgent";

fn manager(server: &MockServer) -> RegistryManager {
    let address = server.address();
    registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(fast_retries())
        .build()
        .unwrap()
}

type Outcome = iothub_registry::Result<Value>;
type Call = for<'a> fn(&'a RegistryManager) -> BoxFuture<'a, Outcome>;

fn json_of<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap()
}

macro_rules! call {
    (|$r:ident| $e:expr) => {{
        fn f<'a>($r: &'a RegistryManager) -> BoxFuture<'a, Outcome> {
            Box::pin(async move { $e.await.map(json_of) })
        }
        f as Call
    }};
}

fn device_body() -> Value {
    json!({
        "deviceId": DEVICE, "generationId": "638", "etag": "MTIzNDU2", "connectionState": "Disconnected",
        "status": "enabled", "statusReason": null, "connectionStateUpdatedTime": "0001-01-01T00:00:00",
        "statusUpdatedTime": "0001-01-01T00:00:00", "lastActivityTime": "0001-01-01T00:00:00",
        "cloudToDeviceMessageCount": 0,
        "authentication": { "type": "sas", "symmetricKey": { "primaryKey": PRIMARY, "secondaryKey": SECONDARY },
                            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null } },
        "capabilities": { "iotEdge": false }
    })
}

fn module_body() -> Value {
    json!({
        "moduleId": MODULE, "managedBy": "IotEdge", "deviceId": DEVICE, "generationId": "1", "etag": "MQ==",
        "connectionState": "Disconnected", "connectionStateUpdatedTime": "0001-01-01T00:00:00",
        "lastActivityTime": "0001-01-01T00:00:00", "cloudToDeviceMessageCount": 0,
        "authentication": { "type": "certificateAuthority" }
    })
}

fn twin_body() -> Value {
    json!({
        "deviceId": DEVICE, "etag": "AAAAAAAAAAE=", "version": 3, "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00", "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00", "cloudToDeviceMessageCount": 0, "authenticationType": "sas",
        "tags": { "floor": 3 },
        "properties": { "desired": { "interval": 30, "$version": 2 }, "reported": { "$version": 1 } }
    })
}

fn patch() -> Twin {
    serde_json::from_value(json!({
        "tags": { "floor": 3 },
        "properties": { "desired": { "interval": 30, "removed": null } }
    }))
    .unwrap()
}

fn etag(value: &str) -> IfMatch {
    IfMatch::from(ETag::new(value).unwrap())
}

fn bulk_entries() -> Vec<ExportImportDevice> {
    vec![
        ExportImportDevice {
            id: Some("bulk-1".into()),
            import_mode: Some(ImportMode::Create),
            status: Some(DeviceStatus::Enabled),
            ..Default::default()
        },
        ExportImportDevice {
            id: Some("bulk-2".into()),
            import_mode: Some(ImportMode::DeleteIfMatchETag),
            e_tag: Some("MQ==".into()),
            ..Default::default()
        },
    ]
}

/// The answer headers of a digital twin update.
const DIGITAL_TWIN_UPDATED: &[(&str, &str)] = &[
    ("etag", "\"AAAAAAAAAAM=\""),
    ("location", "https://hub.azure-devices.net/digitaltwins/d"),
];

fn digital_twin_body() -> Value {
    json!({
        "$dtId": DEVICE,
        "$metadata": { "$model": "dtmi:com:example:TemperatureController;1",
                       "serialNumber": { "lastUpdateTime": "2026-01-01T00:00:00Z" } },
        "serialNumber": "SN-1",
        "thermostat1": { "__t": "c", "$metadata": { "targetTemperature": {
            "desiredValue": 21.5, "desiredVersion": 2, "ackVersion": 2, "ackCode": 200,
            "ackDescription": "ok", "lastUpdateTime": "2026-01-01T00:00:00Z" } } },
    })
}

fn updated(update: iothub_registry::DigitalTwinUpdate) -> Value {
    json!({ "etag": update.etag.map(ETag::into_string), "location": update.location })
}

fn command(result: iothub_registry::DigitalTwinCommandResult) -> Value {
    json!({ "status": result.status, "request_id": result.request_id, "payload": result.payload })
}

fn reboot(payload: Option<Value>) -> CloudToDeviceMethod {
    CloudToDeviceMethod {
        method_name: Some("reboot".into()),
        payload,
        response_timeout_in_seconds: Some(30),
        connect_timeout_in_seconds: None,
    }
}

/// A configuration id with characters a path must encode.
const CONFIG: &str = "fw-1.4+rc#2";
const CONFIG_RAW: &str = "fw-1.4%2Brc%232";
const LOCK: &str = "5f8a2c1e-0c3b-4b59-9d43-3b0c6d1f2a7e";

/// What the Python SDK's `IoTHubConfigurationManager` sends for a device configuration.
fn configuration() -> Configuration {
    ConfigurationBuilder::new(CONFIG)
        .target_condition("tags.kind = 'thermostat'")
        .priority(10)
        .label("team", "facilities")
        .device_content("properties.desired.firmware", json!({ "version": "1.4.2" }))
        .metric(
            "updated",
            "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '1.4.2'",
        )
        .build()
        .unwrap()
}

fn edge_content() -> iothub_registry::models::ConfigurationContent {
    ConfigurationBuilder::new("unused")
        .edge_agent(json!({ "schemaVersion": "1.1", "runtime": { "type": "docker", "settings": {} },
                            "systemModules": {}, "modules": {} }))
        .edge_hub(json!({ "schemaVersion": "1.1", "routes": { "all": "FROM /messages/* INTO $upstream" } }))
        .build_content()
        .unwrap()
}

fn configuration_body() -> Value {
    json!({
        "id": CONFIG, "schemaVersion": "1.0", "labels": { "team": "facilities" },
        "content": { "deviceContent": { "properties.desired.firmware": { "version": "1.4.2" } },
                     "moduleContent": {}, "modulesContent": {} },
        "targetCondition": "tags.kind = 'thermostat'", "createdTimeUtc": "2026-12-07T23:00:00.000Z",
        "lastUpdatedTimeUtc": "2026-12-07T23:00:00.000Z", "priority": 10,
        "systemMetrics": { "results": { "targetedCount": 2, "appliedCount": 1 },
                           "queries": { "targetedCount": "select deviceId from devices where tags.kind = 'thermostat'",
                                        "appliedCount": "select deviceId from devices where tags.kind = 'thermostat' and properties.desired.firmware.version = '1.4.2'" } },
        "metrics": { "results": { "updated": 1 },
                     "queries": { "updated": "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '1.4.2'" } },
        "etag": "MQ=="
    })
}

fn feedback_body() -> Value {
    json!([
        { "originalMessageId": "ok-1", "deviceId": DEVICE, "deviceGenerationId": "638", "statusCode": "Success",
          "description": "Success", "enqueuedTimeUtc": "2026-12-07T23:00:01.5Z" },
        { "originalMessageId": "no-2", "deviceId": DEVICE, "deviceGenerationId": "638", "statusCode": "Rejected",
          "description": "Message rejected", "enqueuedTimeUtc": "2026-12-07T23:00:02Z" }
    ])
}

fn lock() -> LockToken {
    LockToken::new(LOCK).unwrap()
}

/// A job id with characters a path must encode.
const JOB: &str = "fw+1#2";
const JOB_RAW: &str = "fw%2B1%232";
/// A container SAS URL as a storage account gives one (the signature is made up).
const CONTAINER: &str = "https://acct.blob.core.windows.net/fleet?sv=2025-11-05&se=2026-12-08T23%3A00%3A00Z&sr=c&sp=racwdl&sig=bm90LWEtcmVhbC1zaWduYXR1cmU%3D";

fn export_job_body() -> Value {
    json!({
        "jobId": "9b3c7f1e-6c2d-4c84-9a61-6a1f0e2b7d55", "startTimeUtc": "2026-12-07T23:00:00Z",
        "type": "export", "status": "enqueued", "progress": 0, "outputBlobContainerUri": CONTAINER,
        "excludeKeysInExport": true, "storageAuthenticationType": "keyBased", "includeConfigurations": false,
        "outputBlobName": "devices.txt"
    })
}

/// An import with every option the request has.
fn import_job() -> ImportExportJob {
    ImportExportJob::import(CONTAINER, CONTAINER)
        .input_blob_name("new/devices.txt")
        .include_configurations(true)
        .storage_authentication_type(StorageAuthenticationType::IdentityBased)
        .identity("/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/hub")
}

/// 2027-01-15T08:00:00Z.
fn job_start() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000)
}

fn twin_job_body() -> Value {
    json!({
        "jobId": JOB, "queryCondition": "tags.site = 'oslo'", "createdTime": "2026-12-07T23:00:00Z",
        "startTime": "2027-01-15T08:00:00Z", "maxExecutionTimeInSeconds": 600, "type": "scheduleUpdateTwin",
        "updateTwin": { "etag": "*", "tags": { "floor": 3 }, "properties": { "desired": { "interval": 30 } } },
        "status": "queued", "deviceJobStatistics": { "deviceCount": 0, "failedCount": 0, "succeededCount": 0,
                                                      "runningCount": 0, "pendingCount": 0 }
    })
}

fn method_job_body() -> Value {
    json!({
        "jobId": JOB, "queryCondition": "deviceId IN ['a', 'b']", "createdTime": "2026-12-07T23:00:00Z",
        "startTime": "2027-01-15T08:00:00Z", "endTime": "2027-01-15T08:00:04Z", "maxExecutionTimeInSeconds": 3600,
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": { "methodName": "reboot", "payload": { "delay": 5 },
                                 "responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": 10 },
        "status": "completed", "deviceJobStatistics": { "deviceCount": 2, "failedCount": 1, "succeededCount": 1,
                                                         "runningCount": 0, "pendingCount": 0 }
    })
}

type Case = iothub_test_support::wire::Case<Call>;

fn cases() -> Vec<Case> {
    let d = DEVICE_RAW;
    let m = MODULE_RAW;
    let dev = format!("/devices/{d}");
    let module = format!("/devices/{d}/modules/{m}");
    vec![
        case(
            "create_device_with_sas",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.create_device_with_sas(
                DEVICE,
                SasKeys::new(PRIMARY, SECONDARY),
                DeviceStatus::Enabled,
                DeviceOptions::new()
            )),
        ),
        case(
            "create_device_with_sas (generated keys, all options)",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.create_device_with_sas(
                DEVICE,
                SasKeys::generated(),
                DeviceStatus::Disabled,
                DeviceOptions::new()
                    .iot_edge(true)
                    .status_reason("maintenance")
                    .device_scope("ms-azure-iot-edge://parent-1")
                    .parent_scopes(["ms-azure-iot-edge://parent-1"])
            )),
        ),
        case(
            "create_device_with_x509",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.create_device_with_x509(
                DEVICE,
                X509Thumbprints::new(SHA1, SHA256),
                DeviceStatus::Enabled,
                DeviceOptions::new()
            )),
        ),
        case(
            "create_device_with_certificate_authority",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.create_device_with_certificate_authority(
                DEVICE,
                DeviceStatus::Enabled,
                DeviceOptions::new().iot_edge(true)
            )),
        ),
        case(
            "update_device_with_sas",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.update_device_with_sas(
                DEVICE,
                etag("MTIzNDU2"),
                SasKeys::new(PRIMARY, SECONDARY),
                DeviceStatus::Enabled,
                DeviceOptions::new()
            )),
        ),
        case(
            "update_device_with_x509",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.update_device_with_x509(
                DEVICE,
                IfMatch::Any,
                X509Thumbprints::new(SHA1, SHA1),
                DeviceStatus::Disabled,
                DeviceOptions::new().status_reason("lost")
            )),
        ),
        case(
            "update_device_with_certificate_authority",
            "PUT",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.update_device_with_certificate_authority(
                DEVICE,
                etag("\"MTIzNDU2\""),
                DeviceStatus::Enabled,
                DeviceOptions::new()
            )),
        ),
        case(
            "get_device",
            "GET",
            &dev,
            200,
            Some(device_body()),
            call!(|r| r.get_device(DEVICE)),
        ),
        case(
            "get_devices",
            "GET",
            "/devices",
            200,
            Some(json!([device_body()])),
            call!(|r| r.get_devices(Some(1000))),
        ),
        case(
            "get_devices (service default)",
            "GET",
            "/devices",
            200,
            Some(json!([])),
            call!(|r| r.get_devices(None)),
        ),
        case(
            "delete_device",
            "DELETE",
            &dev,
            204,
            None,
            call!(|r| r.delete_device(DEVICE, IfMatch::Any)),
        ),
        case(
            "delete_device (etag)",
            "DELETE",
            &dev,
            204,
            None,
            call!(|r| r.delete_device(DEVICE, etag("MTIzNDU2"))),
        ),
        case(
            "create_module_with_sas",
            "PUT",
            &module,
            200,
            Some(module_body()),
            call!(|r| r.create_module_with_sas(
                DEVICE,
                MODULE,
                SasKeys::new(PRIMARY, SECONDARY),
                None
            )),
        ),
        case(
            "create_module_with_x509",
            "PUT",
            &module,
            201,
            Some(module_body()),
            call!(|r| r.create_module_with_x509(
                DEVICE,
                MODULE,
                X509Thumbprints::new(SHA256, SHA256),
                Some("IotEdge")
            )),
        ),
        case(
            "create_module_with_certificate_authority",
            "PUT",
            &module,
            200,
            Some(module_body()),
            call!(|r| r.create_module_with_certificate_authority(DEVICE, MODULE, Some("IotEdge"))),
        ),
        case(
            "update_module_with_sas",
            "PUT",
            &module,
            200,
            Some(module_body()),
            call!(|r| r.update_module_with_sas(
                DEVICE,
                MODULE,
                etag("MQ=="),
                SasKeys::new(PRIMARY, SECONDARY),
                None
            )),
        ),
        case(
            "update_module_with_x509",
            "PUT",
            &module,
            200,
            Some(module_body()),
            call!(|r| r.update_module_with_x509(
                DEVICE,
                MODULE,
                IfMatch::Any,
                X509Thumbprints::new(SHA1, SHA1),
                Some("ops")
            )),
        ),
        case(
            "update_module_with_certificate_authority",
            "PUT",
            &module,
            200,
            Some(module_body()),
            call!(|r| r.update_module_with_certificate_authority(
                DEVICE,
                MODULE,
                etag("MQ=="),
                Some("IotEdge")
            )),
        ),
        case(
            "get_module",
            "GET",
            &module,
            200,
            Some(module_body()),
            call!(|r| r.get_module(DEVICE, MODULE)),
        ),
        case(
            "get_modules",
            "GET",
            format!("{dev}/modules"),
            200,
            Some(json!([module_body()])),
            call!(|r| r.get_modules(DEVICE)),
        ),
        case(
            "delete_module",
            "DELETE",
            &module,
            204,
            None,
            call!(|r| r.delete_module(DEVICE, MODULE, IfMatch::Any)),
        ),
        case(
            "get_twin",
            "GET",
            format!("/twins/{d}"),
            200,
            Some(twin_body()),
            call!(|r| r.get_twin(DEVICE)),
        ),
        case(
            "update_twin",
            "PATCH",
            format!("/twins/{d}"),
            200,
            Some(twin_body()),
            call!(|r| r.update_twin(DEVICE, patch(), etag("AAAAAAAAAAE="))),
        ),
        case(
            "replace_twin",
            "PUT",
            format!("/twins/{d}"),
            200,
            Some(twin_body()),
            call!(|r| r.replace_twin(DEVICE, patch(), IfMatch::Any)),
        ),
        case(
            "get_module_twin",
            "GET",
            format!("/twins/{d}/modules/{m}"),
            200,
            Some(twin_body()),
            call!(|r| r.get_module_twin(DEVICE, MODULE)),
        ),
        case(
            "update_module_twin",
            "PATCH",
            format!("/twins/{d}/modules/{m}"),
            200,
            Some(twin_body()),
            call!(|r| r.update_module_twin(DEVICE, MODULE, patch(), IfMatch::Any)),
        ),
        case(
            "replace_module_twin",
            "PUT",
            format!("/twins/{d}/modules/{m}"),
            200,
            Some(twin_body()),
            call!(|r| r.replace_module_twin(DEVICE, MODULE, patch(), etag("AAAAAAAAAAE="))),
        ),
        Case {
            response_headers: &[
                ("x-ms-continuation", "next-page"),
                ("x-ms-item-type", "twin"),
            ],
            ..case(
                "query_iot_hub",
                "POST",
                "/devices/query",
                200,
                Some(json!([twin_body(), { "deviceId": "x", "n": 1 }])),
                call!(|r| async {
                    r.query_iot_hub("SELECT * FROM devices", Some("this-page"), Some(100)).await
                    .map(|p| json!({ "items": p.items, "continuation_token": p.continuation_token, "item_type": p.item_type }))
                }),
            )
        },
        case(
            "query_iot_hub (first page, no options)",
            "POST",
            "/devices/query",
            200,
            Some(json!([{ "n": 12 }])),
            call!(|r| async {
                r.query_iot_hub("SELECT COUNT() AS n FROM devices", None, None).await
                .map(|p| json!({ "items": p.items, "continuation_token": p.continuation_token, "item_type": p.item_type }))
            }),
        ),
        case(
            "get_device_registry_statistics",
            "GET",
            "/statistics/devices",
            200,
            Some(
                json!({ "totalDeviceCount": 3, "enabledDeviceCount": 2, "disabledDeviceCount": 1 }),
            ),
            call!(|r| r.get_device_registry_statistics()),
        ),
        case(
            "get_service_statistics",
            "GET",
            "/statistics/service",
            200,
            Some(json!({ "connectedDeviceCount": 1 })),
            call!(|r| r.get_service_statistics()),
        ),
        case(
            "bulk_create_or_update_devices",
            "POST",
            "/devices",
            200,
            Some(json!({ "isSuccessful": true, "errors": [], "warnings": [] })),
            call!(|r| r.bulk_create_or_update_devices(bulk_entries())),
        ),
        case(
            "bulk_create_or_update_devices (400 is a result)",
            "POST",
            "/devices",
            400,
            Some(
                json!({ "isSuccessful": false, "errors": [{ "deviceId": "bulk-1", "errorCode": "DeviceAlreadyExists",
                "errorStatus": "A device with ID 'bulk-1' is already registered.", "operation": "create" }], "warnings": [] }),
            ),
            call!(|r| r.bulk_create_or_update_devices(bulk_entries())),
        ),
        case(
            "invoke_device_method",
            "POST",
            format!("/twins/{d}/methods"),
            200,
            Some(json!({ "status": 200, "payload": { "ok": true } })),
            call!(|r| r.invoke_device_method(DEVICE, reboot(Some(json!({ "delay": 5 }))))),
        ),
        case(
            "invoke_device_module_method (no payload)",
            "POST",
            format!("/twins/{d}/modules/{m}/methods"),
            200,
            Some(json!({ "status": 404, "payload": null })),
            call!(|r| r.invoke_device_module_method(DEVICE, MODULE, reboot(None))),
        ),
        case(
            "purge_c2d_queue",
            "DELETE",
            format!("{dev}/commands"),
            200,
            Some(json!({ "totalMessagesPurged": 2, "deviceId": DEVICE })),
            call!(|r| r.purge_c2d_queue(DEVICE)),
        ),
        case(
            "create_configuration",
            "PUT",
            format!("/configurations/{CONFIG_RAW}"),
            200,
            Some(configuration_body()),
            call!(|r| r.configurations().create_configuration(configuration())),
        ),
        case(
            "update_configuration",
            "PUT",
            format!("/configurations/{CONFIG_RAW}"),
            200,
            Some(configuration_body()),
            call!(|r| r
                .configurations()
                .update_configuration(configuration(), etag("MQ=="))),
        ),
        case(
            "update_configuration (forced)",
            "PUT",
            format!("/configurations/{CONFIG_RAW}"),
            200,
            Some(configuration_body()),
            call!(|r| r
                .configurations()
                .update_configuration(configuration(), IfMatch::Any)),
        ),
        case(
            "get_configuration",
            "GET",
            format!("/configurations/{CONFIG_RAW}"),
            200,
            Some(configuration_body()),
            call!(|r| r.configurations().get_configuration(CONFIG)),
        ),
        case(
            "get_configurations",
            "GET",
            "/configurations",
            200,
            Some(json!([configuration_body()])),
            call!(|r| r.configurations().get_configurations(Some(20))),
        ),
        case(
            "get_configurations (service default)",
            "GET",
            "/configurations",
            200,
            Some(json!([])),
            call!(|r| r.configurations().get_configurations(None)),
        ),
        case(
            "delete_configuration",
            "DELETE",
            format!("/configurations/{CONFIG_RAW}"),
            204,
            None,
            call!(|r| r
                .configurations()
                .delete_configuration(CONFIG, etag("MQ=="))),
        ),
        case(
            "delete_configuration (forced)",
            "DELETE",
            format!("/configurations/{CONFIG_RAW}"),
            204,
            None,
            call!(|r| r
                .configurations()
                .delete_configuration(CONFIG, IfMatch::Any)),
        ),
        case(
            "test_configuration_queries",
            "POST",
            "/configurations/testQueries",
            200,
            Some(
                json!({ "targetConditionError": "", "customMetricQueryErrors": { "broken": "Syntax error at 'FORM'" } }),
            ),
            call!(|r| r.configurations().test_configuration_queries(
                ConfigurationQueriesTestInput {
                    target_condition: Some("tags.kind = 'thermostat'".into()),
                    custom_metric_queries: [
                        (
                            "updated".to_owned(),
                            "SELECT deviceId FROM devices".to_owned()
                        ),
                        (
                            "broken".to_owned(),
                            "SELECT deviceId FORM devices".to_owned()
                        ),
                    ]
                    .into(),
                }
            )),
        ),
        case(
            "apply_configuration_on_edge_device",
            "POST",
            format!("{dev}/applyConfigurationContent"),
            204,
            None,
            call!(|r| r
                .configurations()
                .apply_configuration_on_edge_device(DEVICE, edge_content())),
        ),
        Case {
            response_headers: &[
                ("etag", "\"5f8a2c1e-0c3b-4b59-9d43-3b0c6d1f2a7e\""),
                (
                    "content-type",
                    "application/vnd.microsoft.iothub.feedback.json",
                ),
            ],
            ..case(
                "receive_feedback_notification",
                "GET",
                "/messages/serviceBound/feedback",
                200,
                Some(feedback_body()),
                call!(|r| async {
                    r.http_runtime().receive_feedback_notification().await.map(|batch| {
                        batch.map(|b| {
                            let records: Vec<Value> = b.records.iter().map(|r| json!({
                                "original_message_id": r.original_message_id, "device_id": r.device_id,
                                "device_generation_id": r.device_generation_id, "status": r.status.to_string(),
                                "description": r.description, "enqueued_time_utc": r.enqueued_time_utc,
                            })).collect();
                            json!({ "records": records, "lock_token": b.lock_token.as_str() })
                        })
                    })
                }),
            )
        },
        case(
            "receive_feedback_notification (nothing)",
            "GET",
            "/messages/serviceBound/feedback",
            204,
            None,
            call!(|r| async {
                r.http_runtime()
                    .receive_feedback_notification()
                    .await
                    .map(|batch| batch.map(|b| b.lock_token.to_string()))
            }),
        ),
        case(
            "complete_feedback_notification",
            "DELETE",
            format!("/messages/serviceBound/feedback/{LOCK}"),
            204,
            None,
            call!(|r| r.http_runtime().complete_feedback_notification(&lock())),
        ),
        case(
            "abandon_feedback_notification",
            "POST",
            format!("/messages/serviceBound/feedback/{LOCK}/abandon"),
            204,
            None,
            call!(|r| r.http_runtime().abandon_feedback_notification(&lock())),
        ),
        case(
            "create_import_export_job (export)",
            "POST",
            "/jobs/create",
            200,
            Some(export_job_body()),
            call!(|r| r.jobs().create_import_export_job(
                ImportExportJob::export(CONTAINER, true).output_blob_name("devices.txt")
            )),
        ),
        case(
            "create_import_export_job (import)",
            "POST",
            "/jobs/create",
            200,
            Some(
                json!({ "jobId": "1d0c", "type": "import", "status": "enqueued", "inputBlobContainerUri": CONTAINER,
                         "outputBlobContainerUri": CONTAINER, "storageAuthenticationType": "identityBased" }),
            ),
            call!(|r| r.jobs().create_import_export_job(import_job())),
        ),
        case(
            "get_import_export_job",
            "GET",
            format!("/jobs/{JOB_RAW}"),
            200,
            Some(export_job_body()),
            call!(|r| r.jobs().get_import_export_job(JOB)),
        ),
        case(
            "get_import_export_jobs",
            "GET",
            "/jobs",
            200,
            Some(json!([export_job_body()])),
            call!(|r| r.jobs().get_import_export_jobs()),
        ),
        case(
            "cancel_import_export_job",
            "DELETE",
            format!("/jobs/{JOB_RAW}"),
            204,
            None,
            call!(|r| r.jobs().cancel_import_export_job(JOB)),
        ),
        case(
            "create_scheduled_job (twin update)",
            "PUT",
            format!("/jobs/v2/{JOB_RAW}"),
            200,
            Some(twin_job_body()),
            call!(|r| r.jobs().create_scheduled_job(
                JOB,
                ScheduledJob::twin_update(
                    "tags.site = 'oslo'",
                    TwinPatch::new().tag("floor", 3).desired("interval", 30)
                )
                .start_time(job_start())
                .max_execution_time(std::time::Duration::from_secs(600))
            )),
        ),
        case(
            "create_scheduled_job (device method)",
            "PUT",
            format!("/jobs/v2/{JOB_RAW}"),
            200,
            Some(method_job_body()),
            call!(|r| r.jobs().create_scheduled_job(
                JOB,
                ScheduledJob::device_method(
                    "deviceId IN ['a', 'b']",
                    DeviceMethod::new("reboot")
                        .payload(json!({ "delay": 5 }))
                        .connect_timeout(std::time::Duration::from_secs(10))
                )
                .start_time(job_start())
            )),
        ),
        case(
            "get_scheduled_job",
            "GET",
            format!("/jobs/v2/{JOB_RAW}"),
            200,
            Some(method_job_body()),
            call!(|r| r.jobs().get_scheduled_job(JOB)),
        ),
        case(
            "cancel_scheduled_job",
            "POST",
            format!("/jobs/v2/{JOB_RAW}/cancel"),
            200,
            Some(json!({ "jobId": JOB, "type": "scheduleUpdateTwin", "status": "cancelled" })),
            call!(|r| r.jobs().cancel_scheduled_job(JOB)),
        ),
        Case {
            response_headers: &[
                ("x-ms-continuation", "eyJwYWdlIjoyfQ=="),
                ("x-ms-item-type", "JobResponse"),
            ],
            ..case(
                "query_scheduled_jobs",
                "GET",
                "/jobs/v2/query",
                200,
                Some(json!([twin_job_body()])),
                call!(|r| async {
                    r.jobs()
                        .query_scheduled_jobs(
                            Some(JobType::ScheduleUpdateTwin),
                            Some(JobStatus::Queued),
                            Some("eyJwYWdlIjoxfQ=="),
                            Some(50),
                        )
                        .await
                        .map(|page| json!({ "jobs": page.jobs, "continuation_token": page.continuation_token,
                                            "item_type": page.item_type }))
                }),
            )
        },
        case(
            "query_scheduled_jobs (first page, no options)",
            "GET",
            "/jobs/v2/query",
            200,
            Some(json!([])),
            call!(|r| async {
                r.jobs()
                    .query_scheduled_jobs(None, None, None, None)
                    .await
                    .map(|page| json!({ "jobs": page.jobs, "continuation_token": page.continuation_token }))
            }),
        ),
        Case {
            response_headers: &[("etag", "\"AAAAAAAAAAI=\"")],
            ..case(
                "get_digital_twin",
                "GET",
                format!("/digitaltwins/{d}"),
                200,
                Some(digital_twin_body()),
                call!(|r| async {
                    r.digital_twins().get_digital_twin(DEVICE).await.map(|t| {
                        json!({ "twin": t.twin, "etag": t.etag.as_ref().map(ETag::as_str),
                                "model_id": t.model_id() })
                    })
                }),
            )
        },
        Case {
            response_headers: DIGITAL_TWIN_UPDATED,
            ..case(
                "update_digital_twin",
                "PATCH",
                format!("/digitaltwins/{d}"),
                202,
                None,
                call!(|r| async {
                    let patch = JsonPatch::new()
                        .add("/targetTemperature", 21.5)
                        .replace("/thermostat1/targetTemperature", json!({ "v": [1, null] }))
                        .remove(JsonPatch::pointer(["thermostat1", "a/b~c"]));
                    let if_match = IfMatch::ETag(ETag::new("AAAAAAAAAAI=").unwrap());
                    r.digital_twins()
                        .update_digital_twin(DEVICE, patch, if_match)
                        .await
                        .map(updated)
                }),
            )
        },
        Case {
            response_headers: DIGITAL_TWIN_UPDATED,
            ..case(
                "update_digital_twin (forced)",
                "PATCH",
                format!("/digitaltwins/{d}"),
                202,
                None,
                call!(|r| async {
                    let patch = JsonPatch::new().add("/targetTemperature", 21.5);
                    r.digital_twins()
                        .update_digital_twin(DEVICE, patch, IfMatch::Any)
                        .await
                        .map(updated)
                }),
            )
        },
        Case {
            response_headers: &[
                ("x-ms-command-statuscode", "201"),
                ("x-ms-request-id", "17"),
            ],
            ..case(
                "invoke_command",
                "POST",
                format!("/digitaltwins/{d}/commands/reboot"),
                200,
                Some(json!({ "rebooting": true })),
                call!(|r| async {
                    r.digital_twins()
                        .invoke_command(DEVICE, "reboot", json!({ "delay": 5 }), Some(10), Some(60))
                        .await
                        .map(command)
                }),
            )
        },
        Case {
            response_headers: &[("x-ms-command-statuscode", "200")],
            ..case(
                "invoke_component_command (service timeouts)",
                "POST",
                format!("/digitaltwins/{d}/components/thermostat%2A1/commands/get%20report"),
                200,
                Some(json!("2026-01-01T00:00:00Z")),
                call!(|r| async {
                    r.digital_twins()
                        .invoke_component_command(
                            DEVICE,
                            "thermostat*1",
                            "get report",
                            json!(null),
                            None,
                            None,
                        )
                        .await
                        .map(command)
                }),
            )
        },
    ]
}

/// The parts of a request the wire contract covers: the If-Match, Content-Type and x-ms-*
/// headers.
fn recorded(request: &Request) -> Value {
    record(request, |name| {
        name == "if-match" || name == "content-type" || name.starts_with("x-ms-")
    })
}

/// A case's snapshot name: its words joined by `_`, e.g. `get_devices_service_default`.
fn snapshot_name(case: &str) -> String {
    case.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

#[tokio::test]
async fn every_public_method_on_the_wire() {
    let mut names = std::collections::BTreeSet::new();
    for case in cases() {
        let server = case.server().await;
        let registry = manager(&server);
        let result = (case.call)(&registry)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1, "{}", case.name);
        let auth = requests[0].headers["authorization"].to_str().unwrap();
        assert!(
            auth.starts_with("SharedAccessSignature sr="),
            "{}",
            case.name
        );
        server.verify().await;
        let name = snapshot_name(case.name);
        assert!(names.insert(name.clone()), "two cases named {name}");
        let record =
            json!({ "call": case.name, "request": recorded(&requests[0]), "result": result });
        insta::assert_json_snapshot!(name, record);
    }
}

#[tokio::test]
async fn query_stream_follows_continuations_replaying_query_and_page_size() {
    let server = MockServer::start().await;
    for (token, next, items) in [
        (
            None,
            Some("p2"),
            json!([{ "deviceId": "a" }, { "deviceId": "b" }]),
        ),
        (Some("p2"), Some("p3"), json!([{ "deviceId": "c" }])),
        (Some("p3"), None, json!([{ "deviceId": "d" }])),
    ] {
        let mut response = ResponseTemplate::new(200)
            .set_body_json(items)
            .insert_header("x-ms-item-type", "twin");
        if let Some(next) = next {
            response = response.insert_header("x-ms-continuation", next);
        }
        let mut mock = Mock::given(method("POST")).and(path("/devices/query"));
        mock = match token {
            Some(token) => mock.and(wiremock::matchers::header("x-ms-continuation", token)),
            None => mock.and(|r: &Request| !r.headers.contains_key("x-ms-continuation")),
        };
        mock.respond_with(response).mount(&server).await;
    }
    let registry = manager(&server);
    let twins: Vec<Twin> = registry
        .query("SELECT * FROM devices")
        .page_size(2)
        .twins()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<_> = twins.iter().map(|t| t.device_id.clone().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 3);
    for request in &requests {
        assert_eq!(request.headers["x-ms-max-item-count"], "2");
        assert_eq!(
            recorded(request)["body"],
            json!({ "query": "SELECT * FROM devices" })
        );
    }
    assert!(requests[0].headers.get("x-ms-continuation").is_none());

    // Resuming from a saved token starts there.
    let rest: Vec<Value> = registry
        .query("SELECT * FROM devices")
        .page_size(2)
        .continuation("p3")
        .stream()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(rest, [json!({ "deviceId": "d" })]);
}

/// A retry policy that records what it was asked, then answers as `fast_retries` does.
#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<(&'static str, iothub_registry::OperationKind)>>);

impl iothub_registry::RetryPolicy for Recorder {
    fn next_delay(
        &self,
        class: iothub_registry::RetryClass,
        context: &iothub_registry::RetryContext,
    ) -> Option<std::time::Duration> {
        self.0
            .lock()
            .unwrap()
            .push((context.operation, context.kind));
        fast_retries().next_delay(class, context)
    }
}

/// The retry rule over every public method that sends a request: the kind each call gives
/// its retry policy, and whether it is repeated after a failure that leaves its outcome
/// unknown (a 500): reads, queries, deletes and conditional writes are; creates,
/// unconditional writes and direct methods are not.
#[tokio::test]
async fn every_operation_has_a_kind_and_is_repeated_only_as_the_rule_says() {
    use iothub_registry::OperationKind::{
        ConditionalWrite, Create, Delete, DirectMethod, Query, Read, Receive, UnconditionalWrite,
    };
    let table = [
        ("create_device_with_sas", Create),
        (
            "create_device_with_sas (generated keys, all options)",
            Create,
        ),
        ("create_device_with_x509", Create),
        ("create_device_with_certificate_authority", Create),
        ("update_device_with_sas", ConditionalWrite),
        ("update_device_with_x509", UnconditionalWrite),
        ("update_device_with_certificate_authority", ConditionalWrite),
        ("get_device", Read),
        ("get_devices", Read),
        ("get_devices (service default)", Read),
        ("delete_device", Delete),
        ("delete_device (etag)", Delete),
        ("create_module_with_sas", Create),
        ("create_module_with_x509", Create),
        ("create_module_with_certificate_authority", Create),
        ("update_module_with_sas", ConditionalWrite),
        ("update_module_with_x509", UnconditionalWrite),
        ("update_module_with_certificate_authority", ConditionalWrite),
        ("get_module", Read),
        ("get_modules", Read),
        ("delete_module", Delete),
        ("get_twin", Read),
        ("update_twin", ConditionalWrite),
        ("replace_twin", UnconditionalWrite),
        ("get_module_twin", Read),
        ("update_module_twin", UnconditionalWrite),
        ("replace_module_twin", ConditionalWrite),
        ("query_iot_hub", Query),
        ("query_iot_hub (first page, no options)", Query),
        ("get_device_registry_statistics", Read),
        ("get_service_statistics", Read),
        // One create and one conditional delete: the least repeatable entry decides.
        ("bulk_create_or_update_devices", Create),
        ("bulk_create_or_update_devices (400 is a result)", Create),
        ("invoke_device_method", DirectMethod),
        ("invoke_device_module_method (no payload)", DirectMethod),
        ("purge_c2d_queue", UnconditionalWrite),
        ("create_configuration", Create),
        ("update_configuration", ConditionalWrite),
        ("update_configuration (forced)", UnconditionalWrite),
        ("get_configuration", Read),
        ("get_configurations", Read),
        ("get_configurations (service default)", Read),
        ("delete_configuration", Delete),
        ("delete_configuration (forced)", Delete),
        // A POST that changes nothing.
        ("test_configuration_queries", Read),
        ("apply_configuration_on_edge_device", UnconditionalWrite),
        ("receive_feedback_notification", Receive),
        ("receive_feedback_notification (nothing)", Receive),
        ("complete_feedback_notification", Delete),
        ("abandon_feedback_notification", ConditionalWrite),
        // The hub chooses an import/export job's id: a repeat would start a second job.
        ("create_import_export_job (export)", UnconditionalWrite),
        ("create_import_export_job (import)", UnconditionalWrite),
        ("get_import_export_job", Read),
        ("get_import_export_jobs", Read),
        // Cancelling a cancelled job changes nothing.
        ("cancel_import_export_job", Delete),
        // The caller chooses a scheduled job's id: a repeat answers 409 for the job it made.
        ("create_scheduled_job (twin update)", Create),
        ("create_scheduled_job (device method)", Create),
        ("get_scheduled_job", Read),
        ("cancel_scheduled_job", Delete),
        ("query_scheduled_jobs", Query),
        ("query_scheduled_jobs (first page, no options)", Query),
        ("get_digital_twin", Read),
        ("update_digital_twin", ConditionalWrite),
        ("update_digital_twin (forced)", UnconditionalWrite),
        // A digital twin's command is a direct method on the device.
        ("invoke_command", DirectMethod),
        ("invoke_component_command (service timeouts)", DirectMethod),
    ];
    let cases = cases();
    let named: std::collections::BTreeSet<_> = cases.iter().map(|c| c.name).collect();
    let listed: std::collections::BTreeSet<_> = table.iter().map(|(name, _)| *name).collect();
    assert_eq!(named, listed, "every case has a kind, every kind a case");
    for case in cases {
        let kind = table.iter().find(|(name, _)| *name == case.name).unwrap().1;
        let server = MockServer::start().await;
        Mock::given(method(case.method))
            .and(path(case.path.as_str()))
            .respond_with(ResponseTemplate::new(500))
            .up_to_n_times(1)
            .with_priority(1)
            .mount(&server)
            .await;
        let mut answer = ResponseTemplate::new(case.status);
        if let Some(body) = &case.response {
            answer = answer.set_body_json(body);
        }
        for (name, value) in case.response_headers {
            answer = answer.insert_header(*name, *value);
        }
        Mock::given(method(case.method))
            .and(path(case.path.as_str()))
            .respond_with(answer)
            .mount(&server)
            .await;
        let recorder = std::sync::Arc::new(Recorder::default());
        let address = server.address();
        let registry = registry_builder(address, credential(address, "iothubowner", KEY))
            .retry_policy(recorder.clone())
            .build()
            .unwrap();
        let result = (case.call)(&registry).await;
        let asked = recorder.0.lock().unwrap().clone();
        assert!(
            !asked.is_empty() && asked.iter().all(|(_, k)| *k == kind),
            "{}: {asked:?}",
            case.name
        );
        let repeated = server.received_requests().await.unwrap().len() == 2;
        let expected = kind.may_repeat(iothub_registry::RetryClass::MaybePerformed);
        assert_eq!(repeated, expected, "{}", case.name);
        match result {
            Ok(_) => assert!(repeated, "{}", case.name),
            Err(err) => {
                assert!(!repeated, "{}: {err}", case.name);
                assert_eq!(err.status(), Some(500), "{}", case.name);
                // Only operations that change state are left unrepeated, and the 500 may
                // have applied them: the error says so.
                assert!(err.may_have_been_applied(), "{}: {err:?}", case.name);
            }
        }
    }
}

/// Every digital twin method checks its arguments before sending anything: the mock hub
/// expects no request at all.
#[tokio::test]
async fn digital_twin_arguments_are_checked_before_sending() {
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let twins = manager(&server).digital_twins();
    let patch = || JsonPatch::new().add("/a", 1);
    let argument = |outcome: iothub_registry::Result<()>| match outcome {
        Err(iothub_registry::Error::InvalidArgument { argument, .. }) => argument,
        other => panic!("expected InvalidArgument, got {other:?}"),
    };
    let ok = |_| ();
    assert_eq!(
        argument(twins.get_digital_twin("").await.map(|_| ())),
        "digital_twin_id"
    );
    assert_eq!(
        argument(twins.get_digital_twin("a/b").await.map(|_| ())),
        "digital_twin_id"
    );
    for bad in [
        JsonPatch::new(),
        JsonPatch::new().add("a", 1),
        patch().remove(""),
    ] {
        assert_eq!(
            argument(
                twins
                    .update_digital_twin("d", bad, IfMatch::Any)
                    .await
                    .map(ok)
            ),
            "patch"
        );
    }
    assert_eq!(
        argument(
            twins
                .update_digital_twin("", patch(), IfMatch::Any)
                .await
                .map(ok)
        ),
        "digital_twin_id"
    );
    let command = |id: &'static str, name: &'static str, connect, response| {
        let twins = twins.clone();
        async move {
            twins
                .invoke_command(id, name, Value::Null, connect, response)
                .await
                .map(|_| ())
        }
    };
    assert_eq!(
        argument(command("", "c", None, None).await),
        "digital_twin_id"
    );
    assert_eq!(argument(command("d", "", None, None).await), "command_name");
    assert_eq!(
        argument(command("d", "c", Some(4), None).await),
        "connect_timeout_in_seconds"
    );
    assert_eq!(
        argument(command("d", "c", None, Some(301)).await),
        "response_timeout_in_seconds"
    );
    let component = |component: &'static str, name: &'static str| {
        let twins = twins.clone();
        async move {
            twins
                .invoke_component_command("d", component, name, Value::Null, Some(5), Some(300))
                .await
                .map(|_| ())
        }
    };
    assert_eq!(argument(component("", "c").await), "component_name");
    assert_eq!(argument(component("t", "").await), "command_name");
    server.verify().await;
}

/// The hub's refusals come back typed; an answer without the device's status is a protocol
/// error, not a made-up status.
#[tokio::test]
async fn digital_twin_errors_are_typed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/digitaltwins/offline/commands/reboot"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "Message": "{\"errorCode\":404103,\"message\":\"Timed out waiting for device to connect.\"}",
            "ExceptionMessage": ""
        })))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/digitaltwins/mute/commands/reboot"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/digitaltwins/d"))
        .respond_with(ResponseTemplate::new(412).set_body_json(json!({
            "Message": "{\"errorCode\":412001,\"message\":\"Precondition failed\"}"
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/digitaltwins/d"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "$dtId": "d" }))
                .insert_header("etag", "a\"b"),
        )
        .mount(&server)
        .await;
    let twins = manager(&server).digital_twins();

    let offline = twins
        .invoke_command("offline", "reboot", Value::Null, None, None)
        .await
        .unwrap_err();
    assert_eq!(offline.status(), Some(404), "{offline:?}");
    assert_eq!(
        offline.code().map(|c| c.as_str()),
        Some("DeviceNotOnline"),
        "{offline:?}"
    );

    let mute = twins
        .invoke_command("mute", "reboot", Value::Null, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(mute, iothub_registry::Error::Protocol { status: 200, .. }),
        "{mute:?}"
    );

    let stale = twins
        .update_digital_twin(
            "d",
            JsonPatch::new().add("/a", 1),
            IfMatch::ETag(ETag::new("old").unwrap()),
        )
        .await
        .unwrap_err();
    assert!(stale.is_precondition_failed(), "{stale:?}");

    let garbled = twins.get_digital_twin("d").await.unwrap_err();
    assert!(
        matches!(
            garbled,
            iothub_registry::Error::Protocol { status: 200, .. }
        ),
        "{garbled:?}"
    );
}
