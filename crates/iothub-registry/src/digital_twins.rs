//! Digital twins of IoT Plug and Play devices (`/digitaltwins/{id}`), through
//! [`DigitalTwinClient`].

use iothub_rest_gen::ResponseValue;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::etag::{ETag, IfMatch};
use crate::ids::validate_device_id;
use crate::json_patch::JsonPatch;
use crate::manager::{Call, RegistryManager};
use crate::methods::{DEFAULT_RESPONSE_TIMEOUT_SECS, http_timeout};
use crate::retry::OperationKind;

/// The range of a command's connect and response timeouts, in seconds.
pub const COMMAND_TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<u32> = 5..=300;

/// The response header holding the device's own status for a command.
const COMMAND_STATUS_HEADER: &str = "x-ms-command-statuscode";
/// The response header holding the request id of a command.
const REQUEST_ID_HEADER: &str = "x-ms-request-id";

/// The Rust counterpart of Python's `DigitalTwinClient`: the digital twins of IoT Plug and
/// Play devices (devices that announce a model id when they connect), with the methods of the
/// same names. Get one from [`RegistryManager::digital_twins`].
///
/// The hub derives a device's digital twin from its device twin: `$dtId`, `$metadata.$model`,
/// root properties, and components as sections marked `"__t": "c"`. An update is a JSON Patch
/// ([`JsonPatch`]) of the writable properties; a command is a direct method the hub sends to
/// the device (`commandName` at the root, `component*commandName` in a component).
///
/// Like [`ConfigurationManager`](crate::ConfigurationManager), it is a handle on its registry
/// manager, not a second client: the same credential, connection pool, retry policy, timeouts
/// and tracing.
///
/// ```no_run
/// use iothub_registry::{JsonPatch, RegistryManager};
/// use serde_json::json;
///
/// # async fn run(registry: RegistryManager) -> iothub_registry::Result<()> {
/// let digital_twins = registry.digital_twins();
/// let twin = digital_twins.get_digital_twin("thermostat-1").await?;
/// println!("model {:?}", twin.model_id());
/// let patch = JsonPatch::new().add("/thermostat1/targetTemperature", 21.5);
/// digital_twins
///     .update_digital_twin("thermostat-1", patch, twin.if_match()?)
///     .await?;
/// let answer = digital_twins
///     .invoke_component_command("thermostat-1", "thermostat1", "getMaxMinReport",
///                               json!("2026-01-01T00:00:00Z"), None, Some(30))
///     .await?;
/// println!("the device answered {}: {}", answer.status, answer.payload);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct DigitalTwinClient {
    registry: RegistryManager,
}

/// A digital twin as [`DigitalTwinClient::get_digital_twin`] reads it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DigitalTwin {
    /// The digital twin document, as the hub renders it: `$dtId`, `$metadata` (with `$model`),
    /// root properties, components.
    pub twin: Value,
    /// Its entity tag (the `ETag` header), for a conditional update.
    pub etag: Option<ETag>,
}

impl DigitalTwin {
    /// The model id the device announced (`$metadata.$model`).
    pub fn model_id(&self) -> Option<&str> {
        self.twin.pointer("/$metadata/$model")?.as_str()
    }

    /// The precondition of an update that applies only if nobody changed the digital twin
    /// since it was read.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `etag`) when the hub sent no etag; use
    /// [`IfMatch::Any`] to update unconditionally.
    pub fn if_match(&self) -> Result<IfMatch> {
        IfMatch::from_current(self.etag.as_ref().map(ETag::as_str))
    }
}

/// What [`DigitalTwinClient::update_digital_twin`] answers: the hub accepted the patch (202).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DigitalTwinUpdate {
    /// The digital twin's new entity tag (the `ETag` header).
    pub etag: Option<ETag>,
    /// The digital twin's URL (the `Location` header).
    pub location: Option<String>,
}

/// A device's answer to a command ([`DigitalTwinClient::invoke_command`],
/// [`invoke_component_command`](DigitalTwinClient::invoke_component_command)).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct DigitalTwinCommandResult {
    /// The status the device answered with (the `x-ms-command-statuscode` header); the HTTP
    /// status is 200 whatever the device said.
    pub status: i32,
    /// The hub's id of the request (the `x-ms-request-id` header).
    pub request_id: Option<String>,
    /// The payload the device answered with.
    pub payload: Value,
}

impl RegistryManager {
    /// Digital twins of IoT Plug and Play devices (Python's `DigitalTwinClient`), over this
    /// manager's connection, credential and retry policy. Cheap; see [`DigitalTwinClient`].
    pub fn digital_twins(&self) -> DigitalTwinClient {
        DigitalTwinClient {
            registry: self.clone(),
        }
    }
}

impl DigitalTwinClient {
    /// Reads a device's digital twin, with its etag. Retried as a read.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let twin = registry.digital_twins().get_digital_twin("thermostat-1").await?;
    /// println!("{} (model {:?})", twin.twin["$dtId"], twin.model_id());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `digital_twin_id`) for an invalid device id, before
    /// sending; 404 from the hub for an unknown device; [`Error::Protocol`] for an `ETag`
    /// header that is not an entity tag.
    pub async fn get_digital_twin(
        &self,
        digital_twin_id: impl Into<String>,
    ) -> Result<DigitalTwin> {
        let id = digital_twin_id.into();
        validate_twin_id(&id)?;
        let call = Call::new("get_digital_twin", OperationKind::Read).device(&id);
        let (headers, twin) = self
            .registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .digital_twin_get_digital_twin()
                    .id(id.as_str());
                async move { request.send().await.map(split) }
            })
            .await?;
        Ok(DigitalTwin {
            twin,
            etag: etag(&headers, 200)?,
        })
    }

    /// Updates a digital twin with a JSON Patch of its writable properties (root and component
    /// properties alike). `if_match` is the etag read before ([`DigitalTwin::if_match`]; a
    /// mismatch fails with 412, [`Error::is_precondition_failed`]) or [`IfMatch::Any`] for an
    /// unconditional update.
    ///
    /// With an etag it is repeated after a failure that leaves its outcome unknown (a repeat
    /// of an applied update fails with 412); unconditional, it is not.
    ///
    /// ```no_run
    /// use iothub_registry::{IfMatch, JsonPatch};
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let patch = JsonPatch::new()
    ///     .add("/targetTemperature", 21.5)
    ///     .remove("/thermostat1/legacySetting");
    /// let update = registry
    ///     .digital_twins()
    ///     .update_digital_twin("thermostat-1", patch, IfMatch::Any)
    ///     .await?;
    /// println!("new etag {:?}", update.etag);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] before sending: an invalid device id (argument
    /// `digital_twin_id`), an empty patch or a path that is not a JSON Pointer (argument
    /// `patch`). From the hub: 400 for a patch it cannot apply, 404, 412.
    pub async fn update_digital_twin(
        &self,
        digital_twin_id: impl Into<String>,
        patch: JsonPatch,
        if_match: IfMatch,
    ) -> Result<DigitalTwinUpdate> {
        let id = digital_twin_id.into();
        validate_twin_id(&id)?;
        patch.validate()?;
        let body: Vec<Value> = patch.into();
        let header = if_match.header_value();
        let call = Call::new("update_digital_twin", if_match.write_kind()).device(&id);
        let (headers, ()) = self
            .registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .digital_twin_update_digital_twin()
                    .id(id.as_str())
                    .if_match(header.as_str())
                    .body(body.clone());
                async move { request.send().await.map(split) }
            })
            .await?;
        Ok(DigitalTwinUpdate {
            etag: etag(&headers, 202)?,
            location: header_text(&headers, reqwest::header::LOCATION.as_str()),
        })
    }

    /// Invokes a root-level command of a digital twin: the hub calls the device's direct
    /// method `command_name` with `payload` (any JSON) and returns its answer.
    ///
    /// `connect_timeout_in_seconds` (how long to wait for the device to connect) and
    /// `response_timeout_in_seconds` (how long to wait for its answer; the service's default
    /// is 30) must be within 5..=300 when given. The HTTP timeout is their sum plus 15 s, so a
    /// slow device is never cut off early. Never repeated after a failure that leaves its
    /// outcome unknown: the device may have run the command.
    ///
    /// ```no_run
    /// use serde_json::json;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let answer = registry
    ///     .digital_twins()
    ///     .invoke_command("thermostat-1", "reboot", json!({ "delay": 5 }), Some(10), Some(60))
    ///     .await?;
    /// assert_eq!(answer.status, 200);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] before sending: an invalid device id, an empty command name,
    /// a timeout outside 5..=300. From the hub: 404 `DeviceNotOnline` for a device that is not
    /// connected, 504 `GatewayTimeout` for one that does not answer in time.
    /// [`Error::Protocol`] when the answer lacks the device's status.
    pub async fn invoke_command(
        &self,
        digital_twin_id: impl Into<String>,
        command_name: impl Into<String>,
        payload: Value,
        connect_timeout_in_seconds: Option<u32>,
        response_timeout_in_seconds: Option<u32>,
    ) -> Result<DigitalTwinCommandResult> {
        let (id, command) = (digital_twin_id.into(), command_name.into());
        validate_twin_id(&id)?;
        not_empty("command_name", &command)?;
        let timeouts = Timeouts::new(connect_timeout_in_seconds, response_timeout_in_seconds)?;
        let call = Call::new("invoke_command", OperationKind::DirectMethod)
            .device(&id)
            .timeout(timeouts.http());
        let answer = self
            .registry
            .execute(call, || {
                let mut request = self
                    .registry
                    .rest
                    .digital_twin_invoke_root_level_command()
                    .id(id.as_str())
                    .command_name(command.as_str())
                    .body(payload.clone());
                if let Some(connect) = timeouts.connect {
                    request = request.connect_timeout_in_seconds(connect);
                }
                if let Some(response) = timeouts.response {
                    request = request.response_timeout_in_seconds(response);
                }
                async move { request.send().await.map(split) }
            })
            .await?;
        command_result(answer)
    }

    /// Invokes a command of a component of a digital twin: the hub calls the device's direct
    /// method `component_name*command_name`. As [`invoke_command`](Self::invoke_command)
    /// otherwise.
    ///
    /// ```no_run
    /// use serde_json::json;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let report = registry
    ///     .digital_twins()
    ///     .invoke_component_command("thermostat-1", "thermostat1", "getMaxMinReport",
    ///                               json!("2026-01-01T00:00:00Z"), None, None)
    ///     .await?;
    /// println!("{}: {}", report.status, report.payload);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`invoke_command`](Self::invoke_command), and [`Error::InvalidArgument`] (argument
    /// `component_name`) for an empty component name.
    pub async fn invoke_component_command(
        &self,
        digital_twin_id: impl Into<String>,
        component_name: impl Into<String>,
        command_name: impl Into<String>,
        payload: Value,
        connect_timeout_in_seconds: Option<u32>,
        response_timeout_in_seconds: Option<u32>,
    ) -> Result<DigitalTwinCommandResult> {
        let (id, component, command) = (
            digital_twin_id.into(),
            component_name.into(),
            command_name.into(),
        );
        validate_twin_id(&id)?;
        not_empty("component_name", &component)?;
        not_empty("command_name", &command)?;
        let timeouts = Timeouts::new(connect_timeout_in_seconds, response_timeout_in_seconds)?;
        let call = Call::new("invoke_component_command", OperationKind::DirectMethod)
            .device(&id)
            .timeout(timeouts.http());
        let answer = self
            .registry
            .execute(call, || {
                let mut request = self
                    .registry
                    .rest
                    .digital_twin_invoke_component_command()
                    .id(id.as_str())
                    .component_path(component.as_str())
                    .command_name(command.as_str())
                    .body(payload.clone());
                if let Some(connect) = timeouts.connect {
                    request = request.connect_timeout_in_seconds(connect);
                }
                if let Some(response) = timeouts.response {
                    request = request.response_timeout_in_seconds(response);
                }
                async move { request.send().await.map(split) }
            })
            .await?;
        command_result(answer)
    }
}

/// A command's timeouts, checked, in the service's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timeouts {
    connect: Option<i32>,
    response: Option<i32>,
}

impl Timeouts {
    fn new(connect: Option<u32>, response: Option<u32>) -> Result<Self> {
        let check = |argument: &'static str, secs: Option<u32>| match secs {
            None => Ok(None),
            // The range fits i32, so the cast is exact.
            Some(s) if COMMAND_TIMEOUT_RANGE_SECS.contains(&s) => Ok(Some(s as i32)),
            Some(s) => Err(Error::InvalidArgument {
                argument,
                reason: format!("{s} is outside {COMMAND_TIMEOUT_RANGE_SECS:?}"),
            }),
        };
        Ok(Self {
            connect: check("connect_timeout_in_seconds", connect)?,
            response: check("response_timeout_in_seconds", response)?,
        })
    }

    /// The HTTP timeout, as a direct method derives it.
    fn http(self) -> std::time::Duration {
        http_timeout(
            self.response.unwrap_or(DEFAULT_RESPONSE_TIMEOUT_SECS),
            self.connect.unwrap_or(0),
        )
    }
}

fn validate_twin_id(id: &str) -> Result<()> {
    validate_device_id(id).map_err(|error| match error {
        Error::InvalidArgument { reason, .. } => Error::InvalidArgument {
            argument: "digital_twin_id",
            reason,
        },
        other => other,
    })
}

fn not_empty(argument: &'static str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::InvalidArgument {
            argument,
            reason: "must not be empty".into(),
        });
    }
    Ok(())
}

/// The headers and the body of an answer.
fn split<T>(response: ResponseValue<T>) -> (HeaderMap, T) {
    let headers = response.headers().clone();
    (headers, response.into_inner())
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The `ETag` header, if any.
fn etag(headers: &HeaderMap, status: u16) -> Result<Option<ETag>> {
    let Some(value) = headers.get(reqwest::header::ETAG) else {
        return Ok(None);
    };
    let protocol = |reason: String| Error::Protocol { status, reason };
    let text = value
        .to_str()
        .map_err(|_| protocol("the ETag header is not ASCII".into()))?;
    ETag::new(text)
        .map(Some)
        .map_err(|e| protocol(format!("the ETag header is not an entity tag: {e}")))
}

fn command_result((headers, payload): (HeaderMap, Value)) -> Result<DigitalTwinCommandResult> {
    let status = header_text(&headers, COMMAND_STATUS_HEADER)
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| Error::Protocol {
            status: 200,
            reason: format!("no integer {COMMAND_STATUS_HEADER} header: the device's status"),
        })?;
    Ok(DigitalTwinCommandResult {
        status,
        request_id: header_text(&headers, REQUEST_ID_HEADER),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timeouts_are_checked_and_give_the_http_timeout() {
        let default = Timeouts::new(None, None).unwrap();
        assert_eq!(default.http(), Duration::from_secs(30 + 15));
        let both = Timeouts::new(Some(300), Some(300)).unwrap();
        assert_eq!(both.http(), Duration::from_secs(615));
        assert_eq!(
            Timeouts::new(Some(5), Some(5)).unwrap(),
            Timeouts {
                connect: Some(5),
                response: Some(5)
            }
        );
        for (connect, response, argument) in [
            (Some(4), None, "connect_timeout_in_seconds"),
            (Some(0), None, "connect_timeout_in_seconds"),
            (None, Some(301), "response_timeout_in_seconds"),
            (None, Some(u32::MAX), "response_timeout_in_seconds"),
        ] {
            match Timeouts::new(connect, response) {
                Err(Error::InvalidArgument { argument: a, .. }) => assert_eq!(a, argument),
                other => panic!("{connect:?} {response:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_command_status_comes_from_its_header() {
        let mut headers = HeaderMap::new();
        headers.insert(COMMAND_STATUS_HEADER, "201".parse().unwrap());
        headers.insert(REQUEST_ID_HEADER, "42".parse().unwrap());
        let result = command_result((headers, Value::Null)).unwrap();
        assert_eq!(result.status, 201);
        assert_eq!(result.request_id.as_deref(), Some("42"));
        let error = command_result((HeaderMap::new(), Value::Null)).unwrap_err();
        assert!(
            matches!(error, Error::Protocol { status: 200, .. }),
            "{error:?}"
        );
    }

    #[test]
    fn the_model_id_and_precondition_come_from_the_read() {
        let twin = DigitalTwin {
            twin: serde_json::json!({ "$dtId": "d", "$metadata": { "$model": "dtmi:x;1" } }),
            etag: Some(ETag::new("\"AAE=\"").unwrap()),
        };
        assert_eq!(twin.model_id(), Some("dtmi:x;1"));
        assert_eq!(twin.if_match().unwrap().header_value(), "\"AAE=\"");
        let untagged = DigitalTwin { etag: None, ..twin };
        assert!(untagged.if_match().is_err());
    }
}
