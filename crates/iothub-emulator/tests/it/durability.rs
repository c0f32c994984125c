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
    amqp_addr: std::net::SocketAddr,
}

/// Starts the binary on a free port and reads what it prints.
fn start_binary(data_dir: &std::path::Path) -> Started {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iothub-emulator"))
        .args([
            "--bind",
            "127.0.0.1:0",
            "--amqp-bind",
            "127.0.0.1:0",
            "--mqtt-bind",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut base_url, mut cs, mut ca, mut amqp) = (None, None, None, None);
    while base_url.is_none() || cs.is_none() || ca.is_none() || amqp.is_none() {
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
        } else if let Some(v) = line.strip_prefix("AMQP endpoint: amqps://") {
            amqp = v.split_whitespace().next().and_then(|a| a.parse().ok());
        }
    }
    Started {
        child,
        base_url: base_url.unwrap(),
        connection_string: cs.unwrap(),
        ca_path: ca.unwrap(),
        amqp_addr: amqp.unwrap(),
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

/// An AMQP connection to a started binary, authorized with its connection string's policy.
async fn amqp_session(
    started: &Started,
) -> (
    fe2o3_amqp::connection::ConnectionHandle<()>,
    fe2o3_amqp::session::SessionHandle<()>,
    crate::amqp::Cbs,
) {
    use fe2o3_amqp::types::messaging::MessageId;
    use fe2o3_amqp::types::primitives::SimpleValue;
    let ca = std::fs::read_to_string(&started.ca_path).unwrap();
    let tcp = tokio::net::TcpStream::connect(started.amqp_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = crate::amqp::client_tls_trusting(&ca)
        .connect(name, tcp)
        .await
        .unwrap();
    let mut connection = crate::amqp::open_on(tls, None).await.unwrap();
    let mut session = fe2o3_amqp::Session::begin(&mut connection).await.unwrap();
    let field = |name: &str| {
        started
            .connection_string
            .split(';')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
            .to_owned()
    };
    let host: iothub_auth::HostName = field("HostName").parse().unwrap();
    let key = iothub_auth::SharedAccessKey::new(&field("SharedAccessKey")).unwrap();
    let token = iothub_auth::SasToken::for_amqp(
        &host,
        &field("SharedAccessKeyName"),
        &key,
        crate::hub::now() + 3600,
    )
    .as_secret()
    .expose_secret()
    .to_owned();
    let mut cbs = crate::amqp::Cbs::attach(&mut session).await;
    let reply = cbs
        .put_token(MessageId::Ulong(0), crate::amqp::SAS_TYPE, &token)
        .await;
    assert_eq!(reply.status, Some(SimpleValue::Int(200)));
    (connection, session, cbs)
}

#[tokio::test]
async fn queued_messages_and_pending_feedback_survive_kill_dash_nine() {
    use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_binary(dir.path());
    let http = client(&first.ca_path);
    let auth = token(&first.connection_string).await;
    let api = "api-version=2021-04-12";
    let r = http
        .put(format!("{}/devices/q?{api}", first.base_url))
        .header("authorization", &auth)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (connection, mut session, _cbs) = amqp_session(&first).await;
    let mut sender = fe2o3_amqp::Sender::attach(&mut session, "c2d", crate::amqp::DEVICEBOUND)
        .await
        .unwrap();
    for i in 0..50 {
        let message = crate::amqp::acked("q", b"kept", &format!("m{i}"), "full");
        let outcome = sender.send(message).await.unwrap();
        assert_eq!(crate::amqp::rejection(&outcome), None, "message {i}");
    }
    // The device takes one and completes it: a feedback record waits for the service.
    let r = http
        .post(format!(
            "{}/_emulator/devices/q/messages/receive",
            first.base_url
        ))
        .send()
        .await
        .unwrap();
    let received: serde_json::Value = r.json().await.unwrap();
    assert_eq!(received["message"]["messageId"], "m0");
    let lock = received["lockToken"].as_str().unwrap();
    let r = http
        .post(format!(
            "{}/_emulator/messages/{lock}/complete",
            first.base_url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    drop((sender, session));
    drop(connection);
    // SIGKILL: no chance to flush anything.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let mut second = start_binary(dir.path());
    let http = client(&second.ca_path);
    let auth = token(&second.connection_string).await;
    let r = http
        .get(format!("{}/devices/q?{api}", second.base_url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let device: serde_json::Value = r.json().await.unwrap();
    assert_eq!(device["cloudToDeviceMessageCount"], 49, "{device}");
    let (mut connection, mut session, _cbs) = amqp_session(&second).await;
    let mut sender = fe2o3_amqp::Sender::attach(&mut session, "c2d", crate::amqp::DEVICEBOUND)
        .await
        .unwrap();
    // The queue is as full as it was: one more fits, then it is full.
    let message = crate::amqp::acked("q", b"new", "m50", "none");
    assert_eq!(
        crate::amqp::rejection(&sender.send(message).await.unwrap()),
        None
    );
    let message = crate::amqp::acked("q", b"new", "m51", "none");
    assert_eq!(
        crate::amqp::rejection(&sender.send(message).await.unwrap()),
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
    );
    // The next message the device gets is the oldest left, and the feedback is there.
    let r = http
        .post(format!(
            "{}/_emulator/devices/q/messages/receive",
            second.base_url
        ))
        .send()
        .await
        .unwrap();
    let received: serde_json::Value = r.json().await.unwrap();
    assert_eq!(received["message"]["messageId"], "m1");
    let mut feedback =
        fe2o3_amqp::Receiver::attach(&mut session, "fb", "/messages/servicebound/feedback")
            .await
            .unwrap();
    let (delivery, batch) = crate::amqp::next_json(&mut feedback).await;
    assert_eq!(batch[0]["originalMessageId"], "m0");
    assert_eq!(batch[0]["statusCode"], "Success");
    feedback.accept(&delivery).await.unwrap();
    connection.close().await.unwrap();
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}

#[tokio::test]
async fn configurations_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start_binary(dir.path());
    let http = client(&first.ca_path);
    let auth = token(&first.connection_string).await;
    let api = "api-version=2021-04-12";
    let r = http
        .put(format!("{}/devices/d?{api}", first.base_url))
        .header("authorization", &auth)
        .body(r#"{"deviceId":"d"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let config = json!({
        "id": "adm",
        "content": {"deviceContent": {"properties.desired.fw": "2.0"}},
        "targetCondition": "deviceId = 'd'",
        "priority": 2,
    });
    let r = http
        .put(format!("{}/configurations/adm?{api}", first.base_url))
        .header("authorization", &auth)
        .body(config.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let created: serde_json::Value = r.json().await.unwrap();
    // SIGKILL right after the acknowledgement.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let mut second = start_binary(dir.path());
    let http = client(&second.ca_path);
    let auth = token(&second.connection_string).await;
    let r = http
        .get(format!("{}/configurations/adm?{api}", second.base_url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got: serde_json::Value = r.json().await.unwrap();
    for field in [
        "etag",
        "createdTimeUtc",
        "content",
        "targetCondition",
        "priority",
    ] {
        assert_eq!(got[field], created[field], "{field}");
    }
    assert_eq!(got["systemMetrics"]["results"]["appliedCount"], 1, "{got}");
    let r = http
        .get(format!("{}/twins/d?{api}", second.base_url))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    let twin: serde_json::Value = r.json().await.unwrap();
    assert_eq!(twin["properties"]["desired"]["fw"], "2.0", "{twin}");
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}
