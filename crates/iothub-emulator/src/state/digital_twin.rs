//! Digital twins (IoT Plug and Play): the digital twin the service derives from a device
//! twin, and a JSON Patch document turned into the twin merge-patch of desired properties
//! that has the same effect.
//!
//! The device twin carries Plug and Play state by convention: a component is a top-level
//! property whose value is an object marked `"__t": "c"`, and a device acknowledges a
//! writable property by reporting `{ "value", "ac", "av", "ad" }` for it. The digital twin
//! shows the reported values, with each writable property's desired value and
//! acknowledgement under `$metadata`.

use serde_json::{Map, Value};

use crate::rest::errors::ServiceError;
use crate::state::twin::TwinState;

/// The marker of a component in the device twin.
const COMPONENT_MARKER: &str = "__t";

/// True for a device-twin value that is a component (`{"__t": "c", …}`).
fn is_component(value: &Value) -> bool {
    value
        .get(COMPONENT_MARKER)
        .is_some_and(|t| t.as_str() == Some("c"))
}

/// The digital twin of device `id` derived from its twin, as `GET /digitaltwins/{id}`
/// answers. A twin without a model id gets a digital twin without `$metadata.$model` (the
/// emulator's choice: the twin's properties still make a digital twin).
pub(crate) fn derive(id: &str, twin: &TwinState) -> Value {
    let desired = &twin.desired;
    let reported = &twin.reported;
    let mut components: Vec<&String> = desired
        .props
        .iter()
        .chain(reported.props.iter())
        .filter(|(_, v)| is_component(v))
        .map(|(k, _)| k)
        .collect();
    components.sort();
    components.dedup();
    let empty = Map::new();
    let section_of = |props: &Map<String, Value>, meta: &Map<String, Value>, key: &str| {
        let p = props.get(key).and_then(Value::as_object).unwrap_or(&empty);
        let m = meta.get(key).and_then(Value::as_object).unwrap_or(&empty);
        (p.clone(), m.clone())
    };
    let mut root = section(
        (&without(&desired.props, &components), &desired.metadata),
        (&without(&reported.props, &components), &reported.metadata),
        desired.version,
    );
    for name in &components {
        let (dp, dm) = section_of(&desired.props, &desired.metadata, name);
        let (rp, rm) = section_of(&reported.props, &reported.metadata, name);
        let component = section(
            (&without_marker(&dp), &dm),
            (&without_marker(&rp), &rm),
            desired.version,
        );
        root.insert((*name).clone(), Value::Object(component));
    }
    let mut out = Map::new();
    out.insert("$dtId".into(), Value::from(id));
    let meta = root
        .entry("$metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let (Some(model), Value::Object(meta)) = (&twin.model_id, meta) {
        meta.insert("$model".into(), Value::from(model.as_str()));
    }
    out.extend(root);
    Value::Object(out)
}

fn without(props: &Map<String, Value>, skip: &[&String]) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| !skip.contains(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn without_marker(props: &Map<String, Value>) -> Map<String, Value> {
    props
        .iter()
        .filter(|(k, _)| k.as_str() != COMPONENT_MARKER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// One level of the digital twin (the root or a component): reported values, and
/// `$metadata` with each property's last update and, for writable ones, desired value and
/// acknowledgement. `(props, metadata)` pairs of desired and reported.
fn section(
    desired: (&Map<String, Value>, &Map<String, Value>),
    reported: (&Map<String, Value>, &Map<String, Value>),
    desired_version: u64,
) -> Map<String, Value> {
    let mut out = Map::new();
    let mut meta = Map::new();
    let last_updated = |m: &Map<String, Value>, key: &str| {
        m.get(key)
            .and_then(|m| m.get("$lastUpdated"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    for (key, value) in reported.0 {
        let mut entry = Map::new();
        // A writable property's acknowledgement: `{ "value", "ac", "av", "ad" }`.
        let ack = value
            .as_object()
            .filter(|o| o.contains_key("value") && (o.contains_key("ac") || o.contains_key("av")));
        match ack {
            Some(ack) => {
                out.insert(key.clone(), ack["value"].clone());
                for (from, to) in [
                    ("ac", "ackCode"),
                    ("av", "ackVersion"),
                    ("ad", "ackDescription"),
                ] {
                    if let Some(v) = ack.get(from) {
                        entry.insert(to.into(), v.clone());
                    }
                }
            }
            None => {
                out.insert(key.clone(), value.clone());
            }
        }
        entry.insert("lastUpdateTime".into(), last_updated(reported.1, key));
        meta.insert(key.clone(), Value::Object(entry));
    }
    for (key, value) in desired.0 {
        let slot = meta
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(entry) = slot else { continue };
        entry.insert("desiredValue".into(), value.clone());
        let version = desired
            .1
            .get(key)
            .and_then(|m| m.get("$lastUpdatedVersion"))
            .cloned()
            .unwrap_or_else(|| Value::from(desired_version));
        entry.insert("desiredVersion".into(), version);
        // The reported side's time when there is one: it is the later change of the two for
        // an acknowledged property; else the desired value's.
        if !entry.contains_key("lastUpdateTime") {
            entry.insert("lastUpdateTime".into(), last_updated(desired.1, key));
        }
    }
    out.insert("$metadata".into(), Value::Object(meta));
    out
}

/// One JSON Patch operation, parsed.
enum Op {
    Add(Vec<String>, Value),
    Replace(Vec<String>, Value),
    Remove(Vec<String>),
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::argument_invalid(message)
}

/// Parses a JSON pointer (RFC 6901) into its unescaped tokens; the root (`""`) is refused:
/// a digital twin cannot be replaced whole.
fn pointer(path: &str) -> Result<Vec<String>, ServiceError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(invalid(format!(
            "Invalid JSON Patch path {path:?}: a path starts with '/' and names a property"
        )));
    };
    let tokens: Vec<String> = rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    if tokens
        .iter()
        .any(|t| t.is_empty() || t.starts_with('$') || t == COMPONENT_MARKER)
    {
        return Err(invalid(format!(
            "Invalid JSON Patch path {path:?}: read-only or empty property name"
        )));
    }
    Ok(tokens)
}

fn parse_ops(patch: &Value) -> Result<Vec<Op>, ServiceError> {
    let Value::Array(items) = patch else {
        return Err(invalid("The digital twin patch must be a JSON Patch array"));
    };
    if items.is_empty() {
        return Err(invalid("The digital twin patch has no operations"));
    }
    items
        .iter()
        .map(|item| {
            let op = item.get("op").and_then(Value::as_str);
            let path = item
                .get("path")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("Each JSON Patch operation needs a string 'path'"))?;
            let tokens = pointer(path)?;
            let value = || {
                item.get("value")
                    .cloned()
                    .ok_or_else(|| invalid(format!("JSON Patch operation on {path:?} needs a 'value'")))
            };
            match op {
                Some("add") => Ok(Op::Add(tokens, value()?)),
                Some("replace") => Ok(Op::Replace(tokens, value()?)),
                Some("remove") => Ok(Op::Remove(tokens)),
                other => Err(invalid(format!(
                    "Unsupported JSON Patch operation {other:?}: a digital twin takes add, replace and remove"
                ))),
            }
        })
        .collect()
}

/// Strips `$`-prefixed keys (`$metadata`, which the SDKs' "add component" operation sends)
/// from an object value.
fn strip_meta(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k, strip_meta(v)))
                .collect(),
        ),
        other => other,
    }
}

/// Applies a JSON Patch document to desired properties, answering the new desired
/// properties. A top-level object becomes a component (`"__t": "c"`) when it was one, when
/// the value added carries `$metadata` (as the SDKs' "add component" operation sends), or when
/// a two-level path (`/component/property`) adds into a missing one: without the model, that
/// is how the emulator tells a component from an object-valued property.
pub(crate) fn apply_patch(
    desired: &Map<String, Value>,
    patch: &Value,
) -> Result<Map<String, Value>, ServiceError> {
    let mut doc = desired.clone();
    for op in parse_ops(patch)? {
        match op {
            Op::Replace(path, _) if path.len() == 1 && !doc.contains_key(&path[0]) => {
                return Err(missing(&path));
            }
            Op::Add(path, value) | Op::Replace(path, value) if path.len() == 1 => {
                // A component when it already is one, or when the value carries the
                // `$metadata` the SDKs' "add component" operation sends.
                let component =
                    doc.get(&path[0]).is_some_and(is_component) || value.get("$metadata").is_some();
                let mut value = strip_meta(value);
                if let (true, Value::Object(map)) = (component, &mut value) {
                    map.insert(COMPONENT_MARKER.into(), Value::from("c"));
                }
                doc.insert(path[0].clone(), value);
            }
            Op::Add(path, value) => {
                if !doc.contains_key(&path[0]) && path.len() == 2 {
                    let mut component = Map::new();
                    component.insert(COMPONENT_MARKER.into(), Value::from("c"));
                    doc.insert(path[0].clone(), Value::Object(component));
                }
                let (parent, last) = parent_mut(&mut doc, &path)?;
                parent.insert(last.to_owned(), strip_meta(value));
            }
            Op::Replace(path, value) => {
                let (parent, last) = parent_mut(&mut doc, &path)?;
                if !parent.contains_key(last) {
                    return Err(missing(&path));
                }
                parent.insert(last.to_owned(), strip_meta(value));
            }
            Op::Remove(path) => {
                let (parent, last) = parent_mut(&mut doc, &path)?;
                if parent.remove(last).is_none() {
                    return Err(missing(&path));
                }
            }
        }
    }
    Ok(doc)
}

fn missing(path: &[String]) -> ServiceError {
    invalid(format!(
        "JSON Patch path '/{}' does not exist in the digital twin's desired properties",
        path.join("/")
    ))
}

/// The object holding the last token of `path`, and that token.
fn parent_mut<'a, 'p>(
    doc: &'a mut Map<String, Value>,
    path: &'p [String],
) -> Result<(&'a mut Map<String, Value>, &'p str), ServiceError> {
    let Some((last, parents)) = path.split_last() else {
        return Err(missing(path));
    };
    let mut node = doc;
    for key in parents {
        node = match node.get_mut(key) {
            Some(Value::Object(child)) => child,
            _ => return Err(missing(path)),
        };
    }
    Ok((node, last))
}

/// The twin merge-patch that turns `old` into `new`: changed values, and `null` for removed
/// keys (twins hold no nulls, so this is exact).
pub(crate) fn merge_diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    for key in old.keys() {
        if !new.contains_key(key) {
            out.insert(key.clone(), Value::Null);
        }
    }
    for (key, value) in new {
        match (old.get(key), value) {
            (Some(a), b) if a == b => {}
            (Some(Value::Object(a)), Value::Object(b)) => {
                out.insert(key.clone(), Value::Object(merge_diff(a, b)));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn patch_adds_replaces_and_removes_with_components() {
        let desired = obj(json!({"a": 1, "c1": {"__t": "c", "x": 1}}));
        let patch = json!([
            {"op": "replace", "path": "/a", "value": 2},
            {"op": "add", "path": "/c1/y", "value": 3},
            {"op": "remove", "path": "/c1/x"},
            {"op": "add", "path": "/c2/z", "value": 4},
            {"op": "add", "path": "/c3", "value": {"w": 5, "$metadata": {}}}
        ]);
        let new = apply_patch(&desired, &patch).unwrap();
        assert_eq!(
            Value::Object(new.clone()),
            json!({"a": 2, "c1": {"__t": "c", "y": 3}, "c2": {"__t": "c", "z": 4},
                   "c3": {"__t": "c", "w": 5}})
        );
        let diff = merge_diff(&desired, &new);
        assert_eq!(diff["c1"], json!({"x": null, "y": 3}));
    }

    #[test]
    fn invalid_patches_are_refused() {
        let desired = obj(json!({"a": 1}));
        for bad in [
            json!({"op": "add"}),
            json!([]),
            json!([{"op": "move", "path": "/a", "from": "/b"}]),
            json!([{"op": "add", "path": "a", "value": 1}]),
            json!([{"op": "add", "path": "/a"}]),
            json!([{"op": "replace", "path": "/b", "value": 1}]),
            json!([{"op": "remove", "path": "/b"}]),
            json!([{"op": "add", "path": "/$metadata", "value": 1}]),
            json!([{"op": "add", "path": "/x/y/z", "value": 1}]),
        ] {
            assert!(apply_patch(&desired, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn derivation_shows_reported_values_and_acknowledgements() {
        let mut twin = TwinState::new("t0");
        twin.model_id = Some("dtmi:x;1".into());
        twin.desired.props = obj(json!({"t": 21, "c": {"__t": "c", "u": 5}}));
        twin.desired.metadata = obj(json!({"t": {"$lastUpdated": "t1", "$lastUpdatedVersion": 2}}));
        twin.reported.props = obj(json!({
            "t": {"value": 21, "ac": 200, "av": 2, "ad": "ok"},
            "s": "on",
            "c": {"__t": "c", "v": 7}
        }));
        let dt = derive("d", &twin);
        assert_eq!(dt["$dtId"], "d");
        assert_eq!(dt["$metadata"]["$model"], "dtmi:x;1");
        assert_eq!(dt["t"], 21);
        assert_eq!(dt["s"], "on");
        let t = &dt["$metadata"]["t"];
        assert_eq!(
            (
                &t["desiredValue"],
                &t["desiredVersion"],
                &t["ackCode"],
                &t["ackVersion"]
            ),
            (&json!(21), &json!(2), &json!(200), &json!(2))
        );
        assert_eq!(t["ackDescription"], "ok");
        assert_eq!(dt["c"]["v"], 7);
        assert_eq!(dt["c"]["$metadata"]["u"]["desiredValue"], 5);
        assert!(dt["c"].get("__t").is_none());
    }
}
