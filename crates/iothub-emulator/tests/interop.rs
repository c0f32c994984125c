//! The official SDKs, unmodified, against the emulator: Python `azure-iot-hub` 2.7.0 and
//! Node `azure-iothub` 1.16.x, each running its suite in `interop/`.
//!
//! Neither SDK can be pointed at an arbitrary port (Node's REST client only dials 443), so
//! the emulator binds 127.0.0.2:443 (and 5671 for AMQP, which both SDKs dial for C2D)
//! with a certificate for that address, and the two
//! suites run one after the other. Locally a missing Python package, Node module or
//! privilege to bind 443 skips with a message; with `CI=true` it fails.
//!
//! Each suite's summary line is also written to `CARGO_TARGET_TMPDIR/interop-<sdk>.txt`,
//! which `.ci/run` prints and checks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use iothub_emulator::Emulator;

const ADDR: &str = "127.0.0.2:443";
/// The Python SDK always dials 5671 for C2D; Node's AMQP client does too.
const AMQP_ADDR: &str = "127.0.0.2:5671";

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips locally, fails in CI.
fn unavailable(what: &str) {
    assert!(!ci(), "CI=true and {what}");
    eprintln!("skipping: {what} (set CI=true to make this a failure)");
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
}

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IOTHUB_INTEROP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    venv.exists().then_some(venv)
}

/// Runs a suite, prints its output, records and returns (passed, failed).
fn run_suite(name: &str, mut cmd: Command) -> (u32, u32) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{name}: cannot run: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    let prefix = format!("{name}: ");
    let summary = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("{name} printed no summary"))
        .to_owned();
    std::fs::write(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("interop-{name}.txt")),
        format!("{summary}\n"),
    )
    .unwrap();
    let numbers: Vec<u32> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{summary}");
    (numbers[0], numbers[1])
}

#[tokio::test]
async fn official_python_and_node_sdks_accept_the_emulator() {
    let addr: SocketAddr = ADDR.parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let hub = match Emulator::builder()
        .bind(addr)
        .amqp_bind(AMQP_ADDR.parse().unwrap())
        .host_name("127.0.0.2")
        .data_dir(dir.path())
        .start()
        .await
    {
        Ok(hub) => hub,
        Err(e) => return unavailable(&format!("cannot bind {ADDR} and {AMQP_ADDR}: {e}")),
    };
    let ca = hub.ca_certificate_path().unwrap().to_owned();
    let cs = hub.connection_string();
    assert!(cs.starts_with("HostName=127.0.0.2;"), "{cs}");

    // Python: REQUESTS_CA_BUNDLE must replace any value the environment has.
    match python() {
        Some(py) => {
            let mut cmd = Command::new(py);
            cmd.arg(interop_dir().join("python/registry_manager.py"))
                .env("IOTHUB_CONNECTION_STRING", &cs)
                .env("REQUESTS_CA_BUNDLE", &ca)
                // The suite points uamqp's CA lookup (certifi) at this for C2D.
                .env("AMQP_CA_BUNDLE", &ca)
                .env_remove("CURL_CA_BUNDLE")
                .env("NO_PROXY", "*");
            let (passed, failed) = tokio::task::spawn_blocking(move || run_suite("python", cmd))
                .await
                .unwrap();
            assert_eq!(failed, 0, "python: {passed} passed, {failed} failed");
            assert!(passed >= 20, "python ran only {passed} checks");
        }
        None => unavailable("no Python with azure-iot-hub (.venv or IOTHUB_INTEROP_PYTHON)"),
    }

    let node_dir = interop_dir().join("node");
    if node_dir.join("node_modules/azure-iothub").exists() {
        let mut cmd = Command::new("node");
        cmd.arg(node_dir.join("registry.js"))
            .current_dir(&node_dir)
            .env("IOTHUB_CONNECTION_STRING", &cs)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env("NO_PROXY", "*");
        let (passed, failed) = tokio::task::spawn_blocking(move || run_suite("node", cmd))
            .await
            .unwrap();
        assert_eq!(failed, 0, "node: {passed} passed, {failed} failed");
        assert!(passed >= 13, "node ran only {passed} checks");
    } else {
        unavailable("interop/node has no node_modules (run npm ci there)");
    }
    hub.shutdown().await;
}
