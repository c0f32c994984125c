//! Configurations (automatic device management and IoT Edge deployments): the stored form,
//! the input rules (id, priority, target condition, content, metric queries and their
//! limits), how a target condition picks twins, which configuration wins a twin, how its
//! content lands in the twin's desired properties, and the metrics `GET` reports.
//!
//! Three kinds compete separately, as the service keeps them apart: device configurations
//! (`deviceContent`, conditions over device twins), module configurations (`moduleContent`,
//! `FROM devices.modules WHERE …`) and edge deployments (`modulesContent`, conditions over
//! the twins of IoT Edge devices). Among the configurations of one kind that target a twin,
//! the highest `priority` wins, and on a tie the one created last.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use iothub_rest_gen::types as wire;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::query::{Query, Source};
use crate::rest::errors::ServiceError;
use crate::state::identity::check_module_id;
use crate::state::render::render_twin;
use crate::state::store::DeviceEntry;
use crate::state::twin::{TwinChange, TwinState};

/// Most configurations one hub holds (the quotas page: 100 per paid hub).
pub(crate) const MAX_CONFIGURATIONS: usize = 100;
/// Longest configuration id (the emulator's choice, the service's documented length).
pub(crate) const MAX_ID_LEN: usize = 128;
/// Longest target condition and metric query, in bytes (the emulator's choice: the service
/// refused a job query condition of about 8,200 bytes).
pub(crate) const MAX_QUERY_BYTES: usize = 8 * 1024;
/// Largest `deviceContent` or `moduleContent`, and largest content of one module in
/// `modulesContent`, in bytes of compact JSON (the emulator's choice: content becomes
/// desired properties, which a twin holds at most 32 KB of).
pub(crate) const MAX_CONTENT_BYTES: usize = 32 * 1024;
/// Most custom metric queries of one configuration (the emulator's choice).
pub(crate) const MAX_METRICS: usize = 10;
/// Characters a configuration id may have besides lowercase ASCII letters and digits.
const ID_SPECIAL: &str = "-+%_*!'";
/// The content key every device and module content key starts with.
const DESIRED: &str = "properties.desired";

/// Which twins a configuration competes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Device twins (`deviceContent`).
    Device,
    /// Module twins (`moduleContent`).
    Module,
    /// The twins of IoT Edge devices; content lands in their modules (`modulesContent`).
    Edge,
}

/// A configuration as stored: what the client set, plus the hub's fields (etag, times).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredConfiguration {
    /// The configuration without metric results (computed on request).
    pub(crate) config: wire::Configuration,
    /// Creation order over the hub's life: on equal priority the most recently created wins,
    /// and timestamps may tie.
    pub(crate) seq: u64,
    /// Bumped by every update; the etag is derived from it (`MQ==` is version 1, as the
    /// service's first configuration etag).
    pub(crate) version: u64,
}

impl StoredConfiguration {
    /// The configuration's id.
    pub(crate) fn id(&self) -> &str {
        self.config.id.as_deref().unwrap_or_default()
    }

    /// Which twins it competes for.
    pub(crate) fn kind(&self) -> Kind {
        kind_of(
            self.config.content.as_ref(),
            self.config.target_condition.as_deref(),
        )
    }

    /// What a twin records when this configuration's content was applied to it: the id and
    /// the creation number, so a configuration deleted and created again applies anew.
    pub(crate) fn applied_key(&self) -> String {
        format!("{}#{}", self.id(), self.seq)
    }
}

/// The etag of a configuration version.
pub(crate) fn etag_of(version: u64) -> String {
    STANDARD.encode(version.to_string())
}

fn kind_of(content: Option<&wire::ConfigurationContent>, condition: Option<&str>) -> Kind {
    match content {
        Some(c) if !c.modules_content.is_empty() => Kind::Edge,
        Some(c) if !c.module_content.is_empty() => Kind::Module,
        Some(c) if !c.device_content.is_empty() => Kind::Device,
        _ if condition.is_some_and(names_modules) => Kind::Module,
        _ => Kind::Device,
    }
}

/// True for a condition of the form `FROM devices.modules WHERE …`.
fn names_modules(condition: &str) -> bool {
    let lower = condition.trim_start().to_ascii_lowercase();
    lower
        .strip_prefix("from")
        .is_some_and(|rest| rest.trim_start().starts_with("devices.modules"))
}

/// Checks a configuration id: 1 to 128 lowercase ASCII letters, digits or `-+%_*!'`, as
/// the service documents configuration names.
pub(crate) fn check_configuration_id(id: &str) -> Result<(), ServiceError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ID_SPECIAL.contains(c));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::argument_invalid(format!(
            "The configuration id '{id}' is invalid: it must be 1 to {MAX_ID_LEN} lowercase \
             letters, digits or {ID_SPECIAL}"
        )))
    }
}

/// The query a target condition stands for: `FROM devices.modules WHERE …` as given, any
/// other condition as the `WHERE` clause over device twins; `*` targets every device twin.
/// An empty condition targets nothing (`None`).
pub(crate) fn target_query(condition: &str) -> Result<Option<Query>, String> {
    let condition = condition.trim();
    if condition.is_empty() {
        return Ok(None);
    }
    if condition.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "The target condition is {} bytes long; at most {MAX_QUERY_BYTES} are allowed",
            condition.len()
        ));
    }
    let text = if condition == "*" {
        "SELECT * FROM devices".to_owned()
    } else if condition.to_ascii_lowercase().starts_with("from") {
        format!("SELECT * {condition}")
    } else {
        format!("SELECT * FROM devices WHERE {condition}")
    };
    let query = Query::parse(&text).map_err(|e| format!("Invalid target condition: {e}"))?;
    Ok(Some(query))
}

/// A custom metric query, parsed; its result is the number of rows it answers.
pub(crate) fn metric_query(text: &str) -> Result<Query, String> {
    if text.len() > MAX_QUERY_BYTES {
        return Err(format!(
            "The query is {} bytes long; at most {MAX_QUERY_BYTES} are allowed",
            text.len()
        ));
    }
    Query::parse(text).map_err(|e| format!("Invalid metric query: {e}"))
}

/// Reads a configuration PUT body for `id`: the fields a client sets, checked.
pub(crate) fn configuration_input(
    id: &str,
    body: &Value,
) -> Result<wire::Configuration, ServiceError> {
    let body = without_nulls(body);
    let mut config: wire::Configuration =
        crate::state::identity::parse_model(&body, "configuration")?;
    match config.id.as_deref() {
        None | Some("") => config.id = Some(id.to_owned()),
        Some(given) if given == id => {}
        Some(given) => {
            return Err(ServiceError::argument_invalid(format!(
                "The configuration id in the body ('{given}') is not the one in the path ('{id}')"
            )));
        }
    }
    if config.priority.is_some_and(|p| p < 0) {
        return Err(ServiceError::argument_invalid(
            "The priority must be a non-negative integer",
        ));
    }
    let condition = config.target_condition.clone().unwrap_or_default();
    let target = target_query(&condition).map_err(ServiceError::argument_invalid)?;
    let content = config.content.clone().unwrap_or_default();
    check_content(&content)?;
    let kind = kind_of(Some(&content), Some(&condition));
    if let Some(query) = &target {
        let wanted = if kind == Kind::Module {
            Source::Modules
        } else {
            Source::Devices
        };
        if query.source() != wanted {
            return Err(ServiceError::argument_invalid(match kind {
                Kind::Module => {
                    "A configuration with moduleContent needs a target condition of the form \
                     FROM devices.modules WHERE …"
                }
                _ => "Only a configuration with moduleContent may target devices.modules",
            }));
        }
    }
    let queries = config
        .metrics
        .as_ref()
        .map(|m| m.queries.clone())
        .unwrap_or_default();
    if queries.len() > MAX_METRICS {
        return Err(ServiceError::argument_invalid(format!(
            "A configuration may have at most {MAX_METRICS} custom metrics; it has {}",
            queries.len()
        )));
    }
    for (name, text) in &queries {
        metric_query(text)
            .map_err(|e| ServiceError::argument_invalid(format!("Metric '{name}': {e}")))?;
    }
    // Results are the hub's to compute, never the client's to set.
    config.metrics = Some(wire::ConfigurationMetrics {
        queries,
        results: BTreeMap::new(),
    });
    config.system_metrics = None;
    config.content = Some(content);
    if config.schema_version.is_none() {
        config.schema_version = Some("1.0".to_owned());
    }
    Ok(config)
}

/// Checks configuration (or edge device) content: every device and module content key is
/// `properties.desired` (an object) or a path below it, each module of `modulesContent` has
/// a valid id and such keys, and each part is within [`MAX_CONTENT_BYTES`].
pub(crate) fn check_content(content: &wire::ConfigurationContent) -> Result<(), ServiceError> {
    let kinds = [
        !content.device_content.is_empty(),
        !content.module_content.is_empty(),
        !content.modules_content.is_empty(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(ServiceError::argument_invalid(
            "A configuration has one of deviceContent, moduleContent and modulesContent",
        ));
    }
    check_twin_content("deviceContent", &content.device_content)?;
    check_twin_content("moduleContent", &content.module_content)?;
    for (module, part) in &content.modules_content {
        check_module_id(module)?;
        check_twin_content(&format!("modulesContent.{module}"), part)?;
    }
    Ok(())
}

fn check_twin_content(what: &str, content: &Map<String, Value>) -> Result<(), ServiceError> {
    let size = serde_json::to_vec(content).map_or(usize::MAX, |v| v.len());
    if size > MAX_CONTENT_BYTES {
        return Err(ServiceError::argument_invalid(format!(
            "{what} is {size} bytes; at most {MAX_CONTENT_BYTES} are allowed"
        )));
    }
    for (key, value) in content {
        let path = desired_path(key).ok_or_else(|| {
            ServiceError::argument_invalid(format!(
                "{what}: the key '{key}' is not properties.desired or a path below it"
            ))
        })?;
        if path.is_empty() && !value.is_object() {
            return Err(ServiceError::argument_invalid(format!(
                "{what}: properties.desired must be an object"
            )));
        }
    }
    // The content must make a valid desired-properties patch (key and value rules).
    TwinChange::from_body(
        &serde_json::json!({ "properties": { "desired": desired_patch(content) } }),
    )
    .map_err(|e| ServiceError::argument_invalid(format!("{what}: {}", e.message)))?;
    Ok(())
}

/// The segments below `properties.desired` of a content key (empty for the key itself);
/// `None` for a key elsewhere or with an empty segment.
fn desired_path(key: &str) -> Option<Vec<&str>> {
    let rest = key.strip_prefix(DESIRED)?;
    if rest.is_empty() {
        return Some(Vec::new());
    }
    let segments: Vec<&str> = rest.strip_prefix('.')?.split('.').collect();
    segments.iter().all(|s| !s.is_empty()).then_some(segments)
}

/// The desired-properties merge patch a content map stands for.
fn desired_patch(content: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    // The whole-section key first, so that paths below it refine it.
    let mut keys: Vec<(&String, &Value)> = content.iter().collect();
    keys.sort_by_key(|(k, _)| k.len());
    for (key, value) in keys {
        let Some(path) = desired_path(key) else {
            continue;
        };
        match path.split_last() {
            None => {
                if let Value::Object(all) = value {
                    for (k, v) in all {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            Some((last, parents)) => {
                let mut at = &mut patch;
                for segment in parents {
                    let slot = at
                        .entry((*segment).to_owned())
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !slot.is_object() {
                        *slot = Value::Object(Map::new());
                    }
                    let Value::Object(next) = slot else {
                        return patch;
                    };
                    at = next;
                }
                at.insert((*last).to_owned(), value.clone());
            }
        }
    }
    patch
}

/// Applies device or module content to a twin's desired properties; false (and the twin
/// unchanged) when the result would break the twin's limits.
pub(crate) fn apply_twin_content(
    twin: &mut TwinState,
    content: &Map<String, Value>,
    now: &str,
) -> bool {
    let change = TwinChange {
        tags: None,
        desired: Some(desired_patch(content)),
    };
    let mut next = twin.clone();
    next.patch(&change, now);
    if next.check_limits().is_err() {
        return false;
    }
    *twin = next;
    true
}

/// Applies edge content to the modules of a device: a module's `properties.desired`
/// replaces its desired properties, paths below it are merged in. Modules the device does
/// not have are left out (the device's agent creates them); false when a module's content
/// would break its twin's limits (nothing changes then).
pub(crate) fn apply_modules_content(
    entry: &mut DeviceEntry,
    modules: &BTreeMap<String, Map<String, Value>>,
    now: &str,
) -> bool {
    let mut next = entry.modules.clone();
    for (module, content) in modules {
        let Some(m) = next.get_mut(module) else {
            continue;
        };
        let whole = content.get(DESIRED).and_then(Value::as_object);
        let mut twin = m.twin.clone();
        if let Some(whole) = whole {
            let change = TwinChange {
                tags: None,
                desired: Some(whole.clone()),
            };
            let tags = twin.tags.clone();
            twin.replace(&change, now);
            twin.tags = tags;
        }
        let below: Map<String, Value> = content
            .iter()
            .filter(|(k, _)| k.as_str() != DESIRED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !below.is_empty() && !apply_twin_content(&mut twin, &below, now) {
            return false;
        }
        if twin.check_limits().is_err() {
            return false;
        }
        m.twin = twin;
    }
    entry.modules = next;
    true
}

/// Drops `null` members of the body and of its `content` and `metrics` objects, as the
/// service reads an absent field (clients send `"labels": null` and the like).
fn without_nulls(body: &Value) -> Value {
    let Value::Object(map) = body else {
        return body.clone();
    };
    let mut out = Map::new();
    for (k, v) in map {
        match v {
            Value::Null => {}
            Value::Object(inner)
                if matches!(k.as_str(), "content" | "metrics" | "systemMetrics") =>
            {
                let inner: Map<String, Value> = inner
                    .iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                out.insert(k.clone(), Value::Object(inner));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// The configurations of a hub, with their target conditions parsed once, ready to pick the
/// winner of each twin.
pub(crate) struct Targeting {
    entries: Vec<Target>,
}

struct Target {
    config: Arc<StoredConfiguration>,
    kind: Kind,
    query: Option<Query>,
    priority: i32,
}

impl Targeting {
    /// Parses the conditions of `configs` (a stored condition always parses; one that no
    /// longer does targets nothing).
    pub(crate) fn new<'a>(configs: impl IntoIterator<Item = &'a Arc<StoredConfiguration>>) -> Self {
        let entries = configs
            .into_iter()
            .map(|c| Target {
                config: c.clone(),
                kind: c.kind(),
                query: c
                    .config
                    .target_condition
                    .as_deref()
                    .and_then(|t| target_query(t).ok().flatten()),
                priority: c.config.priority.unwrap_or(0),
            })
            .collect();
        Self { entries }
    }

    /// The configurations of `kind` whose condition holds for `doc`.
    fn matching<'a, 'd>(
        &'a self,
        kind: Kind,
        doc: &'d Value,
    ) -> impl Iterator<Item = &'a Target> + use<'a, 'd> {
        self.entries
            .iter()
            .filter(move |t| t.kind == kind && t.query.as_ref().is_some_and(|q| q.matches(doc)))
    }

    /// The configuration of `kind` that wins the twin `doc`: the highest priority, then the
    /// most recently created.
    pub(crate) fn winner<'a>(
        &'a self,
        kind: Kind,
        doc: &Value,
    ) -> Option<&'a Arc<StoredConfiguration>> {
        self.matching(kind, doc)
            .max_by_key(|t| (t.priority, t.config.seq))
            .map(|t| &t.config)
    }

    /// Re-targets one device: applies the content of each of its twins' winners that is not
    /// applied yet. True when anything changed.
    pub(crate) fn retarget(&self, entry: &mut DeviceEntry, now: &str) -> bool {
        let mut changed = false;
        let doc = render_twin(entry, None);
        let winner = self.winner(Kind::Device, &doc);
        let key = winner.map(|w| w.applied_key());
        if key != entry.twin.configuration {
            if let Some(w) = winner {
                let content = w.config.content.clone().unwrap_or_default();
                apply_twin_content(&mut entry.twin, &content.device_content, now);
            }
            entry.twin.configuration = key;
            changed = true;
        }
        let is_edge = entry
            .device
            .capabilities
            .as_ref()
            .and_then(|c| c.iot_edge)
            .unwrap_or(false);
        let deployment = if is_edge {
            self.winner(Kind::Edge, &doc)
        } else {
            None
        };
        let key = deployment.map(|w| w.applied_key());
        if key != entry.twin.deployment {
            if let Some(w) = deployment {
                let content = w.config.content.clone().unwrap_or_default();
                apply_modules_content(entry, &content.modules_content, now);
            }
            entry.twin.deployment = key;
            changed = true;
        }
        let modules: Vec<String> = entry.modules.keys().cloned().collect();
        for mid in modules {
            let doc = render_twin(entry, Some(&mid));
            let winner = self.winner(Kind::Module, &doc);
            let key = winner.map(|w| w.applied_key());
            let Some(module) = entry.modules.get_mut(&mid) else {
                continue;
            };
            if key != module.twin.configuration {
                if let Some(w) = winner {
                    let content = w.config.content.clone().unwrap_or_default();
                    apply_twin_content(&mut module.twin, &content.module_content, now);
                }
                module.twin.configuration = key;
                changed = true;
            }
        }
        changed
    }

    /// `targetedCount` and `appliedCount` of every configuration, by id, over `devices`.
    pub(crate) fn counts<'a>(
        &self,
        devices: impl IntoIterator<Item = &'a DeviceEntry>,
    ) -> BTreeMap<String, (i64, i64)> {
        let mut counts: BTreeMap<String, (i64, i64)> = self
            .entries
            .iter()
            .map(|t| (t.config.id().to_owned(), (0, 0)))
            .collect();
        let mut tally = |kind: Kind, doc: &Value| {
            let mut best: Option<&Target> = None;
            for t in self.matching(kind, doc) {
                if let Some(c) = counts.get_mut(t.config.id()) {
                    c.0 += 1;
                }
                if best.is_none_or(|b| (t.priority, t.config.seq) > (b.priority, b.config.seq)) {
                    best = Some(t);
                }
            }
            if let Some(c) = best.and_then(|b| counts.get_mut(b.config.id())) {
                c.1 += 1;
            }
        };
        let has = |kind: Kind| self.entries.iter().any(|t| t.kind == kind);
        let (devices_wanted, edge_wanted, modules_wanted) =
            (has(Kind::Device), has(Kind::Edge), has(Kind::Module));
        for entry in devices {
            if devices_wanted || edge_wanted {
                let doc = render_twin(entry, None);
                if devices_wanted {
                    tally(Kind::Device, &doc);
                }
                let is_edge = entry
                    .device
                    .capabilities
                    .as_ref()
                    .and_then(|c| c.iot_edge)
                    .unwrap_or(false);
                if edge_wanted && is_edge {
                    tally(Kind::Edge, &doc);
                }
            }
            if modules_wanted {
                for mid in entry.modules.keys() {
                    tally(Kind::Module, &render_twin(entry, Some(mid)));
                }
            }
        }
        counts
    }
}

/// The number of rows a metric query answers over `devices`.
pub(crate) fn metric_count<'a>(
    query: &Query,
    devices: impl IntoIterator<Item = &'a DeviceEntry>,
) -> i64 {
    // One twin document at a time: only an aggregate needs them all together (as a query
    // of `/devices/query` does), and then only the ones its condition keeps.
    let docs = devices.into_iter().flat_map(|e| {
        let twins: Vec<Option<&str>> = match query.source() {
            Source::Devices => vec![None],
            Source::Modules => e.modules.keys().map(|m| Some(m.as_str())).collect(),
            Source::DeviceJobs => Vec::new(),
        };
        twins.into_iter().map(move |m| render_twin(e, m))
    });
    let rows = if query.is_aggregate() {
        let kept: Vec<Value> = docs.filter(|d| query.matches(d)).collect();
        query.aggregate(kept.iter()).len()
    } else {
        docs.filter(|d| query.matches(d)).count()
    };
    let rows = query.top().map_or(rows, |t| rows.min(t));
    i64::try_from(rows).unwrap_or(i64::MAX)
}

/// The configuration as `GET` answers it: with its system metrics (`targetedCount`,
/// `appliedCount`, and the queries the service shows for them) and its custom metrics'
/// results.
pub(crate) fn render(
    stored: &StoredConfiguration,
    counts: (i64, i64),
    custom: BTreeMap<String, i64>,
) -> wire::Configuration {
    let mut config = stored.config.clone();
    let id = stored.id();
    let (what, from) = match stored.kind() {
        Kind::Module => ("moduleId", "devices.modules"),
        _ => ("deviceId", "devices"),
    };
    let condition = config.target_condition.clone().unwrap_or_default();
    let targeted = if names_modules(&condition) {
        format!("select {what} {}", condition.trim())
    } else {
        format!("select {what} from {from} where {condition}")
    };
    let mut queries = BTreeMap::new();
    queries.insert("targetedCount".to_owned(), targeted);
    queries.insert(
        "appliedCount".to_owned(),
        format!("select {what} from {from} where configurations.[[{id}]].status = 'Applied'"),
    );
    let mut results = BTreeMap::new();
    results.insert("targetedCount".to_owned(), counts.0);
    results.insert("appliedCount".to_owned(), counts.1);
    config.system_metrics = Some(wire::ConfigurationMetrics { queries, results });
    let mut metrics = config.metrics.take().unwrap_or_default();
    metrics.results = custom;
    config.metrics = Some(metrics);
    config.etag = Some(etag_of(stored.version));
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_follow_the_documented_rule() {
        for ok in ["a", "config-1", "x_y+z%*!'", &"a".repeat(128)] {
            assert!(check_configuration_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Upper", "a b", "a/b", "a.b", &"a".repeat(129)] {
            assert_eq!(
                check_configuration_id(bad).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }

    #[test]
    fn conditions_become_queries_over_devices_or_modules() {
        assert!(target_query("").unwrap().is_none());
        let q = target_query("tags.env = 'prod'").unwrap().unwrap();
        assert_eq!(q.source(), Source::Devices);
        assert!(q.matches(&json!({"tags": {"env": "prod"}})));
        assert!(!q.matches(&json!({"tags": {"env": "test"}})));
        let q = target_query("FROM devices.modules WHERE moduleId = 'm'")
            .unwrap()
            .unwrap();
        assert_eq!(q.source(), Source::Modules);
        assert!(target_query("*").unwrap().unwrap().matches(&json!({})));
        assert!(target_query("tags.env = ").is_err());
        assert!(target_query(&format!("tags.x = '{}'", "a".repeat(MAX_QUERY_BYTES))).is_err());
    }

    #[test]
    fn content_paths_make_a_merge_patch() {
        let content: Map<String, Value> = serde_json::from_value(json!({
            "properties.desired.a.b": 1,
            "properties.desired": {"c": 2},
            "properties.desired.d": "x",
        }))
        .unwrap();
        assert_eq!(
            Value::Object(desired_patch(&content)),
            json!({"a": {"b": 1}, "c": 2, "d": "x"})
        );
        for bad in [
            json!({"deviceContent": {"tags.a": 1}}),
            json!({"deviceContent": {"properties.desired": 5}}),
            json!({"deviceContent": {"properties.desired..a": 5}}),
            json!({"deviceContent": {"properties.desired.a": 1}, "moduleContent": {"properties.desired.a": 1}}),
            json!({"modulesContent": {"bad id": {}}}),
        ] {
            let content: wire::ConfigurationContent = serde_json::from_value(bad.clone()).unwrap();
            assert!(check_content(&content).is_err(), "{bad}");
        }
    }

    #[test]
    fn input_checks_ids_priority_and_the_kind_of_target() {
        let ok = configuration_input(
            "c",
            &json!({"id": "c", "labels": null, "priority": 3, "targetCondition": "tags.a = 1",
                     "content": {"deviceContent": {"properties.desired.x": 1}, "moduleContent": null}}),
        )
        .unwrap();
        assert_eq!(ok.schema_version.as_deref(), Some("1.0"));
        for bad in [
            json!({"id": "other"}),
            json!({"priority": -1}),
            json!({"targetCondition": "tags.a ="}),
            json!({"content": {"moduleContent": {"properties.desired.x": 1}}, "targetCondition": "tags.a = 1"}),
            json!({"content": {"deviceContent": {"properties.desired.x": 1}}, "targetCondition": "FROM devices.modules WHERE tags.a = 1"}),
            json!({"metrics": {"queries": {"m": "SELECT FROM"}}}),
        ] {
            assert_eq!(
                configuration_input("c", &bad).unwrap_err().status,
                400,
                "{bad}"
            );
        }
    }
}
