//! `iothub method invoke` and `iothub stats`.

use iothub_registry::models::CloudToDeviceMethod;
use serde_json::Value;

use super::Context;
use crate::cli::MethodCommand;
use crate::error::Result;

/// Runs `method …`.
pub(crate) async fn run(cx: &Context, command: MethodCommand) -> Result<()> {
    let MethodCommand::Invoke {
        device_id,
        method,
        module,
        payload,
        response_timeout,
        connect_timeout,
    } = command;
    let registry = cx.registry()?;
    let call = CloudToDeviceMethod {
        method_name: Some(method),
        payload,
        response_timeout_in_seconds: Some(response_timeout),
        connect_timeout_in_seconds: Some(connect_timeout),
    };
    let result = match module {
        Some(module) => {
            registry
                .invoke_device_module_method(device_id, module, call)
                .await?
        }
        None => registry.invoke_device_method(device_id, call).await?,
    };
    cx.printer.print(result)
}

/// Runs `stats`: the registry's and the service's statistics, as one object.
pub(crate) async fn stats(cx: &Context) -> Result<()> {
    let registry = cx.registry()?;
    let (devices, service) = futures::try_join!(
        registry.get_device_registry_statistics(),
        registry.get_service_statistics()
    )?;
    let mut merged = serde_json::to_value(devices).unwrap_or_default();
    if let (Value::Object(merged), Ok(Value::Object(service))) =
        (&mut merged, serde_json::to_value(service))
    {
        merged.extend(service);
    }
    cx.printer.print(merged)
}
