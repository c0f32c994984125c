//! The soak: the emulator binary, at small configured limits, under mixed valid and hostile
//! traffic for a while (`IOTHUB_SOAK_SECS`, default 90, at most 120): slow clients (silent
//! connections, half-sent heads, bodies that never come), unauthenticated floods with large
//! bodies, oversized bodies, AMQP garbage and unauthenticated AMQP connections, beside valid
//! REST calls, request-log reads and cloud-to-device sends.
//!
//! It passes when the health check (a new connection each time, 5 s allowed) never fails nor
//! times out, and the emulator's resident memory never exceeds [`RSS_BOUND_MIB`] (the bound
//! the README documents for these settings). Latency percentiles are printed, not asserted.
//!
//! `.ci/run` runs it: `cargo test -p iothub-emulator --test it soak -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fe2o3_amqp::types::messaging::MessageId;
use fe2o3_amqp::types::primitives::SimpleValue;
use fe2o3_amqp::{Sender, Session};
use iothub_auth::{ConnectionString, Credential};
use reqwest::Method;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

use crate::amqp::{Cbs, DEVICEBOUND, SAS_TYPE, acked, client_tls_trusting, open_on, rejection};
use crate::binary::Binary;

/// The emulator's settings for the soak: every limit small, so that the hostile traffic
/// reaches each of them.
const CONFIG: &str = r#"
bind = "127.0.0.1:0"
amqp_bind = "127.0.0.1:0"
mqtt_bind = "127.0.0.1:0"
http_max_connections = 64
amqp_max_connections = 32
http_header_read_timeout_secs = 2
http_body_read_timeout_secs = 2
http_idle_timeout_secs = 5
request_log_capacity = 500
request_log_max_entry_bytes = 4096
request_log_max_bytes = 1048576
amqp_idle_timeout_secs = 10
amqp_auth_timeout_secs = 3
amqp_max_sessions_per_connection = 4
amqp_max_links_per_connection = 8
c2d_max_total_bytes = 1048576
c2d_max_pending_notifications = 1000
max_method_handlers = 100
max_method_handler_bytes = 1048576
"#;

/// The resident memory the emulator stays under with [`CONFIG`], in MiB (documented in the
/// README's "Limits and defaults").
const RSS_BOUND_MIB: u64 = 128;
/// How long a health check may take before it counts as failed.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// Devices the valid traffic uses.
const DEVICES: usize = 20;

/// Latencies of one kind of request, and its failures.
#[derive(Default)]
struct Record {
    latencies: Mutex<Vec<Duration>>,
    failures: AtomicU64,
    failure_sample: Mutex<Option<String>>,
}

impl Record {
    async fn ok(&self, took: Duration) {
        self.latencies.lock().await.push(took);
    }

    async fn failed(&self, why: String) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        self.failure_sample.lock().await.get_or_insert(why);
    }

    async fn report(&self, name: &str) -> (usize, u64) {
        let mut all = self.latencies.lock().await.clone();
        all.sort();
        let at = |p: f64| {
            all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let failures = self.failures.load(Ordering::SeqCst);
        println!(
            "soak: {name:<22} {:>6} ok {failures:>5} failed   p50 {:>7.1} ms   p90 {:>7.1} ms   \
             p99 {:>7.1} ms   max {:>7.1} ms",
            all.len(),
            at(0.50),
            at(0.90),
            at(0.99),
            all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        );
        if let Some(why) = self.failure_sample.lock().await.as_ref() {
            println!("soak: {name:<22} first failure: {why}");
        }
        (all.len(), failures)
    }
}

/// What every traffic task shares.
struct Soak {
    base_url: String,
    host: String,
    https: reqwest::Client,
    /// New connection per request (no pool).
    fresh: reqwest::Client,
    tls: TlsConnector,
    http_addr: std::net::SocketAddr,
    amqp_addr: std::net::SocketAddr,
    token: String,
    amqp_token: String,
    stop: AtomicBool,
    health: Record,
    rest: Record,
    c2d: Record,
    hostile: AtomicU64,
}

impl Soak {
    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}?api-version=2021-04-12", self.base_url)
    }

    async fn tls(
        &self,
        addr: std::net::SocketAddr,
    ) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await.ok()?;
        tokio::time::timeout(
            Duration::from_secs(10),
            self.tls
                .connect(ServerName::try_from("localhost").unwrap(), tcp),
        )
        .await
        .ok()?
        .ok()
    }
}

/// Holds a connection until the server closes it (or a while passes).
async fn hold<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await;
}

async fn health(soak: Arc<Soak>) {
    while soak.running() {
        let started = Instant::now();
        let result = soak
            .fresh
            .get(format!("{}/_emulator/health", soak.base_url))
            .timeout(HEALTH_TIMEOUT)
            .send()
            .await;
        match result {
            Ok(r) if r.status() == 200 => soak.health.ok(started.elapsed()).await,
            Ok(r) => soak.health.failed(format!("status {}", r.status())).await,
            Err(e) => soak.health.failed(format!("{e:?}")).await,
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Valid registry traffic: create, read, update twins, query, purge, delete, read the log.
async fn rest(soak: Arc<Soak>, worker: usize) {
    let mut round = 0usize;
    while soak.running() {
        round += 1;
        let id = format!("soak{}", (worker * 7 + round) % DEVICES);
        let (method, path, body) = match round % 6 {
            0 => (Method::GET, format!("/devices/{id}"), None),
            1 => (
                Method::PATCH,
                format!("/twins/{id}"),
                Some(json!({"tags": {"round": round}})),
            ),
            2 => (
                Method::POST,
                "/devices/query".to_owned(),
                Some(json!({"query": "SELECT * FROM devices WHERE tags.round > 3"})),
            ),
            3 => (Method::DELETE, format!("/devices/{id}/commands"), None),
            4 => (Method::GET, "/statistics/devices".to_owned(), None),
            _ => (Method::GET, "/devices".to_owned(), None),
        };
        // A connection of its own, as a client that meets a crowd at the cap would open.
        let mut request = soak
            .fresh
            .request(method.clone(), soak.url(&path))
            .header("authorization", &soak.token)
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                soak.rest.ok(started.elapsed()).await;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                soak.rest
                    .failed(format!("{method} {path}: {status} {text}"))
                    .await;
            }
            Err(e) => soak.rest.failed(format!("{method} {path}: {e:?}")).await,
        }
        if round.is_multiple_of(50) {
            // The request log, streamed, now and then.
            if let Ok(r) = soak
                .https
                .get(format!("{}/_emulator/requests", soak.base_url))
                .send()
                .await
            {
                let _ = r.bytes().await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Cloud-to-device sends over one authenticated AMQP connection, reopened if it goes.
async fn c2d(soak: Arc<Soak>) {
    let mut n = 0usize;
    while soak.running() {
        let Some(stream) = soak.tls(soak.amqp_addr).await else {
            soak.c2d.failed("TLS to the AMQP port".into()).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let Ok(mut connection) = open_on(stream, None).await else {
            soak.c2d.failed("AMQP open".into()).await;
            continue;
        };
        let Ok(mut session) = Session::begin(&mut connection).await else {
            continue;
        };
        let mut cbs = Cbs::attach(&mut session).await;
        let reply = cbs
            .put_token(MessageId::String("soak".into()), SAS_TYPE, &soak.amqp_token)
            .await;
        if reply.status != Some(SimpleValue::Int(200)) {
            soak.c2d
                .failed(format!("put-token: {:?}", reply.status))
                .await;
            continue;
        }
        let Ok(mut sender) = Sender::attach(&mut session, "c2d", DEVICEBOUND).await else {
            continue;
        };
        while soak.running() {
            n += 1;
            let device = format!("soak{}", n % DEVICES);
            let message = acked(&device, &vec![b'x'; 1024], &format!("m{n}"), "full");
            let started = Instant::now();
            match sender.send(message).await {
                // Accepted, or refused for a full queue (the valid traffic purges them).
                Ok(outcome) => {
                    let refused = rejection(&outcome);
                    if refused
                        .as_ref()
                        .is_none_or(|c| format!("{c:?}").contains("ResourceLimit"))
                    {
                        soak.c2d.ok(started.elapsed()).await;
                    } else {
                        soak.c2d.failed(format!("{refused:?}")).await;
                    }
                }
                Err(e) => {
                    soak.c2d.failed(format!("send: {e:?}")).await;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(sender);
        drop(cbs);
        let _ = session.end().await;
        let _ = connection.close().await;
    }
}

/// Slow HTTP clients, of four kinds, over and over.
async fn slow(soak: Arc<Soak>, kind: usize) {
    while soak.running() {
        soak.hostile.fetch_add(1, Ordering::SeqCst);
        match kind % 4 {
            // Connects and says nothing (not even TLS).
            0 => {
                if let Ok(mut tcp) = TcpStream::connect(soak.http_addr).await {
                    hold(&mut tcp).await;
                }
            }
            // Half a request head.
            1 => {
                if let Some(mut tls) = soak.tls(soak.http_addr).await {
                    let _ = tls
                        .write_all(b"GET /devices HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
                        .await;
                    hold(&mut tls).await;
                }
            }
            // A valid head, and a body that never comes.
            2 => {
                if let Some(mut tls) = soak.tls(soak.http_addr).await {
                    let head = format!(
                        "PUT /devices/slow?api-version=2021-04-12 HTTP/1.1\r\nhost: {}\r\n\
                         authorization: {}\r\ncontent-type: application/json\r\n\
                         content-length: 1000\r\n\r\n{{",
                        soak.host, soak.token
                    );
                    let _ = tls.write_all(head.as_bytes()).await;
                    hold(&mut tls).await;
                }
            }
            // Idle after one request (keep-alive).
            _ => {
                if let Some(mut tls) = soak.tls(soak.http_addr).await {
                    let _ = tls
                        .write_all(b"GET /_emulator/health HTTP/1.1\r\nhost: localhost\r\n\r\n")
                        .await;
                    hold(&mut tls).await;
                }
            }
        }
    }
}

/// Unauthenticated PUTs with large bodies, and authenticated ones over the size limit.
async fn flood(soak: Arc<Soak>, worker: usize) {
    let big = vec![b'x'; 256 * 1024];
    let oversized = vec![b'x'; 600 * 1024];
    let mut n = 0usize;
    while soak.running() {
        n += 1;
        soak.hostile.fetch_add(1, Ordering::SeqCst);
        let client = if n.is_multiple_of(2) {
            &soak.https
        } else {
            &soak.fresh
        };
        let request = if worker == 0 && n.is_multiple_of(3) {
            client
                .put(soak.url("/devices/oversized"))
                .header("authorization", &soak.token)
                .body(oversized.clone())
        } else {
            client
                .put(soak.url(&format!("/devices/flood{n}")))
                .body(big.clone())
        };
        let _ = request
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(30))
            .send()
            .await;
    }
}

/// AMQP garbage and unauthenticated AMQP connections.
async fn amqp_garbage(soak: Arc<Soak>, kind: usize) {
    let mut n = 0u64;
    while soak.running() {
        n += 1;
        soak.hostile.fetch_add(1, Ordering::SeqCst);
        let Some(mut tls) = soak.tls(soak.amqp_addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        match kind % 3 {
            // Not AMQP at all.
            0 => {
                let noise: Vec<u8> = (0..2048u64)
                    .map(|i| (i.wrapping_mul(2654435761).wrapping_add(n) >> 7) as u8)
                    .collect();
                let _ = tls.write_all(&noise).await;
            }
            // The AMQP header, then frames that are not.
            1 => {
                let _ = tls.write_all(b"AMQP\x00\x01\x00\x00").await;
                let _ = tls
                    .write_all(&[0, 0, 0, 0x40, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff])
                    .await;
                let _ = tls.write_all(&[0xaa; 52]).await;
            }
            // SASL header, then silence: closed by the authentication deadline.
            _ => {
                let _ = tls.write_all(b"AMQP\x03\x01\x00\x00").await;
            }
        }
        hold(&mut tls).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the soak takes minutes: .ci/run runs it with --ignored"]
async fn soak_mixed_valid_and_hostile_traffic_at_small_limits() {
    let seconds: u64 = std::env::var("IOTHUB_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90)
        .clamp(5, 120);
    let dir = tempfile::tempdir().unwrap();
    let mut emulator = Binary::start(dir.path(), CONFIG, None);
    let ca = emulator.ca_pem.clone().expect("the soak runs over TLS");
    let certificate = reqwest::Certificate::from_pem(ca.as_bytes()).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([certificate.clone()])
        .build()
        .unwrap();
    let fresh = reqwest::Client::builder()
        .tls_certs_only([certificate])
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let cs: ConnectionString = emulator.connection_string.parse().unwrap();
    let credential = Credential::from_connection_string(&cs);
    let token = credential
        .http_authorization()
        .await
        .unwrap()
        .expose_secret()
        .to_owned();
    let amqp_token = credential
        .cbs_token()
        .await
        .unwrap()
        .token
        .expose_secret()
        .to_owned();
    let host = emulator.base_url.split("://").nth(1).unwrap().to_owned();
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let soak = Arc::new(Soak {
        base_url: emulator.base_url.clone(),
        host,
        https,
        fresh,
        tls: client_tls_trusting(&ca),
        http_addr: ([127, 0, 0, 1], port).into(),
        amqp_addr: emulator.amqp_addr,
        token,
        amqp_token,
        stop: AtomicBool::new(false),
        health: Record::default(),
        rest: Record::default(),
        c2d: Record::default(),
        hostile: AtomicU64::new(0),
    });
    for i in 0..DEVICES {
        let r = soak
            .https
            .put(soak.url(&format!("/devices/soak{i}")))
            .header("authorization", &soak.token)
            .json(&json!({"deviceId": format!("soak{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let idle_rss = emulator.status_kib("VmRSS");

    let mut traffic = JoinSet::new();
    traffic.spawn(health(soak.clone()));
    for worker in 0..4 {
        traffic.spawn(rest(soak.clone(), worker));
    }
    traffic.spawn(c2d(soak.clone()));
    for kind in 0..96 {
        traffic.spawn(slow(soak.clone(), kind));
    }
    for worker in 0..6 {
        traffic.spawn(flood(soak.clone(), worker));
    }
    for kind in 0..40 {
        traffic.spawn(amqp_garbage(soak.clone(), kind));
    }

    let started = Instant::now();
    let mut peak_kib = 0;
    while started.elapsed() < Duration::from_secs(seconds) {
        assert!(emulator.running(), "the emulator exited during the soak");
        peak_kib = peak_kib.max(emulator.status_kib("VmRSS"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    soak.stop.store(true, Ordering::SeqCst);
    // Whatever still holds a connection a little after is cut.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while traffic.join_next().await.is_some() {}
    })
    .await;
    traffic.shutdown().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end_kib = emulator.status_kib("VmRSS");
    let hwm_kib = emulator.status_kib("VmHWM");
    assert!(emulator.running(), "the emulator exited during the soak");

    println!(
        "soak: {seconds} s at small limits; {} hostile connections or requests",
        soak.hostile.load(Ordering::SeqCst)
    );
    let (checks, health_failures) = soak.health.report("health check").await;
    let (rest_ok, rest_failed) = soak.rest.report("valid REST").await;
    let (sent, _) = soak.c2d.report("C2D sends").await;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "soak: emulator RSS {:.1} MiB idle, {:.1} MiB peak sampled, {:.1} MiB high-water, {:.1} \
         MiB after (bound {RSS_BOUND_MIB} MiB)",
        mib(idle_rss),
        mib(peak_kib),
        mib(hwm_kib),
        mib(end_kib)
    );
    assert_eq!(health_failures, 0, "the health check failed or timed out");
    // One every 250 ms plus its own time, which is at most 5 s.
    assert!(
        checks as u64 >= seconds / 6,
        "too few health checks ran: {checks}"
    );
    assert!(
        hwm_kib.max(peak_kib) <= RSS_BOUND_MIB * 1024,
        "the emulator's memory went over {RSS_BOUND_MIB} MiB"
    );
    assert!(rest_ok > 0 && sent > 0, "the valid traffic got nowhere");
    // Valid calls go through while all this goes on (a few may meet a connection closed to
    // make room at the cap).
    assert!(
        rest_failed * 20 <= rest_ok as u64,
        "{rest_failed} of {rest_ok} valid calls failed"
    );
}
