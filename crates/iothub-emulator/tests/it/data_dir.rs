//! The data directory: everything in it is the owner's alone, and what cannot be used there
//! (a damaged store, policies that could authorize nothing) refuses to start, naming the file
//! and the problem.

use std::path::Path;
use std::process::{Command, Stdio};

use iothub_emulator::Emulator;

use crate::hub::Hub;

async fn start_error(dir: &Path) -> String {
    match Emulator::builder().data_dir(dir).start().await {
        Ok(_) => panic!("started on {}", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// A data directory with a registry of `n` devices, stopped.
async fn with_devices(dir: &Path, n: usize) {
    let hub = Hub::with(Emulator::builder().data_dir(dir)).await;
    for i in 0..n {
        hub.create(&format!("d{i}")).await;
    }
    hub.emu.shutdown().await;
}

#[cfg(unix)]
#[tokio::test]
async fn the_directory_is_the_owners_and_so_is_every_file_in_it() {
    use std::os::unix::fs::PermissionsExt as _;
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("hub");
    with_devices(&dir, 1).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "the directory");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(mode(&path), 0o600, "{}", path.display());
        files += 1;
    }
    assert!(
        files >= 4,
        "registry, policies, key and certificates: {files}"
    );
    // A store left world-readable by an older version is tightened.
    let store = dir.join("registry.redb");
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o644)).unwrap();
    let hub = Emulator::builder().data_dir(&dir).start().await.unwrap();
    assert_eq!(mode(&store), 0o600);
    hub.shutdown().await;
}

#[tokio::test]
async fn an_empty_or_truncated_store_refuses_to_start_and_says_how_to_recover() {
    let dir = tempfile::tempdir().unwrap();
    with_devices(dir.path(), 30).await;
    let store = dir.path().join("registry.redb");
    let full = std::fs::read(&store).unwrap();
    for cut in [full.len() / 2, 4096, 0] {
        std::fs::write(&store, &full[..cut]).unwrap();
        let e = start_error(dir.path()).await;
        assert!(e.contains("registry.redb"), "{e}");
        assert!(e.contains("move it away"), "how to recover: {e}");
        let problem = if cut == 0 { "empty" } else { "cut short" };
        assert!(e.contains(problem), "{e}");
    }
    // Restored, it starts with everything in it.
    std::fs::write(&store, &full).unwrap();
    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    assert_eq!(
        hub.call(reqwest::Method::GET, "/devices/d29", None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn policies_that_could_authorize_nothing_refuse_to_start() {
    let dir = tempfile::tempdir().unwrap();
    with_devices(dir.path(), 0).await;
    let policies = dir.path().join("policies.json");
    let good = std::fs::read_to_string(&policies).unwrap();

    std::fs::write(&policies, "[]").unwrap();
    let e = start_error(dir.path()).await;
    assert!(e.contains("policies.json"), "{e}");
    assert!(e.contains("no shared access policy"), "{e}");

    let mut list: serde_json::Value = serde_json::from_str(&good).unwrap();
    list[1]["secondary_key"] = "not base64 at all!".into();
    std::fs::write(&policies, list.to_string()).unwrap();
    let e = start_error(dir.path()).await;
    assert!(e.contains("policies.json"), "{e}");
    assert!(
        e.contains("secondary key of policy 'service' is not base64"),
        "{e}"
    );
    assert!(
        !e.contains("not base64 at all"),
        "the key is not echoed: {e}"
    );

    std::fs::write(&policies, "{not json").unwrap();
    let e = start_error(dir.path()).await;
    assert!(
        e.contains("policies.json") && e.contains("not a JSON list"),
        "{e}"
    );

    std::fs::write(&policies, good).unwrap();
    Emulator::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap()
        .shutdown()
        .await;
}

#[tokio::test]
async fn the_binary_refuses_a_truncated_store_with_a_message_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    with_devices(dir.path(), 30).await;
    let store = dir.path().join("registry.redb");
    let full = std::fs::read(&store).unwrap();
    std::fs::write(&store, &full[..full.len() / 2]).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_iothub-emulator"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--amqp-bind",
            "127.0.0.1:0",
            "--mqtt-bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("registry.redb") && stderr.contains("cut short"),
        "{stderr}"
    );
}
