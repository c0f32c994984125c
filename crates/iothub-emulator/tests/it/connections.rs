//! What a connection may hold, at small configured limits: slow and idle HTTP clients are cut
//! off, a slow body is answered 408, the connection caps of both listeners hold, and the health
//! check answers while the HTTP cap is reached.
//!
//! Every wait is bounded only to prove that nothing hangs; no duration is asserted.

use std::net::SocketAddr;
use std::time::Duration;

use iothub_emulator::{Emulator, EmulatorBuilder, FaultConfig};
use reqwest::Method;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::hub::Hub;

/// Far longer than any limit configured here: reaching it means the emulator did not act.
const PATIENCE: Duration = Duration::from_secs(20);

/// A plain-HTTP emulator with every HTTP limit long, for one test to shorten one of them.
fn plain() -> EmulatorBuilder {
    Emulator::builder()
        .plain_http()
        .http_header_read_timeout(Duration::from_secs(120))
        .http_body_read_timeout(Duration::from_secs(120))
        .http_idle_timeout(Duration::from_secs(120))
}

/// Reads until the server closes the connection; what it sent, or None when it is still
/// open after [`PATIENCE`].
async fn until_closed(stream: &mut TcpStream) -> Option<String> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(PATIENCE, read).await.ok()?;
    Some(String::from_utf8_lossy(&seen).into_owned())
}

/// Reads one whole answer (head and a `content-length` body) off a keep-alive connection.
async fn one_answer(stream: &mut TcpStream) -> String {
    let read = async {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            seen.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if seen.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("an answer")
}

fn health_request() -> &'static [u8] {
    b"GET /_emulator/health HTTP/1.1\r\nhost: localhost\r\n\r\n"
}

#[tokio::test]
async fn a_half_sent_request_head_is_cut_off() {
    let emu = plain()
        .http_header_read_timeout(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let mut slow = TcpStream::connect(emu.local_addr()).await.unwrap();
    slow.write_all(b"GET /_emulator/health HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let seen = until_closed(&mut slow)
        .await
        .expect("the emulator closes a connection whose request head never ends");
    assert!(!seen.contains("200"), "{seen}");
    // So is one that never starts its first request.
    let mut silent = TcpStream::connect(emu.local_addr()).await.unwrap();
    assert_eq!(until_closed(&mut silent).await.as_deref(), Some(""));
    // A connection that sends its requests in time is served as always.
    let mut fine = TcpStream::connect(emu.local_addr()).await.unwrap();
    fine.write_all(health_request()).await.unwrap();
    assert!(one_answer(&mut fine).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_but_a_slow_answer_is_not() {
    let hub = Hub {
        emu: plain()
            .http_idle_timeout(Duration::from_secs(1))
            .start()
            .await
            .unwrap(),
        http: reqwest::Client::new(),
    };
    hub.create("d").await;
    // A request in progress is not idleness: an answer slower than the idle limit arrives.
    hub.emu.set_faults(FaultConfig {
        latency_ms: 2_500,
        ..FaultConfig::default()
    });
    assert_eq!(hub.call(Method::GET, "/devices/d", None).await.status, 200);
    hub.emu.set_faults(FaultConfig::default());

    let mut idle = TcpStream::connect(hub.emu.local_addr()).await.unwrap();
    idle.write_all(health_request()).await.unwrap();
    assert!(one_answer(&mut idle).await.starts_with("HTTP/1.1 200"));
    assert_eq!(
        until_closed(&mut idle).await.as_deref(),
        Some(""),
        "an idle keep-alive connection is closed, with nothing more said"
    );
}

#[tokio::test]
async fn a_body_that_never_arrives_is_answered_408() {
    let hub = Hub {
        emu: plain()
            .http_body_read_timeout(Duration::from_secs(1))
            .start()
            .await
            .unwrap(),
        http: reqwest::Client::new(),
    };
    let token = hub.token("iothubowner").await;
    let mut slow = TcpStream::connect(hub.emu.local_addr()).await.unwrap();
    let head = format!(
        "PUT /devices/slow?api-version=2021-04-12 HTTP/1.1\r\nhost: {}\r\nauthorization: {token}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"deviceId\"",
        hub.emu.host()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let seen = until_closed(&mut slow)
        .await
        .expect("the emulator gives up on a body that does not come");
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen}");
    // Nothing was applied.
    assert_eq!(
        hub.call(Method::GET, "/devices/slow", None).await.status,
        404
    );
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room_and_health_answers() {
    let emu = plain().http_max_connections(3).start().await.unwrap();
    let mut idle = Vec::new();
    for _ in 0..6 {
        idle.push(TcpStream::connect(emu.local_addr()).await.unwrap());
        // Accepted one after another, so that "longest idle" is the order of connecting.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A new client is served while the cap is reached, every time.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    for _ in 0..5 {
        let health = client
            .get(format!("{}/_emulator/health", emu.base_url()))
            .send()
            .await
            .expect("the health check answers at the cap");
        assert_eq!(health.status(), 200);
    }
    // The oldest idle connections were closed to make room: at most 3 are open, so at least
    // the first 3 of the 6 went.
    for (i, stream) in idle.iter_mut().take(3).enumerate() {
        assert!(
            until_closed(stream).await.is_some(),
            "connection {i} is still open beyond the cap"
        );
    }
}

/// Sends the AMQP protocol header; true when the emulator answers with its own.
async fn amqp_header_answered(stream: &mut TcpStream, within: Duration) -> bool {
    stream.write_all(b"AMQP\x00\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    matches!(
        tokio::time::timeout(within, stream.read_exact(&mut header)).await,
        Ok(Ok(_))
    )
}

#[tokio::test]
async fn the_amqp_listener_serves_at_most_its_cap() {
    let emu = plain().amqp_max_connections(2).start().await.unwrap();
    let amqp: SocketAddr = emu.amqp_addr().unwrap();
    let mut first = TcpStream::connect(amqp).await.unwrap();
    assert!(amqp_header_answered(&mut first, PATIENCE).await);
    let mut second = TcpStream::connect(amqp).await.unwrap();
    assert!(amqp_header_answered(&mut second, PATIENCE).await);
    // A third waits to be accepted while two are open...
    let mut third = TcpStream::connect(amqp).await.unwrap();
    assert!(
        !amqp_header_answered(&mut third, Duration::from_secs(1)).await,
        "a third AMQP connection was served beyond the cap of 2"
    );
    // ...and is served once one of them goes.
    drop(first);
    let mut header = [0u8; 8];
    tokio::time::timeout(PATIENCE, third.read_exact(&mut header))
        .await
        .expect("served once there is room")
        .unwrap();
    assert_eq!(&header, b"AMQP\x00\x01\x00\x00");
}
