//! `iothub module …`.

use crate::assert_text;
use crate::support::{Hub, redact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn module_create_show_list_update_connection_string_renew_delete() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "edge-1"]);
    let created = hub.json(&["module", "create", "edge-1", "mod-a", "--managed-by", "me"]);
    insta::assert_json_snapshot!("module_create", redact(created.clone()));
    hub.json(&["module", "create", "edge-1", "mod-b"]);

    let shown = hub.json(&["module", "show", "edge-1", "mod-a"]);
    assert_eq!(shown["managedBy"], "me");
    let listed = hub.json(&["module", "list", "edge-1", "--query", "sort([].moduleId)"]);
    assert_eq!(listed, serde_json::json!(["mod-a", "mod-b"]));

    let updated = hub.json(&["module", "update", "edge-1", "mod-a", "--managed-by", "you"]);
    assert_eq!(updated["managedBy"], "you");
    assert_eq!(
        updated["authentication"]["symmetricKey"]["primaryKey"],
        created["authentication"]["symmetricKey"]["primaryKey"]
    );

    let primary = created["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let host = hub.emu.host().to_owned();
    let cs = hub.json(&["module", "connection-string", "show", "edge-1", "mod-a"]);
    assert_eq!(
        cs["connectionString"],
        format!("HostName={host};DeviceId=edge-1;ModuleId=mod-a;SharedAccessKey={primary}")
    );
    let renewed = hub.json(&["module", "renew-key", "edge-1", "mod-a", "--key", "both"]);
    assert_ne!(
        renewed["authentication"]["symmetricKey"]["primaryKey"],
        primary
    );

    let (code, out, _) = hub.run(&["module", "delete", "edge-1", "mod-a"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, _, err) = hub.run(&["module", "show", "edge-1", "mod-a"]);
    assert_eq!(code, 3);
    assert_text!("module_show_not_found", err);
    let (code, _, err) = hub.run(&["module", "update", "edge-1", "mod-b"]);
    assert_eq!(code, 2);
    assert_text!("module_update_nothing", err);
}
