//! The official SDKs, unmodified, against the emulator: Python `azure-iot-hub` 2.7.0 and
//! Node `azure-iothub` 1.16.x, each running its suite in `interop/`.
//!
//! Neither SDK can be pointed at an arbitrary port (Node's REST client only dials 443), so
//! the emulator binds 443 (and 5671 for AMQP, which both SDKs dial for C2D) on a loopback
//! address of this test's own, [`loopback::INTEROP`] (127.0.0.2), with a certificate for that
//! address, and the two suites run one after the other. Locally a missing Python package,
//! Node module or privilege to bind 443 skips with a message; with `CI=true` it fails.
//!
//! Each suite's summary line is also written to `CARGO_TARGET_TMPDIR/interop-<sdk>.txt`,
//! which `.ci/run` prints and checks.
//!
//! Digital twins run as suites of their own (`python-dt`, `node-dt`): each script is both
//! the service (the SDK's `DigitalTwinClient`) and a Plug and Play device built on the
//! official device SDK with its model id, which dials MQTT on 8883 of the same address.
//!
//! The Python suite also signs in with Azure AD: `azure-identity`'s `ClientSecretCredential`
//! gets tokens from the emulator's Entra ID look-alike, for two app registrations configured
//! here (IoT Hub Data Contributor and IoT Hub Data Reader). Without `azure-identity` those
//! checks are left out and the test records a skip.
//!
//! Both suites run import and export jobs with Azurite as the storage account: containers
//! created here, their SAS URLs passed in the environment. Without Azurite those checks are
//! left out and the test records a skip (a failure under `CI=true`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use iothub_emulator::{Emulator, EntraClient, IotHubRole};
use iothub_test_support::azurite::{self, Container};
use iothub_test_support::skip::skip;
use iothub_test_support::{loopback, sdk};

const TEST: &str = "interop::official_python_and_node_sdks_accept_the_emulator";

/// Named checks of `interop/python/registry_manager.py`, with and without the Azure AD ones;
/// `.ci/run` requires the first.
const PYTHON_CHECKS: u32 = 44;
const PYTHON_AAD_CHECKS: u32 = 5;
/// Python's import/export checks, which need Azurite.
const PYTHON_BLOB_CHECKS: u32 = 5;
/// Named checks of `interop/python/digital_twin.py`.
const PYTHON_DT_CHECKS: u32 = 10;
/// Named checks of `interop/node/digital_twin.js`.
const NODE_DT_CHECKS: u32 = 9;
/// Named checks of `interop/node/registry.js`.
const NODE_CHECKS: u32 = 27;
/// Node's import/export checks, which need Azurite.
const NODE_BLOB_CHECKS: u32 = 4;

/// The Entra app registrations the Python suite signs in as: (client id, secret).
const AAD_CONTRIBUTOR: (&str, &str) = ("py-interop-contributor", "py-contributor-secret");
const AAD_READER: (&str, &str) = ("py-interop-reader", "py-reader-secret");

/// Whether `python` can import azure-identity.
fn has_azure_identity(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import azure.identity"])
        .output()
        .is_ok_and(|out| out.status.success())
}

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("interop")
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
    let addr = SocketAddr::from((loopback::INTEROP, 443));
    // The Python SDK always dials 5671 for C2D; Node's AMQP client does too.
    let amqp_addr = SocketAddr::from((loopback::INTEROP, 5671));
    // The device SDKs of the digital-twin suites dial only 8883.
    let mqtt_addr = SocketAddr::from((loopback::INTEROP, 8883));
    let dir = tempfile::tempdir().unwrap();
    let hub = match Emulator::builder()
        .bind(addr)
        .amqp_bind(amqp_addr)
        .mqtt_bind(mqtt_addr)
        .host_name(loopback::INTEROP.to_string())
        .data_dir(dir.path())
        .entra_client(EntraClient::new(
            AAD_CONTRIBUTOR.0,
            AAD_CONTRIBUTOR.1,
            [IotHubRole::DataContributor],
        ))
        .entra_client(EntraClient::new(
            AAD_READER.0,
            AAD_READER.1,
            [IotHubRole::DataReader],
        ))
        .start()
        .await
    {
        Ok(hub) => hub,
        Err(e) => {
            let why = format!(
                "cannot bind {addr}, {amqp_addr} and {mqtt_addr} (binding 443 needs root): {e}"
            );
            return skip(TEST, &why);
        }
    };
    let ca = hub.ca_certificate_path().unwrap().to_owned();
    // Azurite is the storage account of the import/export checks: a container each for the
    // input and the output, shared by both suites (their device ids differ).
    let blob = match azurite::require(&format!("{TEST} (import/export jobs)")) {
        Some(endpoint) => Some((
            Container::create(&endpoint, "interop-in").await.unwrap(),
            Container::create(&endpoint, "interop-out").await.unwrap(),
        )),
        None => None,
    };
    let blob_env = |cmd: &mut Command| match &blob {
        Some((input, output)) => {
            cmd.env("IOTHUB_INTEROP_BLOB_IN", input.sas_url())
                .env("IOTHUB_INTEROP_BLOB_OUT", output.sas_url());
        }
        None => {
            cmd.env("IOTHUB_INTEROP_NO_BLOB", "1");
        }
    };
    let cs = hub.connection_string();
    assert!(cs.starts_with("HostName=127.0.0.2;"), "{cs}");

    // Python: REQUESTS_CA_BUNDLE must replace any value the environment has.
    match sdk::python() {
        Some(py) => {
            let aad = has_azure_identity(&py);
            let mut cmd = Command::new(&py);
            cmd.arg(interop_dir().join("python/registry_manager.py"))
                .env("IOTHUB_CONNECTION_STRING", &cs)
                .env("REQUESTS_CA_BUNDLE", &ca)
                // The suite points uamqp's CA lookup (certifi) at this for C2D.
                .env("AMQP_CA_BUNDLE", &ca)
                .env_remove("CURL_CA_BUNDLE")
                .env("NO_PROXY", "*")
                .env("AZURE_TENANT_ID", hub.entra_tenant_id())
                .env("IOTHUB_AAD_AUTHORITY", hub.entra_authority_host())
                .env("IOTHUB_AAD_CONTRIBUTOR_ID", AAD_CONTRIBUTOR.0)
                .env("IOTHUB_AAD_CONTRIBUTOR_SECRET", AAD_CONTRIBUTOR.1)
                .env("IOTHUB_AAD_READER_ID", AAD_READER.0)
                .env("IOTHUB_AAD_READER_SECRET", AAD_READER.1)
                // The credential must ask the emulator, whatever the environment says.
                .env_remove("AZURE_AUTHORITY_HOST");
            blob_env(&mut cmd);
            let mut expected = PYTHON_CHECKS;
            if blob.is_none() {
                expected -= PYTHON_BLOB_CHECKS;
            }
            if !aad {
                skip(
                    &format!("{TEST} (python Azure AD checks)"),
                    &format!(
                        "no azure-identity for {} (pip install azure-identity, as .ci/run does)",
                        py.display()
                    ),
                );
                cmd.env("IOTHUB_INTEROP_NO_AAD", "1");
                expected -= PYTHON_AAD_CHECKS;
            }
            let (passed, failed) = tokio::task::spawn_blocking(move || run_suite("python", cmd))
                .await
                .unwrap();
            assert_eq!(failed, 0, "python: {passed} passed, {failed} failed");
            assert!(
                passed >= expected,
                "python ran only {passed} of {expected} checks"
            );
            let mut cmd = Command::new(&py);
            cmd.arg(interop_dir().join("python/digital_twin.py"))
                .env("IOTHUB_CONNECTION_STRING", &cs)
                .env("REQUESTS_CA_BUNDLE", &ca)
                .env_remove("CURL_CA_BUNDLE")
                .env("NO_PROXY", "*");
            let (passed, failed) = tokio::task::spawn_blocking(move || run_suite("python-dt", cmd))
                .await
                .unwrap();
            assert_eq!(failed, 0, "python-dt: {passed} passed, {failed} failed");
            assert!(
                passed >= PYTHON_DT_CHECKS,
                "python-dt ran only {passed} of {PYTHON_DT_CHECKS} checks"
            );
        }
        // Python missing: Node still runs.
        None => skip(&format!("{TEST} (python)"), sdk::NO_PYTHON),
    }

    let node_dir = interop_dir().join("node");
    if node_dir.join("node_modules/azure-iothub").exists() {
        let mut cmd = Command::new("node");
        cmd.arg(node_dir.join("registry.js"))
            .current_dir(&node_dir)
            .env("IOTHUB_CONNECTION_STRING", &cs)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env("NO_PROXY", "*");
        blob_env(&mut cmd);
        let expected = if blob.is_some() {
            NODE_CHECKS
        } else {
            NODE_CHECKS - NODE_BLOB_CHECKS
        };
        let (passed, failed) = tokio::task::spawn_blocking(move || run_suite("node", cmd))
            .await
            .unwrap();
        assert_eq!(failed, 0, "node: {passed} passed, {failed} failed");
        assert!(
            passed >= expected,
            "node ran only {passed} of {expected} checks"
        );
        let mut cmd = Command::new("node");
        cmd.arg(node_dir.join("digital_twin.js"))
            .current_dir(&node_dir)
            .env("IOTHUB_CONNECTION_STRING", &cs)
            .env("NODE_EXTRA_CA_CERTS", &ca)
            .env("NO_PROXY", "*");
        let (passed, failed) = tokio::task::spawn_blocking(move || run_suite("node-dt", cmd))
            .await
            .unwrap();
        assert_eq!(failed, 0, "node-dt: {passed} passed, {failed} failed");
        assert!(
            passed >= NODE_DT_CHECKS,
            "node-dt ran only {passed} of {NODE_DT_CHECKS} checks"
        );
    } else {
        skip(
            &format!("{TEST} (node)"),
            "no azure-iothub in crates/iothub-emulator/interop/node/node_modules \
             (npm ci --prefix crates/iothub-emulator/interop/node, as .ci/run does)",
        );
    }
    hub.shutdown().await;
}
