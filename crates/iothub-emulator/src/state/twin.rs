//! Twin state: tags, desired and reported properties with their `$version` and
//! `$metadata`, merge-patch and replace as the service applies them, and its limits.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::rest::errors::ServiceError;

/// Size limit of `tags`, in bytes of compact JSON.
pub(crate) const MAX_TAGS_BYTES: usize = 8 * 1024;
/// Size limit of each of `properties.desired` and `properties.reported`.
pub(crate) const MAX_PROPERTIES_BYTES: usize = 32 * 1024;
/// Deepest nesting of objects below the section root.
pub(crate) const MAX_DEPTH: usize = 10;
/// Longest key, in bytes.
pub(crate) const MAX_KEY_BYTES: usize = 1024;
/// Longest string value, in bytes.
pub(crate) const MAX_STRING_BYTES: usize = 4 * 1024;

/// One of `desired` and `reported`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Section {
    /// The properties, without `$version` and `$metadata`.
    pub(crate) props: Map<String, Value>,
    /// `$version`: bumped on every change.
    pub(crate) version: u64,
    /// `$metadata` below the root, mirroring `props`.
    pub(crate) metadata: Map<String, Value>,
    /// `$metadata.$lastUpdated` of the root.
    pub(crate) last_updated: String,
}

impl Section {
    fn new(now: &str) -> Self {
        Self {
            props: Map::new(),
            version: 1,
            metadata: Map::new(),
            last_updated: now.to_owned(),
        }
    }

    /// The JSON the service returns: properties plus `$metadata` and `$version`.
    /// `with_versions` adds `$lastUpdatedVersion` (desired properties carry it).
    pub(crate) fn render(&self, with_versions: bool) -> Map<String, Value> {
        let mut out = self.props.clone();
        let mut meta = self.metadata.clone();
        meta.insert(
            "$lastUpdated".into(),
            Value::String(self.last_updated.clone()),
        );
        if with_versions {
            meta.insert("$lastUpdatedVersion".into(), Value::from(self.version));
        }
        out.insert("$metadata".into(), Value::Object(meta));
        out.insert("$version".into(), Value::from(self.version));
        out
    }

    fn patch(&mut self, patch: &Map<String, Value>, now: &str, versions: bool) {
        self.version += 1;
        let stamp = Stamp {
            now,
            version: versions.then_some(self.version),
        };
        merge(&mut self.props, &mut self.metadata, patch, &stamp);
        self.last_updated = now.to_owned();
    }

    fn replace(&mut self, props: &Map<String, Value>, now: &str, versions: bool) {
        self.version += 1;
        let stamp = Stamp {
            now,
            version: versions.then_some(self.version),
        };
        self.props = Map::new();
        self.metadata = Map::new();
        merge(&mut self.props, &mut self.metadata, props, &stamp);
        self.last_updated = now.to_owned();
    }
}

/// A twin's mutable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TwinState {
    /// The twin `version`; the twin etag is derived from it.
    pub(crate) version: u64,
    pub(crate) tags: Map<String, Value>,
    pub(crate) desired: Section,
    pub(crate) reported: Section,
    /// The device or module configuration whose content was applied last (`id#seq`), so
    /// that it is applied once, when it starts winning the twin, and not over later edits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) configuration: Option<String>,
    /// On an IoT Edge device's twin: the deployment applied last to its modules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deployment: Option<String>,
    /// The Plug and Play model id the device (or module) announced when it connected (the
    /// `model-id` of its MQTT username), shown as the twin's `modelId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) model_id: Option<String>,
}

/// What a twin PATCH or PUT body asks to change, validated.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TwinChange {
    pub(crate) tags: Option<Map<String, Value>>,
    pub(crate) desired: Option<Map<String, Value>>,
}

impl TwinState {
    /// A new twin, as a device or module gets on creation.
    pub(crate) fn new(now: &str) -> Self {
        Self {
            version: 1,
            tags: Map::new(),
            desired: Section::new(now),
            reported: Section::new(now),
            configuration: None,
            deployment: None,
            model_id: None,
        }
    }

    /// The twin etag.
    pub(crate) fn etag(&self) -> String {
        crate::state::etag::twin_etag(self.version)
    }

    /// PATCH: merges tags and desired properties; `null` removes a key.
    pub(crate) fn patch(&mut self, change: &TwinChange, now: &str) {
        if let Some(tags) = &change.tags {
            merge_plain(&mut self.tags, tags);
        }
        if let Some(desired) = &change.desired {
            self.desired.patch(desired, now, true);
        }
        self.version += 1;
    }

    /// PUT: replaces tags and desired properties (absent ones become empty).
    pub(crate) fn replace(&mut self, change: &TwinChange, now: &str) {
        let empty = Map::new();
        self.tags = Map::new();
        merge_plain(&mut self.tags, change.tags.as_ref().unwrap_or(&empty));
        self.desired
            .replace(change.desired.as_ref().unwrap_or(&empty), now, true);
        self.version += 1;
    }

    /// A device reporting properties (control API): merges into reported.
    pub(crate) fn report(&mut self, patch: &Map<String, Value>, now: &str) {
        self.reported.patch(patch, now, false);
        self.version += 1;
    }

    /// Checks the size limits after a change would be applied.
    pub(crate) fn check_limits(&self) -> Result<(), ServiceError> {
        check_size("tags", &self.tags, MAX_TAGS_BYTES)?;
        check_size(
            "desired properties",
            &self.desired.props,
            MAX_PROPERTIES_BYTES,
        )?;
        check_size(
            "reported properties",
            &self.reported.props,
            MAX_PROPERTIES_BYTES,
        )
    }
}

impl TwinChange {
    /// Reads a twin PATCH or PUT body. Reported properties are the device's to change, so
    /// a body that sets them is rejected; read-only `$metadata`/`$version` are dropped so a
    /// twin read back from GET can be sent as is.
    pub(crate) fn from_body(body: &Value) -> Result<Self, ServiceError> {
        let Value::Object(body) = body else {
            return Err(ServiceError::argument_invalid(
                "The twin must be a JSON object",
            ));
        };
        let tags = match body.get("tags") {
            None | Some(Value::Null) => None,
            Some(Value::Object(tags)) => {
                check_keys_and_values(tags, 1)?;
                Some(tags.clone())
            }
            Some(_) => return Err(ServiceError::argument_invalid("tags must be an object")),
        };
        let mut desired = None;
        match body.get("properties") {
            None | Some(Value::Null) => {}
            Some(Value::Object(props)) => {
                if props
                    .get("reported")
                    .is_some_and(|r| r.as_object().is_some_and(|r| !strip_meta(r).is_empty()))
                {
                    return Err(ServiceError::argument_invalid(
                        "Reported properties are read-only for the service",
                    ));
                }
                match props.get("desired") {
                    None | Some(Value::Null) => {}
                    Some(Value::Object(d)) => {
                        let d = strip_meta(d);
                        check_keys_and_values(&d, 1)?;
                        desired = Some(d);
                    }
                    Some(_) => {
                        return Err(ServiceError::argument_invalid(
                            "properties.desired must be an object",
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(ServiceError::argument_invalid(
                    "properties must be an object",
                ));
            }
        }
        Ok(Self { tags, desired })
    }

    /// Reads a reported-properties patch sent through the control API.
    pub(crate) fn reported_patch(body: &Value) -> Result<Map<String, Value>, ServiceError> {
        let Value::Object(body) = body else {
            return Err(ServiceError::argument_invalid(
                "Reported properties must be a JSON object",
            ));
        };
        let body = strip_meta(body);
        check_keys_and_values(&body, 1)?;
        Ok(body)
    }
}

fn strip_meta(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| k.as_str() != "$metadata" && k.as_str() != "$version")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check_size(what: &str, map: &Map<String, Value>, limit: usize) -> Result<(), ServiceError> {
    let size = serde_json::to_vec(map).map_or(usize::MAX, |v| v.len());
    if size > limit {
        return Err(ServiceError::argument_invalid(format!(
            "The size of {what} ({size} bytes) exceeds the limit of {limit} bytes"
        )));
    }
    Ok(())
}

/// Keys: 1 KB at most, no control characters, `.`, `$` or space. Strings: 4 KB at most.
/// Objects: nested at most [`MAX_DEPTH`] deep.
fn check_keys_and_values(map: &Map<String, Value>, depth: usize) -> Result<(), ServiceError> {
    if depth > MAX_DEPTH {
        return Err(ServiceError::argument_invalid(format!(
            "Twin objects may be nested at most {MAX_DEPTH} levels deep"
        )));
    }
    for (key, value) in map {
        let bad_char = key
            .chars()
            .any(|c| c.is_control() || c == '.' || c == '$' || c == ' ');
        if key.is_empty() || key.len() > MAX_KEY_BYTES || bad_char {
            return Err(ServiceError::argument_invalid(format!(
                "Invalid twin property name {key:?}: names are 1 to {MAX_KEY_BYTES} bytes without control characters, '.', '$' or spaces"
            )));
        }
        check_value(value, depth)?;
    }
    Ok(())
}

fn check_value(value: &Value, depth: usize) -> Result<(), ServiceError> {
    match value {
        Value::String(s) if s.len() > MAX_STRING_BYTES => Err(ServiceError::argument_invalid(
            format!("Twin string values are at most {MAX_STRING_BYTES} bytes"),
        )),
        Value::Object(inner) => check_keys_and_values(inner, depth + 1),
        Value::Array(items) => items.iter().try_for_each(|v| check_value(v, depth + 1)),
        _ => Ok(()),
    }
}

struct Stamp<'a> {
    now: &'a str,
    version: Option<u64>,
}

impl Stamp<'_> {
    fn leaf(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("$lastUpdated".into(), Value::String(self.now.to_owned()));
        if let Some(v) = self.version {
            m.insert("$lastUpdatedVersion".into(), Value::from(v));
        }
        m
    }
}

/// Merge-patch `patch` into `props`, keeping `meta` in step.
fn merge(
    props: &mut Map<String, Value>,
    meta: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    stamp: &Stamp<'_>,
) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                props.remove(key);
                meta.remove(key);
            }
            Value::Object(inner) => {
                if !matches!(props.get(key), Some(Value::Object(_))) {
                    props.insert(key.clone(), Value::Object(Map::new()));
                    meta.insert(key.clone(), Value::Object(Map::new()));
                }
                let child_meta = meta
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !child_meta.is_object() {
                    *child_meta = Value::Object(Map::new());
                }
                if let (Some(Value::Object(child)), Value::Object(child_meta)) =
                    (props.get_mut(key), child_meta)
                {
                    merge(child, child_meta, inner, stamp);
                    child_meta.extend(stamp.leaf());
                }
            }
            other => {
                props.insert(key.clone(), other.clone());
                meta.insert(key.clone(), Value::Object(stamp.leaf()));
            }
        }
    }
}

/// Merge-patch without metadata (tags).
fn merge_plain(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Map::new());
                }
                if let Value::Object(slot) = slot {
                    merge_plain(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn patch_merges_and_null_removes() {
        let mut twin = TwinState::new("t0");
        let change = TwinChange::from_body(&json!({
            "tags": {"a": {"b": 1, "c": 2}},
            "properties": {"desired": {"x": 1, "y": {"z": true}}}
        }))
        .unwrap();
        twin.patch(&change, "t1");
        let change = TwinChange::from_body(&json!({
            "tags": {"a": {"c": null, "d": 3}},
            "properties": {"desired": {"x": null, "y": {"w": "s"}}}
        }))
        .unwrap();
        twin.patch(&change, "t2");
        assert_eq!(
            Value::Object(twin.tags.clone()),
            json!({"a": {"b": 1, "d": 3}})
        );
        assert_eq!(twin.version, 3);
        assert_eq!(twin.etag(), "AAAAAAAAAAM=");
        let desired = twin.desired.render(true);
        assert_eq!(
            Value::Object(desired),
            json!({
                "y": {"z": true, "w": "s"},
                "$version": 3,
                "$metadata": {
                    "$lastUpdated": "t2",
                    "$lastUpdatedVersion": 3,
                    "y": {
                        "$lastUpdated": "t2",
                        "$lastUpdatedVersion": 3,
                        "z": {"$lastUpdated": "t1", "$lastUpdatedVersion": 2},
                        "w": {"$lastUpdated": "t2", "$lastUpdatedVersion": 3}
                    }
                }
            })
        );
    }

    #[test]
    fn replace_drops_what_is_not_sent() {
        let mut twin = TwinState::new("t0");
        twin.patch(
            &TwinChange::from_body(&json!({"tags": {"a": 1}, "properties": {"desired": {"x": 1}}}))
                .unwrap(),
            "t1",
        );
        twin.replace(
            &TwinChange::from_body(&json!({"properties": {"desired": {"y": 2, "$version": 9}}}))
                .unwrap(),
            "t2",
        );
        assert!(twin.tags.is_empty());
        assert_eq!(Value::Object(twin.desired.props.clone()), json!({"y": 2}));
        assert_eq!(twin.desired.version, 3);
    }

    #[test]
    fn reported_properties_are_read_only_for_the_service() {
        let err =
            TwinChange::from_body(&json!({"properties": {"reported": {"a": 1}}})).unwrap_err();
        assert_eq!(err.status, 400);
        // A twin read back from GET carries reported metadata only: that is accepted.
        assert!(
            TwinChange::from_body(
                &json!({"properties": {"reported": {"$version": 1, "$metadata": {}}}})
            )
            .is_ok()
        );
    }

    #[test]
    fn reported_patch_has_no_last_updated_version() {
        let mut twin = TwinState::new("t0");
        twin.report(&obj(json!({"temp": 21})), "t1");
        assert_eq!(
            Value::Object(twin.reported.render(false)),
            json!({"temp": 21, "$version": 2, "$metadata": {"$lastUpdated": "t1", "temp": {"$lastUpdated": "t1"}}})
        );
    }

    #[test]
    fn limits() {
        for body in [
            json!({"tags": {"a.b": 1}}),
            json!({"tags": {"a b": 1}}),
            json!({"tags": {"$a": 1}}),
            json!({"tags": {"": 1}}),
            json!({"tags": {"a": "x".repeat(MAX_STRING_BYTES + 1)}}),
            json!({"tags": 5}),
            json!({"properties": {"desired": [1]}}),
            json!([1]),
        ] {
            assert!(TwinChange::from_body(&body).is_err(), "{body}");
        }
        let mut deep = json!(1);
        for _ in 0..=MAX_DEPTH {
            deep = json!({ "k": deep });
        }
        assert!(TwinChange::from_body(&json!({"tags": deep})).is_err());

        let mut twin = TwinState::new("t0");
        let big: Map<String, Value> = (0..3)
            .map(|i| (format!("k{i}"), Value::String("x".repeat(4000))))
            .collect();
        twin.patch(
            &TwinChange {
                tags: Some(big),
                desired: None,
            },
            "t1",
        );
        assert!(twin.check_limits().is_err());
    }
}
