//! Every public type that holds a secret, formatted with `Debug` (and `Display` where it has
//! one): no key, signature, password or token may show.

use iothub_amqp::ServiceClient;
use iothub_auth::network::{NetworkOptions, ProxySetting};
use iothub_auth::{ConnectionString, Credential};
use iothub_registry::models::{
    AuthenticationMechanism, AuthenticationType, Device, ExportImportDevice, JobProperties, Module,
    SymmetricKey,
};
use iothub_registry::{RegistryManager, SasKeys};
use iothub_test_support::credentials::SERVICE_KEY;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const PRIMARY: &str = "cHJpbWFyeS1rZXktc2VjcmV0LTAxMjM0NTY3ODk=";
const SECONDARY: &str = "c2Vjb25kYXJ5LWtleS1zZWNyZXQtOTg3NjU0MzI=";
const SIGNATURE: &str = "c2lnbmF0dXJlLXNlY3JldA%3D%3D";
const PASSWORD: &str = "proxy-password-secret";

fn keys() -> AuthenticationMechanism {
    AuthenticationMechanism {
        type_: Some(AuthenticationType::Sas),
        symmetric_key: Some(SymmetricKey {
            primary_key: Some(PRIMARY.into()),
            secondary_key: Some(SECONDARY.into()),
        }),
        x509_thumbprint: None,
    }
}

fn assert_hidden(what: &str, text: &str) {
    for secret in [PRIMARY, SECONDARY, SIGNATURE, PASSWORD, SERVICE_KEY] {
        assert!(!text.contains(secret), "{what} shows a secret: {text}");
    }
}

#[tokio::test]
async fn no_public_type_prints_a_secret() {
    let sas_uri = format!("https://acct.blob.core.windows.net/c?sp=rwdl&sig={SIGNATURE}");
    let models: Vec<(&str, String)> = vec![
        ("SymmetricKey", format!("{:?}", keys().symmetric_key)),
        (
            "Device",
            format!(
                "{:?}",
                Device {
                    device_id: Some("d1".into()),
                    authentication: Some(keys()),
                    ..Default::default()
                }
            ),
        ),
        (
            "Module",
            format!(
                "{:?}",
                Module {
                    module_id: Some("m1".into()),
                    authentication: Some(keys()),
                    ..Default::default()
                }
            ),
        ),
        (
            "ExportImportDevice",
            format!(
                "{:?}",
                ExportImportDevice {
                    id: Some("d1".into()),
                    authentication: Some(keys()),
                    ..Default::default()
                }
            ),
        ),
        (
            "JobProperties",
            format!(
                "{:?}",
                JobProperties {
                    input_blob_container_uri: Some(sas_uri.as_str().into()),
                    output_blob_container_uri: Some(sas_uri.as_str().into()),
                    ..Default::default()
                }
            ),
        ),
        ("SasKeys", format!("{:?}", SasKeys::new(PRIMARY, SECONDARY))),
    ];
    for (what, text) in &models {
        assert_hidden(what, text);
    }
    // The redacted forms still say what they are.
    assert!(
        models[4]
            .1
            .contains("acct.blob.core.windows.net/c?sp=rwdl&sig=[REDACTED]")
    );

    let connection_string = format!(
        "HostName=hub.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey={SERVICE_KEY}"
    );
    let cs: ConnectionString = connection_string.parse().unwrap();
    assert_hidden("ConnectionString", &format!("{cs:?}"));
    let credential = Credential::from_connection_string(&cs);
    assert_hidden("Credential", &format!("{credential:?}"));
    let token = credential.http_authorization().await.unwrap();
    assert_hidden("the Authorization value", &format!("{token:?}"));

    let proxy = format!("http://user:{PASSWORD}@proxy.example:3128");
    let mut network = NetworkOptions::new();
    network.set_proxy(ProxySetting::url(&proxy).unwrap());
    assert_hidden("NetworkOptions", &format!("{network:?}"));
    let builder = RegistryManager::builder(credential.clone()).proxy(&proxy);
    assert_hidden("RegistryManagerBuilder", &format!("{builder:?}"));
    let registry = builder.build().unwrap();
    assert_hidden("RegistryManager", &format!("{registry:?}"));
    let amqp = ServiceClient::builder(credential.clone()).proxy(&proxy);
    assert_hidden("ServiceClientBuilder", &format!("{amqp:?}"));

    // An error holding a body: a device whose body does not decode (a status that is not a
    // string) but holds its keys.
    let server = MockServer::start().await;
    let body = json!({
        "deviceId": "d1",
        "status": 42,
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": PRIMARY, "secondaryKey": SECONDARY}},
    });
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_json(&body))
        .mount(&server)
        .await;
    let registry = iothub_test_support::wire::registry_builder(
        server.address(),
        iothub_test_support::credentials::credential(server.address(), "iothubowner", SERVICE_KEY),
    )
    .build()
    .unwrap();
    let error = registry.get_device("d1").await.unwrap_err();
    assert!(
        matches!(error, iothub_registry::Error::Decode { .. }),
        "{error:?}"
    );
    assert_hidden("Error::Decode", &format!("{error:?}"));
    assert_hidden("Error::Decode", &format!("{error}"));
    assert!(format!("{error:?}").contains("[REDACTED]"));
}
