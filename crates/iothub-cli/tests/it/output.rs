//! `--output table|tsv|jsonl` and `--query`.

use crate::assert_text;
use crate::support::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_tsv_jsonl_and_jmespath() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "o-1"]);
    hub.json(&[
        "device",
        "create",
        "o-2",
        "--status",
        "disabled",
        "--status-reason",
        "parked",
    ]);
    let pick = "sort_by([], &deviceId)[].{deviceId: deviceId, status: status, statusReason: statusReason, edge: capabilities.iotEdge}";

    let (code, table, _) = hub.run(&["device", "list", "-o", "table", "--query", pick]);
    assert_eq!(code, 0);
    assert_text!("device_list_table", table);
    let (_, tsv, _) = hub.run(&["device", "list", "-o", "tsv", "--query", pick]);
    // A multi-select hash comes back with its keys sorted (serde_json's map).
    assert_eq!(tsv, "o-1\tfalse\tenabled\t\no-2\tfalse\tdisabled\tparked\n");
    let (_, jsonl, _) = hub.run(&["device", "list", "-o", "jsonl", "--query", pick]);
    assert_text!("device_list_jsonl", jsonl);

    // A whole device as a table: its top-level scalars, nested objects left to --query.
    let (_, table, _) = hub.run(&["device", "show", "o-1", "-o", "table"]);
    let header = table.lines().nth(1).unwrap();
    for column in ["DeviceId", "Status", "ConnectionState", "Etag"] {
        assert!(header.contains(column), "{header}");
    }
    assert!(!header.contains("Authentication"), "{header}");

    let (code, _, err) = hub.run(&["device", "list", "--query", "[?"]);
    assert_eq!(code, 2);
    assert_text!("bad_jmespath", err);
    let (code, _, _) = hub.run(&["device", "list", "-o", "yaml"]);
    assert_eq!(code, 2);
}
