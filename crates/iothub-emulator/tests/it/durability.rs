//! Durability: every acknowledged write survives kill -9 and restart.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use iothub_emulator::Emulator;
use reqwest::Method;
use serde_json::json;

use crate::hub::Hub;

struct Started {
    child: Child,
    base_url: String,
    connection_string: String,
    ca_path: String,
}

/// Starts the binary on a free port and reads what it prints.
fn start_binary(data_dir: &std::path::Path) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iothub-emulator"))
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base_url, mut cs, mut ca) = (None, None, None);
    while base_url.is_none() || cs.is_none() || ca.is_none() {
        let line = lines
            .next()
            .expect("the emulator printed its settings")
            .unwrap();
        if let Some(v) = line.strip_prefix("IoT Hub emulator listening on ") {
            base_url = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("IOTHUB_CONNECTION_STRING=") {
            cs = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("CA certificate: ") {
            ca = Some(v.to_owned());
        }
    }
    Started {
        child,
        base_url: base_url.unwrap(),
        connection_string: cs.unwrap(),
        ca_path: ca.unwrap(),
    }
}

async fn token(cs: &str) -> String {
    let cs: iothub_auth::ConnectionString = cs.parse().unwrap();
    iothub_auth::Credential::from_connection_string(&cs)
        .http_authorization()
        .await
        .unwrap()
        .expose_secret()
        .to_owned()
}

fn client(ca_path: &str) -> reqwest::Client {
    let pem = std::fs::read(ca_path).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_binary(dir.path());
    let http = client(&first.ca_path);
    let auth = token(&first.connection_string).await;
    let api = "api-version=2021-04-12";
    for i in 0..20 {
        let r = http
            .put(format!("{}/devices/k{i}?{api}", first.base_url))
            .header("authorization", &auth)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = http
            .patch(format!("{}/twins/k{i}?{api}", first.base_url))
            .header("authorization", &auth)
            .body(json!({"tags": {"n": i}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = http
        .delete(format!("{}/devices/k0?{api}", first.base_url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // SIGKILL: no chance to flush anything.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let mut second = start_binary(dir.path());
    assert_eq!(
        second.connection_string.split(";SharedAccessKey=").nth(1),
        first.connection_string.split(";SharedAccessKey=").nth(1),
        "keys are kept in the data directory"
    );
    let http = client(&second.ca_path);
    let auth = token(&second.connection_string).await;
    let r = http
        .post(format!("{}/devices/query?{api}", second.base_url))
        .header("authorization", &auth)
        .body(json!({"query": "SELECT deviceId, tags.n FROM devices"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let rows: serde_json::Value = r.json().await.unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 19);
    assert!(rows.iter().all(
        |r| r["deviceId"].as_str().unwrap()[1..].parse::<u64>().unwrap()
            == r["n"].as_u64().unwrap()
    ));
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test]
async fn the_library_restarts_from_its_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    hub.create("kept").await;
    hub.emu.connect_device("kept").unwrap();
    let ca = hub.emu.ca_certificate_pem().unwrap().to_owned();
    hub.emu.shutdown().await;
    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    assert_eq!(
        hub.emu.ca_certificate_pem().unwrap(),
        ca,
        "the CA is reused"
    );
    let r = hub.call(Method::GET, "/devices/kept", None).await;
    assert_eq!(r.status, 200);
    // Nothing is connected to a freshly started hub.
    assert_eq!(r.body["connectionState"], "Disconnected");
}
