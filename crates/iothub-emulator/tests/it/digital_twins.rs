//! Digital twins (IoT Plug and Play): the digital twin derived from the device twin, JSON
//! Patch of desired properties, and commands delivered as direct methods to a control-API
//! puppet and to an MQTT device.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use iothub_emulator::MethodResponse;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeFilter,
};
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::amqp::client_tls_trusting;
use crate::hub::{Hub, Reply, now};

const MODEL: &str = "dtmi:com:example:TemperatureController;2";

/// A puppet device connected through the control API with a model id.
async fn puppet(hub: &Hub, id: &str) {
    hub.create(id).await;
    let r = hub
        .http
        .post(format!(
            "{}/_emulator/devices/{id}/connect",
            hub.emu.base_url()
        ))
        .body(json!({ "modelId": MODEL }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

async fn report(hub: &Hub, id: &str, patch: Value) {
    let r = hub
        .http
        .patch(format!(
            "{}/_emulator/devices/{id}/reported",
            hub.emu.base_url()
        ))
        .body(patch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

async fn patch_dt(hub: &Hub, id: &str, patch: Value, if_match: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = if_match.map(|e| ("if-match", e)).into_iter().collect();
    hub.call_with(
        Method::PATCH,
        &format!("/digitaltwins/{id}"),
        Some(patch),
        &headers,
    )
    .await
}

#[tokio::test]
async fn the_digital_twin_is_derived_from_the_device_twin() {
    let hub = Hub::start().await;
    puppet(&hub, "pnp").await;
    let r = hub.call(Method::GET, "/twins/pnp", None).await;
    assert_eq!(r.body["modelId"], MODEL, "{}", r.raw);

    let r = hub
        .call(
            Method::PATCH,
            "/twins/pnp",
            Some(json!({"properties": {"desired": {
                "targetTemperature": 21,
                "thermostat1": {"__t": "c", "targetTemperature": 30}
            }}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let desired_version = r.body["properties"]["desired"]["$version"].clone();
    report(
        &hub,
        "pnp",
        json!({
            "serialNumber": "SN-1",
            "targetTemperature": {"value": 21, "ac": 200, "av": desired_version, "ad": "done"},
            "thermostat1": {"__t": "c", "temperature": 25.5,
                "targetTemperature": {"value": 30, "ac": 202, "av": 1}}
        }),
    )
    .await;

    let r = hub.call(Method::GET, "/digitaltwins/pnp", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let twin = hub.call(Method::GET, "/twins/pnp", None).await;
    assert_eq!(
        r.header("etag").unwrap(),
        format!("\"{}\"", twin.body["etag"].as_str().unwrap())
    );
    let dt = &r.body;
    assert_eq!(dt["$dtId"], "pnp");
    assert_eq!(dt["$metadata"]["$model"], MODEL);
    assert_eq!(dt["serialNumber"], "SN-1");
    assert_eq!(dt["targetTemperature"], 21);
    let meta = &dt["$metadata"]["targetTemperature"];
    assert_eq!(meta["desiredValue"], 21);
    assert_eq!(meta["desiredVersion"], desired_version);
    assert_eq!(meta["ackCode"], 200);
    assert_eq!(meta["ackVersion"], desired_version);
    assert_eq!(meta["ackDescription"], "done");
    assert!(meta["lastUpdateTime"].is_string(), "{meta}");
    assert!(dt["$metadata"]["serialNumber"]["lastUpdateTime"].is_string());
    let component = &dt["thermostat1"];
    assert_eq!(component["temperature"], 25.5);
    assert_eq!(component["targetTemperature"], 30);
    assert_eq!(
        component["$metadata"]["targetTemperature"]["desiredValue"],
        30
    );
    assert_eq!(component["$metadata"]["targetTemperature"]["ackCode"], 202);
    assert!(component.get("__t").is_none(), "{component}");

    // Unknown devices are 404 as for twins.
    let r = hub.call(Method::GET, "/digitaltwins/nobody", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "DeviceNotFound"));
    // A device that announced no model still has a digital twin, without `$model`.
    hub.create("plain").await;
    let r = hub.call(Method::GET, "/digitaltwins/plain", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.body["$metadata"].get("$model").is_none(), "{}", r.raw);
}

#[tokio::test]
async fn json_patch_updates_desired_properties_with_etags() {
    let hub = Hub::start().await;
    puppet(&hub, "pnp").await;
    let r = patch_dt(
        &hub,
        "pnp",
        json!([
            {"op": "add", "path": "/targetTemperature", "value": 20},
            {"op": "add", "path": "/thermostat1/targetTemperature", "value": 40},
            {"op": "add", "path": "/thermostat2", "value": {"targetTemperature": 50, "$metadata": {}}},
            {"op": "add", "path": "/settings", "value": {"mode": "eco"}}
        ]),
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    assert_eq!(r.header("location"), Some("/digitaltwins/pnp"));
    let etag = r.header("etag").unwrap().to_owned();
    let twin = hub.call(Method::GET, "/twins/pnp", None).await;
    assert_eq!(etag, format!("\"{}\"", twin.body["etag"].as_str().unwrap()));
    let desired = &twin.body["properties"]["desired"];
    assert_eq!(desired["targetTemperature"], 20);
    assert_eq!(
        desired["thermostat1"],
        json!({"__t": "c", "targetTemperature": 40})
    );
    assert_eq!(
        desired["thermostat2"],
        json!({"__t": "c", "targetTemperature": 50})
    );
    assert_eq!(desired["settings"], json!({"mode": "eco"}));
    let version = desired["$version"].as_i64().unwrap();
    assert_eq!(version, 2);

    // Replace and remove, conditional on the current etag (quoted, and unquoted as Python's
    // DigitalTwinClient sends what it is given).
    let r = patch_dt(
        &hub,
        "pnp",
        json!([
            {"op": "replace", "path": "/thermostat1/targetTemperature", "value": 41},
            {"op": "remove", "path": "/settings"}
        ]),
        Some(&etag),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let next = r.header("etag").unwrap().to_owned();
    assert_ne!(next, etag);
    let r = patch_dt(
        &hub,
        "pnp",
        json!([{"op": "remove", "path": "/thermostat2/targetTemperature"}]),
        Some(next.trim_matches('"')),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    // A stale etag is 412, and changes nothing.
    let r = patch_dt(
        &hub,
        "pnp",
        json!([{"op": "replace", "path": "/targetTemperature", "value": 1}]),
        Some(&etag),
    )
    .await;
    assert_eq!(r.status, 412, "{}", r.raw);
    let twin = hub.call(Method::GET, "/twins/pnp", None).await;
    let desired = &twin.body["properties"]["desired"];
    assert_eq!(desired["targetTemperature"], 20);
    assert_eq!(desired["thermostat1"]["targetTemperature"], 41);
    assert_eq!(desired["thermostat2"], json!({"__t": "c"}));
    assert!(desired.get("settings").is_none());
    assert_eq!(desired["$version"], 4);
    // The digital twin shows the desired values.
    let dt = hub.call(Method::GET, "/digitaltwins/pnp", None).await;
    assert_eq!(
        dt.body["thermostat1"]["$metadata"]["targetTemperature"]["desiredValue"],
        41
    );
    assert_eq!(
        dt.body["$metadata"]["targetTemperature"]["desiredVersion"],
        2
    );

    // Invalid patches are 400, and change nothing.
    for bad in [
        json!({"op": "add", "path": "/x", "value": 1}),
        json!([{"op": "move", "from": "/targetTemperature", "path": "/x"}]),
        json!([{"op": "add", "path": "x", "value": 1}]),
        json!([{"op": "add", "path": "/x"}]),
        json!([{"op": "replace", "path": "/missing", "value": 1}]),
        json!([{"op": "remove", "path": "/missing"}]),
        json!([{"op": "add", "path": "/$version", "value": 1}]),
    ] {
        let r = patch_dt(&hub, "pnp", bad.clone(), None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.raw);
        assert_eq!(r.error_code(), "ArgumentInvalid", "{bad}");
    }
    let twin = hub.call(Method::GET, "/twins/pnp", None).await;
    assert_eq!(twin.body["properties"]["desired"]["$version"], 4);
    let r = patch_dt(&hub, "nobody", json!([]), None).await;
    assert_eq!(r.status, 404, "{}", r.raw);
}

#[tokio::test]
async fn commands_reach_a_puppet_at_the_root_and_in_components() {
    let hub = Hub::start().await;
    hub.create("pnp").await;
    // Offline: 404103 as a direct method.
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/commands/reboot",
            Some(json!(1)),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "DeviceNotOnline"),
        "{}",
        r.raw
    );
    let r = hub
        .http
        .post(format!(
            "{}/_emulator/devices/pnp/connect",
            hub.emu.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "connect without a body still works");

    hub.emu.set_method_response(
        "pnp",
        None,
        "reboot",
        MethodResponse::fixed(202, json!({"rebooting": true})),
    );
    hub.emu.set_method_response(
        "pnp",
        None,
        "thermostat1*getMaxMinReport",
        MethodResponse::echo(),
    );
    hub.emu
        .set_method_response("pnp", None, "slow", MethodResponse::echo().delayed(6_000));
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/commands/reboot?connectTimeoutInSeconds=0&responseTimeoutInSeconds=10",
            Some(json!({"delay": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("x-ms-command-statuscode"), Some("202"));
    assert!(r.header("x-ms-request-id").is_some_and(|v| !v.is_empty()));
    assert_eq!(r.body, json!({"rebooting": true}));

    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/components/thermostat1/commands/getMaxMinReport",
            Some(json!("2026-01-01T00:00:00Z")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("x-ms-command-statuscode"), Some("200"));
    assert_eq!(r.body, json!("2026-01-01T00:00:00Z"));
    // A command the puppet has no handler for, in another component: it answers 501, as a
    // device that does not implement a method does.
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/components/thermostat2/commands/getMaxMinReport",
            Some(json!(null)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("x-ms-command-statuscode"), Some("501"));

    // Timeouts: out of range is 400; no answer in time is 504101.
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/commands/reboot?responseTimeoutInSeconds=4",
            Some(json!(1)),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/commands/reboot?responseTimeoutInSeconds=soon",
            Some(json!(1)),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.raw);
    let started = Instant::now();
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/pnp/commands/slow?responseTimeoutInSeconds=5",
            Some(json!(1)),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "GatewayTimeout"),
        "{}",
        r.raw
    );
    assert!(started.elapsed() < Duration::from_millis(5_900));
}

/// A raw MQTT device over TLS, as in `mqtt.rs`, kept small: what this file needs.
struct Device {
    io: tokio_rustls::client::TlsStream<TcpStream>,
    buf: BytesMut,
}

impl Device {
    async fn connect(hub: &Hub, id: &str, key: &str) -> Self {
        let tcp = TcpStream::connect(hub.emu.mqtt_addr()).await.unwrap();
        let io = client_tls_trusting(hub.emu.ca_certificate_pem().unwrap())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let mut d = Self {
            io,
            buf: BytesMut::new(),
        };
        let sr = utf8_percent_encode(
            &format!("{}/devices/{id}", hub.emu.host()),
            NON_ALPHANUMERIC,
        )
        .to_string();
        let expiry = now() + 3600;
        let mut mac = Hmac::<Sha256>::new_from_slice(&STANDARD.decode(key).unwrap()).unwrap();
        mac.update(format!("{sr}\n{expiry}").as_bytes());
        let sig = STANDARD.encode(mac.finalize().into_bytes());
        let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC);
        let mut c = Connect::new(id);
        c.keep_alive = 60;
        c.set_login(
            format!(
                "{}/{id}/?api-version=2021-04-12&model-id={}",
                hub.emu.host(),
                utf8_percent_encode(MODEL, NON_ALPHANUMERIC)
            ),
            format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}"),
        );
        d.send(Packet::Connect(c)).await;
        match d.expect().await {
            Packet::ConnAck(ack) => assert_eq!(ack.code, ConnectReturnCode::Success),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        d
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.io.write_all(&out).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn expect(&mut self) -> Packet {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(Packet::PingResp) => continue,
                    Ok(p) => return p,
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("bad packet from the hub: {e}"),
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => panic!("the hub closed the connection"),
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("a packet from the hub")
    }

    async fn subscribe(&mut self, filter: &str) {
        let mut sub =
            Subscribe::new_many([SubscribeFilter::new(filter.to_owned(), QoS::AtMostOnce)]);
        sub.pkid = 1;
        self.send(Packet::Subscribe(sub)).await;
        assert!(matches!(self.expect().await, Packet::SubAck(_)));
    }

    async fn incoming(&mut self) -> Publish {
        match self.expect().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_mqtt_device_answers_commands_and_hears_digital_twin_patches() {
    let hub = Hub::start().await;
    let created = hub.create("dev").await;
    let key = created["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut d = Device::connect(&hub, "dev", &key).await;
    let dt = hub.call(Method::GET, "/digitaltwins/dev", None).await;
    assert_eq!(dt.body["$metadata"]["$model"], MODEL, "{}", dt.raw);

    d.subscribe("$iothub/methods/POST/#").await;
    d.subscribe("$iothub/twin/PATCH/properties/desired/#").await;
    let call = tokio::spawn({
        let url = hub.url("/digitaltwins/dev/components/thermostat1/commands/getMaxMinReport?responseTimeoutInSeconds=10");
        let token = hub.token("iothubowner").await;
        let http = iothub_test_support::emulator::https_client(&hub.emu);
        async move {
            let r = http
                .post(url)
                .header("authorization", token)
                .json(&json!({"since": "yesterday"}))
                .send()
                .await
                .unwrap();
            let status = r
                .headers()
                .get("x-ms-command-statuscode")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (
                r.status().as_u16(),
                status,
                r.json::<Value>().await.unwrap(),
            )
        }
    });
    let request = d.incoming().await;
    assert!(
        request
            .topic
            .starts_with("$iothub/methods/POST/thermostat1*getMaxMinReport/?$rid="),
        "{}",
        request.topic
    );
    let payload: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(payload, json!({"since": "yesterday"}));
    let rid = request.topic.rsplit('=').next().unwrap().to_owned();
    let mut answer = Publish::new(
        format!("$iothub/methods/res/201/?$rid={rid}"),
        QoS::AtMostOnce,
        br#"{"max": 30}"#.to_vec(),
    );
    answer.pkid = 0;
    d.send(Packet::Publish(answer)).await;
    let (status, command_status, body) = call.await.unwrap();
    assert_eq!((status, command_status.as_deref()), (200, Some("201")));
    assert_eq!(body, json!({"max": 30}));

    // A digital twin patch reaches the device as a desired-properties notification.
    let r = patch_dt(
        &hub,
        "dev",
        json!([{"op": "add", "path": "/thermostat1/targetTemperature", "value": 42}]),
        None,
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let patch = d.incoming().await;
    assert!(
        patch
            .topic
            .starts_with("$iothub/twin/PATCH/properties/desired/"),
        "{}",
        patch.topic
    );
    let body: Value = serde_json::from_slice(&patch.payload).unwrap();
    assert_eq!(body["thermostat1"]["targetTemperature"], 42, "{body}");
    assert_eq!(body["thermostat1"]["__t"], "c", "{body}");
    assert_eq!(body["$version"], 2, "{body}");

    // A root command the device does not answer in time: 504101.
    let r = hub
        .call(
            Method::POST,
            "/digitaltwins/dev/commands/reboot?responseTimeoutInSeconds=5",
            Some(json!(null)),
        )
        .await;
    let request = d.incoming().await;
    assert!(
        request.topic.starts_with("$iothub/methods/POST/reboot/"),
        "{}",
        request.topic
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "GatewayTimeout"),
        "{}",
        r.raw
    );
}
