//! Transport choices: plain HTTP, the user's own certificate, injected latency.

use std::time::{Duration, Instant};

use iothub_emulator::{Emulator, FaultConfig};
use reqwest::Method;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::amqp::client_tls_trusting;
use crate::hub::Hub;

/// How many certificates the emulator's HTTPS listener sends in its handshake.
async fn served_chain(emu: &Emulator, trusting: &str) -> usize {
    let tcp = TcpStream::connect(emu.local_addr()).await.unwrap();
    let tls = client_tls_trusting(trusting)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().map_or(0, <[_]>::len)
}

#[tokio::test]
async fn the_generated_certificate_is_served_alone_and_a_users_chain_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let generated = Emulator::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let ca = generated.ca_certificate_pem().unwrap().to_owned();
    assert_eq!(
        served_chain(&generated, &ca).await,
        1,
        "the leaf alone, as the service sends it"
    );
    generated.shutdown().await;
    // The same leaf and CA given as the user's own chain: served as given, both of them.
    let users = Emulator::builder()
        .tls_files(dir.path().join("server.pem"), dir.path().join("server.key"))
        .start()
        .await
        .unwrap();
    assert_eq!(served_chain(&users, &ca).await, 2);
}

#[tokio::test]
async fn plain_http_when_asked() {
    let emu = Emulator::builder().plain_http().start().await.unwrap();
    assert!(emu.base_url().starts_with("http://localhost:"));
    assert!(emu.ca_certificate_pem().is_none());
    let hub = Hub {
        http: reqwest::Client::new(),
        emu,
    };
    hub.create("plain").await;
}

#[tokio::test]
async fn serves_the_users_certificate() {
    // A first emulator writes a CA and a server certificate; a second serves those files.
    let dir = tempfile::tempdir().unwrap();
    let first = Emulator::builder()
        .data_dir(dir.path())
        .start()
        .await
        .unwrap();
    let ca = first.ca_certificate_pem().unwrap().to_owned();
    first.shutdown().await;
    let emu = Emulator::builder()
        .tls_files(dir.path().join("server.pem"), dir.path().join("server.key"))
        .start()
        .await
        .unwrap();
    assert_eq!(emu.ca_certificate_pem(), Some(ca.as_str()));
    let hub = Hub {
        http: iothub_test_support::emulator::https_client(&emu),
        emu,
    };
    hub.create("mine").await;
    let missing = Emulator::builder()
        .tls_files(dir.path().join("nope.pem"), dir.path().join("server.key"))
        .start()
        .await;
    assert!(missing.is_err());
}

#[tokio::test]
async fn injected_latency_delays_answers() {
    let hub = Hub::start().await;
    hub.emu.set_faults(FaultConfig {
        latency_ms: 300,
        ..Default::default()
    });
    let started = Instant::now();
    assert_eq!(hub.call(Method::GET, "/devices", None).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}
