//! End to end against the emulator's AMQP endpoint: sends and every refusal, concurrency,
//! token renewal, keep-alive, reconnection, feedback for each acknowledgement mode, file
//! notifications, WebSockets with and without a proxy, close and drop.
//!
//! Connections are counted by a small TCP relay between the client and the emulator, so a
//! test can tell a kept connection from one silently replaced.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use iothub_amqp::{
    Ack, Error, FeedbackStatus, Message, ServiceClient, ServiceClientBuilder, Transport,
};
use iothub_auth::{ConnectionString, Credential};
use iothub_emulator::{Emulator, EmulatorBuilder};
use iothub_test_support::emulator::https_client;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const API: &str = "api-version=2021-04-12";

// ---------------------------------------------------------------------------------------
// Fixtures

struct Hub {
    emu: Emulator,
    http: reqwest::Client,
    credential: Credential,
}

impl Hub {
    async fn start() -> Self {
        Self::with(Emulator::builder()).await
    }

    async fn with(builder: EmulatorBuilder) -> Self {
        let emu = builder.start().await.unwrap();
        let http = https_client(&emu);
        let cs: ConnectionString = emu.connection_string().parse().unwrap();
        let credential = Credential::from_connection_string(&cs);
        Self {
            emu,
            http,
            credential,
        }
    }

    async fn put(&self, path: &str, body: serde_json::Value) {
        let auth = self.credential.http_authorization().await.unwrap();
        let response = self
            .http
            .put(format!("{}{path}?{API}", self.emu.base_url()))
            .header("Authorization", auth.expose_secret())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{}",
            response.text().await.unwrap()
        );
    }

    async fn device(&self, id: &str) {
        self.put(&format!("/devices/{id}"), json!({ "deviceId": id }))
            .await;
    }

    async fn module(&self, device: &str, module: &str) {
        self.put(
            &format!("/devices/{device}/modules/{module}"),
            json!({ "deviceId": device, "moduleId": module }),
        )
        .await;
    }

    fn amqp_port(&self) -> u16 {
        self.emu.amqp_addr().unwrap().port()
    }

    /// A client for this hub, trusting its CA, dialling `port`.
    fn client_on(&self, credential: Credential, port: u16) -> ServiceClientBuilder {
        ServiceClient::builder(credential)
            .port(port)
            .add_root_certificate_pem(self.emu.ca_certificate_pem().unwrap())
            .send_timeout(Duration::from_secs(10))
    }

    fn client(&self) -> ServiceClient {
        self.client_on(self.credential.clone(), self.amqp_port())
            .build()
            .unwrap()
    }
}

/// A TCP relay that counts connections, can delay what the server sends, and can cut every
/// connection at once.
struct Relay {
    port: u16,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    // Reads from clients: one per TLS record written, when writes are spaced out.
    upstream_reads: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
}

impl Relay {
    async fn start(target: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let upstream_reads = Arc::new(AtomicUsize::new(0));
        let (cut, cuts) = watch::channel(0u64);
        let (counter, gauge) = (accepted.clone(), open.clone());
        let reads = upstream_reads.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let gauge = gauge.clone();
                let reads = reads.clone();
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    gauge.fetch_add(1, Ordering::SeqCst);
                    if let Ok(server) = TcpStream::connect(target).await {
                        tokio::select! {
                            () = pipe(client, server, delay, reads) => {}
                            _ = cuts.changed() => {}
                        }
                    }
                    gauge.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            accepted,
            open,
            upstream_reads,
            cut,
        }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn upstream_reads(&self) -> usize {
        self.upstream_reads.load(Ordering::SeqCst)
    }

    fn cut_all(&self) {
        self.cut.send_modify(|generation| *generation += 1);
    }
}

/// Copies both ways until either side ends; server-to-client bytes are held for `delay`.
async fn pipe(client: TcpStream, server: TcpStream, delay: Duration, reads: Arc<AtomicUsize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    reads.fetch_add(1, Ordering::SeqCst);
                    if server_write.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let (queue, mut queued) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let downstream_read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if queue
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let downstream_write = async {
        while let Some((due, bytes)) = queued.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if client_write.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = async { tokio::join!(downstream_read, downstream_write); } => {}
    }
}

/// An HTTP CONNECT proxy that records the targets it was asked for.
async fn connect_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let targets = Arc::new(Mutex::new(Vec::new()));
    let seen = targets.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    match client.read_u8().await {
                        Ok(byte) => head.push(byte),
                        Err(_) => return,
                    }
                }
                let head = String::from_utf8(head).unwrap();
                let target = head
                    .strip_prefix("CONNECT ")
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap()
                    .to_owned();
                seen.lock().unwrap().push(target.clone());
                let port = target.rsplit(':').next().unwrap();
                let mut server = TcpStream::connect(format!("127.0.0.1:{port}"))
                    .await
                    .unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (format!("http://{address}"), targets)
}

fn message(device: &str) -> Message {
    Message::builder(device).body("hi").build().unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// Sending

#[tokio::test]
async fn a_message_arrives_with_every_property() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    hub.module("dev1", "mod1").await;
    let client = hub.client();

    let expiry = UNIX_EPOCH + Duration::from_millis(4_102_444_800_123);
    let sent = Message::builder("dev1")
        .body(vec![0u8, 1, 2, 255])
        .message_id("m-1")
        .correlation_id("c-1")
        .content_type("application/octet-stream")
        .content_encoding("binary")
        .expiry(expiry)
        .ack(Ack::Full)
        .property("color", "blue")
        .build()
        .unwrap();
    client.send(&sent).await.unwrap();
    let to_module = Message::builder("dev1")
        .module("mod1")
        .body("m")
        .build()
        .unwrap();
    client.send(&to_module).await.unwrap();

    let received = hub.emu.c2d_messages();
    assert_eq!(received.len(), 2);
    let first = &received[0];
    assert_eq!(first.device_id, "dev1");
    assert_eq!(first.module_id, None);
    assert_eq!(first.message_id.as_deref(), Some("m-1"));
    assert_eq!(first.correlation_id.as_deref(), Some("c-1"));
    assert_eq!(
        first.to.as_deref(),
        Some("/devices/dev1/messages/devicebound")
    );
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(first.content_encoding.as_deref(), Some("binary"));
    assert_eq!(first.absolute_expiry_time, Some(4_102_444_800_123));
    assert_eq!(
        first.application_properties,
        BTreeMap::from([
            ("color".to_owned(), json!("blue")),
            ("iothub-ack".to_owned(), json!("full")),
        ])
    );
    assert_eq!(first.body, [0u8, 1, 2, 255]);

    let second = &received[1];
    assert_eq!(second.module_id.as_deref(), Some("mod1"));
    assert_eq!(
        second.to.as_deref(),
        Some("/devices/dev1/modules/mod1/messages/devicebound")
    );
    assert_eq!(second.message_id.as_deref(), Some(to_module.message_id()));
    client.close().await;
}

#[tokio::test]
async fn the_reference_mapping_arrives_as_python_sends_it() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let client = hub.client();
    let properties = BTreeMap::from([
        ("messageId".to_owned(), "py-1".to_owned()),
        ("correlationId".to_owned(), "corr".to_owned()),
        ("contentType".to_owned(), "application/json".to_owned()),
        ("contentEncoding".to_owned(), "utf-8".to_owned()),
        ("expiryTimeUtc".to_owned(), "4102444800000".to_owned()),
        ("iothub-ack".to_owned(), "positive".to_owned()),
        ("custom".to_owned(), "x".to_owned()),
    ]);
    let message = Message::from_reference_properties("dev1", "{}", &properties).unwrap();
    client.send(&message).await.unwrap();
    let received = &hub.emu.c2d_messages()[0];
    assert_eq!(received.message_id.as_deref(), Some("py-1"));
    assert_eq!(received.correlation_id.as_deref(), Some("corr"));
    assert_eq!(received.content_type.as_deref(), Some("application/json"));
    assert_eq!(received.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(received.absolute_expiry_time, Some(4_102_444_800_000));
    assert_eq!(
        received.application_properties,
        BTreeMap::from([
            ("custom".to_owned(), json!("x")),
            ("iothub-ack".to_owned(), json!("positive")),
        ])
    );
    assert_eq!(received.body, b"{}");
}

#[tokio::test]
async fn each_refusal_has_its_error() {
    let hub = Hub::start().await;
    hub.device("full").await;
    let client = hub.client();

    let error = client.send(&message("nosuch")).await.unwrap_err();
    assert!(
        matches!(&error, Error::DeviceNotFound(r) if r.condition() == "amqp:not-found"),
        "{error:?}"
    );
    assert!(!error.is_ambiguous());

    // The queue holds 50; the 51st is refused. Sent concurrently on one link.
    let sends: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            async move {
                let message = Message::builder("full")
                    .message_id(format!("q{i}"))
                    .build()
                    .unwrap();
                client.send(&message).await
            }
        })
        .collect();
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    let error = client.send(&message("full")).await.unwrap_err();
    assert!(
        matches!(&error, Error::QueueFull(r) if r.condition() == "amqp:resource-limit-exceeded"),
        "{error:?}"
    );
    assert!(error.is_transient() && !error.is_ambiguous());
    assert_eq!(hub.emu.c2d_pending("full", None), 50);

    // Too large never reaches the hub.
    let before = hub.emu.c2d_messages().len();
    let too_large = Message::builder("full")
        .body(vec![b'x'; 64 * 1024 + 1])
        .build();
    assert!(matches!(
        too_large,
        Err(Error::BodyTooLarge { size: 65_537, .. })
    ));
    assert_eq!(hub.emu.c2d_messages().len(), before);
    client.close().await;
}

#[tokio::test]
async fn a_wrong_key_is_unauthorized() {
    let hub = Hub::start().await;
    let cs: ConnectionString = format!(
        "HostName={};SharedAccessKeyName=iothubowner;SharedAccessKey=AAECAwQFBgcICQoLDA0ODw==",
        hub.emu.host()
    )
    .parse()
    .unwrap();
    let client = hub
        .client_on(Credential::from_connection_string(&cs), hub.amqp_port())
        .build()
        .unwrap();
    let error = client.send(&message("dev1")).await.unwrap_err();
    assert!(matches!(&error, Error::Unauthorized { .. }), "{error:?}");
    assert!(!error.is_ambiguous());
    assert!(hub.emu.c2d_messages().is_empty());
}

#[tokio::test]
async fn concurrent_sends_overlap_on_one_connection() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    // Every answer from the hub takes 100 ms: a send costs at least one such delay.
    let delay = Duration::from_millis(100);
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), delay).await;
    let client = hub
        .client_on(hub.credential.clone(), relay.port)
        .build()
        .unwrap();
    client.send(&message("dev1")).await.unwrap();

    let serial = Instant::now();
    for _ in 0..4 {
        client.send(&message("dev1")).await.unwrap();
    }
    let serial = serial.elapsed();
    assert!(serial >= delay * 4, "the relay does not delay: {serial:?}");

    let concurrent = Instant::now();
    let sends = (0..20).map(|_| {
        let client = client.clone();
        async move { client.send(&message("dev1")).await }
    });
    for result in futures::future::join_all(sends).await {
        result.unwrap();
    }
    let concurrent = concurrent.elapsed();
    // One after the other, 20 sends would take at least 2 s.
    assert!(
        concurrent < delay * 8,
        "20 concurrent sends took {concurrent:?}"
    );
    assert_eq!(hub.emu.c2d_messages().len(), 25);
    assert_eq!(relay.connections(), 1);
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// A long-lived connection

#[tokio::test]
async fn the_token_is_renewed_on_the_open_connection() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), Duration::ZERO).await;
    // The emulator closes a connection whose token expires (10 s: the shortest lifetime for
    // which the credential renews before expiry, a tenth of it ahead).
    let credential = hub
        .credential
        .clone()
        .with_sas_ttl(Duration::from_secs(10))
        .unwrap();
    let client = hub.client_on(credential, relay.port).build().unwrap();
    client.send(&message("dev1")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(11_500)).await;
    client.send(&message("dev1")).await.unwrap();
    assert_eq!(relay.connections(), 1, "the connection was replaced");
    assert_eq!(relay.open_connections(), 1);
    client.close().await;
}

#[tokio::test]
async fn an_idle_connection_is_kept_open() {
    let hub = Hub::with(Emulator::builder().amqp_idle_timeout(Duration::from_secs(1))).await;
    hub.device("dev1").await;
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), Duration::ZERO).await;
    let client = hub
        .client_on(hub.credential.clone(), relay.port)
        .keep_alive(Duration::from_millis(100))
        .build()
        .unwrap();
    client.send(&message("dev1")).await.unwrap();
    let before = relay.upstream_reads();
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    // The emulator advertises half its limit, so fe2o3 sends its own empty frame every
    // 500 ms; ours, every 100 ms, are what make this many.
    let idle_writes = relay.upstream_reads() - before;
    assert!(idle_writes >= 12, "only {idle_writes} writes while idle");
    client.send(&message("dev1")).await.unwrap();
    assert_eq!(relay.connections(), 1, "the idle connection was closed");
    client.close().await;
}

#[tokio::test]
async fn a_cut_connection_is_replaced_by_the_next_send() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), Duration::ZERO).await;
    let client = hub
        .client_on(hub.credential.clone(), relay.port)
        .build()
        .unwrap();
    client.send(&message("dev1")).await.unwrap();
    relay.cut_all();
    eventually("the cut", || relay.open_connections() == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.send(&message("dev1")).await.unwrap();
    assert_eq!(relay.connections(), 2);
    assert_eq!(hub.emu.c2d_messages().len(), 2);
}

#[tokio::test]
async fn sends_work_again_once_a_restarted_hub_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let first = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    first.device("dev1").await;
    let (addr, amqp_addr) = (first.emu.local_addr(), first.emu.amqp_addr().unwrap());
    let client = first.client();
    client.send(&message("dev1")).await.unwrap();

    let Hub { emu, .. } = first;
    emu.shutdown().await;
    let error = client.send(&message("dev1")).await.unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    assert!(!error.is_ambiguous());

    let second = Hub::with(
        Emulator::builder()
            .data_dir(dir.path())
            .bind(addr)
            .amqp_bind(amqp_addr),
    )
    .await;
    client.send(&message("dev1")).await.unwrap();
    assert_eq!(second.emu.c2d_messages().len(), 1);
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// Feedback and file notifications

#[tokio::test]
async fn feedback_follows_each_acknowledgement_mode() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let client = hub.client();
    let mut feedback = client.feedback_receiver();

    for ack in [Ack::None, Ack::Positive, Ack::Negative, Ack::Full] {
        for fate in ["complete", "reject"] {
            let message = Message::builder("dev1")
                .message_id(format!("{ack}-{fate}"))
                .ack(ack)
                .build()
                .unwrap();
            client.send(&message).await.unwrap();
        }
    }
    while let Some(received) = hub.emu.receive_c2d("dev1", None) {
        let id = received.message.message_id.unwrap();
        if id.ends_with("complete") {
            assert!(hub.emu.complete_c2d(&received.lock_token));
        } else {
            assert!(hub.emu.reject_c2d(&received.lock_token));
        }
    }

    let mut records = Vec::new();
    while records.len() < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(5), feedback.next())
            .await
            .expect("feedback arrives")
            .unwrap()
            .unwrap();
        records.extend(batch.records().iter().cloned());
        batch.complete().await.unwrap();
    }
    let mut got: Vec<_> = records
        .iter()
        .map(|r| (r.original_message_id.as_str(), r.status.clone()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(b.0));
    assert_eq!(
        got,
        [
            ("full-complete", FeedbackStatus::Success),
            ("full-reject", FeedbackStatus::Rejected),
            ("negative-reject", FeedbackStatus::Rejected),
            ("positive-complete", FeedbackStatus::Success),
        ]
    );
    for record in &records {
        assert_eq!(record.device_id, "dev1");
        assert!(!record.device_generation_id.is_empty());
        let enqueued = record.enqueued_time().expect("a parsable time");
        assert!(enqueued <= SystemTime::now() + Duration::from_secs(5));
    }
    // Nothing for `none`, nor a second copy of what was completed.
    let more = tokio::time::timeout(Duration::from_millis(500), feedback.next()).await;
    assert!(more.is_err(), "unexpected feedback: {more:?}");
    client.close().await;
}

#[tokio::test]
async fn file_notifications_come_back_until_completed() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let client = hub.client();
    let mut uploads = client.file_notification_receiver();
    hub.emu
        .notify_file_upload("dev1", "logs/a.txt", 1234)
        .unwrap();

    let first = next_upload(&mut uploads).await;
    let notification = first.notification().clone();
    assert_eq!(notification.device_id, "dev1");
    assert_eq!(notification.blob_name, "dev1/logs/a.txt");
    assert!(notification.blob_uri.ends_with("/dev1/logs/a.txt"));
    assert_eq!(notification.blob_size_in_bytes, 1234);
    assert!(notification.last_updated().is_some());
    assert!(notification.enqueued_time().is_some());

    // Abandoned, then dropped unsettled: delivered again each time.
    first.abandon().await.unwrap();
    let second = next_upload(&mut uploads).await;
    assert_eq!(second.notification(), &notification);
    drop(second);
    let third = next_upload(&mut uploads).await;
    assert_eq!(third.notification(), &notification);
    third.complete().await.unwrap();

    let more = tokio::time::timeout(Duration::from_millis(500), uploads.next()).await;
    assert!(more.is_err(), "a completed notification came back");
    client.close().await;
}

#[tokio::test]
async fn a_receiver_survives_a_lost_connection() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), Duration::ZERO).await;
    let client = hub
        .client_on(hub.credential.clone(), relay.port)
        .build()
        .unwrap();
    let mut uploads = client.file_notification_receiver();
    hub.emu.notify_file_upload("dev1", "one", 1).unwrap();
    let first = uploads.next().await.unwrap().unwrap();
    first.complete().await.unwrap();
    // `complete` returns once the disposition is queued on the connection: give it time to
    // reach the hub before cutting (otherwise the hub rightly delivers it again).
    tokio::time::sleep(Duration::from_millis(200)).await;

    relay.cut_all();
    let lost = tokio::time::timeout(Duration::from_secs(5), uploads.next())
        .await
        .unwrap();
    assert!(
        matches!(lost, Some(Err(Error::ConnectionLost { .. }))),
        "{lost:?}"
    );
    hub.emu.notify_file_upload("dev1", "two", 2).unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), uploads.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.notification().blob_name, "dev1/two");
    second.complete().await.unwrap();
    assert_eq!(relay.connections(), 2);
    client.close().await;
}

async fn next_upload(
    uploads: &mut iothub_amqp::FileNotificationReceiver,
) -> iothub_amqp::FileNotificationMessage {
    tokio::time::timeout(Duration::from_secs(5), uploads.next())
        .await
        .expect("a notification arrives")
        .unwrap()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// WebSockets

#[tokio::test]
async fn websockets_carry_sends_and_feedback() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    // No port given: the host name's (the emulator's HTTPS port).
    let client = ServiceClient::builder(hub.credential.clone())
        .transport(Transport::WebSocket)
        .add_root_certificate_pem(hub.emu.ca_certificate_pem().unwrap())
        .build()
        .unwrap();
    let sent = Message::builder("dev1").ack(Ack::Positive).build().unwrap();
    client.send(&sent).await.unwrap();
    let received = hub.emu.receive_c2d("dev1", None).unwrap();
    assert_eq!(
        received.message.message_id.as_deref(),
        Some(sent.message_id())
    );
    hub.emu.complete_c2d(&received.lock_token);
    let batch = tokio::time::timeout(Duration::from_secs(5), client.feedback_receiver().next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(batch.records()[0].original_message_id, sent.message_id());
    batch.complete().await.unwrap();
    client.close().await;
}

#[tokio::test]
async fn websockets_through_a_proxy() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let (proxy, targets) = connect_proxy().await;
    let client = ServiceClient::builder(hub.credential.clone())
        .transport(Transport::WebSocket)
        .proxy(proxy)
        .add_root_certificate_pem(hub.emu.ca_certificate_pem().unwrap())
        .build()
        .unwrap();
    client.send(&message("dev1")).await.unwrap();
    assert_eq!(*targets.lock().unwrap(), [hub.emu.host().to_owned()]);
    assert_eq!(hub.emu.c2d_messages().len(), 1);
    client.close().await;
}

/// What the child test below needs to reach the hub, passed through its environment.
const CHILD_HUB: &str = "IOTHUB_AMQP_CHILD_CONNECTION_STRING";
const CHILD_AMQP_PORT: &str = "IOTHUB_AMQP_CHILD_AMQP_PORT";

/// The client is given no root certificate and no proxy; the hub's CA is only in the
/// "operating system's" store (`SSL_CERT_FILE`) and the proxy only in `HTTPS_PROXY`, as on a
/// machine behind a TLS-inspecting proxy. The AMQP client must trust and route as the HTTPS
/// client does there. Environment variables cannot be set safely inside this process, so the
/// check runs in a child process of this test binary.
#[tokio::test]
async fn the_system_roots_and_https_proxy_apply_as_for_https() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let (proxy, targets) = connect_proxy().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, hub.emu.ca_certificate_pem().unwrap()).unwrap();
    let child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "e2e::system_roots_child",
            "--ignored",
            "--nocapture",
        ])
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .env("HTTPS_PROXY", &proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env(CHILD_HUB, hub.emu.connection_string())
        .env(CHILD_AMQP_PORT, hub.amqp_port().to_string())
        .output()
        .await
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(child.status.success(), "{output}");
    assert!(
        output.contains("1 passed"),
        "the child did not run: {output}"
    );
    // Only the WebSocket connection went through the proxy; AMQP on its port is not HTTPS.
    assert_eq!(*targets.lock().unwrap(), [hub.emu.host().to_owned()]);
    assert_eq!(hub.emu.c2d_messages().len(), 2);
}

/// Run by [`the_system_roots_and_https_proxy_apply_as_for_https`] in a child process.
#[tokio::test]
#[ignore = "run by the_system_roots_and_https_proxy_apply_as_for_https, with its environment"]
async fn system_roots_child() {
    let cs: ConnectionString = std::env::var(CHILD_HUB).unwrap().parse().unwrap();
    let credential = Credential::from_connection_string(&cs);
    let amqp_port: u16 = std::env::var(CHILD_AMQP_PORT).unwrap().parse().unwrap();
    for (transport, port) in [
        (Transport::Amqp, Some(amqp_port)),
        (Transport::WebSocket, None),
    ] {
        let mut builder = ServiceClient::builder(credential.clone()).transport(transport);
        if let Some(port) = port {
            builder = builder.port(port);
        }
        let client = builder.build().unwrap();
        client
            .send(&message("dev1"))
            .await
            .unwrap_or_else(|e| panic!("{transport:?}: {e}"));
        client.close().await;
    }
}

// ---------------------------------------------------------------------------------------
// Close and drop

#[tokio::test]
async fn close_waits_for_sends_in_flight() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), Duration::from_millis(200)).await;
    let client = hub
        .client_on(hub.credential.clone(), relay.port)
        .build()
        .unwrap();
    client.send(&message("dev1")).await.unwrap();

    let sends: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.send(&message("dev1")).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut feedback = client.feedback_receiver();
    client.close().await;
    for send in sends {
        send.await.unwrap().unwrap();
    }
    assert_eq!(hub.emu.c2d_messages().len(), 11);
    assert!(matches!(
        client.send(&message("dev1")).await,
        Err(Error::Closed)
    ));
    let ended = tokio::time::timeout(Duration::from_secs(2), feedback.next())
        .await
        .unwrap();
    assert!(ended.is_none(), "{ended:?}");
    eventually("the connection to close", || relay.open_connections() == 0).await;
}

#[tokio::test]
async fn dropping_the_client_closes_the_connection_without_blocking() {
    let hub = Hub::start().await;
    hub.device("dev1").await;
    hub.emu.notify_file_upload("dev1", "held", 1).unwrap();
    let relay = Relay::start(hub.emu.amqp_addr().unwrap(), Duration::ZERO).await;
    let client = hub
        .client_on(hub.credential.clone(), relay.port)
        .build()
        .unwrap();
    let mut uploads = client.file_notification_receiver();
    let held = uploads.next().await.unwrap().unwrap();
    client.send(&message("dev1")).await.unwrap();

    let started = Instant::now();
    drop(uploads);
    drop(client);
    assert!(started.elapsed() < Duration::from_millis(50));
    // The notification's settlement outlives the client: abandoning it still works or says
    // the client is gone, and never hangs.
    let settled = tokio::time::timeout(Duration::from_secs(2), held.abandon()).await;
    assert!(settled.is_ok(), "settling after drop hung");
    eventually("the connection to close", || relay.open_connections() == 0).await;
}
