//! Azure AD end to end, without Azure: `azure_identity`'s `ClientSecretCredential` gets its
//! tokens from the emulator's Microsoft Entra ID look-alike (its authority host and a
//! transport that trusts the emulator's CA), and a `RegistryManager` built with that
//! credential creates a device, patches its twin and sends it a cloud-to-device message
//! (REST with `Authorization: Bearer`, AMQP with a CBS `bearer` token), while a principal
//! whose role lacks the write is refused with 401.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};
use azure_core::credentials::{Secret, TokenCredential};
use azure_core::http::{ClientOptions, Transport};
use azure_identity::{ClientSecretCredential, ClientSecretCredentialOptions};
use iothub_auth::{Credential, HostName};
use iothub_emulator::{Emulator, EntraClient, IotHubRole};
use iothub_registry::models::{DeviceStatus, Twin};
use iothub_registry::{DeviceOptions, Error, IfMatch, NoRetry, RegistryManager, SasKeys};
use iothub_test_support::emulator::{https_client, registry, registry_builder_with};
use serde_json::json;

const CONTRIBUTOR: (&str, &str) = ("3f1c0a52-contributor", "contributor-secret-1");
const READER: (&str, &str) = ("9b7e44d0-reader", "reader-secret-1");

async fn start() -> Emulator {
    Emulator::builder()
        .entra_client(EntraClient::new(
            CONTRIBUTOR.0,
            CONTRIBUTOR.1,
            [IotHubRole::DataContributor],
        ))
        .entra_client(EntraClient::new(
            READER.0,
            READER.1,
            [IotHubRole::DataReader],
        ))
        .start()
        .await
        .unwrap()
}

/// The credential as a user points it at the emulator: its authority host, and a transport
/// trusting its CA.
fn credential(emu: &Emulator, (client_id, secret): (&str, &str)) -> Arc<ClientSecretCredential> {
    let mut cloud = CustomConfiguration::default();
    cloud.authority_host = emu.entra_authority_host();
    let options = ClientSecretCredentialOptions {
        client_options: ClientOptions {
            cloud: Some(Arc::new(CloudConfiguration::Custom(cloud))),
            transport: Some(Transport::new(Arc::new(https_client(emu)))),
            ..Default::default()
        },
    };
    ClientSecretCredential::new(
        emu.entra_tenant_id(),
        client_id.to_owned(),
        Secret::new(secret.to_owned()),
        Some(options),
    )
    .unwrap()
}

/// A manager signing with `credential`, the emulator's CA and AMQP port configured.
fn manager(emu: &Emulator, credential: Arc<dyn TokenCredential>) -> RegistryManager {
    let host: HostName = emu.host().parse().unwrap();
    registry_builder_with(emu, Credential::from_token_credential(host, credential))
        .retry_policy(NoRetry)
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_client_secret_credential_creates_patches_twins_and_sends_c2d() {
    let emu = start().await;
    let rm = manager(&emu, credential(&emu, CONTRIBUTOR));

    let device = rm
        .create_device_with_sas(
            "aad-1",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(device.device_id.as_deref(), Some("aad-1"));
    let twin = rm.get_twin("aad-1").await.unwrap();
    let patch: Twin = serde_json::from_value(json!({
        "tags": { "owner": "azure-ad" },
        "properties": { "desired": { "interval": 30 } },
    }))
    .unwrap();
    let patched = rm
        .update_twin(
            "aad-1",
            patch,
            IfMatch::from_current(twin.etag.as_deref()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(patched.tags["owner"], "azure-ad");
    rm.send_c2d_message("aad-1", "hello over AMQP", [("iothub-ack", "full")])
        .await
        .unwrap();
    let sent = emu.c2d_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body, b"hello over AMQP");
    rm.close().await;

    // REST went with the bearer token; the token endpoint was asked with the secret, which
    // the log keeps redacted.
    let log = emu.request_log();
    let token_requests: Vec<_> = log
        .iter()
        .filter(|e| e.path.ends_with("/oauth2/v2.0/token"))
        .collect();
    assert!(!token_requests.is_empty());
    for request in &token_requests {
        assert_eq!(request.status, Some(200));
        assert!(
            request.body.contains("client_secret=REDACTED"),
            "{}",
            request.body
        );
        assert!(request.body.contains("grant_type=client_credentials"));
    }
    let rest: Vec<_> = log
        .iter()
        .filter(|e| e.path.starts_with("/twins"))
        .collect();
    assert!(
        rest.iter()
            .all(|e| e.header("authorization") == Some("Bearer REDACTED"))
    );
    assert!(!serde_json::to_string(&log).unwrap().contains(CONTRIBUTOR.1));
}

#[tokio::test]
async fn a_reader_is_refused_every_write_with_401() {
    let emu = start().await;
    registry(&emu)
        .create_device_with_sas(
            "existing",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap();
    let reader = manager(&emu, credential(&emu, READER));

    // Reads are what the role is for.
    assert_eq!(
        reader
            .get_device("existing")
            .await
            .unwrap()
            .device_id
            .as_deref(),
        Some("existing")
    );
    reader.get_twin("existing").await.unwrap();

    let err = reader
        .create_device_with_sas(
            "new",
            SasKeys::generated(),
            DeviceStatus::Enabled,
            DeviceOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    assert_eq!(
        err.code().map(|c| c.as_str()),
        Some("IotHubUnauthorizedAccess")
    );
    let patch: Twin = serde_json::from_value(json!({ "tags": { "x": 1 } })).unwrap();
    let err = reader
        .update_twin("existing", patch, IfMatch::Any)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    let err = reader
        .delete_device("existing", IfMatch::Any)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(401), "{err:?}");
    // Its token is taken on $cbs (the role may receive file notifications), but not for sends.
    let err = reader
        .send_c2d_message("existing", "x", [] as [(&str, &str); 0])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.c2d(),
            Some(iothub_registry::c2d::Error::Unauthorized { .. })
        ),
        "{err:?}"
    );
    reader.close().await;
    assert!(emu.c2d_messages().is_empty());
    assert!(registry(&emu).get_device("new").await.unwrap_err().status() == Some(404));
}

#[tokio::test]
async fn a_wrong_secret_is_an_auth_error_with_entras_reason_and_sends_nothing() {
    let emu = start().await;
    let rm = manager(&emu, credential(&emu, (CONTRIBUTOR.0, "not-the-secret")));
    let err = rm.get_device("anything").await.unwrap_err();
    assert!(matches!(err, Error::Auth(_)), "{err:?}");
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        chain.push_str(&format!("{e}\n"));
        source = e.source();
    }
    assert!(chain.contains("AADSTS7000215"), "{chain}");
    assert!(!chain.contains("not-the-secret"), "{chain}");
    // Only the token endpoint was asked (401 invalid_client); no service request was sent.
    let log = emu.request_log();
    assert!(!log.is_empty());
    assert!(
        log.iter()
            .all(|e| e.path.ends_with("/oauth2/v2.0/token") && e.status == Some(401))
    );
}
