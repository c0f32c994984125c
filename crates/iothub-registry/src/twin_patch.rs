//! [`TwinPatch`]: a twin patch written in Rust instead of raw JSON.

use serde_json::{Map, Value};

use crate::models::{Twin, TwinProperties};

/// A patch of a twin's tags and desired properties, for
/// [`update_twin`](crate::RegistryManager::update_twin) and
/// [`update_module_twin`](crate::RegistryManager::update_module_twin) (which take anything
/// that converts into a [`Twin`]).
///
/// The service merges a patch into the twin (JSON merge patch): a key set to a value replaces
/// it, an object is merged key by key, and a removed key ([`remove_tag`](Self::remove_tag),
/// [`remove_desired`](Self::remove_desired), sent as `null`) is deleted. Values are any JSON:
/// numbers, strings and booleans convert directly, and `serde_json::json!` builds the rest.
///
/// ```
/// use iothub_registry::TwinPatch;
/// use iothub_registry::models::Twin;
/// use serde_json::json;
///
/// let patch = TwinPatch::new()
///     .tag("site", "oslo")
///     .tag("floor", 3)
///     .desired("telemetryInterval", 30)
///     .desired_at(["thermostat", "setpoint"], 21.5)
///     .desired("schedule", json!({ "weekdays": [7, 22] }))
///     .remove_tag("retired");
/// let twin: Twin = patch.into();
/// assert_eq!(
///     serde_json::to_value(&twin).unwrap(),
///     json!({
///         "tags": { "site": "oslo", "floor": 3, "retired": null },
///         "properties": { "desired": {
///             "telemetryInterval": 30,
///             "thermostat": { "setpoint": 21.5 },
///             "schedule": { "weekdays": [7, 22] },
///         } },
///     })
/// );
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use = "a patch does nothing until it is sent with update_twin"]
pub struct TwinPatch {
    tags: Map<String, Value>,
    desired: Map<String, Value>,
}

impl TwinPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a tag (replacing what is there; an object is merged into an existing object).
    pub fn tag(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.tags.insert(name.into(), value.into());
        self
    }

    /// Sets a tag nested in objects: `tag_at(["location", "building"], "B2")`.
    ///
    /// # Panics
    ///
    /// When `path` is empty.
    pub fn tag_at<I, S>(mut self, path: I, value: impl Into<Value>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        set_at(&mut self.tags, path, value.into());
        self
    }

    /// Removes a tag (sent as `null`).
    pub fn remove_tag(self, name: impl Into<String>) -> Self {
        self.tag(name, Value::Null)
    }

    /// Sets a desired property.
    pub fn desired(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.desired.insert(name.into(), value.into());
        self
    }

    /// Sets a desired property nested in objects (a component's, say):
    /// `desired_at(["thermostat", "setpoint"], 21.5)`.
    ///
    /// # Panics
    ///
    /// When `path` is empty.
    pub fn desired_at<I, S>(mut self, path: I, value: impl Into<Value>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        set_at(&mut self.desired, path, value.into());
        self
    }

    /// Removes a desired property (sent as `null`).
    pub fn remove_desired(self, name: impl Into<String>) -> Self {
        self.desired(name, Value::Null)
    }

    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.desired.is_empty()
    }
}

impl From<TwinPatch> for Twin {
    fn from(patch: TwinPatch) -> Self {
        let properties = (!patch.desired.is_empty()).then(|| TwinProperties {
            desired: patch.desired,
            reported: Map::new(),
        });
        Twin {
            tags: patch.tags,
            properties,
            ..Twin::default()
        }
    }
}

/// Sets `value` at `path` inside `map`, creating objects on the way (and replacing a
/// non-object found on the way, as a later merge of that path would).
fn set_at<I, S>(map: &mut Map<String, Value>, path: I, value: Value)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut keys: Vec<String> = path.into_iter().map(Into::into).collect();
    let last = keys
        .pop()
        .expect("a twin property path has at least one key");
    let mut here = map;
    for key in keys {
        let entry = here.entry(key).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        here = entry.as_object_mut().expect("made an object just above");
    }
    here.insert(last, value);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn an_empty_patch_sends_nothing() {
        let patch = TwinPatch::new();
        assert!(patch.is_empty());
        assert_eq!(serde_json::to_value(Twin::from(patch)).unwrap(), json!({}));
    }

    #[test]
    fn nested_paths_merge_with_each_other_and_later_values_win() {
        let twin: Twin = TwinPatch::new()
            .tag_at(["location", "building"], "B2")
            .tag_at(["location", "floor"], 4)
            .tag("owner", "ops")
            .tag("owner", "facilities")
            .desired("mode", "eco")
            .tag_at(["owner", "team"], "night")
            .into();
        assert_eq!(
            serde_json::to_value(&twin).unwrap(),
            json!({
                "tags": {
                    "location": { "building": "B2", "floor": 4 },
                    "owner": { "team": "night" },
                },
                "properties": { "desired": { "mode": "eco" } },
            })
        );
    }

    #[test]
    fn removals_are_nulls() {
        let twin: Twin = TwinPatch::new().remove_tag("a").remove_desired("b").into();
        assert_eq!(
            serde_json::to_value(&twin).unwrap(),
            json!({ "tags": { "a": null }, "properties": { "desired": { "b": null } } })
        );
    }
}
