//! `iothub configuration …`.

use crate::assert_text;
use crate::support::{Hub, redact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_create_show_list_delete() {
    let hub = Hub::start().await;
    let body = r#"{"id": "interval-30", "content": {"deviceContent": {"properties.desired.interval": 30}},
                   "labels": {"team": "ops"}, "metrics": {"queries": {"applied": "SELECT deviceId FROM devices WHERE properties.reported.interval = 30"}}}"#;
    let created = hub.json(&[
        "configuration",
        "create",
        "--json",
        body,
        "--target-condition",
        "tags.site = 'oslo'",
        "--priority",
        "10",
    ]);
    let mut shown = redact(created);
    // Counts and times the hub fills in as it applies it.
    for field in ["createdTimeUtc", "lastUpdatedTimeUtc"] {
        shown[field] = format!("[{field}]").into();
    }
    insta::assert_json_snapshot!("configuration_create", shown);

    let one = hub.json(&["configuration", "show", "interval-30"]);
    assert_eq!(one["targetCondition"], "tags.site = 'oslo'");
    let listed = hub.json(&["configuration", "list", "--query", "[].id"]);
    assert_eq!(listed, serde_json::json!(["interval-30"]));

    let (code, _, err) = hub.run(&["configuration", "create", "--json", r#"{"id": "empty"}"#]);
    assert_eq!(code, 2, "checked before sending: no content");
    assert_text!("configuration_create_no_content", err);

    let (code, out, _) = hub.run(&["configuration", "delete", "interval-30"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = hub.run(&["configuration", "show", "interval-30"]);
    assert_eq!(code, 3);
    assert_text!("configuration_show_not_found", err);
}
