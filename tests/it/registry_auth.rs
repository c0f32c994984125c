//! The RegistryManager's requests, retries included, carry tokens a hub would accept.

use std::sync::atomic::{AtomicUsize, Ordering};

use iothub_registry::ExponentialRetry;
use iothub_test_support::credentials::{OTHER_KEY, SERVICE_KEY as KEY, credential};
use iothub_test_support::sas::SasVerifier;
use iothub_test_support::wire::registry_builder;
use serde_json::json;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

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
    let registry = registry_builder(&host, credential(&host, "registryRead", KEY))
        .retry_policy(ExponentialRetry::new().initial_delay(std::time::Duration::from_millis(1)))
        .build()
        .unwrap();
    let stats = registry.get_device_registry_statistics().await.unwrap();
    assert_eq!(stats.total_device_count, Some(5));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    // The same hub refuses a manager holding another key: the check is real.
    let err = registry_builder(&host, credential(&host, "registryRead", OTHER_KEY))
        .build()
        .unwrap()
        .get_device_registry_statistics()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401));
}
