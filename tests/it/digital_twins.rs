//! Digital twins end to end: `iothub-registry`'s `DigitalTwinClient` against the emulator,
//! with a Plug and Play device connected through the control API (a puppet announcing its
//! model id) that acknowledges a writable property and answers root and component commands.

use iothub_emulator::{Emulator, MethodResponse};
use iothub_registry::models::DeviceStatus;
use iothub_registry::{DeviceOptions, IfMatch, JsonPatch, RegistryManager, SasKeys};
use iothub_test_support::emulator::{https_client, registry};
use serde_json::{Value, json};

const MODEL: &str = "dtmi:com:example:TemperatureController;2";

/// An emulator, its owner's manager, and device `id` created and connected with [`MODEL`].
async fn pnp_device(id: &str) -> (Emulator, RegistryManager) {
    let hub = Emulator::builder().start().await.unwrap();
    let registry = registry(&hub);
    registry
        .create_device_with_sas(
            id,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    let mut connect = https_client(&hub)
        .post(format!("{}/_emulator/devices/{id}/connect", hub.base_url()))
        .header("content-type", "application/json")
        .body(json!({ "modelId": MODEL }).to_string());
    if let Some(token) = hub.control_token() {
        connect = connect.header("x-emulator-control-token", token);
    }
    let answer = connect.send().await.unwrap();
    assert_eq!(answer.status(), 204, "{:?}", answer.text().await);
    (hub, registry)
}

#[tokio::test]
async fn get_and_update_a_digital_twin() {
    let (hub, registry) = pnp_device("pnp-1").await;
    let twins = registry.digital_twins();

    let twin = twins.get_digital_twin("pnp-1").await.unwrap();
    assert_eq!(twin.twin["$dtId"], "pnp-1", "{}", twin.twin);
    assert_eq!(twin.model_id(), Some(MODEL), "{}", twin.twin);
    let first = twin.etag.clone().expect("an etag");

    // Conditional on the etag just read: applied, with a new etag.
    let patch = JsonPatch::new().add("/targetTemperature", 21.5).add(
        "/thermostat1",
        json!({ "$metadata": {}, "targetTemperature": 19 }),
    );
    let update = twins
        .update_digital_twin("pnp-1", patch, twin.if_match().unwrap())
        .await
        .unwrap();
    let second = update.etag.clone().expect("a new etag");
    assert_ne!(second, first);
    assert!(
        update
            .location
            .as_deref()
            .is_some_and(|l| l.ends_with("/digitaltwins/pnp-1")),
        "{update:?}"
    );

    // The device twin got the desired properties the patch set.
    let device_twin = registry.get_twin("pnp-1").await.unwrap();
    let desired = serde_json::to_value(device_twin.properties.unwrap().desired).unwrap();
    assert_eq!(desired["targetTemperature"], 21.5, "{desired}");
    assert_eq!(desired["thermostat1"]["targetTemperature"], 19, "{desired}");

    // The stale etag is refused; an unconditional update goes through.
    let stale = twins
        .update_digital_twin(
            "pnp-1",
            JsonPatch::new().replace("/targetTemperature", 22),
            IfMatch::ETag(first),
        )
        .await
        .unwrap_err();
    assert!(stale.is_precondition_failed(), "{stale:?}");
    twins
        .update_digital_twin(
            "pnp-1",
            JsonPatch::new().replace("/targetTemperature", 23),
            IfMatch::Any,
        )
        .await
        .unwrap();

    // The device acknowledges the component's writable property; the digital twin shows it.
    let version = serde_json::to_value(registry.get_twin("pnp-1").await.unwrap().properties)
        .unwrap()["desired"]["$version"]
        .clone();
    hub.report_properties(
        "pnp-1",
        None,
        &json!({ "thermostat1": { "__t": "c",
            "targetTemperature": { "value": 19, "ac": 200, "av": version, "ad": "applied" } } }),
    )
    .unwrap();
    let twin = twins.get_digital_twin("pnp-1").await.unwrap();
    let ack = &twin.twin["thermostat1"]["$metadata"]["targetTemperature"];
    assert_eq!(ack["ackCode"], 200, "{}", twin.twin);
    assert_eq!(ack["ackDescription"], "applied", "{}", twin.twin);
    assert_ne!(twin.etag, Some(second));

    // A patch the hub cannot apply is its 400; an unknown device its 404.
    let bad = twins
        .update_digital_twin(
            "pnp-1",
            JsonPatch::new().replace("/nowhere/deeper", 1),
            IfMatch::Any,
        )
        .await
        .unwrap_err();
    assert_eq!(bad.status(), Some(400), "{bad:?}");
    let unknown = twins.get_digital_twin("nobody").await.unwrap_err();
    assert!(unknown.is_not_found(), "{unknown:?}");
}

#[tokio::test]
async fn root_and_component_commands_reach_the_device() {
    let (hub, registry) = pnp_device("pnp-2").await;
    let twins = registry.digital_twins();
    hub.set_method_response(
        "pnp-2",
        None,
        "reboot",
        MethodResponse::fixed(201, json!({ "rebooting": true })),
    );
    hub.set_method_response(
        "pnp-2",
        None,
        "thermostat1*getMaxMinReport",
        MethodResponse::echo(),
    );

    let root = twins
        .invoke_command("pnp-2", "reboot", json!({ "delay": 1 }), Some(5), Some(10))
        .await
        .unwrap();
    assert_eq!(root.status, 201);
    assert_eq!(root.payload, json!({ "rebooting": true }));
    assert!(root.request_id.is_some(), "{root:?}");

    let since = json!("2026-01-01T00:00:00Z");
    let component = twins
        .invoke_component_command(
            "pnp-2",
            "thermostat1",
            "getMaxMinReport",
            since.clone(),
            None,
            Some(10),
        )
        .await
        .unwrap();
    assert_eq!(component.status, 200);
    assert_eq!(component.payload, since);

    // A device that is not connected: 404103, not retried into a second run.
    hub.disconnect_device("pnp-2").unwrap();
    let offline = twins
        .invoke_command("pnp-2", "reboot", Value::Null, None, Some(5))
        .await
        .unwrap_err();
    assert_eq!(offline.status(), Some(404), "{offline:?}");
    assert_eq!(
        offline.service().and_then(|s| s.code_number()),
        Some(404103),
        "{offline:?}"
    );
}
