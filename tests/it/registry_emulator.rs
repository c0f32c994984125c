//! `iothub-registry` against the emulator over HTTPS: the SDK and the local hub agree on
//! the wire, statuses and errors.

use futures::TryStreamExt as _;
use iothub_emulator::{Emulator, MethodResponse};
use iothub_registry::models::{
    CloudToDeviceMethod, DeviceStatus, ExportImportDevice, ImportMode, Twin,
};
use iothub_registry::{DeviceOptions, IfMatch, RegistryManager, SasKeys};
use iothub_test_support::emulator::registry;
use serde_json::json;

async fn start() -> (Emulator, RegistryManager) {
    let hub = Emulator::builder().start().await.unwrap();
    let registry = registry(&hub);
    (hub, registry)
}

#[tokio::test]
async fn devices_twins_and_conditions() {
    let (hub, registry) = start().await;
    let device = registry
        .create_device_with_sas(
            "rs-1",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(device.device_id.as_deref(), Some("rs-1"));
    let err = registry
        .create_device_with_sas(
            "rs-1",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.code().map(|c| c.as_str()), Some("DeviceAlreadyExists"));

    let twin = registry.get_twin("rs-1").await.unwrap();
    let patch: Twin = serde_json::from_value(json!({"tags": {"site": "oslo"}})).unwrap();
    let stale = IfMatch::from_current(twin.etag.as_deref()).unwrap();
    let updated = registry
        .update_twin("rs-1", patch.clone(), stale.clone())
        .await
        .unwrap();
    assert_eq!(updated.tags["site"], "oslo");
    let err = registry
        .update_twin("rs-1", patch, stale)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
    assert_eq!(err.service().unwrap().code_number(), Some(412001));
    assert!(err.service().unwrap().tracking_id().is_some());

    registry.delete_device("rs-1", IfMatch::Any).await.unwrap();
    let err = registry.get_device("rs-1").await.unwrap_err();
    assert!(err.is_not_found());
    let log = hub.request_log();
    assert!(
        log.iter().any(
            |e| e.method == "PATCH" && e.header("if-match").is_some_and(|v| v.starts_with('"'))
        )
    );
}

#[tokio::test]
async fn query_stream_bulk_and_methods() {
    let (hub, registry) = start().await;
    let devices: Vec<ExportImportDevice> = (0..250)
        .map(|i| ExportImportDevice {
            id: Some(format!("bulk-{i:03}")),
            import_mode: Some(ImportMode::Create),
            ..Default::default()
        })
        .collect();
    let report = registry.bulk(devices).send().await.unwrap();
    assert!(report.is_successful(), "{report:?}");
    let twins: Vec<Twin> = registry
        .query("SELECT * FROM devices")
        .page_size(40)
        .twins()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(twins.len(), 250);
    assert_eq!(twins[249].device_id.as_deref(), Some("bulk-249"));
    let stats = registry.get_device_registry_statistics().await.unwrap();
    assert_eq!(stats.total_device_count, Some(250));

    let call = CloudToDeviceMethod {
        method_name: Some("ping".into()),
        payload: Some(json!({"n": 1})),
        response_timeout_in_seconds: Some(5),
        connect_timeout_in_seconds: None,
    };
    let err = registry
        .invoke_device_method("bulk-000", call.clone())
        .await
        .unwrap_err();
    assert_eq!(err.service().unwrap().code_number(), Some(404103));
    hub.connect_device("bulk-000").unwrap();
    hub.set_method_response("bulk-000", None, "ping", MethodResponse::echo());
    let result = registry
        .invoke_device_method("bulk-000", call)
        .await
        .unwrap();
    assert_eq!(
        (result.status, result.payload),
        (Some(200), Some(json!({"n": 1})))
    );
}
