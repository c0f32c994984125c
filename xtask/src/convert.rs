//! Swagger 2.0 -> OpenAPI 3.0.3, for the subset of Swagger the IoT Hub spec uses.
//!
//! The conversion copies only keywords it knows. Upstream prose (`description`, `summary`,
//! `title`) is dropped on purpose; any other keyword it does not know is an error, so a new
//! upstream spec that uses more of Swagger fails here instead of converting silently wrong.

use serde_json::{Map, Value, json};

use crate::Result;

const OPERATION_METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
const PROSE: [&str; 3] = ["description", "summary", "title"];

/// Converts a Swagger 2.0 document. `title` becomes `info.title`: the upstream one is prose.
pub(crate) fn swagger2_to_openapi3(swagger: &Value, title: &str) -> Result<Value> {
    let root = object(swagger, "$")?;
    expect_keys(
        root,
        "$",
        &[
            "swagger",
            "info",
            "host",
            "schemes",
            "paths",
            "definitions",
            "parameters",
        ],
    )?;
    if root.get("swagger") != Some(&json!("2.0")) {
        return Err("$.swagger: expected \"2.0\"".into());
    }
    let info = object(field(root, "info", "$")?, "$.info")?;
    let version = str_field(info, "version", "$.info")?;

    let host = str_field(root, "host", "$")?;
    let scheme = root
        .get("schemes")
        .and_then(|s| s.get(0))
        .and_then(Value::as_str)
        .unwrap_or("https");

    let mut paths = Map::new();
    for (path, item) in object(field(root, "paths", "$")?, "$.paths")? {
        paths.insert(path.clone(), path_item(item, &format!("$.paths[{path}]"))?);
    }

    let mut schemas = Map::new();
    if let Some(defs) = root.get("definitions") {
        for (name, def) in object(defs, "$.definitions")? {
            schemas.insert(name.clone(), schema(def, &format!("$.definitions.{name}"))?);
        }
    }
    let mut parameters = Map::new();
    if let Some(params) = root.get("parameters") {
        for (name, p) in object(params, "$.parameters")? {
            parameters.insert(name.clone(), parameter(p, &format!("$.parameters.{name}"))?);
        }
    }

    let mut components = Map::new();
    components.insert("schemas".into(), Value::Object(schemas));
    if !parameters.is_empty() {
        components.insert("parameters".into(), Value::Object(parameters));
    }
    Ok(json!({
        "openapi": "3.0.3",
        "info": { "title": title, "version": version },
        "servers": [{ "url": format!("{scheme}://{host}") }],
        "paths": paths,
        "components": components,
    }))
}

fn path_item(item: &Value, at: &str) -> Result<Value> {
    let item = object(item, at)?;
    expect_keys(item, at, &OPERATION_METHODS)?;
    let mut out = Map::new();
    for (method, op) in item {
        out.insert(method.clone(), operation(op, &format!("{at}.{method}"))?);
    }
    Ok(Value::Object(out))
}

fn operation(op: &Value, at: &str) -> Result<Value> {
    let op = object(op, at)?;
    expect_keys(
        op,
        at,
        &[
            "operationId",
            "consumes",
            "produces",
            "parameters",
            "responses",
        ],
    )?;
    let consumes = first_media_type(op, "consumes");
    let produces = first_media_type(op, "produces");

    let mut out = Map::new();
    out.insert(
        "operationId".into(),
        json!(str_field(op, "operationId", at)?),
    );
    let mut parameters = Vec::new();
    let mut request_body = None;
    if let Some(params) = op.get("parameters") {
        for (i, p) in array(params, &format!("{at}.parameters"))?
            .iter()
            .enumerate()
        {
            let p_at = format!("{at}.parameters[{i}]");
            let p_obj = object(p, &p_at)?;
            if p_obj.get("in") == Some(&json!("body")) {
                expect_keys(p_obj, &p_at, &["name", "in", "required", "schema"])?;
                let media = consumes.as_deref().unwrap_or("application/json");
                let mut body = Map::new();
                body.insert(
                    "required".into(),
                    json!(p_obj.get("required") == Some(&json!(true))),
                );
                body.insert(
                    "content".into(),
                    json!({ media: { "schema": schema(field(p_obj, "schema", &p_at)?, &p_at)? } }),
                );
                request_body = Some(Value::Object(body));
            } else {
                parameters.push(parameter(p, &p_at)?);
            }
        }
    }
    if !parameters.is_empty() {
        out.insert("parameters".into(), Value::Array(parameters));
    }
    if let Some(body) = request_body {
        out.insert("requestBody".into(), body);
    }

    let mut responses = Map::new();
    for (status, resp) in object(field(op, "responses", at)?, &format!("{at}.responses"))? {
        let r_at = format!("{at}.responses.{status}");
        let resp = object(resp, &r_at)?;
        expect_keys(resp, &r_at, &["schema", "headers"])?;
        let mut r = Map::new();
        r.insert("description".into(), json!(reason_phrase(status, &r_at)?));
        if let Some(headers) = resp.get("headers") {
            let mut h = Map::new();
            for (name, header) in object(headers, &format!("{r_at}.headers"))? {
                let h_at = format!("{r_at}.headers.{name}");
                let header = object(header, &h_at)?;
                expect_keys(header, &h_at, &["type", "format"])?;
                h.insert(
                    name.clone(),
                    json!({ "schema": schema(&Value::Object(header.clone()), &h_at)? }),
                );
            }
            r.insert("headers".into(), Value::Object(h));
        }
        if let Some(s) = resp.get("schema") {
            let media = produces.as_deref().unwrap_or("application/json");
            r.insert(
                "content".into(),
                json!({ media: { "schema": schema(s, &r_at)? } }),
            );
        }
        responses.insert(status.clone(), Value::Object(r));
    }
    out.insert("responses".into(), Value::Object(responses));
    Ok(Value::Object(out))
}

/// A non-body parameter: Swagger puts the type on the parameter, OpenAPI 3 in `schema`.
fn parameter(p: &Value, at: &str) -> Result<Value> {
    let p = object(p, at)?;
    if let Some(r) = p.get("$ref") {
        expect_keys(p, at, &["$ref"])?;
        let r = r.as_str().ok_or(format!("{at}.$ref: expected a string"))?;
        let name = r
            .strip_prefix("#/parameters/")
            .ok_or(format!("{at}: unsupported parameter reference {r}"))?;
        return Ok(json!({ "$ref": format!("#/components/parameters/{name}") }));
    }
    expect_keys(
        p,
        at,
        &[
            "name", "in", "required", "type", "format", "items", "enum", "default",
        ],
    )?;
    let location = str_field(p, "in", at)?;
    if !["path", "query", "header"].contains(&location) {
        return Err(format!("{at}: unsupported parameter location {location:?}"));
    }
    let mut s = Map::new();
    for key in ["type", "format", "items", "enum", "default"] {
        if let Some(v) = p.get(key) {
            s.insert(key.into(), v.clone());
        }
    }
    Ok(json!({
        "name": str_field(p, "name", at)?,
        "in": location,
        // OpenAPI 3 requires path parameters to say so.
        "required": location == "path" || p.get("required") == Some(&json!(true)),
        "schema": schema(&Value::Object(s), at)?,
    }))
}

/// A schema: the keywords this spec uses, with `$ref`s moved to `components`.
fn schema(s: &Value, at: &str) -> Result<Value> {
    let s = object(s, at)?;
    let mut out = Map::new();
    for (key, value) in s {
        match key.as_str() {
            k if PROSE.contains(&k) => {}
            "$ref" => {
                let r = value
                    .as_str()
                    .ok_or(format!("{at}.$ref: expected a string"))?;
                let name = r
                    .strip_prefix("#/definitions/")
                    .ok_or(format!("{at}: unsupported reference {r}"))?;
                out.insert(key.clone(), json!(format!("#/components/schemas/{name}")));
            }
            "type" | "format" | "enum" | "default" => {
                out.insert(key.clone(), value.clone());
            }
            "items" | "additionalProperties" => {
                let inner = match value {
                    Value::Bool(_) => value.clone(),
                    _ => schema(value, &format!("{at}.{key}"))?,
                };
                out.insert(key.clone(), inner);
            }
            "properties" => {
                let mut props = Map::new();
                for (name, p) in object(value, &format!("{at}.properties"))? {
                    props.insert(name.clone(), schema(p, &format!("{at}.properties.{name}"))?);
                }
                out.insert(key.clone(), Value::Object(props));
            }
            other => return Err(format!("{at}: unsupported schema keyword {other:?}")),
        }
    }
    Ok(Value::Object(out))
}

/// OpenAPI 3 requires a response description; ours is the status's standard reason phrase.
fn reason_phrase(status: &str, at: &str) -> Result<&'static str> {
    Ok(match status {
        "200" => "OK",
        "201" => "Created",
        "202" => "Accepted",
        "204" => "No Content",
        "400" => "Bad Request",
        _ => return Err(format!("{at}: no reason phrase known for status {status}")),
    })
}

fn first_media_type(op: &Map<String, Value>, key: &str) -> Option<String> {
    op.get(key)?.get(0)?.as_str().map(str::to_owned)
}

/// Fails on a key that is neither expected nor prose.
fn expect_keys(obj: &Map<String, Value>, at: &str, known: &[&str]) -> Result<()> {
    match obj
        .keys()
        .find(|k| !known.contains(&k.as_str()) && !PROSE.contains(&k.as_str()))
    {
        Some(k) => Err(format!("{at}: unsupported key {k:?}")),
        None => Ok(()),
    }
}

fn field<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Value> {
    obj.get(key).ok_or(format!("{at}: missing {key:?}"))
}

fn str_field<'a>(obj: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a str> {
    field(obj, key, at)?
        .as_str()
        .ok_or(format!("{at}.{key}: expected a string"))
}

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or(format!("{at}: expected an object"))
}

fn array<'a>(v: &'a Value, at: &str) -> Result<&'a Vec<Value>> {
    v.as_array().ok_or(format!("{at}: expected an array"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(op: Value) -> Value {
        json!({
            "swagger": "2.0",
            "info": { "version": "2021-04-12", "title": "Upstream title" },
            "host": "hub.example",
            "schemes": ["https"],
            "paths": { "/things/{id}": { "put": op } },
            "definitions": {
                "Thing": {
                    "description": "upstream prose",
                    "properties": {
                        "description": { "type": "string", "description": "a field named description" },
                        "other": { "$ref": "#/definitions/Thing" }
                    }
                }
            },
            "parameters": {
                "api-version": { "name": "api-version", "in": "query", "required": true, "type": "string", "default": "2021-04-12", "description": "prose" }
            }
        })
    }

    fn put_op() -> Value {
        json!({
            "summary": "prose", "description": "prose",
            "operationId": "Things_Put",
            "consumes": ["application/json"], "produces": ["application/json"],
            "parameters": [
                { "name": "id", "in": "path", "required": true, "type": "string", "description": "prose" },
                { "name": "thing", "in": "body", "required": true, "schema": { "$ref": "#/definitions/Thing" } },
                { "name": "If-Match", "in": "header", "required": false, "type": "string" },
                { "$ref": "#/parameters/api-version" }
            ],
            "responses": {
                "200": { "description": "prose", "schema": { "$ref": "#/definitions/Thing" },
                          "headers": { "ETag": { "type": "string", "description": "prose" } } },
                "204": { "description": "prose" }
            }
        })
    }

    #[test]
    fn converts_the_swagger_features_the_spec_uses() {
        let out = swagger2_to_openapi3(&minimal(put_op()), "Ours").unwrap();
        let expected = json!({
            "openapi": "3.0.3",
            "info": { "title": "Ours", "version": "2021-04-12" },
            "servers": [{ "url": "https://hub.example" }],
            "paths": { "/things/{id}": { "put": {
                "operationId": "Things_Put",
                "parameters": [
                    { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "If-Match", "in": "header", "required": false, "schema": { "type": "string" } },
                    { "$ref": "#/components/parameters/api-version" }
                ],
                "requestBody": { "required": true, "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Thing" } } } },
                "responses": {
                    "200": { "description": "OK",
                             "headers": { "ETag": { "schema": { "type": "string" } } },
                             "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Thing" } } } },
                    "204": { "description": "No Content" }
                }
            } } },
            "components": {
                "schemas": { "Thing": { "properties": {
                    "description": { "type": "string" },
                    "other": { "$ref": "#/components/schemas/Thing" }
                } } },
                "parameters": { "api-version": { "name": "api-version", "in": "query", "required": true,
                    "schema": { "type": "string", "default": "2021-04-12" } } }
            }
        });
        assert_eq!(out, expected);
    }

    #[test]
    fn unknown_keywords_fail_loudly() {
        let mut op = put_op();
        op["x-ms-pageable"] = json!({});
        let err = swagger2_to_openapi3(&minimal(op), "t").unwrap_err();
        assert!(err.contains("unsupported key \"x-ms-pageable\""), "{err}");

        let mut doc = minimal(put_op());
        doc["definitions"]["Thing"]["discriminator"] = json!("kind");
        let err = swagger2_to_openapi3(&doc, "t").unwrap_err();
        assert!(
            err.contains("unsupported schema keyword \"discriminator\""),
            "{err}"
        );
    }

    #[test]
    fn rejects_swagger_3_and_form_parameters() {
        let mut doc = minimal(put_op());
        doc["swagger"] = json!("3.0");
        assert!(swagger2_to_openapi3(&doc, "t").is_err());

        let mut op = put_op();
        op["parameters"][0]["in"] = json!("formData");
        let err = swagger2_to_openapi3(&minimal(op), "t").unwrap_err();
        assert!(err.contains("formData"), "{err}");
    }
}
