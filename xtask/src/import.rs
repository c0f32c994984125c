//! `cargo xtask import`: upstream Swagger 2.0 -> `openapi/iothub-service.json`.

use std::path::Path;

use serde_json::Value;

use crate::upstream::Upstream;
use crate::{Layout, Outcome, Result, convert, fixes, output};

/// Our title for the converted document (the upstream one is prose we do not copy).
const TITLE: &str = "Azure IoT Hub service API (converted by iothub-rs xtask import)";

pub(crate) fn run(layout: &Layout, spec: &Path, check: bool) -> Result<Outcome> {
    let text = render(layout, spec)?;
    output::write_or_check(&layout.openapi_json, &text, check)
}

/// The error for `import` without `--spec`: where to get the pinned file, and how to check it.
pub(crate) fn spec_required(layout: &Layout) -> Result<Outcome> {
    let upstream = Upstream::load(&layout.upstream_toml)?;
    Err(format!(
        "--spec PATH is required: the upstream spec is not in this repository and no package \
         ships it.\nGet {} from {} at commit {} (sha256 {}, api-version {}) and pass its path; \
         the file is checked against that sha256.",
        upstream.path, upstream.repository, upstream.commit, upstream.sha256, upstream.api_version
    ))
}

/// The converted, fixed document as it is committed: pretty JSON with sorted keys.
pub(crate) fn render(layout: &Layout, spec: &Path) -> Result<String> {
    let upstream = Upstream::load(&layout.upstream_toml)?;
    let bytes = upstream.read_verified(spec)?;
    let swagger: Value = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not JSON: {e}", spec.display()))?;
    let version = swagger["info"]["version"].as_str().unwrap_or_default();
    if version != upstream.api_version {
        return Err(format!(
            "the spec's info.version is {version:?}, openapi/upstream.toml says {:?}",
            upstream.api_version
        ));
    }
    let mut doc = convert::swagger2_to_openapi3(&swagger, TITLE)?;
    fixes::apply(&mut doc)?;
    // What codegen will read must parse as OpenAPI 3.0 now, not at the next codegen.
    serde_json::from_value::<openapiv3::OpenAPI>(doc.clone())
        .map_err(|e| format!("the converted document is not valid OpenAPI 3.0: {e}"))?;
    let mut text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::fs;
    use std::path::PathBuf;

    use super::*;

    /// The upstream spec, where CI and maintainers keep it (`../shared` beside the checkout),
    /// or `None` after recording a skip: a fresh clone has nothing beside it, and no package
    /// ships the file. Under `CI=true` a missing spec fails the test instead.
    pub(crate) fn upstream_spec(test: &str) -> Option<PathBuf> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/upstream/iothub-service-2021-04-12.json");
        if path.exists() {
            return Some(path);
        }
        iothub_test_support::skip::skip(
            test,
            "the upstream spec is not in ../shared/upstream/ beside the checkout \
             (`cargo xtask import` without --spec says where to get the pinned file)",
        );
        None
    }

    pub(crate) fn repo() -> Layout {
        Layout::at(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
    }

    /// A scratch copy of the committed inputs and outputs.
    pub(crate) fn scratch() -> (tempfile::TempDir, Layout) {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::at(dir.path());
        let repo = repo();
        for (from, to) in [
            (&repo.upstream_toml, &layout.upstream_toml),
            (&repo.openapi_json, &layout.openapi_json),
            (&repo.generated_rs, &layout.generated_rs),
        ] {
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            fs::copy(from, to).unwrap();
        }
        (dir, layout)
    }

    pub(crate) fn flip_one_byte(path: &Path) {
        let mut bytes = fs::read(path).unwrap();
        // A byte inside the content, not the trailing newline; keep it ASCII.
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'x' { b'y' } else { b'x' };
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn without_a_spec_the_error_says_where_to_get_it() {
        let err = spec_required(&repo()).unwrap_err();
        let upstream = Upstream::load(&repo().upstream_toml).unwrap();
        for fact in [
            &upstream.repository,
            &upstream.path,
            &upstream.commit,
            &upstream.sha256,
        ] {
            assert!(err.contains(fact.as_str()), "{err}");
        }
    }

    #[test]
    fn committed_document_is_current_and_check_fails_on_one_changed_byte() {
        let Some(spec) = upstream_spec(
            "xtask::import::committed_document_is_current_and_check_fails_on_one_changed_byte",
        ) else {
            return;
        };
        let (_dir, layout) = scratch();
        assert_eq!(run(&layout, &spec, true), Ok(Outcome::UpToDate));
        flip_one_byte(&layout.openapi_json);
        let err = run(&layout, &spec, true).unwrap_err();
        assert!(err.contains("is stale"), "{err}");
        assert!(
            err.contains("(committed)") && err.contains("(regenerated)"),
            "{err}"
        );
        // Without --check the file is repaired.
        assert_eq!(run(&layout, &spec, false), Ok(Outcome::Written));
        assert_eq!(
            fs::read(&layout.openapi_json).unwrap(),
            fs::read(repo().openapi_json).unwrap()
        );
    }

    #[test]
    fn a_modified_upstream_spec_is_refused() {
        let Some(upstream) = upstream_spec("xtask::import::a_modified_upstream_spec_is_refused")
        else {
            return;
        };
        let (dir, layout) = scratch();
        let spec = dir.path().join("spec.json");
        let mut bytes = fs::read(&upstream).unwrap();
        bytes.push(b'\n');
        fs::write(&spec, bytes).unwrap();
        let err = render(&layout, &spec).unwrap_err();
        assert!(err.contains("but openapi/upstream.toml pins"), "{err}");
    }

    #[test]
    fn output_keeps_every_operation_and_no_upstream_prose() {
        let Some(spec) =
            upstream_spec("xtask::import::output_keeps_every_operation_and_no_upstream_prose")
        else {
            return;
        };
        let upstream: Value = serde_json::from_slice(&fs::read(&spec).unwrap()).unwrap();
        let ours: Value = serde_json::from_str(&render(&repo(), &spec).unwrap()).unwrap();

        let ids = |doc: &Value| -> Vec<String> {
            let mut ids: Vec<String> = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .flat_map(|item| item.as_object().unwrap().values())
                .map(|op| op["operationId"].as_str().unwrap().to_owned())
                .collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(&upstream).len(), 42);
        assert_eq!(ids(&upstream), ids(&ours));

        // Every string upstream wrote as prose is absent from our document.
        let mut prose = Vec::new();
        collect_prose(&upstream, &mut prose);
        assert!(prose.len() > 300, "found {} prose strings", prose.len());
        let text = serde_json::to_string(&ours).unwrap();
        for p in prose.iter().filter(|p| p.len() > 12) {
            assert!(!text.contains(p.as_str()), "upstream prose copied: {p}");
        }
        assert!(!text.contains("\"summary\""));
        assert!(!text.contains("api-version"));
    }

    fn collect_prose(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    match (k.as_str(), child) {
                        ("description" | "summary" | "title", Value::String(s)) => {
                            out.push(s.clone())
                        }
                        _ => collect_prose(child, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|c| collect_prose(c, out)),
            _ => {}
        }
    }

    #[test]
    fn fixes_have_the_intended_effect_on_the_real_spec() {
        let Some(spec) =
            upstream_spec("xtask::import::fixes_have_the_intended_effect_on_the_real_spec")
        else {
            return;
        };
        let doc: Value = serde_json::from_str(&render(&repo(), &spec).unwrap()).unwrap();
        let s = &doc["components"]["schemas"];
        assert_eq!(
            s["Twin"]["properties"]["tags"]["additionalProperties"],
            serde_json::json!({})
        );
        assert_eq!(
            s["CloudToDeviceMethodResult"]["properties"]["payload"],
            serde_json::json!({})
        );
        assert_eq!(
            s["Device"]["properties"]["status"]["$ref"],
            "#/components/schemas/DeviceStatus"
        );
        assert_eq!(s["ErrorCode"]["enum"].as_array().unwrap().len(), 216);
        assert_eq!(
            s["Device"]["properties"]["lastActivityTime"]["format"], "date-time",
            "dates keep their format; codegen maps them to IotDateTime"
        );
        assert_eq!(
            s["SymmetricKey"]["properties"]["primaryKey"]["format"],
            "iothub-secret"
        );
        assert_eq!(
            s["JobProperties"]["properties"]["outputBlobContainerUri"]["format"],
            "iothub-sas-uri"
        );
        let query = &doc["paths"]["/devices/query"]["post"]["responses"]["200"];
        assert_eq!(
            query["content"]["application/json"]["schema"]["items"],
            serde_json::json!({})
        );
        let cancel = &doc["paths"]["/jobs/{id}"]["delete"]["responses"];
        assert!(cancel["200"].get("content").is_none() && cancel["204"].get("content").is_none());
        let feedback = &doc["paths"]["/messages/serviceBound/feedback"]["get"]["responses"];
        assert_eq!(feedback["200"]["content"], feedback["204"]["content"]);
        assert!(feedback["200"]["content"]["application/octet-stream"].is_object());
    }
}
