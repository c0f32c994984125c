//! Shared access signatures as the service checks them.

use iothub_emulator::{Emulator, Permission, SharedAccessPolicy};
use reqwest::Method;

use crate::hub::{Hub, now};

async fn get_with(hub: &Hub, path: &str, token: Option<&str>) -> crate::hub::Reply {
    let headers: Vec<(&str, &str)> = token
        .map(|t| vec![("authorization", t)])
        .unwrap_or_default();
    hub.raw(Method::GET, &hub.url(path), None, &headers).await
}

#[tokio::test]
async fn forged_expired_and_missing_tokens_are_rejected() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let good = hub.token("iothubowner").await;
    assert_eq!(get_with(&hub, "/devices/d", Some(&good)).await.status, 200);

    let r = get_with(&hub, "/devices/d", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "IotHubUnauthorizedAccess")
    );
    // Another signature over the same fields.
    let forged: String = good
        .split('&')
        .map(|f| {
            if f.starts_with("sig=") {
                "sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D".to_owned()
            } else {
                f.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        get_with(&hub, "/devices/d", Some(&forged)).await.status,
        401
    );
    // A longer expiry than was signed.
    let stretched: String = good
        .split('&')
        .map(|f| {
            if f.starts_with("se=") {
                format!("se={}", now() + 99_999)
            } else {
                f.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        get_with(&hub, "/devices/d", Some(&stretched)).await.status,
        401
    );
    let expired = hub.token_expiring("iothubowner", now() - 10);
    let r = get_with(&hub, "/devices/d", Some(&expired)).await;
    assert_eq!(r.status, 401);
    assert!(
        !r.raw.contains("sig="),
        "the token is not echoed: {}",
        r.raw
    );
    let unknown_policy = good.replace("skn=iothubowner", "skn=nobody");
    assert_eq!(
        get_with(&hub, "/devices/d", Some(&unknown_policy))
            .await
            .status,
        401
    );
    assert_eq!(
        get_with(&hub, "/devices/d", Some("garbage")).await.status,
        401
    );
    assert_eq!(
        get_with(&hub, "/devices/d", Some("SharedAccessSignature "))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_token_for_another_hub_is_rejected() {
    let hub = Hub::start().await;
    let p = &hub.emu.policies()[0];
    let host: iothub_auth::HostName = "other.azure-devices.net".parse().unwrap();
    let key = iothub_auth::SharedAccessKey::new(&p.primary_key).unwrap();
    let token = iothub_auth::SasToken::for_http(&host, &p.name, &key, now() + 600);
    let r = get_with(&hub, "/devices", Some(token.as_secret().expose_secret())).await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn policies_grant_only_their_permissions() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let read = hub.token("registryRead").await;
    let rw = hub.token("registryReadWrite").await;
    let service = hub.token("service").await;
    let put = |token: String| {
        let hub = &hub;
        async move {
            hub.raw(
                Method::PUT,
                &hub.url("/devices/new"),
                Some(serde_json::json!({})),
                &[("authorization", token.as_str())],
            )
            .await
        }
    };
    let r = put(read.clone()).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "IotHubUnauthorizedAccess")
    );
    assert_eq!(put(service.clone()).await.status, 401);
    assert_eq!(put(rw).await.status, 200);
    assert_eq!(get_with(&hub, "/devices/d", Some(&read)).await.status, 200);
    // The service policy reaches twins and methods but not the identity registry.
    assert_eq!(
        get_with(&hub, "/devices/d", Some(&service)).await.status,
        401
    );
    assert_eq!(get_with(&hub, "/twins/d", Some(&service)).await.status, 200);
    assert_eq!(
        get_with(&hub, "/statistics/service", Some(&read))
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn secondary_keys_custom_policies_and_bearer_tokens() {
    let policy = SharedAccessPolicy::new("ops", vec![Permission::RegistryRead]);
    let secondary = policy.secondary_key.clone();
    let hub = Hub::with(Emulator::builder().policy(policy).bearer_token("let-me-in")).await;
    let host: iothub_auth::HostName = hub.emu.host().parse().unwrap();
    let key = iothub_auth::SharedAccessKey::new(&secondary).unwrap();
    let token = iothub_auth::SasToken::for_http(&host, "ops", &key, now() + 600);
    assert_eq!(
        get_with(&hub, "/devices", Some(token.as_secret().expose_secret()))
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&hub, "/devices", Some("Bearer let-me-in"))
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&hub, "/devices", Some("Bearer nope")).await.status,
        401
    );
    assert!(hub.emu.connection_string_for("iothubowner").is_none());
    assert!(
        hub.emu
            .connection_string()
            .contains("SharedAccessKeyName=ops")
    );
}

/// A SAS token of the `iothubowner` policy whose `sr` is `resource` (host and path), encoded
/// as the SDKs encode it for HTTP.
fn token_for_resource(hub: &Hub, resource: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let p = hub
        .emu
        .policies()
        .iter()
        .find(|p| p.name == "iothubowner")
        .unwrap();
    let sr: String =
        percent_encoding::utf8_percent_encode(resource, percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let se = now() + 600;
    let key = base64::engine::general_purpose::STANDARD
        .decode(&p.primary_key)
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{sr}\n{se}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String =
        percent_encoding::utf8_percent_encode(&sig, percent_encoding::NON_ALPHANUMERIC).to_string();
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={se}&skn=iothubowner")
}

#[tokio::test]
async fn a_token_is_accepted_only_for_resources_under_its_sr() {
    let hub = Hub::start().await;
    hub.create("x").await;
    hub.create("y").await;
    let host = hub.emu.host().to_owned();
    let for_x = token_for_resource(&hub, &format!("{host}/devices/x"));
    assert_eq!(get_with(&hub, "/devices/x", Some(&for_x)).await.status, 200);
    assert_eq!(
        get_with(&hub, "/devices/x/modules", Some(&for_x))
            .await
            .status,
        200
    );
    for elsewhere in [
        "/devices/y",
        "/devices/xy",
        "/devices",
        "/statistics/devices",
        "/twins/y",
    ] {
        let r = get_with(&hub, elsewhere, Some(&for_x)).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "IotHubUnauthorizedAccess"),
            "{elsewhere}"
        );
    }
    // A token for every device reaches each of them, and nothing else.
    let for_devices = token_for_resource(&hub, &format!("{host}/devices"));
    assert_eq!(
        get_with(&hub, "/devices/y", Some(&for_devices))
            .await
            .status,
        200
    );
    assert_eq!(
        get_with(&hub, "/devices", Some(&for_devices)).await.status,
        200
    );
    assert_eq!(
        get_with(&hub, "/statistics/devices", Some(&for_devices))
            .await
            .status,
        401
    );
    // The hub itself, with a scheme or a trailing slash: everywhere.
    for hub_level in [host.clone(), format!("https://{host}/"), format!("{host}/")] {
        let t = token_for_resource(&hub, &hub_level);
        for path in ["/devices/y", "/statistics/devices"] {
            assert_eq!(
                get_with(&hub, path, Some(&t)).await.status,
                200,
                "{hub_level} {path}"
            );
        }
    }
}
