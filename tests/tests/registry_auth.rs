//! The RegistryManager's requests, retries included, carry tokens a hub would accept.

use std::sync::atomic::{AtomicUsize, Ordering};

use iothub_registry::{Credential, ExponentialRetry, RegistryManager};
use iothub_tests::SasVerifier;
use serde_json::json;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const KEY: &str = "c2VydmljZS1rZXktZm9yLXRlc3RzLTMyLWJ5dGVzISE=";

/// A hub that checks every signature and throttles the first two requests.
struct ThrottlingHub {
    verifier: SasVerifier,
    seen: AtomicUsize,
}

impl Respond for ThrottlingHub {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = request.headers["authorization"]
            .to_str()
            .unwrap_or_default();
        if self.verifier.verify(header).is_err() {
            return ResponseTemplate::new(401)
                .insert_header("iothub-errorcode", "IotHubUnauthorizedAccess");
        }
        if self.seen.fetch_add(1, Ordering::SeqCst) < 2 {
            return ResponseTemplate::new(429)
                .insert_header("iothub-errorcode", "ThrottlingException")
                .insert_header("Retry-After", "0");
        }
        ResponseTemplate::new(200).set_body_json(
            json!({ "totalDeviceCount": 5, "enabledDeviceCount": 5, "disabledDeviceCount": 0 }),
        )
    }
}

#[tokio::test]
async fn every_attempt_is_signed_with_a_token_the_hub_accepts() {
    let server = MockServer::start().await;
    let host = server.address().to_string();
    Mock::given(wiremock::matchers::any())
        .respond_with(ThrottlingHub {
            verifier: SasVerifier::new(&host, "registryRead", KEY),
            seen: AtomicUsize::new(0),
        })
        .mount(&server)
        .await;
    let cs = format!("HostName={host};SharedAccessKeyName=registryRead;SharedAccessKey={KEY}");
    let registry =
        RegistryManager::builder(Credential::from_connection_string(&cs.parse().unwrap()))
            .endpoint(server.uri())
            .allow_http_on_loopback(true)
            .retry_policy(
                ExponentialRetry::new().initial_delay(std::time::Duration::from_millis(1)),
            )
            .build()
            .unwrap();
    let stats = registry.get_device_registry_statistics().await.unwrap();
    assert_eq!(stats.total_device_count, Some(5));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    // The same hub refuses a manager holding another key: the check is real.
    let other = "b3RoZXIta2V5LWZvci10ZXN0cy0zMi1ieXRlcyEhISE=";
    let cs = format!("HostName={host};SharedAccessKeyName=registryRead;SharedAccessKey={other}");
    let err = RegistryManager::builder(Credential::from_connection_string(&cs.parse().unwrap()))
        .endpoint(server.uri())
        .allow_http_on_loopback(true)
        .build()
        .unwrap()
        .get_device_registry_statistics()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
}
