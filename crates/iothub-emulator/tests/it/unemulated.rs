//! What the emulator does not emulate says so: the service's paths for the device-facing
//! HTTPS API answer 404 with a message
//! naming the feature, and so do a device token and a device link on AMQP. (MQTT, over TLS
//! and WebSockets, is emulated: `mqtt.rs`.)

use std::time::Duration;

use fe2o3_amqp::types::messaging::MessageId;
use fe2o3_amqp::types::primitives::SimpleValue;
use fe2o3_amqp::{Sender, Session};
use reqwest::Method;
use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::net::TcpStream;

use crate::amqp::{Cbs, SAS_TYPE, client_tls_trusting, open_on};
use crate::hub::{Hub, now};

#[tokio::test]
async fn service_paths_not_emulated_say_which_feature() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let cases = [
        (Method::POST, "/devices/d/messages/events", "device-facing"),
        (
            Method::GET,
            "/devices/d/messages/deviceBound",
            "device-facing",
        ),
        (
            Method::DELETE,
            "/devices/d/messages/deviceBound/etag",
            "device-facing",
        ),
        (Method::POST, "/devices/d/files", "device-facing"),
        (
            Method::POST,
            "/devices/d/files/notifications",
            "device-facing",
        ),
        (
            Method::POST,
            "/devices/d/modules/m/messages/events",
            "device-facing",
        ),
    ];
    for (method, path, feature) in cases {
        let r = hub.call(method.clone(), path, Some(json!({}))).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.raw);
        assert_eq!(r.error_code(), "GenericNotFound", "{method} {path}");
        let message = r.body["Message"].as_str().unwrap().to_ascii_lowercase();
        assert!(
            message.contains("not emulated") && message.contains(feature),
            "{method} {path}: {message}"
        );
    }
    // Configurations, feedback over HTTPS, jobs and digital twins are emulated now: they
    // answer as the service.
    let r = hub.call(Method::GET, "/digitaltwins/d", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub.call(Method::GET, "/jobs", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub.call(Method::GET, "/jobs/v2/query", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub.call(Method::GET, "/configurations", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub
        .call(Method::GET, "/messages/serviceBound/feedback", None)
        .await;
    assert_eq!(r.status, 204, "{}", r.raw);
    // Still 401 first for whoever has no token.
    let r = hub.raw(Method::GET, &hub.url("/jobs"), None, &[]).await;
    assert_eq!(r.status, 401);
    // A device token on REST says the device side is not emulated.
    let device_token = format!(
        "SharedAccessSignature sr=localhost%2Fdevices%2Fd&sig=AAAA&se={}",
        now() + 600
    );
    let r = hub
        .raw(
            Method::POST,
            &hub.url("/devices/d/messages/events"),
            None,
            &[("authorization", &device_token)],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.raw);
    assert!(r.raw.contains("not emulated"), "{}", r.raw);
}

#[tokio::test]
async fn device_tokens_and_device_links_on_amqp_say_they_are_not_emulated() {
    let hub = Hub::start().await;
    hub.create("d").await;
    let tls = client_tls_trusting(hub.emu.ca_certificate_pem().unwrap());
    let tcp = TcpStream::connect(hub.emu.amqp_addr().unwrap())
        .await
        .unwrap();
    let stream = tls
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let mut connection = open_on(stream, None).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    // A device's token (sr names the device, no skn): what a device SDK puts on $cbs.
    let device_token = format!(
        "SharedAccessSignature sr=localhost%2Fdevices%2Fd&sig=AAAA&se={}",
        now() + 600
    );
    let reply = cbs
        .put_token(MessageId::String("dev".into()), SAS_TYPE, &device_token)
        .await;
    assert_eq!(reply.status, Some(SimpleValue::Int(401)));
    let description = reply.description.unwrap_or_default();
    assert!(
        description.contains("not emulated") && description.contains("device"),
        "{description}"
    );

    // With the owner's token, a device link is refused with the same clarity.
    let owner = hub.emu.connection_string();
    let key = owner.split("SharedAccessKey=").nth(1).unwrap();
    let host: iothub_auth::HostName = hub.emu.host().parse().unwrap();
    let token = iothub_auth::SasToken::for_amqp(
        &host,
        "iothubowner",
        &iothub_auth::SharedAccessKey::new(key).unwrap(),
        now() + 600,
    );
    let reply = cbs
        .put_token(
            MessageId::String("owner".into()),
            SAS_TYPE,
            token.as_secret().expose_secret(),
        )
        .await;
    assert_eq!(reply.status, Some(SimpleValue::Int(200)));
    let mut events = Sender::attach(&mut session, "events", "/devices/d/messages/events")
        .await
        .unwrap();
    let detached = tokio::time::timeout(Duration::from_secs(10), events.on_detach())
        .await
        .expect("the link is closed");
    let text = format!("{detached:?}");
    assert!(
        text.contains("NotFound") && text.contains("not emulated"),
        "{text}"
    );
}
