//! A connection string, through `iothub-auth` and the generated client, produces requests a
//! hub would accept: checked by an independent verifier on a mock server.

use iothub_auth::{ConnectionString, Credential};
use iothub_rest_gen::Client;
use iothub_test_support::credentials::{OTHER_KEY, SERVICE_KEY as KEY, credential};
use iothub_test_support::sas::{Rejection, SasVerifier};
use iothub_test_support::wire::{rest_client_builder, statistics_server};
use wiremock::{MockServer, Request};

async fn hub() -> MockServer {
    statistics_server(7).await
}

fn client(server: &MockServer, key: &str) -> Client {
    let address = server.address();
    rest_client_builder(address, credential(address, "iothubowner", key))
        .build()
        .unwrap()
}

fn authorization(request: &Request) -> String {
    request.headers["authorization"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn tokens_from_a_connection_string_verify_like_the_service_checks_them() {
    let server = hub().await;
    let stats = client(&server, KEY)
        .statistics_get_service_statistics()
        .send()
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.connected_device_count, Some(7));

    let requests = server.received_requests().await.unwrap();
    let header = authorization(&requests[0]);
    let verifier = SasVerifier::new(&server.address().to_string(), "iothubowner", KEY);
    assert_eq!(verifier.verify(&header), Ok(()));
    // `sr` is the URL-encoded host, port included, exactly as the Python SDK (azure-iot-hub
    // 2.7.0) sends it.
    let sr = format!("sr={}&", server.address().to_string().replace(':', "%3A"));
    assert!(header.contains(&sr), "{header}");
}

#[tokio::test]
async fn the_verifier_rejects_a_token_signed_with_another_key() {
    let server = hub().await;
    client(&server, OTHER_KEY)
        .statistics_get_service_statistics()
        .send()
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    let verifier = SasVerifier::new(&server.address().to_string(), "iothubowner", KEY);
    assert_eq!(
        verifier.verify(&authorization(&requests[0])),
        Err(Rejection::BadSignature)
    );
    let elsewhere = SasVerifier::new("other.azure-devices.net", "iothubowner", OTHER_KEY);
    assert_eq!(
        elsewhere.verify(&authorization(&requests[0])),
        Err(Rejection::WrongResource)
    );
}

#[tokio::test]
async fn a_fixed_signature_from_the_connection_string_is_sent_as_is() {
    let server = hub().await;
    // A token minted elsewhere (here by a client on the same hub) and handed over in a
    // connection string is sent verbatim.
    client(&server, KEY)
        .statistics_get_service_statistics()
        .send()
        .await
        .unwrap();
    let minted = authorization(&server.received_requests().await.unwrap()[0]);

    let cs: ConnectionString = format!(
        "HostName={};SharedAccessSignature={minted}",
        server.address()
    )
    .parse()
    .unwrap();
    let fixed = rest_client_builder(server.address(), Credential::from_connection_string(&cs))
        .build()
        .unwrap();
    fixed
        .statistics_get_service_statistics()
        .send()
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(authorization(&requests[1]), minted);
}
