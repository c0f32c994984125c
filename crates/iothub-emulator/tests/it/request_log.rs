//! The request log under abuse: a refused request is logged short and its body never read,
//! entries and the whole log are capped, the log is streamed out, and keys are redacted even
//! in a body that is not JSON.

use std::time::Duration;

use iothub_emulator::{Emulator, RequestLogEntry};
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::hub::Hub;

/// Bounds a wait only to prove that nothing hangs.
const PATIENCE: Duration = Duration::from_secs(20);

async fn plain_hub(builder: iothub_emulator::EmulatorBuilder) -> Hub {
    Hub {
        emu: builder.plain_http().start().await.unwrap(),
        http: reqwest::Client::new(),
    }
}

/// What the log keeps of an entry, in bytes of text.
fn kept(entry: &RequestLogEntry) -> usize {
    entry.method.len()
        + entry.path.len()
        + entry.query.len()
        + entry.body.len()
        + entry
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len())
            .sum::<usize>()
}

#[tokio::test]
async fn a_refused_request_is_logged_short_and_its_body_never_read() {
    let hub = Hub::start().await;
    let big = json!({"deviceId": "x", "padding": "p".repeat(300 * 1024)});
    let r = hub
        .raw(Method::PUT, &hub.url("/devices/x"), Some(big), &[])
        .await;
    assert_eq!(r.status, 401, "{}", r.raw);
    let log = hub.emu.request_log();
    let entry = log.last().expect("the refusal is logged");
    assert_eq!(entry.status, Some(401));
    assert_eq!(entry.path, "/devices/x");
    assert!(entry.body.is_empty(), "{} bytes kept", entry.body.len());
    assert!(kept(entry) < 4096, "{} bytes kept", kept(entry));

    // The refusal does not wait for a body that never comes (nor would it read one).
    let hub = plain_hub(Emulator::builder()).await;
    let mut client = TcpStream::connect(hub.emu.local_addr()).await.unwrap();
    client
        .write_all(
            b"PUT /devices/x?api-version=2021-04-12 HTTP/1.1\r\nhost: localhost\r\n\
              content-type: application/json\r\ncontent-length: 10000000\r\n\r\n",
        )
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut head))
        .await
        .expect("answered without the body")
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 401");
}

#[tokio::test]
async fn entries_and_the_whole_log_are_capped() {
    let hub = plain_hub(
        Emulator::builder()
            .request_log_max_entry_bytes(2048)
            .request_log_max_bytes(8192),
    )
    .await;
    hub.create("long").await;
    let long = json!({"tags": {"a": "r".repeat(3_000), "b": "r".repeat(3_000)}});
    let r = hub.call(Method::PATCH, "/twins/long", Some(long)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let log = hub.emu.request_log();
    let entry = log.last().unwrap();
    assert!(entry.truncated, "the entry says it was cut");
    assert!(kept(entry) <= 2048, "{} bytes kept", kept(entry));
    assert!(
        entry.body.starts_with(r#"{"tags":{"a":"rrr"#),
        "{}",
        entry.body
    );
    assert_eq!(entry.status, Some(200));

    for i in 0..20 {
        hub.create(&format!("d{i}")).await;
    }
    let log = hub.emu.request_log();
    let total: usize = log.iter().map(kept).sum();
    assert!(total <= 8192, "{total} bytes kept in {} entries", log.len());
    // The newest are kept, the oldest went.
    assert_eq!(log.last().unwrap().path, "/devices/d19");
    assert!(log.iter().all(|e| e.path != "/twins/long"));
    assert!(!log.last().unwrap().truncated);
}

#[tokio::test]
async fn the_log_is_streamed_out() {
    let hub = plain_hub(Emulator::builder()).await;
    for i in 0..30 {
        hub.create(&format!("d{i}")).await;
    }
    let r = hub
        .http
        .get(format!("{}/_emulator/requests", hub.emu.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("content-length").is_none(),
        "written as it is read, not built first: {:?}",
        r.headers()
    );
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/json; charset=utf-8"
    );
    let streamed: Vec<RequestLogEntry> = r.json().await.unwrap();
    assert_eq!(streamed, hub.emu.request_log());
    assert_eq!(streamed.len(), 30);

    hub.emu.clear_request_log();
    let empty: serde_json::Value = hub
        .http
        .get(format!("{}/_emulator/requests", hub.emu.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(empty, json!([]));
}

#[tokio::test]
async fn keys_in_a_body_that_is_not_json_are_redacted() {
    let hub = Hub::start().await;
    let token = hub.token("iothubowner").await;
    let r = hub
        .http
        .put(hub.url("/devices/d"))
        .header("authorization", token)
        .header("content-type", "application/json")
        .body(
            r#"{"deviceId":"d","authentication":{"symmetricKey":{"primaryKey":"c2VjcmV0LWtleQ==","secondaryKey" : "b3RoZXIta2V5"}}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let log = hub.emu.request_log();
    let body = &log.last().unwrap().body;
    assert!(!body.contains("c2VjcmV0LWtleQ"), "{body}");
    assert!(!body.contains("b3RoZXIta2V5"), "{body}");
    assert!(body.contains(r#""deviceId":"d""#), "{body}");
}
