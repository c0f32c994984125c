//! Reads are bounded in time and size: a raw TCP server that sends a body that never ends, a
//! `Content-Length` of 5 GB, or an error body that trickles forever.

use std::time::Duration;

use iothub_registry::{
    DEFAULT_MAX_ERROR_BODY, DEFAULT_MAX_RESPONSE_BODY, Error, IfMatch, NoRetry, RegistryManager,
};
use iothub_test_support::credentials::{SERVICE_KEY as KEY, credential};
use iothub_test_support::wire::registry_builder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the raw server sends after the head.
#[derive(Clone, Copy)]
enum Body {
    /// Nothing more; the connection stays open.
    Stall,
    /// One byte per chunk, every 20 ms, forever.
    Trickle,
    /// 64 KiB chunks as fast as they go, until `limit` bytes, then nothing.
    Flood { limit: usize },
}

/// A server answering every request with `head` (status line and headers, without the blank
/// line) and then `body`. Returns its address.
async fn raw_server(head: &'static str, body: Body) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut request = vec![0u8; 64 * 1024];
                if socket.read(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                if socket
                    .write_all(format!("{head}\r\n\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
                match body {
                    Body::Stall => {}
                    Body::Trickle => loop {
                        if socket.write_all(b"1\r\nx\r\n").await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    },
                    Body::Flood { limit } => {
                        let chunk = [b'x'; 64 * 1024];
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        let mut sent = 0;
                        while sent < limit {
                            if socket.write_all(&framed).await.is_err() {
                                return;
                            }
                            sent += chunk.len();
                        }
                    }
                }
                // Keep the connection open until the client goes away.
                let _ = socket.read(&mut request).await;
                std::future::pending::<()>().await;
            });
        }
    });
    address
}

fn manager(address: &str, timeout: Duration) -> RegistryManager {
    registry_builder(address, credential(address, "iothubowner", KEY))
        .retry_policy(NoRetry)
        .timeout(timeout)
        .build()
        .unwrap()
}

/// Runs `get_device`, failing the test if it is still pending after 8 s.
async fn get_device(registry: &RegistryManager) -> Error {
    tokio::time::timeout(Duration::from_secs(8), registry.get_device("d1"))
        .await
        .expect("get_device still pending after 8 s")
        .expect_err("no device can come out of this server")
}

#[tokio::test]
async fn an_error_body_that_never_ends_is_cut_by_the_attempts_deadline() {
    let address = raw_server(
        "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ntransfer-encoding: chunked",
        Body::Trickle,
    )
    .await;
    let err = get_device(&manager(&address, Duration::from_millis(500))).await;
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_content_length_beyond_the_cap_is_refused_without_reading_the_body() {
    for (head, status, limit) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5000000000",
            200,
            DEFAULT_MAX_RESPONSE_BODY,
        ),
        (
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 5000000000",
            404,
            DEFAULT_MAX_ERROR_BODY,
        ),
    ] {
        let address = raw_server(head, Body::Stall).await;
        let err = get_device(&manager(&address, Duration::from_secs(30))).await;
        assert!(
            matches!(err, Error::ResponseTooLarge { status: s, limit: l } if s == status && l == limit),
            "{err:?}"
        );
        assert!(err.to_string().contains("larger than"), "{err}");
        // A success the SDK could not read was carried out all the same.
        assert_eq!(err.may_have_been_applied(), status == 200);
    }
}

#[tokio::test]
async fn an_endless_success_body_is_cut_at_the_default_cap() {
    let address = raw_server(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked",
        Body::Flood {
            limit: 160 * 1024 * 1024,
        },
    )
    .await;
    let err = get_device(&manager(&address, Duration::from_secs(30))).await;
    assert!(
        matches!(
            err,
            Error::ResponseTooLarge {
                status: 200,
                limit: DEFAULT_MAX_RESPONSE_BODY
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn an_endless_error_body_is_cut_at_the_error_cap() {
    let address = raw_server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ntransfer-encoding: chunked",
        Body::Flood {
            limit: 8 * 1024 * 1024,
        },
    )
    .await;
    let err = get_device(&manager(&address, Duration::from_secs(30))).await;
    assert!(
        matches!(
            err,
            Error::ResponseTooLarge {
                status: 503,
                limit: DEFAULT_MAX_ERROR_BODY
            }
        ),
        "{err:?}"
    );
    // Classed by its status: a 503 was not processed.
    assert!(
        err.is_transient() && !err.may_have_been_applied(),
        "{err:?}"
    );
}

#[tokio::test]
async fn the_caps_are_set_on_the_builder() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(serde_json::json!({ "connectedDeviceCount": 1 })),
        )
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_string("{\"Message\":\"ErrorCode:DeviceNotFound;d1\"}"),
        )
        .mount(&server)
        .await;
    let address = server.address().to_string();
    let capped = |success: u64, error: u64| {
        registry_builder(&address, credential(&address, "iothubowner", KEY))
            .retry_policy(NoRetry)
            .max_response_body(success)
            .max_error_body(error)
            .build()
            .unwrap()
    };
    let tight = capped(8, 8);
    let err = tight.get_service_statistics().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ResponseTooLarge {
                status: 200,
                limit: 8
            }
        ),
        "{err:?}"
    );
    let err = tight.delete_device("d1", IfMatch::Any).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ResponseTooLarge {
                status: 404,
                limit: 8
            }
        ),
        "{err:?}"
    );
    // Bodies of the cap's size pass.
    let roomy = capped(1024, 1024);
    roomy.get_service_statistics().await.unwrap();
    assert!(
        roomy
            .delete_device("d1", IfMatch::Any)
            .await
            .unwrap_err()
            .is_not_found()
    );
}
