//! Construction options that show on the wire: Azure AD tokens, the user agent and an explicit
//! proxy.

use std::sync::Arc;

use iothub_registry::{Credential, RegistryManager};
use iothub_test_support::credentials::{FixedToken, SERVICE_KEY as KEY};
use iothub_test_support::wire::{registry_builder, statistics_server};

#[tokio::test]
async fn token_credentials_send_a_bearer_token_for_the_configured_scope() {
    let server = statistics_server(1).await;
    let token = Arc::new(FixedToken::new("header.payload.signature"));
    let credential =
        Credential::from_token_credential("hub.azure-devices.us".parse().unwrap(), token.clone());
    let registry = registry_builder(server.address(), credential)
        .scope("https://iothubs.azure.us/.default")
        .build()
        .unwrap();
    registry.get_service_statistics().await.unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    assert_eq!(
        request.headers["authorization"],
        "Bearer header.payload.signature"
    );
    assert_eq!(token.scopes(), ["https://iothubs.azure.us/.default"]);
}

#[test]
fn from_token_credential_takes_a_bare_host_name() {
    let token = Arc::new(FixedToken::new("header.payload.signature"));
    assert!(RegistryManager::from_token_credential("hub.azure-devices.net", token.clone()).is_ok());
    let err =
        RegistryManager::from_token_credential("https://hub.azure-devices.net", token).unwrap_err();
    assert!(matches!(err, iothub_registry::Error::Auth(_)), "{err:?}");
}

fn credential(host: &str) -> Credential {
    iothub_test_support::credentials::credential(host, "service", KEY)
}

#[tokio::test]
async fn the_user_agent_names_the_sdk_and_the_suffix() {
    let server = statistics_server(1).await;
    let registry = registry_builder(server.address(), credential(&server.address().to_string()))
        .user_agent_suffix("fleet-tool/2.1")
        .build()
        .unwrap();
    registry.get_service_statistics().await.unwrap();
    let request = &server.received_requests().await.unwrap()[0];
    let agent = request.headers["user-agent"].to_str().unwrap();
    assert!(
        agent.starts_with("iothub-rs/") && agent.ends_with(" fleet-tool/2.1"),
        "{agent}"
    );
}

#[tokio::test]
async fn an_explicit_proxy_carries_every_request() {
    // The endpoint has no listener; only the proxy can answer.
    let proxy = statistics_server(1).await;
    let registry = registry_builder("127.0.0.1:9", credential("127.0.0.1:9"))
        .proxy(proxy.uri())
        .build()
        .unwrap();
    registry.get_service_statistics().await.unwrap();
    let requests = proxy.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.path(), "/statistics/service");
}

#[test]
fn plain_http_needs_consent_and_a_loopback_host() {
    let build = |endpoint: &str, allow: bool| {
        RegistryManager::builder(credential("hub.azure-devices.net"))
            .endpoint(endpoint)
            .allow_http_on_loopback(allow)
            .build()
    };
    assert!(build("http://127.0.0.1:8080", true).is_ok());
    assert!(build("http://127.0.0.1:8080", false).is_err());
    assert!(build("http://hub.azure-devices.net", true).is_err());
    assert!(build("https://hub.azure-devices.net", false).is_ok());
    let err = RegistryManager::builder(credential("hub.azure-devices.net"))
        .proxy("not a url")
        .build()
        .unwrap_err();
    assert!(
        matches!(err, iothub_registry::Error::Configuration { .. }),
        "{err:?}"
    );
}

#[test]
fn root_certificates_must_hold_a_certificate() {
    for pem in [
        "",
        "not a certificate",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let err = RegistryManager::builder(credential("hub.azure-devices.net"))
            .add_root_certificate_pem(pem)
            .build()
            .unwrap_err();
        assert!(
            matches!(err, iothub_registry::Error::Configuration { .. }),
            "{pem:?}: {err:?}"
        );
    }
}

#[test]
fn the_manager_and_its_amqp_client_never_print_the_key() {
    let registry = RegistryManager::builder(credential("hub.azure-devices.net"))
        .amqp_transport(iothub_registry::c2d::Transport::WebSocket)
        .proxy("http://proxy.example:8080")
        .build()
        .unwrap();
    let shown = format!("{registry:?} {:?}", registry.c2d_client());
    assert!(!shown.contains(KEY), "{shown}");
    assert!(shown.contains("hub.azure-devices.net"), "{shown}");
}
