//! [`JsonPatch`]: a JSON Patch document (RFC 6902) for
//! [`update_digital_twin`](crate::DigitalTwinClient::update_digital_twin), written in Rust
//! instead of raw JSON.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One operation of a [`JsonPatch`]: the three a digital twin update takes. `path` is a JSON
/// Pointer (RFC 6901) into the digital twin: `/targetTemperature` for a root property,
/// `/thermostat1/targetTemperature` for a property of component `thermostat1`.
///
/// It serializes as the service reads it: `{"op": "add", "path": "/x", "value": 1}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum PatchOperation {
    /// Sets a property that may be absent (or a component that is not there yet).
    Add {
        /// Where, as a JSON Pointer.
        path: String,
        /// Any JSON value.
        value: Value,
    },
    /// Replaces a property that must be present.
    Replace {
        /// Where, as a JSON Pointer.
        path: String,
        /// Any JSON value.
        value: Value,
    },
    /// Removes a property.
    Remove {
        /// Where, as a JSON Pointer.
        path: String,
    },
}

impl PatchOperation {
    /// The operation's JSON Pointer.
    pub fn path(&self) -> &str {
        match self {
            Self::Add { path, .. } | Self::Replace { path, .. } | Self::Remove { path } => path,
        }
    }
}

/// A JSON Patch document: the body of
/// [`update_digital_twin`](crate::DigitalTwinClient::update_digital_twin). The service applies
/// it to the desired side of the digital twin's writable properties, at the root and in
/// components.
///
/// Values are any JSON (numbers, strings and booleans convert directly; `serde_json::json!`
/// builds the rest). Paths are checked as JSON Pointers (RFC 6901: empty or starting with `/`,
/// `~` only as `~0` or `~1`); the whole-document pointer `""` is refused, as is an empty
/// patch. The builder methods never fail: the first bad path is kept and reported by
/// [`validate`](Self::validate), which `update_digital_twin` calls before sending anything.
///
/// ```
/// use iothub_registry::JsonPatch;
/// use serde_json::json;
///
/// let patch = JsonPatch::new()
///     .add("/targetTemperature", 21.5)
///     .replace("/thermostat1/targetTemperature", 19)
///     .add(JsonPatch::pointer(["thermostat1", "schedule"]), json!({ "weekdays": [7, 22] }))
///     .remove("/legacySetting");
/// patch.validate()?;
/// assert_eq!(
///     serde_json::to_value(&patch).unwrap(),
///     json!([
///         { "op": "add", "path": "/targetTemperature", "value": 21.5 },
///         { "op": "replace", "path": "/thermostat1/targetTemperature", "value": 19 },
///         { "op": "add", "path": "/thermostat1/schedule", "value": { "weekdays": [7, 22] } },
///         { "op": "remove", "path": "/legacySetting" },
///     ])
/// );
/// assert!(JsonPatch::new().add("no-slash", 1).validate().is_err());
/// # Ok::<(), iothub_registry::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
#[must_use = "a patch does nothing until it is sent with update_digital_twin"]
pub struct JsonPatch {
    operations: Vec<PatchOperation>,
}

impl JsonPatch {
    /// An empty patch (which [`validate`](Self::validate) refuses until an operation is added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an `add` operation: sets `value` at `path`.
    pub fn add(self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.push(PatchOperation::Add {
            path: path.into(),
            value: value.into(),
        })
    }

    /// Adds a `replace` operation: replaces what is at `path` (which must exist) with `value`.
    pub fn replace(self, path: impl Into<String>, value: impl Into<Value>) -> Self {
        self.push(PatchOperation::Replace {
            path: path.into(),
            value: value.into(),
        })
    }

    /// Adds a `remove` operation: removes what is at `path`.
    pub fn remove(self, path: impl Into<String>) -> Self {
        self.push(PatchOperation::Remove { path: path.into() })
    }

    /// Adds any operation.
    pub fn push(mut self, operation: PatchOperation) -> Self {
        self.operations.push(operation);
        self
    }

    /// The operations, in order.
    pub fn operations(&self) -> &[PatchOperation] {
        &self.operations
    }

    /// Whether there is no operation.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// A JSON Pointer from unescaped segments: `~` becomes `~0` and `/` becomes `~1`, each
    /// segment after a `/`. `JsonPatch::pointer(["a/b", "c"])` is `"/a~1b/c"`.
    pub fn pointer<I, S>(segments: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        segments.into_iter().fold(String::new(), |mut pointer, s| {
            pointer.push('/');
            pointer.push_str(&s.as_ref().replace('~', "~0").replace('/', "~1"));
            pointer
        })
    }

    /// Checks the patch as `update_digital_twin` does before sending it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] (argument `patch`) when there is no operation, or a path is
    /// not a JSON Pointer to something inside the document (the first such path is named).
    pub fn validate(&self) -> Result<()> {
        if self.operations.is_empty() {
            return Err(invalid("has no operation".into()));
        }
        for (index, operation) in self.operations.iter().enumerate() {
            check_pointer(operation.path())
                .map_err(|reason| invalid(format!("operation {index}: path {reason}")))?;
        }
        Ok(())
    }
}

/// Takes a JSON Patch document written as JSON: an array of `add`, `replace` and `remove`
/// operations. Its paths are checked by [`JsonPatch::validate`], not here.
///
/// ```
/// use iothub_registry::JsonPatch;
/// use serde_json::json;
///
/// let patch = JsonPatch::try_from(json!([{ "op": "replace", "path": "/x", "value": 1 }]))?;
/// assert_eq!(patch, JsonPatch::new().replace("/x", 1));
/// assert!(JsonPatch::try_from(json!([{ "op": "move", "from": "/a", "path": "/b" }])).is_err());
/// # Ok::<(), iothub_registry::Error>(())
/// ```
impl TryFrom<Value> for JsonPatch {
    type Error = Error;

    fn try_from(value: Value) -> Result<Self> {
        serde_json::from_value::<Vec<PatchOperation>>(value)
            .map(|operations| Self { operations })
            .map_err(|e| invalid(format!("is not an array of add, replace and remove: {e}")))
    }
}

impl From<Vec<PatchOperation>> for JsonPatch {
    fn from(operations: Vec<PatchOperation>) -> Self {
        Self { operations }
    }
}

impl FromIterator<PatchOperation> for JsonPatch {
    fn from_iter<T: IntoIterator<Item = PatchOperation>>(iter: T) -> Self {
        Self {
            operations: iter.into_iter().collect(),
        }
    }
}

impl From<JsonPatch> for Vec<Value> {
    fn from(patch: JsonPatch) -> Self {
        patch
            .operations
            .iter()
            // An enum of strings and JSON values always serializes.
            .map(|op| serde_json::to_value(op).unwrap_or(Value::Null))
            .collect()
    }
}

fn invalid(reason: String) -> Error {
    Error::InvalidArgument {
        argument: "patch",
        reason,
    }
}

/// RFC 6901, less the whole-document pointer: a `/` first, `~` only as `~0` or `~1`, and no
/// control characters (which no property name of a model may hold).
fn check_pointer(path: &str) -> std::result::Result<(), String> {
    if path.is_empty() {
        return Err("is empty: the whole digital twin cannot be patched".into());
    }
    if !path.starts_with('/') {
        return Err(format!("{path:?} does not start with `/`"));
    }
    let mut chars = path.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        if c == '~' && !matches!(chars.peek(), Some((_, '0' | '1'))) {
            return Err(format!(
                "{path:?}: `~` at index {index} is not followed by 0 or 1"
            ));
        }
        if c.is_control() {
            return Err(format!(
                "{path:?}: control character U+{:04X} at index {index}",
                u32::from(c)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(patch: JsonPatch) -> String {
        match patch.validate().unwrap_err() {
            Error::InvalidArgument { argument, reason } => {
                assert_eq!(argument, "patch");
                reason
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn operations_serialize_as_rfc_6902() {
        let patch = JsonPatch::new()
            .add("/a", json!({ "b": [1, null] }))
            .replace("/c", "text")
            .remove("/d");
        let expected = json!([
            { "op": "add", "path": "/a", "value": { "b": [1, null] } },
            { "op": "replace", "path": "/c", "value": "text" },
            { "op": "remove", "path": "/d" },
        ]);
        assert_eq!(serde_json::to_value(&patch).unwrap(), expected);
        let body: Vec<Value> = patch.clone().into();
        assert_eq!(Value::Array(body), expected);
        assert_eq!(JsonPatch::try_from(expected).unwrap(), patch);
        patch.validate().unwrap();
    }

    #[test]
    fn null_is_a_value_not_a_removal() {
        let patch = JsonPatch::new().add("/a", Value::Null);
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            json!([{ "op": "add", "path": "/a", "value": null }])
        );
    }

    #[test]
    fn empty_patches_are_refused() {
        assert!(reason(JsonPatch::new()).contains("no operation"));
    }

    #[test]
    fn paths_must_be_json_pointers() {
        for (path, expected) in [
            ("", "whole digital twin"),
            ("a", "does not start"),
            ("/a~", "index 2"),
            ("/a~2", "not followed"),
            ("/a\n", "U+000A"),
        ] {
            let reason = reason(JsonPatch::new().add("/ok", 1).remove(path));
            assert!(reason.contains("operation 1"), "{path:?}: {reason}");
            assert!(reason.contains(expected), "{path:?}: {reason}");
        }
        for path in ["/", "/a/b", "/a~0b~1c", "/0", "/a b", "/ünï"] {
            JsonPatch::new().replace(path, 1).validate().unwrap();
        }
    }

    #[test]
    fn pointer_escapes_each_segment() {
        assert_eq!(JsonPatch::pointer(["a/b", "c~d"]), "/a~1b/c~0d");
        assert_eq!(JsonPatch::pointer([""]), "/");
        assert_eq!(JsonPatch::pointer(Vec::<String>::new()), "");
        JsonPatch::new()
            .add(JsonPatch::pointer(["~/"]), 1)
            .validate()
            .unwrap();
    }

    #[test]
    fn only_three_operations_are_taken_from_json() {
        for document in [
            json!({ "op": "add", "path": "/a", "value": 1 }),
            json!([{ "op": "test", "path": "/a", "value": 1 }]),
            json!([{ "op": "add", "path": "/a" }]),
            json!([{ "path": "/a" }]),
        ] {
            let error = JsonPatch::try_from(document.clone()).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidArgument {
                        argument: "patch",
                        ..
                    }
                ),
                "{document}: {error:?}"
            );
        }
    }
}
