//! Value parsers for the command line: each says what is wrong and how to fix it, so a bad
//! value stops the command before any request.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value};

/// A compiled JMESPath expression (shared, since clap clones values).
#[derive(Clone)]
pub(crate) struct JmesPath(pub(crate) Arc<jmespath::Expression<'static>>);

impl std::fmt::Debug for JmesPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JmesPath({})", self.0.as_str())
    }
}

pub(crate) fn jmespath(text: &str) -> Result<JmesPath, String> {
    jmespath::compile(text)
        .map(|e| JmesPath(Arc::new(e)))
        .map_err(|e| format!("not a JMESPath expression: {e}"))
}

pub(crate) fn device_id(text: &str) -> Result<String, String> {
    iothub_auth::ids::check_device_id(text)
        .map(|()| text.to_owned())
        .map_err(|e| format!("not a device id: {e}"))
}

pub(crate) fn module_id(text: &str) -> Result<String, String> {
    iothub_auth::ids::check_module_id(text)
        .map(|()| text.to_owned())
        .map_err(|e| format!("not a module id: {e}"))
}

pub(crate) fn etag(text: &str) -> Result<iothub_registry::ETag, String> {
    iothub_registry::ETag::new(text).map_err(|e| format!("{e}"))
}

pub(crate) fn seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0 * 365.0) {
        return Err("give a number of seconds above 0, at most a year".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

pub(crate) fn non_empty(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.to_owned())
    }
}

pub(crate) fn sql(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("the query is empty; give one like \"SELECT * FROM devices\"".into())
    } else {
        Ok(text.to_owned())
    }
}

pub(crate) fn json(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!("not valid JSON ({e}); quote a string as '\"text\"' and objects as '{{\"k\": 1}}'")
    })
}

pub(crate) fn json_object(text: &str) -> Result<Map<String, Value>, String> {
    match json(text)? {
        Value::Object(map) => Ok(map),
        other => Err(format!(
            "expected a JSON object like '{{\"k\": 1}}', got {}",
            kind(&other)
        )),
    }
}

pub(crate) fn json_object_or_file(text: &str) -> Result<Map<String, Value>, String> {
    match text.strip_prefix('@') {
        Some(path) => {
            let body = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            json_object(&body).map_err(|e| format!("{path}: {e}"))
        }
        None => json_object(text),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn key(text: &str) -> Result<String, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| "not base64; a key is base64 of 16 to 64 bytes".to_owned())?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(format!(
            "decodes to {} bytes; a key is base64 of 16 to 64 bytes",
            bytes.len()
        ));
    }
    Ok(text.to_owned())
}

pub(crate) fn thumbprint(text: &str) -> Result<String, String> {
    if (text.len() == 40 || text.len() == 64) && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(text.to_owned())
    } else {
        Err("a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits".into())
    }
}

pub(crate) fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err("expected KEY=VALUE".into()),
    }
}

pub(crate) fn profile_name(text: &str) -> Result<String, String> {
    if !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(text.to_owned())
    } else {
        Err("a profile name is 1 to 64 letters, digits, '-', '_' or '.'".into())
    }
}

/// One `--set PATH=VALUE` of `twin update`.
#[derive(Debug, Clone)]
pub(crate) struct TwinSet {
    /// `tags` or `desired`, then the path inside it.
    pub(crate) section: Section,
    /// The path below the section.
    pub(crate) path: Vec<String>,
    /// The value.
    pub(crate) value: Value,
}

/// The writable halves of a twin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    /// `tags`.
    Tags,
    /// `properties.desired`.
    Desired,
}

pub(crate) fn twin_set(text: &str) -> Result<TwinSet, String> {
    let (path, value) = text
        .split_once('=')
        .ok_or("expected PATH=VALUE, like tags.site=oslo or properties.desired.interval=30")?;
    let parts: Vec<&str> = path.split('.').collect();
    let (section, rest) = match parts.as_slice() {
        ["tags", rest @ ..] => (Section::Tags, rest),
        ["properties", "desired", rest @ ..] | ["desired", rest @ ..] => (Section::Desired, rest),
        _ => {
            return Err(format!(
                "{path:?}: only tags.… and properties.desired.… can be set"
            ));
        }
    };
    if rest.is_empty() || rest.iter().any(|p| p.is_empty()) {
        return Err(format!("{path:?}: name a property, like tags.site"));
    }
    // A JSON value when it parses (30, true, {"a":1}, null), else the text as a string, as
    // `az … --set` does.
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.to_owned()));
    Ok(TwinSet {
        section,
        path: rest.iter().map(|s| (*s).to_owned()).collect(),
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twin_set_paths_and_values() {
        let set = twin_set("tags.site.floor=3").unwrap();
        assert_eq!(set.section, Section::Tags);
        assert_eq!(set.path, ["site", "floor"]);
        assert_eq!(set.value, 3);
        let set = twin_set("properties.desired.mode=eco").unwrap();
        assert_eq!(set.section, Section::Desired);
        assert_eq!(set.value, "eco");
        assert!(twin_set("properties.reported.x=1").is_err());
        assert!(twin_set("tags=1").is_err());
        assert!(twin_set("tags.a..b=1").is_err());
    }

    #[test]
    fn keys_thumbprints_and_sql() {
        assert!(key("AAECAwQFBgcICQoLDA0ODw==").is_ok());
        assert!(key("AAEC").is_err());
        assert!(thumbprint(&"a".repeat(40)).is_ok());
        assert!(thumbprint("xyz").is_err());
        assert!(sql("  ").is_err());
        assert!(json_object("[1]").is_err());
    }
}
