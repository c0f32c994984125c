//! Authentication before routing, as the service: a request without a valid token gets 401
//! whatever its path or ids, before 404, 405 or 400; with one, the routing answers follow.
//! And an `If-Match` that is not ASCII is refused rather than ignored.

use reqwest::Method;
use reqwest::header::HeaderValue;
use serde_json::json;

use crate::hub::Hub;

#[tokio::test]
async fn a_request_without_a_valid_token_gets_401_before_routing() {
    let hub = Hub::start().await;
    let paths = [
        (Method::GET, "/nope"),
        (Method::GET, "/devices/a%20b"),
        (Method::PUT, "/devices/bad%2Fid"),
        (Method::POST, "/devices/d1"),
        (Method::GET, "/twins/x/modules/bad%20module"),
        (Method::GET, "/devices/%FF"),
        (Method::GET, "/configurations"),
        (Method::GET, "/"),
    ];
    for (method, path) in &paths {
        let r = hub
            .raw(method.clone(), &hub.url(path), Some(json!({})), &[])
            .await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "IotHubUnauthorizedAccess"),
            "{method} {path}: {}",
            r.raw
        );
        let forged = "SharedAccessSignature sr=localhost&sig=AAAA&se=99999999999&skn=iothubowner";
        let r = hub
            .raw(
                method.clone(),
                &hub.url(path),
                None,
                &[("authorization", forged)],
            )
            .await;
        assert_eq!(r.status, 401, "{method} {path} with a forged token");
    }
    // With a valid token, routing answers as before.
    let routed: Vec<u16> = {
        let mut out = Vec::new();
        for (method, path) in &paths[..6] {
            out.push(hub.call(method.clone(), path, Some(json!({}))).await.status);
        }
        out
    };
    assert_eq!(routed, [404, 400, 400, 405, 400, 400]);
}

#[tokio::test]
async fn an_if_match_that_is_not_ascii_is_refused() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let token = hub.token("iothubowner").await;
    for method in [Method::PUT, Method::DELETE] {
        let r = hub
            .http
            .request(method.clone(), hub.url("/devices/d"))
            .header("authorization", &token)
            .header(
                "if-match",
                HeaderValue::from_bytes("\"ét\u{e9}g\"".as_bytes()).unwrap(),
            )
            .header("content-type", "application/json")
            .body(json!({"deviceId": "d"}).to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let code = r
            .headers()
            .get("iothub-errorcode")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(status, 400, "{method}: {:?}", r.text().await);
        assert_eq!(code.as_deref(), Some("ArgumentInvalid"));
    }
    // The device is untouched.
    assert_eq!(hub.call(Method::GET, "/devices/d", None).await.status, 200);
}
