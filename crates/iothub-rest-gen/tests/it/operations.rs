//! Every generated operation against wiremock, once for each success status it declares:
//! the exact request on the wire (method, raw path, query, headers, body) and the decoded
//! response. Each is pinned in a reviewed insta snapshot of its own,
//! `snapshots/it__operations__<OperationId>_<status>.snap`.

use futures::StreamExt;
use futures::future::BoxFuture;
use iothub_rest_gen::types::{self, BulkRegistryOperationResult};
use iothub_rest_gen::{ByteStream, Client, Error, ResponseValue};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::{case, record, rest_client_builder};
use serde::Serialize;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

// Ids with characters the Python reference escapes and progenitor would not.
const DEVICE: &str = "dev+1:@$'; =,/#?%é";
const DEVICE_RAW: &str = "dev%2B1%3A%40%24%27%3B%20%3D%2C%2F%23%3F%25%C3%A9";
const MODULE: &str = "$edgeAgent";
const MODULE_RAW: &str = "%24edgeAgent";

/// Status, decoded body and the response headers a caller reads, or the error as text.
type Outcome = Result<(u16, Value, Value), String>;

/// Response headers the operations document (paging, lock tokens), as the caller sees them.
fn read_headers(headers: &reqwest::header::HeaderMap) -> Value {
    let mut shown = serde_json::Map::new();
    for name in ["x-ms-continuation", "x-ms-item-type", "etag"] {
        if let Some(v) = headers.get(name) {
            shown.insert(name.into(), json!(v.to_str().unwrap()));
        }
    }
    Value::Object(shown)
}
type Call = for<'a> fn(&'a Client) -> BoxFuture<'a, Outcome>;

fn decoded<T: Serialize, E>(result: Result<ResponseValue<T>, Error<E>>) -> Outcome
where
    Error<E>: std::fmt::Display,
{
    let rv = result.map_err(|e| e.to_string())?;
    let status = rv.status().as_u16();
    let headers = read_headers(rv.headers());
    Ok((
        status,
        serde_json::to_value(rv.into_inner()).unwrap(),
        headers,
    ))
}

async fn bytes(result: Result<ResponseValue<ByteStream>, Error<()>>) -> Outcome {
    let rv = result.map_err(|e| e.to_string())?;
    let status = rv.status().as_u16();
    let headers = read_headers(rv.headers());
    let mut stream = rv.into_inner().into_inner();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
    }
    Ok((
        status,
        Value::String(String::from_utf8(body).unwrap()),
        headers,
    ))
}

macro_rules! call {
    (|$c:ident| $e:expr) => {{
        fn f<'a>($c: &'a Client) -> BoxFuture<'a, Outcome> {
            Box::pin(async move { decoded($e.await) })
        }
        f as Call
    }};
}

fn device() -> types::Device {
    serde_json::from_value(json!({
        "deviceId": DEVICE,
        "status": "enabled",
        "authentication": { "type": "sas", "symmetricKey": { "primaryKey": KEY, "secondaryKey": KEY } },
        "capabilities": { "iotEdge": false }
    }))
    .unwrap()
}

fn module() -> types::Module {
    serde_json::from_value(json!({
        "deviceId": DEVICE, "moduleId": MODULE, "managedBy": "IotEdge",
        "authentication": { "type": "certificateAuthority" }
    }))
    .unwrap()
}

fn twin_patch() -> types::Twin {
    serde_json::from_value(json!({
        "tags": { "floor": 3, "building": "A" },
        "properties": { "desired": { "interval": 30, "nested": { "on": true } } }
    }))
    .unwrap()
}

fn method_call() -> types::CloudToDeviceMethod {
    serde_json::from_value(json!({
        "methodName": "reboot", "payload": { "delay": 5 },
        "responseTimeoutInSeconds": 30, "connectTimeoutInSeconds": 10
    }))
    .unwrap()
}

fn configuration() -> types::Configuration {
    serde_json::from_value(json!({
        "id": "cfg:1", "priority": 10, "targetCondition": "tags.floor=3",
        "labels": { "team": "a" },
        "content": { "deviceContent": { "properties.desired.x": 5 } }
    }))
    .unwrap()
}

fn device_body() -> Value {
    json!({
        "deviceId": DEVICE, "generationId": "638000000000000000", "etag": "MTIzNDU2",
        "connectionState": "Disconnected", "status": "enabled", "statusReason": null,
        "connectionStateUpdatedTime": "0001-01-01T00:00:00",
        "statusUpdatedTime": "0001-01-01T00:00:00",
        "lastActivityTime": "2021-05-04T10:11:12.1234567",
        "cloudToDeviceMessageCount": 0,
        "authentication": { "type": "sas", "symmetricKey": { "primaryKey": KEY, "secondaryKey": KEY },
                            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null } },
        "capabilities": { "iotEdge": false }, "deviceScope": "ms-azure-iot-edge://edge-1-637", "parentScopes": []
    })
}

fn module_body() -> Value {
    json!({
        "moduleId": MODULE, "managedBy": "IotEdge", "deviceId": DEVICE, "generationId": "1",
        "etag": "MQ==", "connectionState": "Connected",
        "connectionStateUpdatedTime": "2021-05-04T10:11:12Z", "lastActivityTime": "0001-01-01T00:00:00",
        "cloudToDeviceMessageCount": 0, "authentication": { "type": "certificateAuthority" }
    })
}

fn twin_body() -> Value {
    json!({
        "deviceId": DEVICE, "moduleId": MODULE, "etag": "AAAAAAAAAAE=", "deviceEtag": "MTIzNDU2", "version": 4,
        "status": "enabled", "statusUpdateTime": "0001-01-01T00:00:00", "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00", "cloudToDeviceMessageCount": 0, "authenticationType": "sas",
        "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
        "modelId": "dtmi:com:example;1",
        "tags": { "floor": 3 },
        "properties": {
            "desired": { "interval": 30, "$metadata": { "$lastUpdated": "2021-05-04T10:11:12.1234567Z" }, "$version": 2 },
            "reported": { "fw": "1.0", "$version": 7 }
        },
        "capabilities": { "iotEdge": true }
    })
}

fn job_response_body() -> Value {
    json!({
        "jobId": "job 1", "type": "scheduleDeviceMethod", "status": "running",
        "queryCondition": "deviceId IN ['a']", "createdTime": "2021-05-04T10:11:12Z",
        "startTime": "2021-05-04T10:11:12Z", "maxExecutionTimeInSeconds": 3600,
        "cloudToDeviceMethod": { "methodName": "reboot", "payload": null, "responseTimeoutInSeconds": 30 },
        "deviceJobStatistics": { "deviceCount": 1, "failedCount": 0, "succeededCount": 0, "runningCount": 1, "pendingCount": 0 }
    })
}

fn import_job_body() -> Value {
    json!({
        "jobId": "job 1", "type": "export", "status": "completed", "progress": 100,
        "startTimeUtc": "2021-05-04T10:11:12", "endTimeUtc": "2021-05-04T10:12:12.1234567",
        "outputBlobContainerUri": "https://storage.example/c", "excludeKeysInExport": true,
        "storageAuthenticationType": "identityBased", "identity": { "userAssignedIdentity": "/subscriptions/x" }
    })
}

fn configuration_body() -> Value {
    json!({
        "id": "cfg:1", "schemaVersion": "1.0", "labels": { "team": "a" },
        "content": { "deviceContent": { "properties.desired.x": 5 } },
        "targetCondition": "tags.floor=3", "createdTimeUtc": "2021-05-04T10:11:12.1234567",
        "lastUpdatedTimeUtc": "0001-01-01T00:00:00", "priority": 10,
        "systemMetrics": { "results": { "appliedCount": 3 }, "queries": { "appliedCount": "select" } },
        "metrics": { "results": {}, "queries": {} }, "etag": "MQ=="
    })
}

type Case = iothub_test_support::wire::Case<Call>;

fn cases() -> Vec<Case> {
    let d = DEVICE_RAW;
    let m = MODULE_RAW;
    let mut cases = vec![
        // Devices
        case(
            "Devices_GetDevices",
            "GET",
            "/devices",
            200,
            Some(json!([device_body()])),
            call!(|c| c.devices_get_devices().top(5).send()),
        ),
        case(
            "Devices_GetIdentity",
            "GET",
            format!("/devices/{d}"),
            200,
            Some(device_body()),
            call!(|c| c.devices_get_identity().id(DEVICE).send()),
        ),
        case(
            "Devices_CreateOrUpdateIdentity",
            "PUT",
            format!("/devices/{d}"),
            200,
            Some(device_body()),
            call!(|c| c
                .devices_create_or_update_identity()
                .id(DEVICE)
                .if_match("\"MTIzNDU2\"")
                .body(device())
                .send()),
        ),
        case(
            "Devices_DeleteIdentity",
            "DELETE",
            format!("/devices/{d}"),
            204,
            None,
            call!(|c| c
                .devices_delete_identity()
                .id(DEVICE)
                .if_match("\"*\"")
                .send()),
        ),
        // Modules
        case(
            "Modules_GetModulesOnDevice",
            "GET",
            format!("/devices/{d}/modules"),
            200,
            Some(json!([module_body()])),
            call!(|c| c.modules_get_modules_on_device().id(DEVICE).send()),
        ),
        case(
            "Modules_GetIdentity",
            "GET",
            format!("/devices/{d}/modules/{m}"),
            200,
            Some(module_body()),
            call!(|c| c.modules_get_identity().id(DEVICE).mid(MODULE).send()),
        ),
        case(
            "Modules_DeleteIdentity",
            "DELETE",
            format!("/devices/{d}/modules/{m}"),
            204,
            None,
            call!(|c| c
                .modules_delete_identity()
                .id(DEVICE)
                .mid(MODULE)
                .if_match("\"MQ==\"")
                .send()),
        ),
        // Twins
        case(
            "Devices_GetTwin",
            "GET",
            format!("/twins/{d}"),
            200,
            Some(twin_body()),
            call!(|c| c.devices_get_twin().id(DEVICE).send()),
        ),
        case(
            "Devices_ReplaceTwin",
            "PUT",
            format!("/twins/{d}"),
            200,
            Some(twin_body()),
            call!(|c| c
                .devices_replace_twin()
                .id(DEVICE)
                .if_match("\"AAAAAAAAAAE=\"")
                .body(twin_patch())
                .send()),
        ),
        case(
            "Devices_UpdateTwin",
            "PATCH",
            format!("/twins/{d}"),
            200,
            Some(twin_body()),
            call!(|c| c
                .devices_update_twin()
                .id(DEVICE)
                .if_match("\"*\"")
                .body(twin_patch())
                .send()),
        ),
        case(
            "Modules_GetTwin",
            "GET",
            format!("/twins/{d}/modules/{m}"),
            200,
            Some(twin_body()),
            call!(|c| c.modules_get_twin().id(DEVICE).mid(MODULE).send()),
        ),
        case(
            "Modules_ReplaceTwin",
            "PUT",
            format!("/twins/{d}/modules/{m}"),
            200,
            Some(twin_body()),
            call!(|c| c
                .modules_replace_twin()
                .id(DEVICE)
                .mid(MODULE)
                .body(twin_patch())
                .send()),
        ),
        case(
            "Modules_UpdateTwin",
            "PATCH",
            format!("/twins/{d}/modules/{m}"),
            200,
            Some(twin_body()),
            call!(|c| c
                .modules_update_twin()
                .id(DEVICE)
                .mid(MODULE)
                .if_match("\"AAAAAAAAAAE=\"")
                .body(twin_patch())
                .send()),
        ),
        // Direct methods
        case(
            "Devices_InvokeMethod",
            "POST",
            format!("/twins/{d}/methods"),
            200,
            Some(json!({ "status": 200, "payload": "ok" })),
            call!(|c| c
                .devices_invoke_method()
                .device_id(DEVICE)
                .body(method_call())
                .send()),
        ),
        case(
            "Modules_InvokeMethod",
            "POST",
            format!("/twins/{d}/modules/{m}/methods"),
            200,
            Some(json!({ "status": 404, "payload": null })),
            call!(|c| c
                .modules_invoke_method()
                .device_id(DEVICE)
                .module_id(MODULE)
                .body(method_call())
                .send()),
        ),
        // Query and statistics
        case(
            "Statistics_GetDeviceStatistics",
            "GET",
            "/statistics/devices",
            200,
            Some(
                json!({ "totalDeviceCount": 12, "enabledDeviceCount": 10, "disabledDeviceCount": 2 }),
            ),
            call!(|c| c.statistics_get_device_statistics().send()),
        ),
        case(
            "Statistics_GetServiceStatistics",
            "GET",
            "/statistics/service",
            200,
            Some(json!({ "connectedDeviceCount": 3 })),
            call!(|c| c.statistics_get_service_statistics().send()),
        ),
        // Bulk registry
        case(
            "BulkRegistry_UpdateRegistry",
            "POST",
            "/devices",
            200,
            Some(json!({ "isSuccessful": true, "errors": [], "warnings": [] })),
            call!(|c| c
                .bulk_registry_update_registry()
                .body(vec![bulk_item()])
                .send()),
        ),
        // Configurations
        case(
            "Configuration_Get",
            "GET",
            "/configurations/cfg%3A1",
            200,
            Some(configuration_body()),
            call!(|c| c.configuration_get().id("cfg:1").send()),
        ),
        case(
            "Configuration_Delete",
            "DELETE",
            "/configurations/cfg%3A1",
            204,
            None,
            call!(|c| c.configuration_delete().id("cfg:1").if_match("*").send()),
        ),
        case(
            "Configuration_GetConfigurations",
            "GET",
            "/configurations",
            200,
            Some(json!([configuration_body()])),
            call!(|c| c.configuration_get_configurations().top(20).send()),
        ),
        case(
            "Configuration_TestQueries",
            "POST",
            "/configurations/testQueries",
            200,
            Some(json!({ "targetConditionError": "", "customMetricQueryErrors": { "m": "bad" } })),
            call!(|c| {
                c.configuration_test_queries().body(serde_json::from_value::<types::ConfigurationQueriesTestInput>(
                json!({ "targetCondition": "tags.floor=3", "customMetricQueries": { "m": "SELECT deviceId FROM devices" } })).unwrap()).send()
            }),
        ),
        case(
            "Configuration_ApplyOnEdgeDevice",
            "POST",
            format!("/devices/{d}/applyConfigurationContent"),
            204,
            None,
            call!(|c| {
                c.configuration_apply_on_edge_device().id(DEVICE).body(serde_json::from_value::<types::ConfigurationContent>(
                json!({ "modulesContent": { "$edgeAgent": { "properties.desired": { "schemaVersion": "1.1" } } } })).unwrap()).send()
            }),
        ),
        // Jobs v1
        case(
            "Jobs_CreateImportExportJob",
            "POST",
            "/jobs/create",
            200,
            Some(import_job_body()),
            call!(|c| {
                c.jobs_create_import_export_job().body(serde_json::from_value::<types::JobProperties>(
                json!({ "type": "export", "outputBlobContainerUri": "https://storage.example/c", "excludeKeysInExport": true,
                        "storageAuthenticationType": "identityBased" })).unwrap()).send()
            }),
        ),
        case(
            "Jobs_GetImportExportJobs",
            "GET",
            "/jobs",
            200,
            Some(json!([import_job_body()])),
            call!(|c| c.jobs_get_import_export_jobs().send()),
        ),
        case(
            "Jobs_GetImportExportJob",
            "GET",
            "/jobs/job%201",
            200,
            Some(import_job_body()),
            call!(|c| c.jobs_get_import_export_job().id("job 1").send()),
        ),
        // Jobs v2
        case(
            "Jobs_CreateScheduledJob",
            "PUT",
            "/jobs/v2/job%201",
            200,
            Some(job_response_body()),
            call!(|c| {
                c.jobs_create_scheduled_job().id("job 1").body(serde_json::from_value::<types::JobRequest>(
                json!({ "jobId": "job 1", "type": "scheduleDeviceMethod", "queryCondition": "deviceId IN ['a']",
                        "cloudToDeviceMethod": { "methodName": "reboot", "payload": "now" },
                        "startTime": "2021-05-04T10:11:12Z", "maxExecutionTimeInSeconds": 3600 })).unwrap()).send()
            }),
        ),
        case(
            "Jobs_GetScheduledJob",
            "GET",
            "/jobs/v2/job%201",
            200,
            Some(job_response_body()),
            call!(|c| c.jobs_get_scheduled_job().id("job 1").send()),
        ),
        case(
            "Jobs_CancelScheduledJob",
            "POST",
            "/jobs/v2/job%201/cancel",
            200,
            Some(job_response_body()),
            call!(|c| c.jobs_cancel_scheduled_job().id("job 1").send()),
        ),
        case(
            "Jobs_QueryScheduledJobs",
            "GET",
            "/jobs/v2/query",
            200,
            Some(
                json!({ "type": "jobResponse", "items": [job_response_body()], "continuationToken": "next" }),
            ),
            call!(|c| c
                .jobs_query_scheduled_jobs()
                .job_type("scheduleDeviceMethod")
                .job_status("running")
                .send()),
        ),
        // Cloud-to-device over HTTP
        case(
            "CloudToDeviceMessages_PurgeCloudToDeviceMessageQueue",
            "DELETE",
            format!("/devices/{d}/commands"),
            200,
            Some(json!({ "totalMessagesPurged": 3, "deviceId": DEVICE })),
            call!(|c| c
                .cloud_to_device_messages_purge_cloud_to_device_message_queue()
                .id(DEVICE)
                .send()),
        ),
        case(
            "CloudToDeviceMessages_CompleteFeedbackNotification",
            "DELETE",
            "/messages/serviceBound/feedback/lock%2F1%2B2",
            204,
            None,
            call!(|c| c
                .cloud_to_device_messages_complete_feedback_notification()
                .lock_token("lock/1+2")
                .send()),
        ),
        case(
            "CloudToDeviceMessages_AbandonFeedbackNotification",
            "POST",
            "/messages/serviceBound/feedback/lock%2F1%2B2/abandon",
            204,
            None,
            call!(|c| c
                .cloud_to_device_messages_abandon_feedback_notification()
                .lock_token("lock/1+2")
                .send()),
        ),
        // Digital twins
        case(
            "DigitalTwin_GetDigitalTwin",
            "GET",
            format!("/digitaltwins/{d}"),
            200,
            Some(
                json!({ "$dtId": DEVICE, "temperature": 21.5, "$metadata": { "$model": "dtmi:com:example;1" } }),
            ),
            call!(|c| c.digital_twin_get_digital_twin().id(DEVICE).send()),
        ),
        case(
            "DigitalTwin_UpdateDigitalTwin",
            "PATCH",
            format!("/digitaltwins/{d}"),
            202,
            None,
            call!(|c| c
                .digital_twin_update_digital_twin()
                .id(DEVICE)
                .if_match("W/\"1\"")
                .body(vec![
                    json!({ "op": "add", "path": "/targetTemperature", "value": 42 })
                ])
                .send()),
        ),
        case(
            "DigitalTwin_InvokeRootLevelCommand",
            "POST",
            format!("/digitaltwins/{d}/commands/reboot%20now"),
            200,
            Some(json!("done")),
            call!(|c| c
                .digital_twin_invoke_root_level_command()
                .id(DEVICE)
                .command_name("reboot now")
                .connect_timeout_in_seconds(10)
                .response_timeout_in_seconds(30)
                .body(json!({ "delay": 1 }))
                .send()),
        ),
        case(
            "DigitalTwin_InvokeComponentCommand",
            "POST",
            format!("/digitaltwins/{d}/components/comp%2F1/commands/reboot%20now"),
            200,
            Some(json!({ "ok": true })),
            call!(|c| c
                .digital_twin_invoke_component_command()
                .id(DEVICE)
                .component_path("comp/1")
                .command_name("reboot now")
                .body(json!(5))
                .send()),
        ),
        // Query: paging headers both ways
        Case {
            response_headers: &[("x-ms-continuation", "page-2"), ("x-ms-item-type", "twin")],
            ..case(
                "Query_GetTwins",
                "POST",
                "/devices/query",
                200,
                Some(json!([twin_body(), { "deviceId": "a", "n": 2 }, 5])),
                call!(|c| c
                    .query_get_twins()
                    .x_ms_continuation("page-1")
                    .x_ms_max_item_count("100")
                    .body(types::QuerySpecification {
                        query: Some("SELECT * FROM devices".into())
                    })
                    .send()),
            )
        },
    ];
    // Operations that declare two success statuses, once per status.
    for status in [200, 201] {
        cases.push(case(
            "Modules_CreateOrUpdateIdentity",
            "PUT",
            format!("/devices/{d}/modules/{m}"),
            status,
            Some(module_body()),
            call!(|c| c
                .modules_create_or_update_identity()
                .id(DEVICE)
                .mid(MODULE)
                .body(module())
                .send()),
        ));
        cases.push(case(
            "Configuration_CreateOrUpdate",
            "PUT",
            "/configurations/cfg%3A1",
            status,
            Some(configuration_body()),
            call!(|c| c
                .configuration_create_or_update()
                .id("cfg:1")
                .if_match("MQ==")
                .body(configuration())
                .send()),
        ));
    }
    for (status, response) in [(200, Some(json!({ "jobId": "job 1" }))), (204, None)] {
        cases.push(case(
            "Jobs_CancelImportExportJob",
            "DELETE",
            "/jobs/job%201",
            status,
            response,
            call!(|c| c.jobs_cancel_import_export_job().id("job 1").send()),
        ));
    }
    for (status, response) in [
        (
            200,
            Some(
                json!([{ "originalMessageId": "m1", "deviceId": "d1", "statusCode": "Success",
                             "description": "Success", "enqueuedTimeUtc": "2021-05-04T10:11:12.1234567Z" }]),
            ),
        ),
        (204, None),
    ] {
        let feedback: Call = |c| {
            Box::pin(async move {
                bytes(
                    c.cloud_to_device_messages_receive_feedback_notification()
                        .send()
                        .await,
                )
                .await
            })
        };
        cases.push(Case {
            response_headers: &[("etag", "\"lock-1\"")],
            ..case(
                "CloudToDeviceMessages_ReceiveFeedbackNotification",
                "GET",
                "/messages/serviceBound/feedback",
                status,
                response,
                feedback,
            )
        });
    }
    cases
}

fn bulk_item() -> types::ExportImportDevice {
    serde_json::from_value(json!({
        "id": DEVICE, "importMode": "create", "status": "enabled",
        "authentication": { "type": "sas", "symmetricKey": { "primaryKey": KEY, "secondaryKey": KEY } }
    }))
    .unwrap()
}

fn client_for(server: &MockServer) -> Client {
    let address = server.address();
    rest_client_builder(address, credential(address, "service", KEY))
        .build()
        .unwrap()
}

/// The request as the snapshot records it: the signature's shape is checked, then left out.
fn recorded(request: &wiremock::Request, host: &str) -> Value {
    let headers = &request.headers;
    let auth = headers
        .get("authorization")
        .expect("Authorization is sent")
        .to_str()
        .unwrap();
    let prefix = format!("SharedAccessSignature sr={}&sig=", host.replace(':', "%3A"));
    assert!(
        auth.starts_with(&prefix) && auth.ends_with("&skn=service"),
        "{auth}"
    );
    assert!(
        headers.get("api-version").is_none(),
        "progenitor's api-version header is removed"
    );
    record(request, |name| {
        [
            "accept",
            "content-type",
            "if-match",
            "x-ms-continuation",
            "x-ms-max-item-count",
        ]
        .contains(&name)
    })
}

#[tokio::test]
async fn every_operation_and_success_status_on_the_wire() {
    let cases = cases();
    let mut ops = std::collections::BTreeSet::new();
    let mut names = std::collections::BTreeSet::new();
    for case in cases {
        let server = case.server().await;

        let client = client_for(&server);
        let outcome = (case.call)(&client).await;
        let (status, decoded, response_headers) =
            outcome.unwrap_or_else(|e| panic!("{} {}: {e}", case.name, case.status));
        assert_eq!(status, case.status, "{}", case.name);
        for (name, value) in case.response_headers {
            assert_eq!(response_headers[*name], *value, "{}: {name}", case.name);
        }

        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1, "{}", case.name);
        let request = &requests[0];
        let query: Vec<_> = request
            .url
            .query_pairs()
            .filter(|(k, _)| k == "api-version")
            .collect();
        assert_eq!(query.len(), 1, "{}: one api-version", case.name);
        assert_eq!(query[0].1, "2021-04-12");
        server.verify().await;

        ops.insert(case.name);
        let record = json!({
            "operation": case.name,
            "status": case.status,
            "request": recorded(request, &server.address().to_string()),
            "decoded": decoded,
            "response_headers": response_headers,
        });
        let name = format!("{}_{}", case.name, case.status);
        assert!(names.insert(name.clone()), "two cases named {name}");
        insta::assert_json_snapshot!(name, record);
    }
    assert_eq!(ops.len(), 42, "every operation of the spec is covered");
}

#[tokio::test]
async fn bulk_400_is_a_typed_error_response_with_the_result() {
    let server = MockServer::start().await;
    let result = json!({
        "isSuccessful": false,
        "errors": [{ "deviceId": "a", "errorCode": "DeviceAlreadyExists", "errorStatus": "exists", "operation": "create" },
                   { "deviceId": "b", "errorCode": "SomethingNewer", "errorStatus": "?" }],
        "warnings": []
    });
    Mock::given(method("POST"))
        .and(path("/devices"))
        .respond_with(ResponseTemplate::new(400).set_body_json(&result))
        .mount(&server)
        .await;
    let client = client_for(&server);
    let err = client
        .bulk_registry_update_registry()
        .body(vec![bulk_item()])
        .send()
        .await
        .unwrap_err();
    let Error::ErrorResponse(rv) = err else {
        panic!("expected ErrorResponse, got {err:?}")
    };
    assert_eq!(rv.status(), 400);
    let body: &BulkRegistryOperationResult = &rv;
    assert_eq!(body.is_successful, Some(false));
    assert_eq!(
        body.errors[0].error_code,
        Some(types::ErrorCode::DeviceAlreadyExists)
    );
    assert_eq!(
        body.errors[1].error_code,
        Some(types::ErrorCode::Other("SomethingNewer".into()))
    );
}

#[tokio::test]
async fn undeclared_statuses_keep_the_response_for_the_caller() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(404)
                .insert_header("iothub-errorcode", "DeviceNotFound")
                .set_body_string(r#"{"Message":"ErrorCode:DeviceNotFound;no such device","ExceptionMessage":"Tracking ID:abc"}"#),
        )
        .mount(&server)
        .await;
    let err = client_for(&server)
        .devices_get_identity()
        .id("nope")
        .send()
        .await
        .unwrap_err();
    let Error::UnexpectedResponse(response) = err else {
        panic!("{err:?}")
    };
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["iothub-errorcode"], "DeviceNotFound");
    assert!(response.text().await.unwrap().contains("Tracking ID:abc"));
}

#[tokio::test]
async fn a_configured_api_version_replaces_the_default() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "connectedDeviceCount": 1 })),
        )
        .mount(&server)
        .await;
    let address = server.address();
    let client = rest_client_builder(address, credential(address, "service", KEY))
        .api_version("2024-03-31")
        .build()
        .unwrap();
    client
        .statistics_get_service_statistics()
        .send()
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].url.query(), Some("api-version=2024-03-31"));
}

#[tokio::test]
async fn every_attempt_is_signed_again() {
    // Resending the same builder (what a retry does) runs the hook again: a new Authorization
    // header each time, never a stale copy carried inside the request.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "connectedDeviceCount": 1 })),
        )
        .mount(&server)
        .await;
    let client = client_for(&server);
    for _ in 0..2 {
        client
            .statistics_get_service_statistics()
            .send()
            .await
            .unwrap();
    }
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.headers.contains_key("authorization"))
    );
}
