//! Direct methods, statistics and the cloud-to-device queue purge.

use std::time::Duration;

use iothub_rest_gen::ResponseValue;
use iothub_rest_gen::types::{
    CloudToDeviceMethod, CloudToDeviceMethodResult, PurgeMessageQueueResult, RegistryStatistics,
    ServiceStatistics,
};

use crate::error::{Error, Result};
use crate::ids::{validate_device_id, validate_module_id};
use crate::manager::{Call, RegistryManager};
use crate::retry::OperationKind;

/// The service's default response timeout when a method call does not set one.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT_SECS: i32 = 30;
/// Allowed range of `responseTimeoutInSeconds` and `connectTimeoutInSeconds`.
const RESPONSE_TIMEOUT_RANGE: std::ops::RangeInclusive<i32> = 5..=300;
const CONNECT_TIMEOUT_RANGE: std::ops::RangeInclusive<i32> = 0..=300;
/// Added to the method's own timeouts for the HTTP round trip, as the C# SDK does.
const METHOD_TIMEOUT_MARGIN: Duration = Duration::from_secs(15);

impl RegistryManager {
    /// Invokes a direct method on a device and returns the device's answer (its own status
    /// and payload). The HTTP timeout is the method's connect and response timeouts plus 15 s,
    /// so a slow device is never cut off early.
    ///
    /// A device that is not connected fails with 404 and code `DeviceNotOnline`; one that
    /// does not answer in time with 504 and `GatewayTimeout`. The call is not retried after an
    /// ambiguous failure (the method may have run) unless the retry policy allows it.
    ///
    /// ```no_run
    /// use iothub_registry::{RegistryManager, models::CloudToDeviceMethod};
    ///
    /// # async fn run(registry: RegistryManager) -> iothub_registry::Result<()> {
    /// let result = registry
    ///     .invoke_device_method("thermostat-1", CloudToDeviceMethod {
    ///         method_name: Some("reboot".into()),
    ///         payload: Some(serde_json::json!({ "delay": 5 })),
    ///         response_timeout_in_seconds: Some(60),
    ///         connect_timeout_in_seconds: Some(10),
    ///     })
    ///     .await?;
    /// println!("device answered {:?}: {:?}", result.status, result.payload);
    /// # Ok(()) }
    /// ```
    pub async fn invoke_device_method(
        &self,
        device_id: impl Into<String>,
        method: CloudToDeviceMethod,
    ) -> Result<CloudToDeviceMethodResult> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        let (method, timeout) = prepare_method(method)?;
        let call = Call::new("invoke_device_method", OperationKind::DirectMethod)
            .device(&device_id)
            .timeout(timeout);
        self.execute(call, || {
            let request = self
                .rest
                .devices_invoke_method()
                .device_id(device_id.as_str())
                .body(method.clone());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Invokes a direct method on a module; see [`RegistryManager::invoke_device_method`].
    pub async fn invoke_device_module_method(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        method: CloudToDeviceMethod,
    ) -> Result<CloudToDeviceMethodResult> {
        let (device_id, module_id) = (device_id.into(), module_id.into());
        validate_device_id(&device_id)?;
        validate_module_id(&module_id)?;
        let (method, timeout) = prepare_method(method)?;
        let call = Call::new("invoke_device_module_method", OperationKind::DirectMethod)
            .device(&device_id)
            .module(&module_id)
            .timeout(timeout);
        self.execute(call, || {
            let request = self
                .rest
                .modules_invoke_method()
                .device_id(device_id.as_str())
                .module_id(module_id.as_str())
                .body(method.clone());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Device counts of the registry: total, enabled, disabled.
    pub async fn get_device_registry_statistics(&self) -> Result<RegistryStatistics> {
        self.execute(
            Call::new("get_device_registry_statistics", OperationKind::Read),
            || {
                let request = self.rest.statistics_get_device_statistics();
                async move { request.send().await.map(ResponseValue::into_inner) }
            },
        )
        .await
    }

    /// Service statistics: the number of connected devices.
    pub async fn get_service_statistics(&self) -> Result<ServiceStatistics> {
        self.execute(
            Call::new("get_service_statistics", OperationKind::Read),
            || {
                let request = self.rest.statistics_get_service_statistics();
                async move { request.send().await.map(ResponseValue::into_inner) }
            },
        )
        .await
    }

    /// Deletes every cloud-to-device message waiting for a device (`DELETE
    /// /devices/{id}/commands`) and says how many there were. Not in the Python reference.
    pub async fn purge_c2d_queue(
        &self,
        device_id: impl Into<String>,
    ) -> Result<PurgeMessageQueueResult> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        // Repeating it could delete messages enqueued in between: an unconditional write.
        let call =
            Call::new("purge_c2d_queue", OperationKind::UnconditionalWrite).device(&device_id);
        self.execute(call, || {
            let request = self
                .rest
                .cloud_to_device_messages_purge_cloud_to_device_message_queue()
                .id(device_id.as_str());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }
}

/// Checks a method call and derives its HTTP timeout. A missing payload becomes `""`, as the
/// reference sends it.
fn prepare_method(mut method: CloudToDeviceMethod) -> Result<(CloudToDeviceMethod, Duration)> {
    match method.method_name.as_deref() {
        Some(name) if !name.is_empty() => {}
        _ => {
            return Err(Error::InvalidArgument {
                argument: "method_name",
                reason: "is required".into(),
            });
        }
    }
    let response = method
        .response_timeout_in_seconds
        .unwrap_or(DEFAULT_RESPONSE_TIMEOUT_SECS);
    if !RESPONSE_TIMEOUT_RANGE.contains(&response) {
        return Err(Error::InvalidArgument {
            argument: "response_timeout_in_seconds",
            reason: format!("{response} is outside {RESPONSE_TIMEOUT_RANGE:?}"),
        });
    }
    let connect = method.connect_timeout_in_seconds.unwrap_or(0);
    if !CONNECT_TIMEOUT_RANGE.contains(&connect) {
        return Err(Error::InvalidArgument {
            argument: "connect_timeout_in_seconds",
            reason: format!("{connect} is outside {CONNECT_TIMEOUT_RANGE:?}"),
        });
    }
    if method.payload.is_none() {
        method.payload = Some(serde_json::Value::String(String::new()));
    }
    Ok((method, http_timeout(response, connect)))
}

/// The HTTP timeout of a call that waits for a device (a direct method, a digital twin
/// command): its response and connect timeouts, in seconds and checked non-negative, plus the
/// margin for the round trip.
pub(crate) fn http_timeout(response_secs: i32, connect_secs: i32) -> Duration {
    let secs = |s: i32| u64::try_from(s).unwrap_or(0);
    Duration::from_secs(secs(response_secs) + secs(connect_secs)) + METHOD_TIMEOUT_MARGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method(response: Option<i32>, connect: Option<i32>) -> CloudToDeviceMethod {
        CloudToDeviceMethod {
            method_name: Some("reboot".into()),
            payload: None,
            response_timeout_in_seconds: response,
            connect_timeout_in_seconds: connect,
        }
    }

    #[test]
    fn http_timeout_covers_the_method_timeouts() {
        let (m, t) = prepare_method(method(None, None)).unwrap();
        assert_eq!(t, Duration::from_secs(30 + 15));
        assert_eq!(m.payload, Some(serde_json::json!("")));
        let (_, t) = prepare_method(method(Some(300), Some(300))).unwrap();
        assert_eq!(t, Duration::from_secs(615));
    }

    #[test]
    fn out_of_range_timeouts_and_missing_names_are_rejected() {
        assert!(prepare_method(method(Some(4), None)).is_err());
        assert!(prepare_method(method(Some(301), None)).is_err());
        assert!(prepare_method(method(None, Some(-1))).is_err());
        let mut nameless = method(None, None);
        nameless.method_name = Some(String::new());
        let err = prepare_method(nameless).unwrap_err().to_string();
        assert!(err.contains("method_name"), "{err}");
    }
}
