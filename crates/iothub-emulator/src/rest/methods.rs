//! Direct methods: `POST /twins/{id}/methods` and `/twins/{id}/modules/{mid}/methods` invoke
//! a method on a device or module, waiting for it to connect and to answer.

use std::time::Duration;

use iothub_rest_gen::types as wire;
use serde_json::Value;

use super::answer::{Answer, to_json};
use super::errors::ServiceError;
use super::request::{Req, json_body};
use crate::hub::Shared;
use crate::mqtt::{Command, MethodCall, MethodRoute};
use crate::state::identity::parse_model;
use crate::state::methods::Outcome;

pub(super) async fn invoke(
    shared: &Shared,
    id: &str,
    mid: Option<&str>,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let call: wire::CloudToDeviceMethod = parse_model(&json_body(req)?, "method invocation")?;
    let result = call_method(shared, id, mid, call).await?;
    Ok(Answer::json(200, to_json(&result)))
}

/// The direct-method rendezvous: waits up to the connect timeout for the device or module to
/// be online, then for its answer (a REST invocation and a scheduled method job alike).
pub(crate) async fn call_method(
    shared: &Shared,
    id: &str,
    mid: Option<&str>,
    call: wire::CloudToDeviceMethod,
) -> Result<wire::CloudToDeviceMethodResult, ServiceError> {
    let name = call
        .method_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ServiceError::argument_null("methodName is required"))?;
    let response_timeout = match call.response_timeout_in_seconds {
        None | Some(0) => 30,
        Some(t @ 5..=300) => u64::try_from(t).unwrap_or(30),
        Some(t) => {
            return Err(ServiceError::argument_invalid(format!(
                "responseTimeoutInSeconds must be between 5 and 300; it was {t}"
            )));
        }
    };
    let connect_timeout = match call.connect_timeout_in_seconds {
        None => 0,
        Some(t @ 0..=300) => u64::try_from(t).unwrap_or(0),
        Some(t) => {
            return Err(ServiceError::argument_invalid(format!(
                "connectTimeoutInSeconds must be between 0 and 300; it was {t}"
            )));
        }
    };
    let online = || -> Result<bool, ServiceError> {
        let devices = shared.store.read();
        let entry = devices
            .get(id)
            .ok_or_else(|| ServiceError::device_not_found(id))?;
        let state = match mid {
            None => entry.device.connection_state.clone(),
            Some(m) => entry
                .modules
                .get(m)
                .ok_or_else(|| ServiceError::module_not_found(id, m))?
                .module
                .connection_state
                .clone(),
        };
        Ok(state == Some(wire::ConnectionState::Connected))
    };
    // The service waits up to connectTimeoutInSeconds for the device to come online (and, over
    // MQTT, to subscribe to its methods).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(connect_timeout);
    let device = loop {
        let notified = shared.methods.connected.notified();
        if online()? {
            match shared.mqtt.registry.method_route(id, mid) {
                MethodRoute::Listening(device) => break Some(device),
                MethodRoute::NotOverMqtt => break None,
                MethodRoute::NotListening => {}
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(ServiceError::device_not_online(id, connect_timeout));
        }
    };
    if let Some(device) = device {
        // A real device: it gets the request, and its answer is the result.
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = Command::Method(MethodCall {
            name,
            payload: call.payload.unwrap_or(Value::Null),
            reply,
        });
        let limit = Duration::from_secs(response_timeout);
        let answered = tokio::time::timeout(limit, async {
            device.send(request).await.ok()?;
            answer.await.ok()
        })
        .await;
        return match answered {
            Ok(Some((status, payload))) => Ok(wire::CloudToDeviceMethodResult {
                status: Some(status),
                payload: Some(payload),
            }),
            // No answer in time, or the device went away first.
            _ => Err(ServiceError::gateway_timeout()),
        };
    }
    let response = match shared.methods.outcome(id, mid, &name) {
        Outcome::NoHandler => return Err(ServiceError::device_not_online(id, connect_timeout)),
        Outcome::Answer(r) => r,
    };
    if response.delay_ms > 0 {
        let delay = Duration::from_millis(response.delay_ms);
        let limit = Duration::from_secs(response_timeout);
        if delay > limit {
            tokio::time::sleep(limit).await;
            return Err(ServiceError::gateway_timeout());
        }
        tokio::time::sleep(delay).await;
    }
    let payload = if response.echo {
        call.payload.unwrap_or(Value::Null)
    } else {
        response.payload
    };
    Ok(wire::CloudToDeviceMethodResult {
        status: Some(response.status),
        payload: Some(payload),
    })
}
