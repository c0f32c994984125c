//! Configurations: automatic device management and IoT Edge deployments (`/configurations`,
//! `/devices/{id}/applyConfigurationContent`), through [`ConfigurationManager`].

use iothub_rest_gen::ResponseValue;
use iothub_rest_gen::types::{
    Configuration, ConfigurationContent, ConfigurationQueriesTestInput,
    ConfigurationQueriesTestResponse,
};

use crate::configuration_builder::{
    check_configuration, check_edge_content, check_queries, validate_configuration_id,
};
use crate::error::{Error, Result};
use crate::etag::IfMatch;
use crate::ids::validate_device_id;
use crate::manager::{Call, RegistryManager, deleted};
use crate::retry::OperationKind;

/// The Rust counterpart of Python's `IoTHubConfigurationManager`: automatic device management
/// configurations and IoT Edge deployments, with the methods of the same names. Get one from
/// [`RegistryManager::configurations`].
///
/// It is a handle on its registry manager, not a second client: the same credential, HTTP
/// connection pool, retry policy, timeouts and tracing serve both, and making one costs a clone
/// of the manager (a few reference counts). It owns that clone, so it can be stored or moved
/// into a task on its own. Python has a separate manager, made from its own connection string,
/// per group of operations; here one [`RegistryManager`] is configured once and the groups
/// beyond Python's registry manager hang off it, so `RegistryManager` keeps exactly the methods
/// of `IoTHubRegistryManager` and every Python name reads the same in Rust.
///
/// ```no_run
/// use iothub_registry::{ConfigurationBuilder, IfMatch, RegistryManager};
/// use serde_json::json;
///
/// # async fn run(registry: RegistryManager) -> iothub_registry::Result<()> {
/// let configurations = registry.configurations();
/// let firmware = ConfigurationBuilder::new("firmware-1-4-2")
///     .target_condition("tags.kind = 'thermostat'")
///     .device_content("properties.desired.firmware", json!({ "version": "1.4.2" }))
///     .build()?;
/// let created = configurations.create_configuration(firmware).await?;
/// let metrics = created.system_metrics.unwrap_or_default();
/// println!("targets {:?} twins", metrics.results.get("targetedCount"));
/// # Ok(()) }
/// ```
#[doc(alias = "IoTHubConfigurationManager")]
#[derive(Clone, Debug)]
pub struct ConfigurationManager {
    registry: RegistryManager,
}

impl RegistryManager {
    /// Configurations and IoT Edge deployments (Python's `IoTHubConfigurationManager`), over
    /// this manager's connection, credential and retry policy. Cheap; see
    /// [`ConfigurationManager`].
    pub fn configurations(&self) -> ConfigurationManager {
        ConfigurationManager {
            registry: self.clone(),
        }
    }
}

impl ConfigurationManager {
    /// Creates a configuration (a `PUT` without `If-Match`). Build it with
    /// [`ConfigurationBuilder`](crate::ConfigurationBuilder), or deserialize the generated
    /// model from JSON. Returns the configuration as the hub stored it, with its etag and
    /// creation time.
    ///
    /// Fails with 409 ([`Error::is_conflict`], `ConfigurationAlreadyExists`) if the id is taken.
    /// Not repeated after a failure that leaves its outcome unknown: a repeat would answer 409
    /// for the configuration it created.
    ///
    /// ```no_run
    /// use iothub_registry::ConfigurationBuilder;
    /// use serde_json::json;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let configuration = ConfigurationBuilder::new("interval-30")
    ///     .target_condition("tags.site = 'oslo'")
    ///     .priority(5)
    ///     .device_content("properties.desired.telemetry", json!({ "interval": 30 }))
    ///     .build()?;
    /// registry.configurations().create_configuration(configuration).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// Before sending, [`Error::InvalidArgument`] for what
    /// [`ConfigurationBuilder::build`](crate::ConfigurationBuilder::build) refuses (no id, an
    /// invalid id, no content or two kinds of it, a path outside `properties.desired`, a
    /// negative priority, empty metric names or queries).
    pub async fn create_configuration(
        &self,
        configuration: Configuration,
    ) -> Result<Configuration> {
        self.put("create_configuration", configuration, None).await
    }

    /// Replaces a configuration (a `PUT` with `If-Match`): [`IfMatch::Any`] for an
    /// unconditional update, or the etag read before (a mismatch fails with 412,
    /// [`Error::is_precondition_failed`]). The id is the configuration's own `id`.
    ///
    /// The service lets an update change the target condition, priority, labels and metrics; a
    /// configuration's content is fixed once created.
    ///
    /// ```no_run
    /// use iothub_registry::IfMatch;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let configurations = registry.configurations();
    /// let mut configuration = configurations.get_configuration("interval-30").await?;
    /// configuration.priority = Some(20);
    /// let if_match = IfMatch::from_current(configuration.etag.as_deref())?;
    /// configurations.update_configuration(configuration, if_match).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`create_configuration`](Self::create_configuration) before sending; 404
    /// `ConfigurationNotFound`, 412 `PreconditionFailed` from the hub.
    pub async fn update_configuration(
        &self,
        configuration: Configuration,
        if_match: IfMatch,
    ) -> Result<Configuration> {
        self.put("update_configuration", configuration, Some(if_match))
            .await
    }

    /// Reads a configuration, with its system metrics (`targetedCount`, `appliedCount`) and
    /// custom metrics' results as of the hub's last evaluation.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let configuration = registry.configurations().get_configuration("interval-30").await?;
    /// let system = configuration.system_metrics.unwrap_or_default();
    /// println!("applied on {:?} twins", system.results.get("appliedCount"));
    /// # Ok(()) }
    /// ```
    pub async fn get_configuration(
        &self,
        configuration_id: impl Into<String>,
    ) -> Result<Configuration> {
        let id = configuration_id.into();
        validate_configuration_id(&id)?;
        let call = Call::new("get_configuration", OperationKind::Read).configuration(&id);
        self.registry
            .execute(call, || {
                let request = self.registry.rest.configuration_get().id(id.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Lists the hub's configurations and deployments: up to `top` (at least 1), or as many as
    /// the service returns with `None`. A hub holds at most a few hundred (100 configurations
    /// on a paid tier), so there is no paging.
    ///
    /// ```no_run
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// for configuration in registry.configurations().get_configurations(Some(20)).await? {
    ///     println!("{:?}: {:?}", configuration.id, configuration.target_condition);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `top`) for 0 or more than `i32::MAX`, before sending.
    pub async fn get_configurations(&self, top: Option<u32>) -> Result<Vec<Configuration>> {
        let top = match top {
            None => None,
            Some(n) => Some(i32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::InvalidArgument {
                    argument: "top",
                    reason: format!("{n} is outside 1..={}", i32::MAX),
                }
            })?),
        };
        let call = Call::new("get_configurations", OperationKind::Read);
        self.registry
            .execute(call, || {
                let mut request = self.registry.rest.configuration_get_configurations();
                if let Some(top) = top {
                    request = request.top(top);
                }
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Deletes a configuration: unconditionally with [`IfMatch::Any`], or only if its etag still
    /// matches.
    ///
    /// A configuration that does not exist fails with 404 ([`Error::is_not_found`]), except
    /// when an earlier attempt of this call failed in a way that leaves its outcome unknown:
    /// that attempt may be what deleted it, and the call succeeds.
    ///
    /// ```no_run
    /// use iothub_registry::IfMatch;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// registry.configurations().delete_configuration("interval-30", IfMatch::Any).await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_configuration(
        &self,
        configuration_id: impl Into<String>,
        if_match: IfMatch,
    ) -> Result<()> {
        let id = configuration_id.into();
        validate_configuration_id(&id)?;
        let header = if_match.header_value();
        let call = Call::new("delete_configuration", OperationKind::Delete).configuration(&id);
        let outcome = self
            .registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .configuration_delete()
                    .id(id.as_str())
                    .if_match(header.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await;
        deleted(call, outcome)
    }

    /// Asks the hub whether a target condition and custom metric queries are valid, without
    /// creating anything: the answer names each invalid one and why
    /// (`target_condition_error`, `custom_metric_query_errors`); valid ones are absent. It is a
    /// `POST` but changes nothing, so it is retried as a read.
    ///
    /// ```no_run
    /// use iothub_registry::models::ConfigurationQueriesTestInput;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let input = ConfigurationQueriesTestInput {
    ///     target_condition: Some("tags.site = 'oslo'".into()),
    ///     custom_metric_queries: [(
    ///         "updated".to_owned(),
    ///         "SELECT deviceId FROM devices WHERE properties.reported.telemetry.interval = 30".to_owned(),
    ///     )]
    ///     .into(),
    /// };
    /// let answer = registry.configurations().test_configuration_queries(input).await?;
    /// if let Some(error) = answer.target_condition_error {
    ///     eprintln!("target condition: {error}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `input`) before sending, when there is nothing to
    /// test, or a metric name or query is empty.
    pub async fn test_configuration_queries(
        &self,
        input: ConfigurationQueriesTestInput,
    ) -> Result<ConfigurationQueriesTestResponse> {
        if input.target_condition.is_none() && input.custom_metric_queries.is_empty() {
            return Err(Error::InvalidArgument {
                argument: "input",
                reason: "has neither a target condition nor a custom metric query to test".into(),
            });
        }
        check_queries("input", "custom metric query", &input.custom_metric_queries)?;
        let call = Call::new("test_configuration_queries", OperationKind::Read);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .configuration_test_queries()
                    .body(input.clone());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }

    /// Applies modules content to one IoT Edge device (Python's
    /// `apply_configuration_on_edge_device`, `az iot edge set-modules`): the hub writes the
    /// desired properties of its `$edgeAgent`, `$edgeHub` and other modules' twins, as a
    /// deployment would. Build the content with
    /// [`ConfigurationBuilder::build_content`](crate::ConfigurationBuilder::build_content).
    ///
    /// Not repeated after a failure that leaves its outcome unknown (it is an unconditional
    /// write of the module twins). The spec answers 204; a 200 (what the C# SDK expects) is
    /// taken as success too.
    ///
    /// ```no_run
    /// use iothub_registry::ConfigurationBuilder;
    /// use serde_json::json;
    ///
    /// # async fn run(registry: iothub_registry::RegistryManager) -> iothub_registry::Result<()> {
    /// let content = ConfigurationBuilder::new("gateway-1-modules")
    ///     .edge_agent(json!({ "schemaVersion": "1.1", "runtime": { "type": "docker", "settings": {} },
    ///                         "systemModules": {}, "modules": {} }))
    ///     .edge_hub(json!({ "schemaVersion": "1.1", "routes": {} }))
    ///     .build_content()?;
    /// registry.configurations().apply_configuration_on_edge_device("gateway-1", content).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] before sending: an invalid device id, or content that is not
    /// modules content with `$edgeAgent` and `$edgeHub` (argument `content`). From the hub, 404
    /// for an unknown device, 400 for a device that is not an edge device.
    pub async fn apply_configuration_on_edge_device(
        &self,
        device_id: impl Into<String>,
        content: ConfigurationContent,
    ) -> Result<()> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        check_edge_content(&content)?;
        let call = Call::new(
            "apply_configuration_on_edge_device",
            OperationKind::UnconditionalWrite,
        )
        .device(&device_id);
        self.registry
            .execute(call, || {
                let request = self
                    .registry
                    .rest
                    .configuration_apply_on_edge_device()
                    .id(device_id.as_str())
                    .body(content.clone());
                async move {
                    match request.send().await {
                        Ok(_) => Ok(()),
                        Err(iothub_rest_gen::Error::UnexpectedResponse(response))
                            if response.status() == reqwest::StatusCode::OK =>
                        {
                            Ok(())
                        }
                        Err(error) => Err(error),
                    }
                }
            })
            .await
    }

    async fn put(
        &self,
        operation: &'static str,
        configuration: Configuration,
        if_match: Option<IfMatch>,
    ) -> Result<Configuration> {
        check_configuration(&configuration)?;
        let id = configuration.id.clone().unwrap_or_default();
        // A create repeated after it was applied answers 409 for the configuration it made; a
        // forced update applies again, undoing any change made in between.
        let kind = if_match
            .as_ref()
            .map_or(OperationKind::Create, IfMatch::write_kind);
        let header = if_match.map(|m| m.header_value());
        self.registry
            .execute(Call::new(operation, kind).configuration(&id), || {
                let mut request = self
                    .registry
                    .rest
                    .configuration_create_or_update()
                    .id(id.as_str())
                    .body(configuration.clone());
                if let Some(header) = &header {
                    request = request.if_match(header.as_str());
                }
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await
    }
}
