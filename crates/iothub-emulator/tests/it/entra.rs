//! The Microsoft Entra ID look-alike over HTTPS: the discovery document, the token endpoint
//! and its refusals as Entra words them, its tokens as bearer tokens on the REST API within
//! what each built-in role allows, expiry and foreign tokens, and secrets kept out of the
//! request log.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iothub_emulator::{EmulatorBuilder, EntraClient, IotHubRole};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::{Hub, Reply};

pub(crate) const TENANT: &str = "6d1e7c3a-0000-4000-8000-00000000e301";
pub(crate) const SCOPE: &str = "https%3A%2F%2Fiothubs.azure.net%2F.default";

/// A client per built-in role, named after it, each with the secret `<name>-secret`.
pub(crate) fn with_clients(builder: EmulatorBuilder) -> EmulatorBuilder {
    [
        ("contributor", IotHubRole::DataContributor),
        ("reader", IotHubRole::DataReader),
        ("registry", IotHubRole::RegistryContributor),
        ("twins", IotHubRole::TwinContributor),
    ]
    .into_iter()
    .fold(builder.entra_tenant_id(TENANT), |b, (id, role)| {
        b.entra_client(EntraClient::new(id, format!("{id}-secret"), [role]))
    })
}

async fn start() -> Hub {
    Hub::with(with_clients(iothub_emulator::Emulator::builder())).await
}

/// POSTs a form to the tenant's token endpoint.
pub(crate) async fn post_token(hub: &Hub, tenant: &str, form: &str) -> Reply {
    let url = format!(
        "{}/{tenant}/oauth2/v2.0/token",
        hub.emu.entra_authority_host()
    );
    let resp = hub
        .http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let raw = resp.text().await.unwrap();
    let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
        raw,
    }
}

/// A token for `client` (whose secret is `<client>-secret`).
pub(crate) async fn token_for(hub: &Hub, client: &str) -> String {
    let form = format!(
        "client_id={client}&client_secret={client}-secret&grant_type=client_credentials&scope={SCOPE}"
    );
    let r = post_token(hub, TENANT, &form).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body["access_token"].as_str().unwrap().to_owned()
}

async fn with_bearer(
    hub: &Hub,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Reply {
    let auth = format!("Bearer {token}");
    hub.raw(method, &hub.url(path), body, &[("authorization", &auth)])
        .await
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[tokio::test]
async fn the_discovery_document_names_what_msal_needs() {
    let hub = start().await;
    let base = hub.emu.entra_authority_host();
    let url = format!("{base}/{TENANT}/v2.0/.well-known/openid-configuration");
    let r = hub.raw(Method::GET, &url, None, &[]).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["issuer"], format!("{base}/{TENANT}/v2.0"));
    assert_eq!(
        r.body["token_endpoint"],
        format!("{base}/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(
        r.body["authorization_endpoint"],
        format!("{base}/{TENANT}/oauth2/v2.0/authorize")
    );
    let keys_url = r.body["jwks_uri"].as_str().unwrap().to_owned();
    let keys = hub.raw(Method::GET, &keys_url, None, &[]).await;
    assert_eq!(keys.status, 200, "{}", keys.raw);
    let kid = keys.body["keys"][0]["kid"].as_str().unwrap().to_owned();
    // The tokens name that key.
    let token = token_for(&hub, "reader").await;
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some(kid.as_str()))
    );

    // Another tenant: Entra's 400 invalid_tenant.
    let url = format!("{base}/someone-else/v2.0/.well-known/openid-configuration");
    let r = hub.raw(Method::GET, &url, None, &[]).await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (400, Some("invalid_tenant"))
    );
    assert_eq!(r.body["error_codes"], json!([90_002]));
    let url = format!("{base}/{TENANT}/v2.0/.well-known/openid-configuration");
    assert_eq!(hub.raw(Method::POST, &url, None, &[]).await.status, 405);
}

#[tokio::test]
async fn tokens_are_issued_for_iot_hub_to_registered_clients() {
    let hub = start().await;
    let form = format!(
        "client_id=contributor&client_secret=contributor-secret&grant_type=client_credentials&scope={SCOPE}"
    );
    let r = post_token(&hub, TENANT, &form).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["token_type"], "Bearer");
    assert_eq!(r.body["expires_in"], 3599);
    assert_eq!(r.header("cache-control"), Some("no-store, no-cache"));
    let c = claims(r.body["access_token"].as_str().unwrap());
    assert_eq!(c["aud"], "https://iothubs.azure.net");
    assert_eq!(c["tid"], TENANT);
    assert_eq!(c["azp"], "contributor");
    assert_eq!(
        c["iss"],
        format!("{}/{TENANT}/v2.0", hub.emu.entra_authority_host())
    );
    let exp = c["exp"].as_u64().unwrap();
    assert!(exp.abs_diff(crate::hub::now() + 3599) <= 2, "{c}");
}

#[tokio::test]
async fn the_token_endpoint_refuses_as_entra_does() {
    let hub = start().await;
    let good = format!(
        "client_id=reader&client_secret=reader-secret&grant_type=client_credentials&scope={SCOPE}"
    );
    let cases = [
        (
            good.replace("reader-secret", "wrong"),
            401,
            "invalid_client",
            Some(7_000_215),
        ),
        (
            good.replace("client_secret=reader-secret&", ""),
            401,
            "invalid_client",
            Some(7_000_218),
        ),
        (
            good.replace("client_id=reader", "client_id=nobody"),
            400,
            "unauthorized_client",
            Some(700_016),
        ),
        (
            good.replace("grant_type=client_credentials&", ""),
            400,
            "invalid_request",
            Some(900_144),
        ),
        (
            good.replace("client_credentials", "authorization_code"),
            400,
            "unsupported_grant_type",
            Some(70_003),
        ),
        (
            good.replace("%2F.default", ""),
            400,
            "invalid_scope",
            Some(1_002_012),
        ),
        (
            good.replace("iothubs.azure.net", "management.azure.com"),
            400,
            "invalid_resource",
            Some(500_011),
        ),
        (
            format!("{good}&client_id=reader"),
            400,
            "invalid_request",
            None,
        ),
    ];
    for (form, status, error, code) in cases {
        let r = post_token(&hub, TENANT, &form).await;
        assert_eq!(
            (r.status, r.body["error"].as_str()),
            (status, Some(error)),
            "{form}: {}",
            r.raw
        );
        assert_eq!(
            r.body["error_codes"],
            json!(code.into_iter().collect::<Vec<_>>()),
            "{form}"
        );
        let description = r.body["error_description"].as_str().unwrap();
        if let Some(code) = code {
            assert!(
                description.starts_with(&format!("AADSTS{code}: ")),
                "{description}"
            );
        }
        assert!(description.contains("Trace ID: ") && description.contains("Correlation ID: "));
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(r.body[field].is_string(), "{field} in {}", r.raw);
        }
        assert!(!r.raw.contains("reader-secret"));
    }
    // Another tenant, a GET, an oversized body.
    let r = post_token(&hub, "other-tenant", &good).await;
    assert_eq!(
        (r.status, r.body["error_codes"][0].as_u64()),
        (400, Some(90_002))
    );
    let url = format!(
        "{}/{TENANT}/oauth2/v2.0/token",
        hub.emu.entra_authority_host()
    );
    let r = hub.raw(Method::GET, &url, None, &[]).await;
    assert_eq!(
        (r.status, r.body["error_codes"][0].as_u64()),
        (400, Some(900_561))
    );
    let r = post_token(
        &hub,
        TENANT,
        &format!("{good}&pad={}", "x".repeat(17 * 1024)),
    )
    .await;
    assert_eq!(
        (r.status, r.body["error"].as_str()),
        (413, Some("invalid_request"))
    );
    // The client's request id comes back as the correlation id, as Entra does it.
    let resp = hub
        .http
        .post(&url)
        .header("client-request-id", "5d3c1b8e-0000-4000-8000-000000000001")
        .body(good.replace("reader-secret", "wrong"))
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["correlation_id"],
        "5d3c1b8e-0000-4000-8000-000000000001"
    );
}

#[tokio::test]
async fn each_built_in_role_allows_its_data_actions_and_nothing_more() {
    let hub = start().await;
    hub.create("d1").await;
    let token = |client| token_for(&hub, client);
    let (contributor, reader, registry, twins) = (
        token("contributor").await,
        token("reader").await,
        token("registry").await,
        token("twins").await,
    );
    let device = |id: &str| Some(json!({ "deviceId": id }));
    let patch = Some(json!({ "tags": { "floor": 3 } }));
    let query = Some(json!({ "query": "SELECT * FROM devices" }));
    let bulk = Some(json!([{ "id": "b1", "importMode": "create" }]));
    // Who, with which token, does what, and the status expected.
    type Case<'a> = (&'a str, &'a String, Method, &'a str, Option<Value>, u16);
    let cases: Vec<Case> = vec![
        (
            "contributor",
            &contributor,
            Method::PUT,
            "/devices/c1",
            device("c1"),
            200,
        ),
        (
            "contributor",
            &contributor,
            Method::PATCH,
            "/twins/c1",
            patch.clone(),
            200,
        ),
        (
            "contributor",
            &contributor,
            Method::GET,
            "/statistics/service",
            None,
            200,
        ),
        (
            "contributor",
            &contributor,
            Method::DELETE,
            "/devices/c1/commands",
            None,
            200,
        ),
        ("reader", &reader, Method::GET, "/devices/d1", None, 200),
        ("reader", &reader, Method::GET, "/twins/d1", None, 200),
        (
            "reader",
            &reader,
            Method::POST,
            "/devices/query",
            query.clone(),
            200,
        ),
        (
            "reader",
            &reader,
            Method::GET,
            "/statistics/devices",
            None,
            200,
        ),
        (
            "reader",
            &reader,
            Method::PUT,
            "/devices/r1",
            device("r1"),
            401,
        ),
        (
            "reader",
            &reader,
            Method::PATCH,
            "/twins/d1",
            patch.clone(),
            401,
        ),
        ("reader", &reader, Method::DELETE, "/devices/d1", None, 401),
        (
            "reader",
            &reader,
            Method::POST,
            "/twins/d1/methods",
            Some(json!({"methodName": "m"})),
            401,
        ),
        (
            "registry",
            &registry,
            Method::PUT,
            "/devices/g1",
            device("g1"),
            200,
        ),
        ("registry", &registry, Method::POST, "/devices", bulk, 200),
        ("registry", &registry, Method::GET, "/twins/d1", None, 401),
        (
            "registry",
            &registry,
            Method::POST,
            "/devices/query",
            query.clone(),
            401,
        ),
        (
            "twins",
            &twins,
            Method::PATCH,
            "/twins/d1",
            patch.clone(),
            200,
        ),
        ("twins", &twins, Method::POST, "/devices/query", query, 200),
        ("twins", &twins, Method::GET, "/devices/d1", None, 401),
        (
            "twins",
            &twins,
            Method::PUT,
            "/devices/t1",
            device("t1"),
            401,
        ),
    ];
    for (who, token, method, path, body, status) in cases {
        let r = with_bearer(&hub, token, method.clone(), path, body).await;
        assert_eq!(r.status, status, "{who} {method} {path}: {}", r.raw);
        if status == 401 {
            assert_eq!(r.error_code(), "IotHubUnauthorizedAccess");
            assert!(
                r.raw
                    .contains("role assignments do not grant Microsoft.Devices/IotHubs/"),
                "{}",
                r.raw
            );
        }
    }
}

#[tokio::test]
async fn expired_tampered_and_foreign_tokens_are_refused() {
    let hub = Hub::with(
        with_clients(iothub_emulator::Emulator::builder())
            .entra_token_lifetime(Duration::from_secs(1))
            .bearer_token("fixed-token"),
    )
    .await;
    hub.create("d1").await;
    let short = token_for(&hub, "contributor").await;
    assert_eq!(
        with_bearer(&hub, &short, Method::GET, "/devices/d1", None)
            .await
            .status,
        200
    );
    // Another emulator with the same tenant and clients: another signing key.
    let other = start().await;
    let foreign = token_for(&other, "contributor").await;
    let r = with_bearer(&hub, &foreign, Method::GET, "/devices/d1", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "IotHubUnauthorizedAccess")
    );
    // The reader's claims with the contributor's signature.
    let reader = token_for(&hub, "reader").await;
    let parts: Vec<&str> = short.split('.').collect();
    let mut c = claims(&reader);
    c["azp"] = json!("contributor");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(c.to_string()),
        parts[2]
    );
    assert_eq!(
        with_bearer(
            &hub,
            &forged,
            Method::PUT,
            "/devices/x",
            Some(json!({"deviceId": "x"}))
        )
        .await
        .status,
        401
    );
    // The fixed bearer token still works beside the tenant's.
    assert_eq!(
        with_bearer(&hub, "fixed-token", Method::GET, "/devices/d1", None)
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = with_bearer(&hub, &short, Method::GET, "/devices/d1", None).await;
    assert_eq!(r.status, 401);
    assert!(r.raw.contains("the bearer token has expired"), "{}", r.raw);
}

#[tokio::test]
async fn secrets_stay_out_of_the_request_log() {
    let hub = start().await;
    hub.create("d1").await;
    let token = token_for(&hub, "contributor").await;
    let _ = post_token(
        &hub,
        TENANT,
        &format!("client_id=reader&client_secret=hunter2-wrong&grant_type=client_credentials&scope={SCOPE}"),
    )
    .await;
    let _ = with_bearer(&hub, &token, Method::GET, "/devices/d1", None).await;
    let log = hub.emu.request_log();
    let text = serde_json::to_string(&log).unwrap();
    for secret in ["contributor-secret", "hunter2-wrong", token.as_str()] {
        assert!(!text.contains(secret), "{secret:.20}… in the request log");
    }
    let token_requests: Vec<_> = log
        .iter()
        .filter(|e| e.path.ends_with("/oauth2/v2.0/token"))
        .collect();
    assert_eq!(token_requests.len(), 2);
    assert_eq!(
        token_requests[0].body,
        format!(
            "client_id=contributor&client_secret=REDACTED&grant_type=client_credentials&scope={SCOPE}"
        )
    );
    assert_eq!(
        (token_requests[0].status, token_requests[1].status),
        (Some(200), Some(401))
    );
    assert_eq!(
        log.last().unwrap().header("authorization"),
        Some("Bearer REDACTED")
    );
}

#[tokio::test]
async fn with_a_data_directory_the_signing_key_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let kid = |hub: Hub| async move {
        let url = format!(
            "{}/{TENANT}/discovery/v2.0/keys",
            hub.emu.entra_authority_host()
        );
        let r = hub.raw(Method::GET, &url, None, &[]).await;
        hub.emu.shutdown().await;
        r.body["keys"][0]["kid"].as_str().unwrap().to_owned()
    };
    let builder = || with_clients(iothub_emulator::Emulator::builder()).data_dir(dir.path());
    let first = kid(Hub::with(builder()).await).await;
    let second = kid(Hub::with(builder()).await).await;
    assert_eq!(first, second);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("entra-signing-key.der"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "readable by its owner only");
    }
}
