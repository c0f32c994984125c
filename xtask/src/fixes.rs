//! Our fixes to the converted spec. Each one says why it is needed, with the evidence: what the
//! service sends, and what the official SDKs (Python's `azure-iot-hub` 2.7.0 first) accept.
//!
//! A fix that does not find what it expects fails, so a changed upstream spec is looked at by
//! a person instead of being patched blindly.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::Result;

/// A fix: its name (for error messages) and the change.
type Fix = (&'static str, fn(&mut Value) -> Result<()>);

pub(crate) const FIXES: &[Fix] = &[
    (
        "api-version is added once by the client",
        remove_api_version,
    ),
    (
        "cancel import/export job has one success type",
        bodiless_job_cancel,
    ),
    ("feedback receive keeps its body", feedback_body_as_bytes),
    ("a bare object means any JSON", bare_objects_are_any_json),
    ("query results are any JSON", query_items_any_json),
    ("enums are named and open", name_enums),
    ("secrets are marked for redacting types", mark_secrets),
];

/// The `format` that makes codegen type a string as `iothub_rest_gen::SecretString`.
pub(crate) const SECRET_FORMAT: &str = "iothub-secret";
/// The `format` that makes codegen type a string as `iothub_rest_gen::SasUri`.
pub(crate) const SAS_URI_FORMAT: &str = "iothub-sas-uri";

/// Fields that carry a secret: (schema, property, format).
const SECRETS: &[(&str, &str, &str)] = &[
    ("SymmetricKey", "primaryKey", SECRET_FORMAT),
    ("SymmetricKey", "secondaryKey", SECRET_FORMAT),
    ("JobProperties", "inputBlobContainerUri", SAS_URI_FORMAT),
    ("JobProperties", "outputBlobContainerUri", SAS_URI_FORMAT),
];

/// Device and module keys, and the container SAS URIs of import/export jobs (their `sig=` is a
/// signature granting access to the storage account), are plain strings in the spec, so every
/// generated model holding them would print them in `Debug`. Marking them with a format of our
/// own lets codegen give them types that redact themselves (`SecretString`, `SasUri`) without
/// editing the generated code. The wire is unchanged: both serialize as the plain string.
fn mark_secrets(doc: &mut Value) -> Result<()> {
    for (schema, property, format) in SECRETS {
        let field = at(
            doc,
            &["components", "schemas", schema, "properties", property],
        )?
        .as_object_mut()
        .ok_or_else(|| format!("{schema}.{property} is not an object"))?;
        if field.get("type") != Some(&json!("string")) || field.contains_key("format") {
            return Err(format!(
                "{schema}.{property} is no longer a plain string: look at it again"
            ));
        }
        field.insert("format".to_owned(), json!(format));
    }
    Ok(())
}

/// Applies every fix in order, then checks the invariant progenitor relies on.
pub(crate) fn apply(doc: &mut Value) -> Result<()> {
    for (name, fix) in FIXES {
        fix(doc).map_err(|e| format!("fix \"{name}\": {e}"))?;
    }
    check_one_success_type(doc)
}

/// Progenitor ignores parameter defaults, so a spec-level `api-version` would be a required
/// argument of all 42 builders. The client adds it (configurable) to every request instead.
fn remove_api_version(doc: &mut Value) -> Result<()> {
    let params = at(doc, &["components", "parameters"])?
        .as_object_mut()
        .ok_or("components.parameters is not an object")?;
    params
        .remove("api-version")
        .ok_or("no components.parameters.api-version")?;
    if params.is_empty() {
        at(doc, &["components"])?
            .as_object_mut()
            .ok_or("components is not an object")?
            .remove("parameters");
    }
    let reference = json!({ "$ref": "#/components/parameters/api-version" });
    let mut removed = 0;
    for op in operations_mut(doc)? {
        if let Some(Value::Array(params)) = op.get_mut("parameters") {
            let before = params.len();
            params.retain(|p| *p != reference);
            removed += before - params.len();
            if params.is_empty() {
                op.remove("parameters");
            }
        }
    }
    if removed == 0 {
        return Err("no operation referenced api-version".into());
    }
    Ok(())
}

/// Upstream declares `200 {type: object}` and `204` with no body. Progenitor requires one
/// success type per operation (it panics otherwise). The 200 body carries nothing a caller
/// needs, so both statuses become bodiless successes: a real 200 is not an error.
fn bodiless_job_cancel(doc: &mut Value) -> Result<()> {
    for (_, response) in responses_mut(doc, "Jobs_CancelImportExportJob", &["200", "204"])? {
        response.remove("content");
    }
    Ok(())
}

/// Upstream declares no body for 200 or 204, so generators throw the feedback records away.
/// Both statuses declare the same raw byte stream (empty for 204); the caller reads the body
/// and the lock-token headers from the response.
fn feedback_body_as_bytes(doc: &mut Value) -> Result<()> {
    let id = "CloudToDeviceMessages_ReceiveFeedbackNotification";
    for (status, response) in responses_mut(doc, id, &["200", "204"])? {
        if response.contains_key("content") {
            return Err(format!("{status} already has content; revisit this fix"));
        }
        response.insert(
            "content".into(),
            json!({ "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } }),
        );
    }
    Ok(())
}

/// Upstream writes `{type: object}` (alone, or as a map's values) for twin tags, desired and
/// reported properties, configuration contents, method payloads and digital-twin command
/// bodies. Real values are any JSON: `"tags": {"floor": 3}`, `"$version": 4`, a method
/// answering `"ok"` or `null`. A schema that is only `{type: object}` becomes `{}` (any JSON),
/// so the generated type is `serde_json::Value`.
fn bare_objects_are_any_json(doc: &mut Value) -> Result<()> {
    let mut changed = 0;
    rewrite_bare_objects(doc, &mut changed);
    if changed == 0 {
        return Err("no bare {type: object} schema found".into());
    }
    Ok(())
}

fn rewrite_bare_objects(v: &mut Value, changed: &mut usize) {
    match v {
        Value::Object(map) => {
            if map.len() == 1 && map.get("type") == Some(&json!("object")) {
                map.clear();
                *changed += 1;
                return;
            }
            map.values_mut()
                .for_each(|child| rewrite_bare_objects(child, changed));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|child| rewrite_bare_objects(child, changed)),
        _ => {}
    }
}

/// Upstream types the query response as `[Twin]`, but `SELECT deviceId, COUNT() ...`
/// projects other shapes; items are any JSON and the caller picks the type.
fn query_items_any_json(doc: &mut Value) -> Result<()> {
    let schema = at(
        operation_mut(doc, "Query_GetTwins")?,
        &["responses", "200", "content", "application/json", "schema"],
    )?;
    if schema["type"] != "array" {
        return Err("Query_GetTwins 200 is not an array".into());
    }
    schema["items"] = json!({});
    Ok(())
}

/// Names for the inline string enums, by `(schema, property)`. The same set of values used in
/// several places gets one name, so the generated code has one type per concept.
const ENUM_NAMES: &[(&str, &str, &str)] = &[
    ("AuthenticationMechanism", "type", "AuthenticationType"),
    ("Device", "connectionState", "ConnectionState"),
    ("Device", "status", "DeviceStatus"),
    ("DeviceRegistryOperationError", "errorCode", "ErrorCode"),
    (
        "DeviceRegistryOperationWarning",
        "warningCode",
        "WarningCode",
    ),
    ("ExportImportDevice", "importMode", "ImportMode"),
    ("ExportImportDevice", "status", "DeviceStatus"),
    ("JobProperties", "status", "JobStatus"),
    (
        "JobProperties",
        "storageAuthenticationType",
        "StorageAuthenticationType",
    ),
    ("JobProperties", "type", "JobType"),
    ("JobRequest", "type", "JobType"),
    ("JobResponse", "status", "JobStatus"),
    ("JobResponse", "type", "JobType"),
    ("Module", "connectionState", "ConnectionState"),
    ("QueryResult", "type", "QueryResultType"),
    ("Twin", "authenticationType", "AuthenticationType"),
    ("Twin", "connectionState", "ConnectionState"),
    ("Twin", "status", "DeviceStatus"),
];

/// Typify names inline enums after their parent (`DeviceStatus`, `TwinStatus`, ...), giving
/// duplicates, and makes them closed, so a value the service adds later (the error-code list
/// grows) fails deserialization. Each enum becomes a named schema; `cargo xtask codegen`
/// turns every named string enum into an open Rust enum with an `Other(String)` variant.
fn name_enums(doc: &mut Value) -> Result<()> {
    let mut named: BTreeMap<&str, Value> = BTreeMap::new();
    let schemas = at(doc, &["components", "schemas"])?
        .as_object_mut()
        .ok_or("components.schemas is not an object")?;
    for (schema_name, schema) in schemas.iter_mut() {
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (prop_name, prop) in props.iter_mut() {
            if prop.get("enum").is_none() {
                continue;
            }
            let name = ENUM_NAMES
                .iter()
                .find(|(s, p, _)| s == schema_name && p == prop_name)
                .map(|(_, _, n)| *n)
                .ok_or(format!(
                    "{schema_name}.{prop_name} is an enum without a name in ENUM_NAMES"
                ))?;
            let definition = std::mem::replace(
                prop,
                json!({ "$ref": format!("#/components/schemas/{name}") }),
            );
            if definition.get("type") != Some(&json!("string"))
                || definition.as_object().map(Map::len) != Some(2)
            {
                return Err(format!(
                    "{schema_name}.{prop_name}: expected {{type: string, enum}}"
                ));
            }
            if named
                .get(name)
                .is_some_and(|previous| *previous != definition)
            {
                return Err(format!(
                    "{name}: {schema_name}.{prop_name} has other values"
                ));
            }
            named.insert(name, definition);
        }
    }
    for (name, definition) in named {
        if schemas.insert(name.to_owned(), definition).is_some() {
            return Err(format!("{name} is already a schema upstream"));
        }
    }
    let unused: Vec<_> = ENUM_NAMES
        .iter()
        .filter(|(s, p, _)| {
            schemas
                .get(*s)
                .is_none_or(|schema| schema["properties"][*p].get("$ref").is_none())
        })
        .map(|(s, p, _)| format!("{s}.{p}"))
        .collect();
    if !unused.is_empty() {
        return Err(format!("ENUM_NAMES entries match no enum: {unused:?}"));
    }
    Ok(())
}

/// Progenitor asserts (panics) unless all 2xx responses of an operation share one body type.
/// Checking it here gives a readable error naming the operation.
fn check_one_success_type(doc: &mut Value) -> Result<()> {
    for op in operations_mut(doc)? {
        let id = op["operationId"].as_str().unwrap_or("?").to_owned();
        let bodies: Vec<_> = op["responses"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(status, _)| status.starts_with('2'))
            .map(|(_, r)| r.get("content").cloned())
            .collect();
        if bodies.windows(2).any(|w| w[0] != w[1]) {
            return Err(format!("{id}: success responses declare different bodies"));
        }
    }
    Ok(())
}

fn at<'a>(v: &'a mut Value, path: &[&str]) -> Result<&'a mut Value> {
    let mut cur = v;
    for (i, key) in path.iter().enumerate() {
        cur = cur
            .get_mut(*key)
            .ok_or_else(|| format!("missing {}", path[..=i].join(".")))?;
    }
    Ok(cur)
}

fn operations_mut(doc: &mut Value) -> Result<Vec<&mut Map<String, Value>>> {
    let paths = at(doc, &["paths"])?
        .as_object_mut()
        .ok_or("paths is not an object")?;
    Ok(paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(Value::as_object_mut)
        .collect())
}

/// The named responses of an operation; each must exist.
fn responses_mut<'a>(
    doc: &'a mut Value,
    id: &str,
    statuses: &[&'a str],
) -> Result<Vec<(&'a str, &'a mut Map<String, Value>)>> {
    let responses = operation_mut(doc, id)?
        .get_mut("responses")
        .and_then(Value::as_object_mut)
        .ok_or("no responses")?;
    let mut found = Vec::new();
    for (status, response) in responses.iter_mut() {
        if let Some(s) = statuses.iter().find(|s| **s == status) {
            let response = response
                .as_object_mut()
                .ok_or(format!("{status} is not an object"))?;
            found.push((*s, response));
        }
    }
    if found.len() != statuses.len() {
        return Err(format!("{id} does not declare all of {statuses:?}"));
    }
    Ok(found)
}

fn operation_mut<'a>(doc: &'a mut Value, id: &str) -> Result<&'a mut Value> {
    let paths = at(doc, &["paths"])?
        .as_object_mut()
        .ok_or("paths is not an object")?;
    paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .find(|op| op["operationId"] == id)
        .ok_or(format!("no operation {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_objects_become_any_json_but_typed_objects_stay() {
        let mut v = json!({
            "a": { "type": "object" },
            "b": { "type": "object", "additionalProperties": { "type": "object" } },
            "c": { "type": "object", "properties": { "x": { "type": "string" } } },
            "d": [{ "type": "object" }]
        });
        bare_objects_are_any_json(&mut v).unwrap();
        assert_eq!(
            v,
            json!({
                "a": {},
                "b": { "type": "object", "additionalProperties": {} },
                "c": { "type": "object", "properties": { "x": { "type": "string" } } },
                "d": [{}]
            })
        );
        assert!(
            bare_objects_are_any_json(&mut v).is_err(),
            "a second run finds nothing"
        );
    }

    #[test]
    fn an_unnamed_enum_is_an_error() {
        let mut doc = json!({ "paths": {}, "components": { "schemas": {
            "NewThing": { "properties": { "kind": { "type": "string", "enum": ["a"] } } }
        } } });
        let err = name_enums(&mut doc).unwrap_err();
        assert!(
            err.contains("NewThing.kind is an enum without a name"),
            "{err}"
        );
    }

    #[test]
    fn differing_success_bodies_are_reported_by_operation() {
        let mut doc = json!({ "paths": { "/x": { "delete": {
            "operationId": "X_Delete",
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": {} } } },
                "204": { "description": "No Content" }
            }
        } } } });
        let err = check_one_success_type(&mut doc).unwrap_err();
        assert_eq!(err, "X_Delete: success responses declare different bodies");
    }
}
