//! Who may use the control API: requests naming a foreign host (DNS rebinding) or sent by a
//! foreign web page are refused, a configured token is required, and a bind other than
//! loopback requires one; the health check stays open.

use std::net::SocketAddr;

use iothub_emulator::Emulator;
use reqwest::StatusCode;

const TOKEN_HEADER: &str = "x-emulator-control-token";

/// A control request to the emulator at `addr`, with these headers (`host` among them
/// replaces the one reqwest would send).
async fn control(
    emu: &Emulator,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let client = reqwest::Client::new();
    let mut req = client
        .request(
            method,
            format!("http://{}/_emulator{path}", emu.local_addr()),
        )
        .body("{}");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn plain(builder: iothub_emulator::EmulatorBuilder) -> Emulator {
    builder.plain_http().start().await.unwrap()
}

#[tokio::test]
async fn a_foreign_host_or_origin_is_refused() {
    let emu = plain(Emulator::builder()).await;
    let port = emu.local_addr().port();
    let get = reqwest::Method::GET;
    let put = reqwest::Method::PUT;
    let own_hosts = [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        "localhost".to_owned(),
        format!("LOCALHOST:{port}"),
    ];
    for host in &own_hosts {
        let (status, body) = control(&emu, get.clone(), "/faults", &[("host", host)]).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // DNS rebinding: a name the attacker controls, resolved to loopback.
    for host in [
        "attacker.example",
        "attacker.example:80",
        "127.0.0.1.nip.io",
    ] {
        let (status, body) = control(&emu, get.clone(), "/requests", &[("host", host)]).await;
        assert_eq!(status, 403, "{host}: {body}");
        assert!(body.contains("GenericForbidden"), "{body}");
    }
    // A page elsewhere posting text/plain (no preflight): refused, and nothing changes.
    let before = control(&emu, get.clone(), "/faults", &[]).await.1;
    for origin in [
        "https://attacker.example",
        "null",
        "http://127.0.0.1.nip.io:8080",
    ] {
        let (status, body) = control(
            &emu,
            put.clone(),
            "/faults",
            &[("origin", origin), ("content-type", "text/plain")],
        )
        .await;
        assert_eq!(status, 403, "{origin}: {body}");
    }
    assert_eq!(control(&emu, get.clone(), "/faults", &[]).await.1, before);
    // The emulator's own pages (a dashboard on localhost) are not foreign.
    let own = format!("http://localhost:{port}");
    let (status, body) = control(&emu, put.clone(), "/faults", &[("origin", &own)]).await;
    assert_eq!(status, 200, "{body}");
    // The health check answers whoever asks.
    let (status, _) = control(&emu, get, "/health", &[("host", "attacker.example")]).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let emu = plain(Emulator::builder().control_token("s3cret")).await;
    assert_eq!(emu.control_token(), Some("s3cret"));
    let get = reqwest::Method::GET;
    let (status, body) = control(&emu, get.clone(), "/requests", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains("s3cret"));
    let (status, _) = control(&emu, get.clone(), "/requests", &[(TOKEN_HEADER, "wrong")]).await;
    assert_eq!(status, 401);
    let (status, _) = control(&emu, get.clone(), "/requests", &[(TOKEN_HEADER, "s3cret")]).await;
    assert_eq!(status, 200);
    let (status, _) = control(&emu, get, "/health", &[]).await;
    assert_eq!(status, 200);
    assert!(!format!("{:?}", Emulator::builder().control_token("s3cret")).contains("s3cret"));
}

#[tokio::test]
async fn a_bind_beyond_loopback_requires_a_token() {
    let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
    let emu = plain(Emulator::builder().bind(any)).await;
    let token = emu
        .control_token()
        .expect("a token is generated for a bind beyond loopback")
        .to_owned();
    assert!(token.len() >= 32, "a token nobody guesses");
    let get = reqwest::Method::GET;
    let (status, body) = control(&emu, get.clone(), "/faults", &[]).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = control(&emu, get.clone(), "/faults", &[(TOKEN_HEADER, &token)]).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = control(&emu, get, "/health", &[]).await;
    assert_eq!(status, 200);
    // On loopback none is needed, and none is made up.
    let local = plain(Emulator::builder()).await;
    assert_eq!(local.control_token(), None);
}
