//! Realistic service payloads deserialize into the generated models: zone-less and 7-digit
//! date-times, tags and desired properties holding scalars and `$version`, method results
//! with any payload, and enum values newer than the spec.

use iothub_rest_gen::IotDateTime;
use iothub_rest_gen::types::{
    AuthenticationType, CloudToDeviceMethodResult, Configuration, ConnectionState, Device,
    DeviceStatus, JobProperties, JobResponse, JobStatus, JobType, Module, QueryResult,
    QueryResultType, Twin,
};
use serde_json::json;

fn date(s: &str) -> IotDateTime {
    s.parse().unwrap()
}

#[test]
fn device_with_zone_less_and_seven_digit_dates() {
    let device: Device = serde_json::from_value(json!({
        "deviceId": "sensor-1",
        "generationId": "637580000000000000",
        "etag": "MTIzNDU2Nzg=",
        "connectionState": "Disconnected",
        "status": "enabled",
        "statusReason": null,
        "connectionStateUpdatedTime": "0001-01-01T00:00:00",
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "lastActivityTime": "2021-05-04T10:11:12.1234567",
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": { "primaryKey": "cHJpbWFyeQ==", "secondaryKey": "c2Vjb25kYXJ5" },
            "x509Thumbprint": { "primaryThumbprint": null, "secondaryThumbprint": null },
            "type": "sas"
        },
        "capabilities": { "iotEdge": false },
        "deviceScope": null,
        "parentScopes": []
    }))
    .unwrap();
    assert_eq!(device.device_id.as_deref(), Some("sensor-1"));
    assert_eq!(device.status, Some(DeviceStatus::Enabled));
    assert_eq!(device.connection_state, Some(ConnectionState::Disconnected));
    assert!(device.connection_state_updated_time.unwrap().is_never());
    assert!(device.status_updated_time.unwrap().is_never());
    let last = device.last_activity_time.unwrap();
    assert_eq!(last, date("2021-05-04T10:11:12.1234567Z"));
    assert_eq!(last.as_datetime().timestamp_subsec_nanos(), 123_456_700);
    let auth = device.authentication.unwrap();
    assert_eq!(auth.type_, Some(AuthenticationType::Sas));
    assert_eq!(auth.x509_thumbprint.unwrap().primary_thumbprint, None);

    // Written back with `Z`, never zone-less.
    let out = serde_json::to_value(Device {
        last_activity_time: Some(date("2021-05-04T10:11:12")),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(out, json!({ "lastActivityTime": "2021-05-04T10:11:12Z" }));
}

#[test]
fn edge_module_with_dollar_id() {
    let module: Module = serde_json::from_value(json!({
        "moduleId": "$edgeAgent", "managedBy": "IotEdge", "deviceId": "edge-1",
        "generationId": "1", "etag": "MQ==", "connectionState": "Connected",
        "connectionStateUpdatedTime": "2021-05-04T10:11:12.1234567Z",
        "lastActivityTime": "0001-01-01T00:00:00",
        "cloudToDeviceMessageCount": 0,
        "authentication": { "type": "none", "symmetricKey": { "primaryKey": null, "secondaryKey": null } }
    }))
    .unwrap();
    assert_eq!(module.module_id.as_deref(), Some("$edgeAgent"));
    assert_eq!(module.connection_state, Some(ConnectionState::Connected));
    assert_eq!(
        module.authentication.unwrap().type_,
        Some(AuthenticationType::None)
    );
    assert!(module.last_activity_time.unwrap().is_never());
}

#[test]
fn twin_tags_and_properties_hold_any_json() {
    let twin: Twin = serde_json::from_value(json!({
        "deviceId": "sensor-1",
        "etag": "AAAAAAAAAAI=",
        "deviceEtag": "MTIzNDU2Nzg=",
        "status": "enabled",
        "statusUpdateTime": "0001-01-01T00:00:00",
        "connectionState": "Disconnected",
        "lastActivityTime": "0001-01-01T00:00:00",
        "cloudToDeviceMessageCount": 0,
        "authenticationType": "selfSigned",
        "x509Thumbprint": { "primaryThumbprint": "ABC", "secondaryThumbprint": null },
        "modelId": "dtmi:com:example:Thermostat;1",
        "version": 5,
        "tags": { "SecurityGroup": "default", "floor": 3, "enabled": true, "location": { "building": "A" } },
        "properties": {
            "desired": {
                "telemetryInterval": 30,
                "$metadata": { "$lastUpdated": "2021-05-04T10:11:12.1234567Z", "$lastUpdatedVersion": 2 },
                "$version": 2
            },
            "reported": { "firmware": "1.2.3", "$version": 9 }
        },
        "capabilities": { "iotEdge": false }
    }))
    .unwrap();
    assert_eq!(twin.tags["SecurityGroup"], "default");
    assert_eq!(twin.tags["floor"], 3);
    assert_eq!(twin.tags["location"]["building"], "A");
    let props = twin.properties.unwrap();
    assert_eq!(props.desired["$version"], 2);
    assert_eq!(props.desired["telemetryInterval"], 30);
    assert_eq!(props.reported["firmware"], "1.2.3");
    assert_eq!(twin.version, Some(5));
    assert_eq!(
        twin.authentication_type,
        Some(AuthenticationType::SelfSigned)
    );
    assert!(twin.status_update_time.unwrap().is_never());
}

#[test]
fn method_results_with_string_null_and_object_payloads() {
    for (payload, expected) in [
        (json!("ok"), json!("ok")),
        (json!(null), json!(null)),
        (json!(42), json!(42)),
        (json!({ "result": [1, 2] }), json!({ "result": [1, 2] })),
    ] {
        let result: CloudToDeviceMethodResult =
            serde_json::from_value(json!({ "status": 200, "payload": payload })).unwrap();
        assert_eq!(result.status, Some(200));
        assert_eq!(result.payload.unwrap_or_default(), expected);
    }
}

#[test]
fn unknown_enum_values_do_not_fail() {
    let device: Device = serde_json::from_value(json!({
        "deviceId": "d", "connectionState": "Hibernating", "status": "quarantined"
    }))
    .unwrap();
    assert_eq!(
        device.connection_state,
        Some(ConnectionState::Other("Hibernating".into()))
    );
    assert_eq!(
        device.status,
        Some(DeviceStatus::Other("quarantined".into()))
    );

    let job: JobResponse = serde_json::from_value(json!({
        "jobId": "j", "type": "scheduleFirmwareUpdate", "status": "paused",
        "createdTime": "2021-05-04T10:11:12", "startTime": "2021-05-04T10:11:12.1234567Z"
    }))
    .unwrap();
    assert_eq!(
        job.type_,
        Some(JobType::Other("scheduleFirmwareUpdate".into()))
    );
    assert_eq!(job.status, Some(JobStatus::Other("paused".into())));
    // And the unknown value is sent back exactly as received.
    assert_eq!(serde_json::to_value(&job).unwrap()["status"], "paused");
}

#[test]
fn jobs_with_offset_less_times() {
    let job: JobProperties = serde_json::from_value(json!({
        "jobId": "export-1", "type": "export", "status": "completed", "progress": 100,
        "startTimeUtc": "2021-05-04T10:11:12", "endTimeUtc": "2021-05-04T10:12:12.1234567",
        "storageAuthenticationType": "keyBased", "failureReason": null
    }))
    .unwrap();
    assert_eq!(job.type_, Some(JobType::Export));
    assert_eq!(job.status, Some(JobStatus::Completed));
    assert_eq!(job.start_time_utc, Some(date("2021-05-04T10:11:12Z")));
}

#[test]
fn configuration_content_with_scalars() {
    let config: Configuration = serde_json::from_value(json!({
        "id": "cfg", "schemaVersion": "1.0", "priority": 10,
        "labels": { "team": "a" },
        "content": {
            "deviceContent": { "properties.desired.x": 5, "properties.desired.y": { "z": "w" } },
            "modulesContent": { "$edgeAgent": { "properties.desired": { "schemaVersion": "1.1" } } }
        },
        "createdTimeUtc": "2021-05-04T10:11:12.1234567", "lastUpdatedTimeUtc": "0001-01-01T00:00:00",
        "systemMetrics": { "results": { "appliedCount": 3 }, "queries": {} },
        "etag": "MQ=="
    }))
    .unwrap();
    let content = config.content.unwrap();
    assert_eq!(content.device_content["properties.desired.x"], 5);
    assert_eq!(
        content.modules_content["$edgeAgent"]["properties.desired"]["schemaVersion"],
        "1.1"
    );
    assert_eq!(config.system_metrics.unwrap().results["appliedCount"], 3);
}

#[test]
fn query_results_hold_projections() {
    let result: QueryResult = serde_json::from_value(json!({
        "type": "raw",
        "items": [{ "deviceId": "a", "n": 2 }, 7, "x"],
        "continuationToken": null
    }))
    .unwrap();
    assert_eq!(result.type_, Some(QueryResultType::Raw));
    assert_eq!(result.items[1], 7);
}
