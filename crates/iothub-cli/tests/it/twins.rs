//! `iothub twin …`.

use serde_json::json;

use crate::assert_text;
use crate::support::{Hub, redact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_show_update_replace() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "tw-1"]);
    let twin = hub.json(&["twin", "show", "tw-1"]);
    insta::assert_json_snapshot!("twin_show", redact(twin.clone()));

    // Two writers of different keys: the second PATCH carries only its own key, so the
    // first one's survives.
    hub.json(&["twin", "update", "tw-1", "--tags", r#"{"site": "oslo"}"#]);
    let updated = hub.json(&[
        "twin",
        "update",
        "tw-1",
        "--set",
        "tags.floor=3",
        "--desired",
        r#"{"interval": 30}"#,
        "--set",
        "properties.desired.mode=eco",
    ]);
    insta::assert_json_snapshot!("twin_update", redact(updated.clone()));
    assert_eq!(updated["tags"], json!({"site": "oslo", "floor": 3}));
    let patch = hub
        .emu
        .request_log()
        .into_iter()
        .rev()
        .find(|e| e.method == "PATCH")
        .expect("a PATCH");
    let body: serde_json::Value = serde_json::from_str(&patch.body).unwrap();
    assert_eq!(
        body,
        json!({"tags": {"floor": 3}, "properties": {"desired": {"interval": 30, "mode": "eco"}}})
    );

    // Conditional on an etag that is no longer current: 412, exit 4.
    let stale = twin["etag"].as_str().unwrap();
    let (code, _, err) = hub.run(&[
        "twin", "update", "tw-1", "--set", "tags.x=1", "--etag", stale,
    ]);
    assert_eq!(code, 4);
    assert_text!("twin_update_stale", err);

    let replaced = hub.json(&[
        "twin",
        "replace",
        "tw-1",
        "--json",
        r#"{"tags": {"only": true}}"#,
    ]);
    assert_eq!(replaced["tags"], json!({"only": true}));

    let (code, _, err) = hub.run(&["twin", "update", "tw-1", "--set", "properties.reported.x=1"]);
    assert_eq!(code, 2);
    assert_text!("twin_update_reported", err);
    let (code, _, err) = hub.run(&["twin", "update", "tw-1", "--tags", "[1]"]);
    assert_eq!(code, 2);
    assert_text!("twin_update_not_object", err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_twin_show_update_replace() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "tw-2"]);
    hub.json(&["module", "create", "tw-2", "m1"]);
    let twin = hub.json(&["twin", "show", "tw-2", "--module", "m1"]);
    assert_eq!(twin["moduleId"], "m1");
    let updated = hub.json(&[
        "twin",
        "update",
        "tw-2",
        "-m",
        "m1",
        "--set",
        "tags.role=sensor",
    ]);
    assert_eq!(updated["tags"]["role"], "sensor");
    let file = hub.dir.path().join("twin.json");
    std::fs::write(&file, r#"{"properties": {"desired": {"rate": 5}}}"#).unwrap();
    let arg = format!("@{}", file.display());
    let replaced = hub.json(&["twin", "replace", "tw-2", "-m", "m1", "--json", &arg]);
    assert_eq!(replaced["properties"]["desired"]["rate"], 5);
    assert!(
        replaced["tags"].get("role").is_none(),
        "replaced, not merged"
    );
}
