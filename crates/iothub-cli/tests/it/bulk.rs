//! `iothub bulk import`.

use crate::assert_text;
use crate::support::{Hub, redact};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_is_paced_reports_failures_and_resumes() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "taken", "--status", "disabled"]);
    let file = hub.dir.path().join("fleet.jsonl");
    let mut lines: String = (0..150)
        .map(|i| format!("{{\"id\": \"b-{i:03}\"}}\n"))
        .collect();
    lines.push_str("{\"id\": \"b-000\", \"moduleId\": \"m\"}\n");
    lines.push_str("{\"id\": \"taken\"}\n");
    std::fs::write(&file, &lines).unwrap();
    let path = file.to_str().unwrap();

    let (code, out, err) = hub.run(&["bulk", "import", path, "--per-minute", "60000"]);
    assert_eq!(code, 1, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    insta::assert_json_snapshot!("bulk_import_first", redact(summary));
    assert_text!("bulk_import_first_stderr", err);

    // Re-run: everything already there counts as done; the differing one still fails.
    let (code, out, err) = hub.run(&["bulk", "import", path]);
    assert_eq!(code, 1, "{err}");
    let summary: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(summary["alreadyDone"], 151);
    assert_eq!(summary["applied"], 0);
    assert_eq!(summary["failed"], 1);

    // Replacing it with --mode update succeeds.
    let one = hub.dir.path().join("one.jsonl");
    std::fs::write(&one, "{\"id\": \"taken\"}\n").unwrap();
    let summary = hub.json(&["bulk", "import", one.to_str().unwrap(), "--mode", "update"]);
    assert_eq!(summary["applied"], 1);
    assert_eq!(hub.json(&["device", "show", "taken"])["status"], "enabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_import_checks_the_whole_file_first() {
    let hub = Hub::start().await;
    let file = hub.dir.path().join("bad.jsonl");
    for (name, text) in [
        ("bulk_bad_json", "{\"id\": \"ok\"}\nnot json\n"),
        (
            "bulk_no_id",
            "{\"id\": \"ok\"}\n{\"status\": \"enabled\"}\n",
        ),
        ("bulk_bad_id", "{\"id\": \"has space\"}\n"),
        ("bulk_twice", "{\"id\": \"a\"}\n{\"id\": \"a\"}\n"),
        ("bulk_empty", "\n\n"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, out, err) = hub.run(&["bulk", "import", file.to_str().unwrap()]);
        assert_eq!(code, 2, "{name}: {err}");
        assert!(out.is_empty());
        let err = err.replace(&file.display().to_string(), "[file]");
        assert_text!(name, err);
    }
    assert!(hub.emu.request_log().is_empty(), "nothing sent");
}
