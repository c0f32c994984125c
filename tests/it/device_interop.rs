//! The official device SDKs, unmodified, against the emulator's device MQTT endpoint, with
//! the service side driven by `iothub-registry`: Python `azure-iot-device` 2.14.0
//! (`crates/iothub-emulator/interop/python/device.py`, MQTT and MQTT over WebSockets,
//! `server_verification_cert`) and Node `azure-iot-device-mqtt` 1.16.4
//! (`crates/iothub-emulator/interop/node/device.js`, `Mqtt` and `MqttWs`, the `ca` option).
//!
//! The device SDKs dial only 8883 (MQTT) and 443 (MQTT over WebSockets), so the emulator binds
//! those on a loopback address of this test's own, [`loopback::DEVICE_INTEROP`], with a
//! certificate for that address. Each suite is a child process: it does the device's part and,
//! whenever a check needs the service, prints `SERVICE {json}`; this test does that part with
//! a [`RegistryManager`] (and [`Emulator::device_messages`], to find telemetry) and answers with one JSON
//! line on the child's stdin. Identities are created here first: per SDK and transport a SAS
//! device with a SAS module, and a self-signed X.509 device whose certificate rcgen makes.
//!
//! Locally a missing SDK or privilege to bind 443 skips with a message; with `CI=true` it
//! fails. Each suite's summary line is written to `CARGO_TARGET_TMPDIR/interop-<suite>.txt`
//! (`interop-python-device.txt`, `interop-node-device.txt`), which `.ci/run` checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt as _;
use iothub_emulator::Emulator;
use iothub_registry::c2d::{FeedbackReceiver, FeedbackRecord, FeedbackStatus};
use iothub_registry::models::{CloudToDeviceMethod, DeviceStatus, Twin};
use iothub_registry::{DeviceOptions, IfMatch, RegistryManager, SasKeys, X509Thumbprints};
use iothub_test_support::emulator::registry;
use iothub_test_support::skip::skip;
use iothub_test_support::{loopback, sdk};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

const TEST: &str = "device_interop::official_device_sdks_against_the_emulator";

/// Named checks of each suite: 16 per transport (SAS device: connect, telemetry, C2D,
/// feedback, get twin, reported, desired, method; X.509: connect, telemetry; module: connect,
/// telemetry, twin, reported, desired, method), over MQTT and MQTT over WebSockets. `.ci/run`
/// requires these counts.
const PYTHON_CHECKS: u32 = 32;
const NODE_CHECKS: u32 = 32;

/// How long one suite may run before it is killed and fails.
const SUITE_DEADLINE: Duration = Duration::from_secs(600);
/// How long the service side waits for what a device did to show (telemetry, feedback, a
/// reported property).
const SERVICE_WAIT: Duration = Duration::from_secs(20);

fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/iothub-emulator/interop")
}

/// Whether `python` can import the device SDK.
fn has_device_sdk(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import azure.iot.device"])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// Upper-case hex, as the portal shows thumbprints.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A fresh symmetric key, base64 of 32 random bytes.
fn key() -> String {
    use base64::Engine as _;
    let bytes: Vec<u8> = (0..32).map(|_| fastrand::u8(..)).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Creates the identities one suite uses over one transport and returns their part of the
/// suite's configuration.
async fn identities(hub: &Emulator, registry: &RegistryManager, dir: &Path, prefix: &str) -> Value {
    let host = hub.host().to_owned();
    let device_id = format!("{prefix}-dev");
    let (k1, k2) = (key(), key());
    registry
        .create_device_with_sas(
            &device_id,
            SasKeys::new(&k1, &k2),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    let module_id = "telemetry".to_owned();
    let (m1, m2) = (key(), key());
    registry
        .create_module_with_sas(&device_id, &module_id, SasKeys::new(&m1, &m2), None)
        .await
        .unwrap();

    // A self-signed certificate, registered by its SHA-1 thumbprint as the primary and its
    // SHA-256 one as the secondary: the service accepts either form, and so each matches
    // whichever the hub computes.
    let x509_id = format!("{prefix}-x509");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, x509_id.as_str());
    let key_pair = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key_pair).unwrap();
    let der = cert.der();
    let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, der);
    let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    registry
        .create_device_with_x509(
            &x509_id,
            X509Thumbprints::new(hex(sha1.as_ref()), hex(sha256.as_ref())),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    let cert_path = dir.join(format!("{x509_id}.pem"));
    let key_path = dir.join(format!("{x509_id}.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();

    json!({
        "host": host,
        "device_id": device_id,
        "device_cs": format!("HostName={host};DeviceId={device_id};SharedAccessKey={k1}"),
        "module_id": module_id,
        "module_cs": format!(
            "HostName={host};DeviceId={device_id};ModuleId={module_id};SharedAccessKey={m1}"
        ),
        "x509_device_id": x509_id,
        "x509_cert": cert_path,
        "x509_key": key_path,
    })
}

/// The service side of the suites: one registry, one feedback receiver (records that arrive
/// for another check are kept until asked for).
struct Service<'a> {
    hub: &'a Emulator,
    registry: &'a RegistryManager,
    feedback: FeedbackReceiver,
    records: HashMap<String, FeedbackRecord>,
}

impl Service<'_> {
    /// Does one `SERVICE` request; `Ok` is the answer's value.
    async fn handle(&mut self, request: &Value) -> Result<Value, String> {
        let s = |k: &str| request[k].as_str().map(str::to_owned);
        let device = s("device").ok_or("no device")?;
        let module = s("module");
        match request["op"].as_str().unwrap_or_default() {
            "telemetry" => {
                let marker = s("marker").ok_or("no marker")?;
                self.telemetry(&device, module.as_deref(), &marker).await
            }
            "c2d" => {
                let id = s("message_id").ok_or("no message_id")?;
                let body = s("body").unwrap_or_default();
                self.registry
                    .send_c2d_message(
                        device,
                        body,
                        [("messageId", id.as_str()), ("iothub-ack", "positive")],
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Value::Null)
            }
            "feedback" => {
                let id = s("message_id").ok_or("no message_id")?;
                let record = self.feedback_for(&id).await?;
                if record.status != FeedbackStatus::Success || record.device_id != device {
                    return Err(format!("feedback {record:?}"));
                }
                Ok(Value::Null)
            }
            "reported" => {
                let (k, v) = (s("key").ok_or("no key")?, request["value"].clone());
                let deadline = tokio::time::Instant::now() + SERVICE_WAIT;
                loop {
                    let twin = match &module {
                        Some(m) => self.registry.get_module_twin(&device, m).await,
                        None => self.registry.get_twin(&device).await,
                    }
                    .map_err(|e| e.to_string())?;
                    let twin = serde_json::to_value(twin).unwrap();
                    if twin["properties"]["reported"][&k] == v {
                        return Ok(Value::Null);
                    }
                    if tokio::time::Instant::now() > deadline {
                        return Err(format!("get_twin shows no reported {k} = {v}: {twin}"));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            "desired" => {
                let k = s("key").ok_or("no key")?;
                let patch: Twin = serde_json::from_value(
                    json!({"properties": {"desired": {k: request["value"].clone()}}}),
                )
                .map_err(|e| e.to_string())?;
                match &module {
                    Some(m) => {
                        self.registry
                            .update_module_twin(&device, m, patch, IfMatch::Any)
                            .await
                    }
                    None => {
                        self.registry
                            .update_twin(&device, patch, IfMatch::Any)
                            .await
                    }
                }
                .map_err(|e| e.to_string())?;
                Ok(Value::Null)
            }
            "method" => {
                let method = CloudToDeviceMethod {
                    method_name: s("name"),
                    payload: Some(request["payload"].clone()),
                    response_timeout_in_seconds: Some(30),
                    connect_timeout_in_seconds: Some(10),
                };
                let result = match &module {
                    Some(m) => {
                        self.registry
                            .invoke_device_module_method(&device, m, method)
                            .await
                    }
                    None => self.registry.invoke_device_method(&device, method).await,
                }
                .map_err(|e| e.to_string())?;
                Ok(json!({"status": result.status, "payload": result.payload}))
            }
            op => Err(format!("unknown operation {op:?}")),
        }
    }

    /// Finds the message carrying `marker` among the telemetry the emulator received from
    /// `device` (and `module`).
    async fn telemetry(
        &self,
        device: &str,
        module: Option<&str>,
        marker: &str,
    ) -> Result<Value, String> {
        let deadline = tokio::time::Instant::now() + SERVICE_WAIT;
        loop {
            let found = self
                .hub
                .device_messages(Some(device), module)
                .into_iter()
                .find(|m| {
                    m.module_id.as_deref() == module
                        && m.properties.get("marker").map(String::as_str) == Some(marker)
                });
            if let Some(message) = found {
                if message.message_id() != Some(marker) {
                    return Err(format!("message id {:?}", message.message_id()));
                }
                if !message.body_text().contains(marker) {
                    return Err(format!("body {:?}", message.body_text()));
                }
                return Ok(Value::Null);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("no message with marker {marker} from {device}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The feedback record of message `id`, waiting for it on the receiver.
    async fn feedback_for(&mut self, id: &str) -> Result<FeedbackRecord, String> {
        let deadline = tokio::time::Instant::now() + SERVICE_WAIT;
        loop {
            if let Some(record) = self.records.remove(id) {
                return Ok(record);
            }
            let batch = tokio::time::timeout_at(deadline, self.feedback.next())
                .await
                .map_err(|_| format!("no feedback for {id}"))?
                .ok_or("the feedback receiver ended")?
                .map_err(|e| e.to_string())?;
            for record in batch.records() {
                self.records
                    .insert(record.original_message_id.clone(), record.clone());
            }
            batch.complete().await.map_err(|e| e.to_string())?;
        }
    }
}

/// Runs a suite, serving its `SERVICE` lines; records and returns (passed, failed).
async fn run_suite(name: &str, mut cmd: Command, service: &mut Service<'_>) -> (u32, u32) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot run: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    // Read stderr beside stdout, so a chatty SDK never blocks on a full pipe.
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let prefix = format!("{name}: ");
    let mut summary = None;
    let served = tokio::time::timeout(SUITE_DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(request) = line.strip_prefix("SERVICE ") {
                let answer = match serde_json::from_str::<Value>(request) {
                    Ok(request) => match service.handle(&request).await {
                        Ok(value) => json!({"ok": true, "value": value}),
                        Err(error) => json!({"ok": false, "error": error}),
                    },
                    Err(e) => json!({"ok": false, "error": e.to_string()}),
                };
                println!("{line}\n  -> {answer}");
                let mut reply = answer.to_string();
                reply.push('\n');
                // A suite that died is seen when its stdout ends.
                let _ = stdin.write_all(reply.as_bytes()).await;
                let _ = stdin.flush().await;
            } else {
                println!("{line}");
                if line.starts_with(&prefix) {
                    summary = Some(line);
                }
            }
        }
    })
    .await;
    if served.is_err() {
        let _ = child.kill().await;
    }
    let _ = child.wait().await;
    eprintln!("{}", errors.await.unwrap_or_default());
    assert!(served.is_ok(), "{name} ran past {SUITE_DEADLINE:?}");
    let summary = summary.unwrap_or_else(|| panic!("{name} printed no summary"));
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
async fn official_device_sdks_against_the_emulator() {
    let ip = loopback::DEVICE_INTEROP;
    let https = SocketAddr::from((ip, 443));
    let mqtt = SocketAddr::from((ip, 8883));
    // The registry's C2D and feedback reach AMQP on the hub's host name, so AMQP binds there.
    let amqp = SocketAddr::from((ip, 5671));
    let dir = tempfile::tempdir().unwrap();
    let hub = match Emulator::builder()
        .bind(https)
        .mqtt_bind(mqtt)
        .amqp_bind(amqp)
        .host_name(ip.to_string())
        .start()
        .await
    {
        Ok(hub) => hub,
        Err(e) => {
            let why = format!("cannot bind {https}, {mqtt} and {amqp} (443 needs root): {e}");
            return skip(TEST, &why);
        }
    };
    let registry = registry(&hub);
    // The SDKs read the CA from a file: the emulator writes one only with a data directory.
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, hub.ca_certificate_pem().unwrap()).unwrap();
    let mut service = Service {
        hub: &hub,
        feedback: registry.feedback_receiver(),
        registry: &registry,
        records: HashMap::new(),
    };

    let config = |prefix: &'static str| {
        let (hub, registry, dir, ca) = (&hub, &registry, dir.path(), ca.clone());
        async move {
            json!({
                "ca": ca,
                "mqtt": identities(hub, registry, dir, &format!("{prefix}-mqtt")).await,
                "ws": identities(hub, registry, dir, &format!("{prefix}-ws")).await,
            })
        }
    };

    let mut verdicts = Vec::new();
    match sdk::python().filter(|py| has_device_sdk(py)) {
        Some(py) => {
            let mut cmd = Command::new(py);
            cmd.arg(interop_dir().join("python/device.py"))
                .env("IOTHUB_DEVICE_INTEROP", config("py").await.to_string())
                .env("NO_PROXY", "*");
            let (passed, failed) = run_suite("python-device", cmd, &mut service).await;
            verdicts.push(verdict("python-device", passed, failed, PYTHON_CHECKS));
        }
        None => skip(
            &format!("{TEST} (python)"),
            "no Python with azure-iot-device at .venv or IOTHUB_INTEROP_PYTHON \
             (bash .ci/run installs it)",
        ),
    }

    let node_dir = interop_dir().join("node");
    if node_dir.join("node_modules/azure-iot-device-mqtt").exists() {
        let mut cmd = Command::new("node");
        cmd.arg(node_dir.join("device.js"))
            .current_dir(&node_dir)
            .env("IOTHUB_DEVICE_INTEROP", config("node").await.to_string())
            .env("NO_PROXY", "*");
        let (passed, failed) = run_suite("node-device", cmd, &mut service).await;
        verdicts.push(verdict("node-device", passed, failed, NODE_CHECKS));
    } else {
        skip(
            &format!("{TEST} (node)"),
            "no azure-iot-device-mqtt in crates/iothub-emulator/interop/node/node_modules \
             (npm ci --prefix crates/iothub-emulator/interop/node, as .ci/run does)",
        );
    }
    drop(service);
    registry.close().await;
    hub.shutdown().await;
    // Both suites run before either fails the test, so one run shows every failing check.
    let failures: Vec<String> = verdicts.into_iter().flatten().collect();
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

/// Why a suite's counts fail the test, if they do.
fn verdict(name: &str, passed: u32, failed: u32, named: u32) -> Option<String> {
    if failed > 0 {
        Some(format!("{name}: {passed} passed, {failed} failed"))
    } else if passed < named {
        Some(format!(
            "{name} ran only {passed} of its {named} named checks"
        ))
    } else {
        None
    }
}
