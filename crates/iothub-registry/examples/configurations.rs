//! Configurations on the embedded IoT Hub emulator: automatic device management of thermostats,
//! an IoT Edge deployment, modules content applied onto one edge device, and delivery feedback
//! over HTTP.
//!
//! ```sh
//! cargo run -p iothub-registry --example configurations
//! ```

use iothub_emulator::Emulator;
use iothub_registry::models::{ConfigurationQueriesTestInput, DeviceStatus};
use iothub_registry::{
    ConfigurationBuilder, ConnectionString, Credential, DeviceOptions, IfMatch, RegistryManager,
    SasKeys, TwinPatch,
};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn step(title: &str) {
    println!("\n== {title}");
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let emulator = Emulator::builder().start().await?;
    println!(
        "started a local IoT Hub emulator at {}",
        emulator.base_url()
    );
    let cs: ConnectionString = emulator.connection_string().parse()?;
    let registry = RegistryManager::builder(Credential::from_connection_string(&cs))
        .add_root_certificate_pem(emulator.ca_certificate_pem().unwrap_or_default())
        .amqp_port(emulator.amqp_addr().map_or(5671, |addr| addr.port()))
        .build()?;
    let result = tour(&emulator, &registry).await;
    registry.close().await;
    emulator.shutdown().await;
    result?;
    println!("\nDone.");
    Ok(())
}

async fn device(
    registry: &RegistryManager,
    id: &str,
    edge: bool,
    tags: TwinPatch,
) -> Result<(), BoxError> {
    registry
        .create_device_with_sas(
            id,
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new().iot_edge(edge),
        )
        .await?;
    registry.update_twin(id, tags, IfMatch::Any).await?;
    Ok(())
}

fn desired(twin: iothub_registry::models::Twin) -> Value {
    serde_json::to_value(twin.properties.unwrap_or_default().desired).unwrap_or_default()
}

async fn tour(emulator: &Emulator, registry: &RegistryManager) -> Result<(), BoxError> {
    let configurations = registry.configurations();

    step("Automatic device management");
    device(
        registry,
        "thermo-1",
        false,
        TwinPatch::new().tag("kind", "thermostat"),
    )
    .await?;
    device(
        registry,
        "thermo-2",
        false,
        TwinPatch::new().tag("kind", "thermostat"),
    )
    .await?;
    let updated =
        "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '1.4.2'";
    let checked = configurations
        .test_configuration_queries(ConfigurationQueriesTestInput {
            target_condition: Some("tags.kind = 'thermostat'".into()),
            custom_metric_queries: [("updated".to_owned(), updated.to_owned())].into(),
        })
        .await?;
    println!("queries checked: {checked:?}");
    let firmware = ConfigurationBuilder::new("firmware-142")
        .target_condition("tags.kind = 'thermostat'")
        .priority(10)
        .label("team", "facilities")
        .device_content("properties.desired.firmware", json!({ "version": "1.4.2" }))
        .metric("updated", updated)
        .build()?;
    configurations.create_configuration(firmware).await?;
    println!(
        "thermo-1 desired firmware: {}",
        desired(registry.get_twin("thermo-1").await?)["firmware"]
    );
    // One thermostat reports the new firmware (the emulator plays the device).
    emulator.report_properties(
        "thermo-1",
        None,
        &json!({ "firmware": { "version": "1.4.2" } }),
    )?;
    let read = configurations.get_configuration("firmware-142").await?;
    println!(
        "system metrics {:?}, custom metrics {:?}",
        read.system_metrics.clone().unwrap_or_default().results,
        read.metrics.clone().unwrap_or_default().results
    );
    let if_match = IfMatch::from_current(read.etag.as_deref())?;
    let mut changed = read;
    changed.priority = Some(20);
    let changed = configurations
        .update_configuration(changed, if_match)
        .await?;
    println!(
        "priority now {:?}, etag {:?}",
        changed.priority, changed.etag
    );

    step("An IoT Edge deployment");
    device(
        registry,
        "gateway-1",
        true,
        TwinPatch::new().tag("environment", "prod"),
    )
    .await?;
    let edge_agent = json!({
        "schemaVersion": "1.1",
        "runtime": { "type": "docker", "settings": {} },
        "systemModules": {
            "edgeAgent": { "type": "docker", "settings": { "image": "mcr.microsoft.com/azureiotedge-agent:1.5" } },
            "edgeHub": { "type": "docker", "status": "running", "restartPolicy": "always",
                         "settings": { "image": "mcr.microsoft.com/azureiotedge-hub:1.5" } }
        },
        "modules": {}
    });
    let deployment = ConfigurationBuilder::new("prod-base")
        .target_condition("tags.environment = 'prod'")
        .edge_agent(edge_agent.clone())
        .edge_hub(json!({ "schemaVersion": "1.1", "routes": { "up": "FROM /messages/* INTO $upstream" } }))
        .build()?;
    configurations.create_configuration(deployment).await?;
    let agent = registry.get_module_twin("gateway-1", "$edgeAgent").await?;
    println!("$edgeAgent runtime: {}", desired(agent)["runtime"]);

    step("Modules content applied onto one edge device");
    let content = ConfigurationBuilder::new("gateway-1")
        .edge_agent(edge_agent)
        .edge_hub(json!({ "schemaVersion": "1.1", "routes": { "local": "FROM /messages/* INTO BrokeredEndpoint(\"/modules/filter/inputs/in\")" } }))
        .build_content()?;
    configurations
        .apply_configuration_on_edge_device("gateway-1", content)
        .await?;
    let hub = registry.get_module_twin("gateway-1", "$edgeHub").await?;
    println!("$edgeHub routes: {}", desired(hub)["routes"]);

    step("List and delete");
    for configuration in configurations.get_configurations(None).await? {
        println!(
            "{:?} targets {:?}",
            configuration.id, configuration.target_condition
        );
        if let Some(id) = configuration.id {
            configurations
                .delete_configuration(id, IfMatch::Any)
                .await?;
        }
    }

    step("Delivery feedback over HTTP");
    registry
        .send_c2d_message("thermo-2", "reboot", [("iothub-ack", "full")])
        .await?;
    // The emulator plays the device: it receives the message and completes it.
    if let Some(message) = emulator.receive_c2d("thermo-2", None) {
        emulator.complete_c2d(&message.lock_token);
    }
    let runtime = registry.http_runtime();
    if let Some(batch) = runtime.receive_feedback_notification().await? {
        for record in &batch.records {
            println!(
                "{} to {}: {}",
                record.original_message_id, record.device_id, record.status
            );
        }
        runtime
            .complete_feedback_notification(&batch.lock_token)
            .await?;
    }
    Ok(())
}
