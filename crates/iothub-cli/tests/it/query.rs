//! `iothub query`.

use crate::assert_text;
use crate::support::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_streams_every_page_with_top_and_jsonl() {
    let hub = Hub::start().await;
    let file = hub.dir.path().join("ids.jsonl");
    let lines: String = (0..25)
        .map(|i| format!("{{\"id\": \"q-{i:02}\"}}\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    hub.json(&["bulk", "import", file.to_str().unwrap()]);

    // Pages of 10: all 25 come back, in one JSON array.
    let all = hub.json(&["query", "SELECT deviceId FROM devices", "--page-size", "10"]);
    assert_eq!(all.as_array().unwrap().len(), 25);
    let posts = hub
        .emu
        .request_log()
        .iter()
        .filter(|e| e.path.starts_with("/devices/query"))
        .count();
    assert_eq!(posts, 3, "three pages");

    let (code, out, _) = hub.run(&[
        "query",
        "SELECT deviceId FROM devices",
        "--top",
        "12",
        "--page-size",
        "5",
        "-o",
        "jsonl",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    assert!(
        lines
            .iter()
            .all(|l| l["deviceId"].as_str().unwrap().starts_with("q-"))
    );

    // --query applies to each streamed line.
    let (_, out, _) = hub.run(&[
        "query",
        "SELECT deviceId FROM devices WHERE deviceId = 'q-03'",
        "-o",
        "jsonl",
        "--query",
        "deviceId",
    ]);
    assert_eq!(out, "\"q-03\"\n");

    let (code, _, err) = hub.run(&["query", "SELECT * FROM nothing WHERE"]);
    assert_eq!(code, 1, "{err}");
    assert_text!("query_bad_sql", err);
    let (code, _, err) = hub.run(&["query", "  "]);
    assert_eq!(code, 2);
    assert_text!("query_empty", err);
}
