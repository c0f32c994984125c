//! [`ConfigurationBuilder`]: a configuration (automatic device management, or an IoT Edge
//! deployment) written in Rust instead of raw JSON, and the checks every configuration passes
//! before it is sent.

use std::collections::BTreeMap;

use iothub_auth::ids::check_device_id;
use serde_json::{Map, Value};

use crate::Error;
use crate::ids::validate_module_id;
use crate::models::{Configuration, ConfigurationContent, ConfigurationMetrics};

/// The IoT Edge agent's module, whose desired properties are an edge device's deployment.
pub const EDGE_AGENT: &str = "$edgeAgent";
/// The IoT Edge hub's module, whose desired properties hold its routes.
pub const EDGE_HUB: &str = "$edgeHub";

/// The path every content key starts with: configurations only ever set desired properties.
const DESIRED: &str = "properties.desired";

/// Builds a [`Configuration`]: its id, target condition, priority, labels, metrics and one kind
/// of content. [`build`](Self::build) runs the checks [`create_configuration`] runs, so a
/// configuration that builds is one the SDK will send.
///
/// Three kinds of content, one per configuration:
///
/// - **Device content** (automatic device management of device twins):
///   [`device_content`](Self::device_content) sets a section of the targeted device twins'
///   desired properties (`"properties.desired.firmware"`).
/// - **Module content** (automatic device management of module twins; the target condition
///   then starts `FROM devices.modules WHERE`): [`module_content`](Self::module_content).
/// - **Modules content** (an IoT Edge deployment): the desired properties of each module of an
///   edge device, [`edge_agent`](Self::edge_agent) and [`edge_hub`](Self::edge_hub) for the
///   runtime, [`module`](Self::module) for the others, and [`module_at`](Self::module_at) for
///   a path inside one (layered deployments).
///
/// Values are any JSON: numbers, strings and booleans convert directly, and
/// `serde_json::json!` builds the rest.
///
/// ```
/// use iothub_registry::ConfigurationBuilder;
/// use serde_json::json;
///
/// // Automatic device management: every thermostat on floor 3 gets the new firmware.
/// let firmware = ConfigurationBuilder::new("firmware-1-4-2")
///     .target_condition("tags.kind = 'thermostat' AND tags.floor = 3")
///     .priority(10)
///     .label("team", "facilities")
///     .device_content("properties.desired.firmware", json!({ "version": "1.4.2" }))
///     .metric("updated", "SELECT deviceId FROM devices WHERE properties.reported.firmware.version = '1.4.2'")
///     .build()?;
/// assert_eq!(firmware.id.as_deref(), Some("firmware-1-4-2"));
///
/// // An IoT Edge deployment: the runtime's two modules and one of ours.
/// let deployment = ConfigurationBuilder::new("edge-base")
///     .target_condition("tags.environment = 'prod'")
///     .edge_agent(json!({
///         "schemaVersion": "1.1",
///         "runtime": { "type": "docker", "settings": {} },
///         "systemModules": {
///             "edgeAgent": { "type": "docker", "settings": { "image": "mcr.microsoft.com/azureiotedge-agent:1.5" } },
///             "edgeHub": { "type": "docker", "status": "running", "restartPolicy": "always",
///                          "settings": { "image": "mcr.microsoft.com/azureiotedge-hub:1.5" } }
///         },
///         "modules": {}
///     }))
///     .edge_hub(json!({ "schemaVersion": "1.1", "routes": {}, "storeAndForwardConfiguration": { "timeToLiveSecs": 7200 } }))
///     .module("filter", json!({ "threshold": 25 }))
///     .build()?;
/// let content = deployment.content.unwrap();
/// assert_eq!(content.modules_content["$edgeHub"]["properties.desired"]["schemaVersion"], "1.1");
/// # Ok::<(), iothub_registry::Error>(())
/// ```
///
/// [`create_configuration`]: crate::ConfigurationManager::create_configuration
#[derive(Debug, Clone, PartialEq)]
#[must_use = "a builder does nothing until built"]
pub struct ConfigurationBuilder {
    configuration: Configuration,
    content: ConfigurationContent,
}

impl ConfigurationBuilder {
    /// A configuration with this id and nothing else yet. The id is checked by
    /// [`build`](Self::build): 1 to 128 ASCII letters, digits and `-:.+%_#*?!(),=@;$'`
    /// (the device id rule; the service recommends lower case).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            configuration: Configuration {
                id: Some(id.into()),
                ..Configuration::default()
            },
            content: ConfigurationContent::default(),
        }
    }

    /// The query condition on twins that selects the devices (or modules) the configuration
    /// applies to: `tags.environment = 'prod'`, or `FROM devices.modules WHERE …` for module
    /// content. An empty condition targets nothing.
    pub fn target_condition(mut self, condition: impl Into<String>) -> Self {
        self.configuration.target_condition = Some(condition.into());
        self
    }

    /// Which configuration wins where several target the same twin: the highest priority (0 or
    /// more).
    pub fn priority(mut self, priority: i32) -> Self {
        self.configuration.priority = Some(priority);
        self
    }

    /// Adds a label (a free key and value, for your own bookkeeping).
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.configuration.labels.insert(name.into(), value.into());
        self
    }

    /// Adds a custom metric: a query, evaluated by the hub, whose result count is reported under
    /// `name` in the configuration's `metrics.results`.
    pub fn metric(mut self, name: impl Into<String>, query: impl Into<String>) -> Self {
        self.configuration
            .metrics
            .get_or_insert_with(ConfigurationMetrics::default)
            .queries
            .insert(name.into(), query.into());
        self
    }

    /// Sets the schema version of the configuration (the service uses `1.0` when none is given).
    pub fn schema_version(mut self, version: impl Into<String>) -> Self {
        self.configuration.schema_version = Some(version.into());
        self
    }

    /// Sets a section of the targeted device twins' desired properties: `path` is
    /// `properties.desired.<section>` (nested sections with dots).
    pub fn device_content(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.content
            .device_content
            .insert(path.into(), value.into());
        self
    }

    /// Sets a section of the targeted module twins' desired properties, as
    /// [`device_content`](Self::device_content) does for device twins.
    pub fn module_content(mut self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.content
            .module_content
            .insert(path.into(), value.into());
        self
    }

    /// An IoT Edge deployment's desired properties for the module `module_id` (its
    /// `properties.desired`, whole).
    pub fn module(self, module_id: impl Into<String>, desired: impl Into<Value>) -> Self {
        self.module_at(module_id, DESIRED, desired)
    }

    /// An IoT Edge deployment's value at `path` (`properties.desired` or below it) of the module
    /// `module_id`: layered deployments set parts of a module's desired properties, e.g.
    /// `module_at("$edgeAgent", "properties.desired.modules.filter", json!({…}))`.
    pub fn module_at(
        mut self,
        module_id: impl Into<String>,
        path: impl Into<String>,
        value: impl Into<Value>,
    ) -> Self {
        self.content
            .modules_content
            .entry(module_id.into())
            .or_default()
            .insert(path.into(), value.into());
        self
    }

    /// The IoT Edge agent's desired properties (`$edgeAgent`): the runtime, the system modules
    /// and the deployment's modules.
    pub fn edge_agent(self, desired: impl Into<Value>) -> Self {
        self.module(EDGE_AGENT, desired)
    }

    /// The IoT Edge hub's desired properties (`$edgeHub`): routes and store-and-forward.
    pub fn edge_hub(self, desired: impl Into<Value>) -> Self {
        self.module(EDGE_HUB, desired)
    }

    /// The configuration, checked as [`create_configuration`] checks it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`]: an invalid id (argument `configuration_id`), no content,
    /// content of two kinds, a content path outside `properties.desired`, an invalid module id,
    /// a negative priority, or an empty label or metric name or metric query (argument
    /// `configuration`).
    ///
    /// [`create_configuration`]: crate::ConfigurationManager::create_configuration
    pub fn build(self) -> Result<Configuration, Error> {
        let mut configuration = self.configuration;
        configuration.content = Some(self.content);
        check_configuration(&configuration)?;
        Ok(configuration)
    }

    /// Only the content, checked, for
    /// [`apply_configuration_on_edge_device`](crate::ConfigurationManager::apply_configuration_on_edge_device)
    /// (which sends no id, target condition or metrics: the builder's id is not checked).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `content`) as that method checks it: modules content
    /// only, with `$edgeAgent` and `$edgeHub`.
    pub fn build_content(self) -> Result<ConfigurationContent, Error> {
        check_edge_content(&self.content)?;
        Ok(self.content)
    }
}

fn invalid(argument: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidArgument {
        argument,
        reason: reason.into(),
    }
}

/// Checks a configuration id.
///
/// The service documents configuration ids as up to 128 characters and recommends lower case;
/// the characters allowed are the device id's, which cover every id the service's examples
/// use.
pub(crate) fn validate_configuration_id(id: &str) -> Result<(), Error> {
    check_device_id(id).map_err(|error| invalid("configuration_id", error.to_string()))
}

/// Checks what a create or update sends: the id, one kind of content, content paths, priority,
/// labels and metrics.
pub(crate) fn check_configuration(configuration: &Configuration) -> Result<(), Error> {
    let Some(id) = configuration.id.as_deref() else {
        return Err(invalid(
            "configuration_id",
            "the configuration has no id (`id` is None)",
        ));
    };
    validate_configuration_id(id)?;
    let content = configuration.content.as_ref().ok_or_else(|| {
        invalid(
            "configuration",
            "has no content: set device content, module content or modules content",
        )
    })?;
    let kinds = [
        !content.device_content.is_empty(),
        !content.module_content.is_empty(),
        !content.modules_content.is_empty(),
    ];
    match kinds.iter().filter(|&&set| set).count() {
        0 => {
            return Err(invalid(
                "configuration",
                "has no content: set device content, module content or modules content",
            ));
        }
        1 => {}
        _ => {
            return Err(invalid(
                "configuration",
                "has content of more than one kind: a configuration sets device content, module \
                 content or modules content (an IoT Edge deployment), one of them",
            ));
        }
    }
    check_paths("configuration", "deviceContent", &content.device_content)?;
    check_paths("configuration", "moduleContent", &content.module_content)?;
    check_modules("configuration", &content.modules_content)?;
    if let Some(priority) = configuration.priority.filter(|p| *p < 0) {
        return Err(invalid(
            "configuration",
            format!("priority {priority} is negative; priorities are 0 or more"),
        ));
    }
    if configuration
        .labels
        .keys()
        .any(|name| name.trim().is_empty())
    {
        return Err(invalid("configuration", "a label has an empty name"));
    }
    if let Some(metrics) = &configuration.metrics {
        check_queries("configuration", "metric", &metrics.queries)?;
    }
    Ok(())
}

/// Checks the content an edge device is given: modules content only, with the runtime's two
/// modules.
pub(crate) fn check_edge_content(content: &ConfigurationContent) -> Result<(), Error> {
    if !content.device_content.is_empty() || !content.module_content.is_empty() {
        return Err(invalid(
            "content",
            "an edge device takes modules content only (no device or module content)",
        ));
    }
    for module in [EDGE_AGENT, EDGE_HUB] {
        if !content.modules_content.contains_key(module) {
            return Err(invalid(
                "content",
                format!(
                    "the modules content has no `{module}`; an edge device needs both `$edgeAgent` and `$edgeHub`"
                ),
            ));
        }
    }
    check_modules("content", &content.modules_content)
}

/// Checks custom metric queries (and test queries): names and queries not blank.
pub(crate) fn check_queries(
    argument: &'static str,
    what: &str,
    queries: &BTreeMap<String, String>,
) -> Result<(), Error> {
    for (name, query) in queries {
        if name.trim().is_empty() {
            return Err(invalid(argument, format!("a {what} has an empty name")));
        }
        if query.trim().is_empty() {
            return Err(invalid(
                argument,
                format!("the {what} `{name}` has an empty query"),
            ));
        }
    }
    Ok(())
}

fn check_modules(
    argument: &'static str,
    modules: &BTreeMap<String, Map<String, Value>>,
) -> Result<(), Error> {
    for (module_id, content) in modules {
        validate_module_id(module_id).map_err(|error| match error {
            Error::InvalidArgument { reason, .. } => invalid(
                argument,
                format!("modules content: module id `{module_id}`: {reason}"),
            ),
            other => other,
        })?;
        if content.is_empty() {
            return Err(invalid(
                argument,
                format!("modules content: `{module_id}` sets nothing"),
            ));
        }
        check_paths(argument, &format!("modulesContent.{module_id}"), content)?;
    }
    Ok(())
}

/// Every key is `properties.desired` or a path below it.
fn check_paths(
    argument: &'static str,
    section: &str,
    content: &Map<String, Value>,
) -> Result<(), Error> {
    for path in content.keys() {
        let below = path
            .strip_prefix(DESIRED)
            .is_some_and(|rest| rest.is_empty() || (rest.len() > 1 && rest.starts_with('.')));
        if !below {
            return Err(invalid(
                argument,
                format!(
                    "{section}: `{path}` is not `properties.desired` or a path below it; \
                     configurations set desired properties only"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reason(result: Result<impl std::fmt::Debug, Error>, expected_argument: &str) -> String {
        match result {
            Err(Error::InvalidArgument { argument, reason }) => {
                assert_eq!(argument, expected_argument, "{reason}");
                reason
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn adm(id: &str) -> ConfigurationBuilder {
        ConfigurationBuilder::new(id)
            .target_condition("tags.floor = 3")
            .device_content("properties.desired.firmware", json!({ "version": "1.4.2" }))
    }

    fn edge() -> ConfigurationBuilder {
        ConfigurationBuilder::new("edge-1")
            .edge_agent(json!({ "schemaVersion": "1.1" }))
            .edge_hub(json!({ "schemaVersion": "1.1", "routes": {} }))
    }

    #[test]
    fn a_configuration_builds_into_the_wire_shape() {
        let built = adm("fw")
            .priority(10)
            .label("team", "ops")
            .metric(
                "updated",
                "SELECT deviceId FROM devices WHERE properties.reported.v = 2",
            )
            .schema_version("1.0")
            .build()
            .unwrap();
        assert_eq!(
            serde_json::to_value(&built).unwrap(),
            json!({
                "id": "fw",
                "schemaVersion": "1.0",
                "labels": { "team": "ops" },
                "content": { "deviceContent": { "properties.desired.firmware": { "version": "1.4.2" } } },
                "targetCondition": "tags.floor = 3",
                "priority": 10,
                "metrics": { "queries": { "updated": "SELECT deviceId FROM devices WHERE properties.reported.v = 2" } },
            })
        );
        let layered = ConfigurationBuilder::new("layer")
            .module_at(
                "$edgeAgent",
                "properties.desired.modules.filter",
                json!({ "type": "docker" }),
            )
            .build()
            .unwrap();
        assert_eq!(
            serde_json::to_value(layered.content.unwrap()).unwrap(),
            json!({ "modulesContent": { "$edgeAgent": { "properties.desired.modules.filter": { "type": "docker" } } } })
        );
        let content = edge()
            .module("filter", json!({ "threshold": 5 }))
            .build_content()
            .unwrap();
        assert_eq!(content.modules_content.len(), 3);
        assert_eq!(
            content.modules_content["filter"]["properties.desired"]["threshold"],
            5
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(reason(adm("").build(), "configuration_id").contains("empty"));
        assert!(reason(adm("a/b").build(), "configuration_id").contains("'/'"));
        assert!(reason(adm(&"c".repeat(129)).build(), "configuration_id").contains("129"));
        adm(&"c".repeat(128)).build().unwrap();
        let no_id = Configuration {
            id: None,
            ..adm("x").build().unwrap()
        };
        assert!(reason(check_configuration(&no_id), "configuration_id").contains("no id"));
    }

    #[test]
    fn content_is_one_kind_below_desired_properties() {
        let empty = ConfigurationBuilder::new("c").target_condition("*").build();
        assert!(reason(empty, "configuration").contains("no content"));
        let none = Configuration {
            content: None,
            ..adm("x").build().unwrap()
        };
        assert!(reason(check_configuration(&none), "configuration").contains("no content"));
        let mixed = adm("c").module_content("properties.desired.x", 1).build();
        assert!(reason(mixed, "configuration").contains("more than one kind"));
        let mixed = adm("c").edge_agent(json!({})).build();
        assert!(reason(mixed, "configuration").contains("more than one kind"));
        for path in [
            "tags.floor",
            "properties.desiredx",
            "properties.desired.",
            "properties.reported.x",
        ] {
            let wrong = ConfigurationBuilder::new("c")
                .device_content(path, 1)
                .build();
            assert!(reason(wrong, "configuration").contains(path), "{path}");
        }
        ConfigurationBuilder::new("c")
            .module_content("properties.desired", json!({}))
            .build()
            .unwrap();
        let module = ConfigurationBuilder::new("c")
            .module("bad/id", json!({}))
            .build();
        assert!(reason(module, "configuration").contains("bad/id"));
        let module = ConfigurationBuilder::new("c")
            .module_at("m", "tags", json!({}))
            .build();
        assert!(reason(module, "configuration").contains("modulesContent.m"));
        let nothing = Configuration {
            content: Some(ConfigurationContent {
                modules_content: [("m".to_owned(), Map::new())].into(),
                ..Default::default()
            }),
            ..adm("x").build().unwrap()
        };
        assert!(reason(check_configuration(&nothing), "configuration").contains("sets nothing"));
    }

    #[test]
    fn priority_labels_and_metrics_are_checked() {
        assert!(reason(adm("c").priority(-1).build(), "configuration").contains("negative"));
        adm("c").priority(0).build().unwrap();
        assert!(reason(adm("c").label(" ", "v").build(), "configuration").contains("label"));
        assert!(
            reason(adm("c").metric("", "SELECT 1").build(), "configuration").contains("empty name")
        );
        assert!(reason(adm("c").metric("m", " ").build(), "configuration").contains("`m`"));
    }

    #[test]
    fn edge_content_needs_the_runtime_and_nothing_else() {
        edge().build_content().unwrap();
        let agent_only = ConfigurationBuilder::new("x")
            .edge_agent(json!({}))
            .build_content();
        assert!(reason(agent_only, "content").contains("$edgeHub"));
        let device = edge()
            .device_content("properties.desired.x", 1)
            .build_content();
        assert!(reason(device, "content").contains("modules content only"));
    }
}
