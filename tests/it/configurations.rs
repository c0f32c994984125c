//! Configurations (automatic device management, IoT Edge deployments) and delivery feedback
//! over HTTP, end to end: every method of `ConfigurationManager` and `HttpRuntimeManager`
//! against the emulator over HTTPS.

use std::time::{Duration, Instant};

use iothub_emulator::Emulator;
use iothub_registry::feedback::{FeedbackNotification, FeedbackStatus};
use iothub_registry::models::{ConfigurationQueriesTestInput, DeviceStatus, ErrorCode};
use iothub_registry::{
    ConfigurationBuilder, DeviceOptions, ETag, IfMatch, RegistryManager, SasKeys, TwinPatch,
};
use iothub_test_support::emulator::registry;
use serde_json::{Value, json};

async fn start() -> (Emulator, RegistryManager) {
    let hub = Emulator::builder().start().await.unwrap();
    let registry = registry(&hub);
    (hub, registry)
}

async fn device(registry: &RegistryManager, id: &str, edge: bool, tags: TwinPatch) {
    registry
        .create_device_with_sas(
            id,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new().iot_edge(edge),
        )
        .await
        .unwrap();
    registry.update_twin(id, tags, IfMatch::Any).await.unwrap();
}

fn desired(twin: &iothub_registry::models::Twin) -> Value {
    let properties = twin.properties.clone().unwrap_or_default();
    serde_json::to_value(properties.desired).unwrap()
}

fn stale() -> IfMatch {
    IfMatch::from(ETag::new("c3RhbGU=").unwrap())
}

#[tokio::test]
async fn automatic_device_management_round_trip() {
    let (hub, registry) = start().await;
    let configurations = registry.configurations();
    device(
        &registry,
        "thermo-1",
        false,
        TwinPatch::new().tag("kind", "thermostat"),
    )
    .await;
    device(
        &registry,
        "lamp-1",
        false,
        TwinPatch::new().tag("kind", "lamp"),
    )
    .await;

    // The queries are checked before anything is created.
    let valid = configurations
        .test_configuration_queries(ConfigurationQueriesTestInput {
            target_condition: Some("tags.kind = 'thermostat'".into()),
            custom_metric_queries: [(
                "updated".to_owned(),
                "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '1.4.2'"
                    .to_owned(),
            )]
            .into(),
        })
        .await
        .unwrap();
    assert!(
        valid
            .target_condition_error
            .as_deref()
            .unwrap_or("")
            .is_empty(),
        "{valid:?}"
    );
    assert!(valid.custom_metric_query_errors.is_empty(), "{valid:?}");
    let invalid = configurations
        .test_configuration_queries(ConfigurationQueriesTestInput {
            target_condition: Some("tags.kind = = 'x'".into()),
            custom_metric_queries: [("broken".to_owned(), "SELECT FORM nowhere".to_owned())].into(),
        })
        .await
        .unwrap();
    assert!(
        invalid
            .target_condition_error
            .is_some_and(|e| !e.is_empty())
    );
    assert!(invalid.custom_metric_query_errors.contains_key("broken"));

    let firmware = ConfigurationBuilder::new("firmware-142")
        .target_condition("tags.kind = 'thermostat'")
        .priority(10)
        .label("team", "facilities")
        .device_content("properties.desired.firmware", json!({ "version": "1.4.2" }))
        .metric(
            "updated",
            "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '1.4.2'",
        )
        .build()
        .unwrap();
    let created = configurations
        .create_configuration(firmware.clone())
        .await
        .unwrap();
    assert_eq!(created.id.as_deref(), Some("firmware-142"));
    assert!(created.etag.is_some());
    let err = configurations
        .create_configuration(firmware)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.code(), Some(&ErrorCode::ConfigurationAlreadyExists));

    // Applied to the thermostat's desired properties, not the lamp's.
    let thermo = registry.get_twin("thermo-1").await.unwrap();
    assert_eq!(desired(&thermo)["firmware"]["version"], "1.4.2");
    let lamp = registry.get_twin("lamp-1").await.unwrap();
    assert!(desired(&lamp).get("firmware").is_none());

    // System metrics now; the custom one once the device reports.
    hub.report_properties(
        "thermo-1",
        None,
        &json!({ "firmware": { "version": "1.4.2" } }),
    )
    .unwrap();
    let read = configurations
        .get_configuration("firmware-142")
        .await
        .unwrap();
    let system = read.system_metrics.clone().unwrap_or_default().results;
    assert_eq!(system.get("targetedCount"), Some(&1), "{read:?}");
    assert_eq!(system.get("appliedCount"), Some(&1), "{read:?}");
    let custom = read.metrics.clone().unwrap_or_default().results;
    assert_eq!(custom.get("updated"), Some(&1), "{read:?}");

    // Listed, with and without `top`.
    let second = ConfigurationBuilder::new("interval-30")
        .target_condition("tags.kind = 'lamp'")
        .device_content("properties.desired.telemetry", json!({ "interval": 30 }))
        .build()
        .unwrap();
    configurations.create_configuration(second).await.unwrap();
    let all = configurations.get_configurations(None).await.unwrap();
    let mut ids: Vec<_> = all.iter().filter_map(|c| c.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["firmware-142", "interval-30"]);
    assert_eq!(
        configurations
            .get_configurations(Some(1))
            .await
            .unwrap()
            .len(),
        1
    );

    // Updates: with the etag read, with a stale one, forced.
    let mut changed = read.clone();
    changed.priority = Some(20);
    let if_match = IfMatch::from_current(read.etag.as_deref()).unwrap();
    let updated = configurations
        .update_configuration(changed.clone(), if_match.clone())
        .await
        .unwrap();
    assert_eq!(updated.priority, Some(20));
    assert_ne!(updated.etag, read.etag);
    let err = configurations
        .update_configuration(changed.clone(), if_match)
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
    changed.labels.insert("state".into(), "forced".into());
    let forced = configurations
        .update_configuration(changed, IfMatch::Any)
        .await
        .unwrap();
    assert_eq!(forced.labels["state"], "forced");

    // Deletes: a stale etag is refused, then gone for good.
    let err = configurations
        .delete_configuration("firmware-142", stale())
        .await
        .unwrap_err();
    assert!(err.is_precondition_failed(), "{err}");
    configurations
        .delete_configuration(
            "firmware-142",
            IfMatch::from_current(forced.etag.as_deref()).unwrap(),
        )
        .await
        .unwrap();
    configurations
        .delete_configuration("interval-30", IfMatch::Any)
        .await
        .unwrap();
    let err = configurations
        .get_configuration("firmware-142")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(err.code(), Some(&ErrorCode::ConfigurationNotFound));
    assert!(
        configurations
            .get_configurations(None)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn module_configurations_reach_module_twins() {
    let (_hub, registry) = start().await;
    device(&registry, "gw-2", false, TwinPatch::new()).await;
    registry
        .create_module_with_sas("gw-2", "filter", SasKeys::generated(), None)
        .await
        .unwrap();
    let threshold = ConfigurationBuilder::new("filter-threshold")
        .target_condition("FROM devices.modules WHERE moduleId = 'filter'")
        .module_content("properties.desired.threshold", 25)
        .build()
        .unwrap();
    registry
        .configurations()
        .create_configuration(threshold)
        .await
        .unwrap();
    let twin = registry.get_module_twin("gw-2", "filter").await.unwrap();
    assert_eq!(desired(&twin)["threshold"], 25);
}

fn edge_agent() -> Value {
    json!({
        "schemaVersion": "1.1",
        "runtime": { "type": "docker", "settings": { "minDockerVersion": "v1.25" } },
        "systemModules": {
            "edgeAgent": { "type": "docker", "settings": { "image": "mcr.microsoft.com/azureiotedge-agent:1.5" } },
            "edgeHub": { "type": "docker", "status": "running", "restartPolicy": "always",
                         "settings": { "image": "mcr.microsoft.com/azureiotedge-hub:1.5" } }
        },
        "modules": {}
    })
}

#[tokio::test]
async fn edge_deployments_and_content_applied_on_a_device() {
    let (_hub, registry) = start().await;
    let configurations = registry.configurations();
    device(
        &registry,
        "edge-1",
        true,
        TwinPatch::new().tag("environment", "prod"),
    )
    .await;

    // Straight onto one device.
    let content = ConfigurationBuilder::new("edge-1-modules")
        .edge_agent(edge_agent())
        .edge_hub(json!({ "schemaVersion": "1.1", "routes": { "up": "FROM /messages/* INTO $upstream" } }))
        .build_content()
        .unwrap();
    configurations
        .apply_configuration_on_edge_device("edge-1", content.clone())
        .await
        .unwrap();
    let agent = registry
        .get_module_twin("edge-1", "$edgeAgent")
        .await
        .unwrap();
    assert_eq!(desired(&agent)["schemaVersion"], "1.1");
    assert_eq!(
        desired(&agent)["systemModules"]["edgeHub"]["restartPolicy"],
        "always"
    );
    let hub_twin = registry
        .get_module_twin("edge-1", "$edgeHub")
        .await
        .unwrap();
    assert_eq!(
        desired(&hub_twin)["routes"]["up"],
        "FROM /messages/* INTO $upstream"
    );
    let err = configurations
        .apply_configuration_on_edge_device("nobody", content)
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");

    // A deployment targeting it by tag.
    let deployment = ConfigurationBuilder::new("edge-base")
        .target_condition("tags.environment = 'prod'")
        .priority(5)
        .edge_agent(edge_agent())
        .edge_hub(json!({ "schemaVersion": "1.1", "routes": { "all": "FROM /messages/* INTO $upstream" } }))
        .build()
        .unwrap();
    configurations
        .create_configuration(deployment)
        .await
        .unwrap();
    let read = configurations.get_configuration("edge-base").await.unwrap();
    let system = read.system_metrics.unwrap_or_default().results;
    assert_eq!(system.get("targetedCount"), Some(&1), "{system:?}");
    let hub_twin = registry
        .get_module_twin("edge-1", "$edgeHub")
        .await
        .unwrap();
    assert_eq!(
        desired(&hub_twin)["routes"]["all"],
        "FROM /messages/* INTO $upstream"
    );
}

/// The next feedback batch, waiting up to 10 s for the hub to produce one.
async fn next_batch(registry: &RegistryManager) -> FeedbackNotification {
    let started = Instant::now();
    loop {
        if let Some(batch) = registry
            .http_runtime()
            .receive_feedback_notification()
            .await
            .unwrap()
        {
            return batch;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no feedback within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn feedback_over_http_round_trip() {
    let (hub, registry) = start().await;
    let runtime = registry.http_runtime();
    device(&registry, "c2d-http", false, TwinPatch::new()).await;
    assert!(
        runtime
            .receive_feedback_notification()
            .await
            .unwrap()
            .is_none()
    );

    registry
        .send_c2d_message(
            "c2d-http",
            "a",
            [("messageId", "ok-1"), ("iothub-ack", "full")],
        )
        .await
        .unwrap();
    let delivered = hub.receive_c2d("c2d-http", None).unwrap();
    assert!(hub.complete_c2d(&delivered.lock_token));

    // Abandoned, the same records come back under a new lock.
    let first = next_batch(&registry).await;
    assert_eq!(first.records.len(), 1);
    let record = &first.records[0];
    assert_eq!(record.original_message_id, "ok-1");
    assert_eq!(record.device_id, "c2d-http");
    assert_eq!(record.status, FeedbackStatus::Success);
    assert!(record.enqueued_time().is_some(), "{record:?}");
    runtime
        .abandon_feedback_notification(&first.lock_token)
        .await
        .unwrap();
    let again = next_batch(&registry).await;
    assert_eq!(again.records, first.records);
    assert_ne!(again.lock_token, first.lock_token);

    // Completed, it is gone, and its token is spent.
    runtime
        .complete_feedback_notification(&again.lock_token)
        .await
        .unwrap();
    assert!(
        runtime
            .receive_feedback_notification()
            .await
            .unwrap()
            .is_none()
    );
    for spent in [&first.lock_token, &again.lock_token] {
        let err = runtime
            .complete_feedback_notification(spent)
            .await
            .unwrap_err();
        assert!(err.is_precondition_failed(), "{err}");
        let err = runtime
            .abandon_feedback_notification(spent)
            .await
            .unwrap_err();
        assert!(err.is_precondition_failed(), "{err}");
    }
    registry.close().await;
}
