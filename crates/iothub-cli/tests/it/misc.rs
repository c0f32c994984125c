//! `iothub stats`, `sas-token`, `completions`, `emulator`, help and connection errors.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use crate::assert_text;
use crate::support::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats() {
    let hub = Hub::start().await;
    hub.json(&["device", "create", "s-1"]);
    hub.json(&["device", "create", "s-2", "--status", "disabled"]);
    insta::assert_json_snapshot!("stats", hub.json(&["stats"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_tokens_for_the_hub_a_device_and_a_module() {
    let hub = Hub::start().await;
    hub.json(&[
        "device",
        "create",
        "t-1",
        "--primary-key",
        "AAECAwQFBgcICQoLDA0ODw==",
        "--secondary-key",
        "EBESExQVFhcYGRobHB0eHw==",
    ]);
    hub.json(&["module", "create", "t-1", "mod"]);

    let token = hub.json(&["sas-token", "--duration", "60"]);
    let sas = token["sas"].as_str().unwrap();
    assert!(
        sas.starts_with("SharedAccessSignature sr=localhost%3A"),
        "{sas}"
    );
    assert!(sas.ends_with("&skn=iothubowner"));
    // The hub token works: the emulator takes it as a credential.
    let cs = format!("HostName={};SharedAccessSignature={sas}", hub.emu.host());
    let (code, _, err) = hub.run(&["device", "show", "t-1", "--connection-string", &cs]);
    assert_eq!(code, 0, "{err}");

    let device = hub.json(&["sas-token", "--device", "t-1", "--duration", "3600"]);
    let sas = device["sas"].as_str().unwrap();
    let host = hub.emu.host().replace(':', "%3A");
    assert!(
        sas.starts_with(&format!(
            "SharedAccessSignature sr={host}%2Fdevices%2Ft-1&sig="
        )),
        "{sas}"
    );
    assert!(!sas.contains("skn="));
    let module = hub.json(&["sas-token", "-d", "t-1", "-m", "mod", "--key", "secondary"]);
    assert!(
        module["sas"]
            .as_str()
            .unwrap()
            .contains("%2Fmodules%2Fmod&sig=")
    );

    let (code, _, err) = hub.run(&["sas-token", "--module", "mod"]);
    assert_eq!(code, 2);
    assert_text!("sas_token_module_without_device", err);
    let (code, _, _) = hub.run(&["sas-token", "--duration", "0"]);
    assert_eq!(code, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_connection_and_bad_connection_string() {
    let hub = Hub::start().await;
    let out = hub.bare().args(["device", "show", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_text!("no_connection", String::from_utf8_lossy(&out.stderr));
    let out = hub
        .bare()
        .args([
            "device",
            "show",
            "x",
            "--connection-string",
            "HostName=;nope",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_text!(
        "bad_connection_string",
        String::from_utf8_lossy(&out.stderr)
    );
    // The wrong key: the hub refuses it (401), exit 1, the key never shown.
    let wrong = "HostName=localhost:1;SharedAccessKeyName=iothubowner;SharedAccessKey=AAECAwQFBgcICQoLDA0ODw==";
    let wrong = wrong.replace("localhost:1", hub.emu.host());
    let out = hub
        .bare()
        .args(["stats", "--connection-string", &wrong])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("AAECAwQFBgcICQoLDA0ODw=="));
    assert_text!("wrong_key", err);
}

#[test]
fn completions_and_help() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = assert_cmd::Command::cargo_bin("iothub")
            .unwrap()
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("iothub"),
            "{shell}"
        );
    }
    let mut help = assert_cmd::Command::cargo_bin("iothub").unwrap();
    for var in crate::support::CLEARED {
        help.env_remove(var);
    }
    let out = help.arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("help", String::from_utf8_lossy(&out.stdout));
    let out = assert_cmd::Command::cargo_bin("iothub")
        .unwrap()
        .arg("nope")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn emulator_starts_in_the_foreground_and_prints_how_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("iothub"))
        .args([
            "emulator",
            "--bind",
            "127.0.0.1:0",
            "--amqp-bind",
            "127.0.0.1:0",
            "--mqtt-bind",
            "127.0.0.1:0",
            "--cert-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut env = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("export ") {
            let (k, v) = rest.split_once('=').unwrap();
            env.push((k.to_owned(), v.trim_matches('\'').to_owned()));
        }
        if line.starts_with("iothub device create") {
            break;
        }
    }
    let names: Vec<_> = env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "IOTHUB_CONNECTION_STRING",
            "IOTHUB_CA_CERT",
            "IOTHUB_AMQP_PORT"
        ]
    );
    // What it printed is enough to use it.
    let out = assert_cmd::Command::cargo_bin("iothub")
        .unwrap()
        .envs(env)
        .env("IOTHUB_CONFIG_DIR", dir.path())
        .args(["device", "create", "from-printed-settings"])
        .output()
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_exits_5() {
    let hub = Hub::start().await;
    hub.emu.set_faults(iothub_emulator::FaultConfig {
        throttle_rate: 1.0,
        ..Default::default()
    });
    let (code, _, err) = hub.run(&["device", "show", "any", "--attempts", "1"]);
    assert_eq!(code, 5, "{err}");
    assert_text!("throttled", err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_turns_on_the_sdk_tracing_and_output_stays_clean() {
    let hub = Hub::start().await;
    let (code, out, err) = hub.run(&["stats", "--verbose"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("get_device_registry_statistics"), "{err}");
    // Standard output is still the JSON alone.
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    let (_, _, quiet) = hub.run(&["stats"]);
    assert!(quiet.is_empty(), "{quiet}");
}
