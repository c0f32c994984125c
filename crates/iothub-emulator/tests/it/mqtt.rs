//! The device-facing MQTT endpoint, as a device sees it: MQTT 3.1.1 packets (rumqttc's v4
//! codec) over TLS (aws-lc-rs) or WebSockets, with the service side driven over REST and
//! AMQP as a service client would.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Method;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeFilter,
    SubscribeReasonCode,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::amqp::client_tls_trusting;
use crate::hub::{Hub, now};
use iothub_emulator::Emulator;

/// How long a test waits for a packet that should come.
const WAIT: Duration = Duration::from_secs(5);

/// A device's MQTT connection: packets in and out over any byte stream.
struct Device<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Device<S> {
    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.io.write_all(&out).await.unwrap();
        self.io.flush().await.unwrap();
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.io.write_all(bytes).await;
        let _ = self.io.flush().await;
    }

    /// The next packet, or `None` when the hub closed the connection (or sent nothing for
    /// `WAIT`: then the test fails where it expects one).
    async fn next(&mut self) -> Option<Packet> {
        self.next_within(WAIT).await.ok().flatten()
    }

    /// `Err` on timeout, `Ok(None)` when closed.
    async fn next_within(&mut self, wait: Duration) -> Result<Option<Packet>, ()> {
        tokio::time::timeout(wait, async {
            loop {
                match Packet::read(&mut self.buf, 1 << 20) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("bad packet from the hub: {e}"),
                }
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .map_err(|_| ())
    }

    /// The next packet that is not a PINGRESP.
    async fn expect(&mut self) -> Packet {
        loop {
            match self.next().await {
                Some(Packet::PingResp) => {}
                Some(p) => return p,
                None => panic!("the hub closed the connection"),
            }
        }
    }

    async fn closed(&mut self) -> bool {
        loop {
            match self.next_within(WAIT).await {
                Ok(None) => return true,
                Ok(Some(_)) => {}
                Err(()) => return false,
            }
        }
    }

    async fn subscribe(&mut self, pkid: u16, filters: &[(&str, QoS)]) -> Vec<SubscribeReasonCode> {
        let mut sub = Subscribe::new_many(
            filters
                .iter()
                .map(|(f, q)| SubscribeFilter::new((*f).to_owned(), *q)),
        );
        sub.pkid = pkid;
        self.send(Packet::Subscribe(sub)).await;
        match self.expect().await {
            Packet::SubAck(ack) => {
                assert_eq!(ack.pkid, pkid);
                ack.return_codes
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, qos: QoS, pkid: u16, payload: &[u8]) {
        let mut p = Publish::new(topic, qos, payload.to_vec());
        p.pkid = pkid;
        self.send(Packet::Publish(p)).await;
    }

    /// The next PUBLISH from the hub.
    async fn incoming(&mut self) -> Publish {
        match self.expect().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn tls(emu: &Emulator) -> Tls {
    let tcp = TcpStream::connect(emu.mqtt_addr()).await.unwrap();
    client_tls_trusting(emu.ca_certificate_pem().unwrap())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// A SAS token signed with a device's (or module's) own key, as the device SDKs make it.
fn device_token(emu: &Emulator, resource: &str, key: &str, expiry: u64) -> String {
    let sr =
        utf8_percent_encode(&format!("{}/{resource}", emu.host()), NON_ALPHANUMERIC).to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&STANDARD.decode(key).unwrap()).unwrap();
    mac.update(format!("{sr}\n{expiry}").as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let sig = utf8_percent_encode(&sig, NON_ALPHANUMERIC);
    format!("SharedAccessSignature sr={sr}&sig={sig}&se={expiry}")
}

fn username(emu: &Emulator, who: &str) -> String {
    format!(
        "{}/{who}/?api-version=2021-04-12&DeviceClientType=iothub-rs-tests",
        emu.host()
    )
}

fn connect_packet(emu: &Emulator, client_id: &str, password: &str, clean: bool) -> Packet {
    let mut c = Connect::new(client_id);
    c.keep_alive = 60;
    c.clean_session = clean;
    c.set_login(username(emu, client_id), password);
    Packet::Connect(c)
}

async fn connect_with<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    connect: Packet,
) -> (Device<S>, ConnAck) {
    let mut d = Device {
        io,
        buf: BytesMut::new(),
    };
    d.send(connect).await;
    match d.expect().await {
        Packet::ConnAck(ack) => (d, ack),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A device created over REST, and its primary key.
async fn create(hub: &Hub, id: &str) -> String {
    let device = hub.create(id).await;
    device["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Connects `id` with a token signed with `key`, CleanSession 1; asserts it was accepted.
async fn online(hub: &Hub, id: &str, key: &str) -> Device<Tls> {
    online_with(hub, id, key, true).await.0
}

async fn online_with(hub: &Hub, id: &str, key: &str, clean: bool) -> (Device<Tls>, ConnAck) {
    let resource = match id.split_once('/') {
        None => format!("devices/{id}"),
        Some((d, m)) => format!("devices/{d}/modules/{m}"),
    };
    let token = device_token(&hub.emu, &resource, key, now() + 3600);
    let (d, ack) = connect_with(
        tls(&hub.emu).await,
        connect_packet(&hub.emu, id, &token, clean),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success, "{id}");
    (d, ack)
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

async fn connection_state(hub: &Hub, path: &str) -> String {
    let r = hub.call(Method::GET, path, None).await;
    r.body["connectionState"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_device_connects_with_its_own_sas_and_sends_telemetry() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    assert_eq!(connection_state(&hub, "/devices/d1").await, "Disconnected");
    let mut d = online(&hub, "d1", &key).await;
    assert_eq!(connection_state(&hub, "/devices/d1").await, "Connected");
    let stats = hub.call(Method::GET, "/statistics/service", None).await;
    assert_eq!(stats.body["connectedDeviceCount"], 1, "{}", stats.raw);

    d.publish(
        "devices/d1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&%24.mid=m1&%24.cid=c1&color=red",
        QoS::AtLeastOnce,
        7,
        br#"{"t":21}"#,
    )
    .await;
    assert_eq!(d.expect().await, Packet::PubAck(PubAck::new(7)));
    d.publish("devices/d1/messages/events/", QoS::AtMostOnce, 0, b"second")
        .await;
    eventually("two messages kept", async || {
        hub.emu.device_messages(Some("d1"), None).len() == 2
    })
    .await;
    let messages = hub.emu.device_messages(Some("d1"), None);
    let m = &messages[0];
    assert_eq!(m.body_text(), r#"{"t":21}"#);
    assert_eq!(m.content_type(), Some("application/json"));
    assert_eq!(m.message_id(), Some("m1"));
    assert_eq!(m.system_properties["$.ce"], "utf-8");
    assert_eq!(m.system_properties["$.cid"], "c1");
    assert_eq!(m.properties["color"], "red");
    assert_eq!(messages[1].body_text(), "second");
    assert!(hub.emu.device_messages(Some("other"), None).is_empty());
    assert_eq!(hub.emu.device_messages_received(), 2);

    // The control API shows the same.
    let r = hub
        .raw(
            Method::GET,
            &format!("{}/_emulator/devices/d1/messages", hub.emu.base_url()),
            None,
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body[0]["properties"]["color"], "red");
    assert_eq!(r.body[0]["systemProperties"]["$.mid"], "m1");

    d.send(Packet::Disconnect).await;
    eventually("disconnected", async || {
        connection_state(&hub, "/devices/d1").await == "Disconnected"
    })
    .await;
}

#[tokio::test]
async fn wrong_or_foreign_credentials_are_not_authorized() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let other_key = create(&hub, "d2").await;
    let expiry = now() + 3600;
    let cases = [
        (
            "other device's key",
            device_token(&hub.emu, "devices/d1", &other_key, expiry),
        ),
        (
            "other device's resource",
            device_token(&hub.emu, "devices/d2", &key, expiry),
        ),
        (
            "expired",
            device_token(&hub.emu, "devices/d1", &key, now() - 10),
        ),
        ("not a token", "hello".to_owned()),
    ];
    for (what, password) in cases {
        let (mut d, ack) = connect_with(
            tls(&hub.emu).await,
            connect_packet(&hub.emu, "d1", &password, true),
        )
        .await;
        assert_eq!(ack.code, ConnectReturnCode::NotAuthorized, "{what}");
        assert!(d.closed().await, "{what}");
    }
    // An unknown device, and a username naming another device.
    let token = device_token(&hub.emu, "devices/nobody", &key, expiry);
    let (_, ack) = connect_with(
        tls(&hub.emu).await,
        connect_packet(&hub.emu, "nobody", &token, true),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let mut c = Connect::new("d1");
    c.set_login(
        username(&hub.emu, "d2"),
        device_token(&hub.emu, "devices/d1", &key, expiry),
    );
    let (_, ack) = connect_with(tls(&hub.emu).await, Packet::Connect(c)).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);

    // A hub policy token with DeviceConnect is accepted, as by the service.
    let policy = hub.token("iothubowner").await;
    let (_, ack) = connect_with(
        tls(&hub.emu).await,
        connect_packet(&hub.emu, "d1", &policy, true),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    // One without it is not.
    let registry_read = hub.token("registryRead").await;
    let (_, ack) = connect_with(
        tls(&hub.emu).await,
        connect_packet(&hub.emu, "d2", &registry_read, true),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn disabled_devices_are_refused() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut device = hub.call(Method::GET, "/devices/d1", None).await.body;
    device["status"] = json!("disabled");
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/d1",
            Some(device),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let token = device_token(&hub.emu, "devices/d1", &key, now() + 3600);
    let (_, ack) = connect_with(
        tls(&hub.emu).await,
        connect_packet(&hub.emu, "d1", &token, true),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn disabling_or_deleting_a_device_disconnects_it() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut d = online(&hub, "d1", &key).await;
    let mut device = hub.call(Method::GET, "/devices/d1", None).await.body;
    device["status"] = json!("disabled");
    let r = hub
        .call_with(
            Method::PUT,
            "/devices/d1",
            Some(device),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(d.closed().await, "still connected once disabled");

    let key = create(&hub, "d2").await;
    let mut d = online(&hub, "d2", &key).await;
    let r = hub
        .call_with(Method::DELETE, "/devices/d2", None, &[("if-match", "*")])
        .await;
    assert_eq!(r.status, 204, "{}", r.raw);
    assert!(d.closed().await, "still connected once deleted");
}

#[tokio::test]
async fn a_token_closes_the_connection_when_it_expires() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let token = device_token(&hub.emu, "devices/d1", &key, now() + 2);
    let (mut d, ack) = connect_with(
        tls(&hub.emu).await,
        connect_packet(&hub.emu, "d1", &token, true),
    )
    .await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    assert!(d.closed().await, "still open after the token expired");
}

#[tokio::test]
async fn nothing_but_a_timely_connect_is_read() {
    let hub = Hub::with(Emulator::builder().mqtt_auth_timeout(Duration::from_secs(1))).await;
    // Silent: closed at the authentication deadline.
    let mut silent = Device {
        io: tls(&hub.emu).await,
        buf: BytesMut::new(),
    };
    assert!(silent.closed().await);
    // A first packet that is not CONNECT, or one too large to be a CONNECT: closed.
    let mut wrong = Device {
        io: tls(&hub.emu).await,
        buf: BytesMut::new(),
    };
    wrong.send(Packet::PingReq).await;
    assert!(wrong.closed().await);
    let mut huge = Device {
        io: tls(&hub.emu).await,
        buf: BytesMut::new(),
    };
    // A CONNECT header announcing 1 MB.
    huge.send_raw(&[0x10, 0x80, 0x80, 0x40]).await;
    assert!(huge.closed().await);
}

#[tokio::test]
async fn a_new_connection_replaces_the_old_one() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut first = online(&hub, "d1", &key).await;
    let mut second = online(&hub, "d1", &key).await;
    assert!(first.closed().await, "the first connection stays open");
    // The device is still connected, through the second.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(connection_state(&hub, "/devices/d1").await, "Connected");
    second.send(Packet::PingReq).await;
    assert_eq!(second.next().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn qos_2_and_topics_outside_the_contract_close_the_connection() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut d = online(&hub, "d1", &key).await;
    d.publish("devices/d1/messages/events/", QoS::ExactlyOnce, 1, b"x")
        .await;
    assert!(d.closed().await, "QoS 2 publish");
    let mut d = online(&hub, "d1", &key).await;
    d.publish("devices/d2/messages/events/", QoS::AtLeastOnce, 1, b"x")
        .await;
    assert!(d.closed().await, "another device's topic");
    let mut d = online(&hub, "d1", &key).await;
    d.publish(
        "devices/d1/messages/events/",
        QoS::AtLeastOnce,
        1,
        &vec![0; 256 * 1024 + 1],
    )
    .await;
    assert!(d.closed().await, "a payload over 256 KB");
    let mut d = online(&hub, "d1", &key).await;
    d.send_raw(&[0x30, 0x03, 0xff, 0xff, 0xff]).await;
    assert!(d.closed().await, "a malformed PUBLISH");
    // Nothing of it was kept.
    assert!(hub.emu.device_messages(None, None).is_empty());
    // A payload of exactly 256 KB is fine.
    let mut d = online(&hub, "d1", &key).await;
    d.publish(
        "devices/d1/messages/events/",
        QoS::AtLeastOnce,
        2,
        &vec![0; 256 * 1024],
    )
    .await;
    assert_eq!(d.expect().await, Packet::PubAck(PubAck::new(2)));
}

#[tokio::test]
async fn only_iot_hub_filters_are_granted_and_qos_2_as_1() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut d = online(&hub, "d1", &key).await;
    let codes = d
        .subscribe(
            1,
            &[
                ("devices/d1/messages/devicebound/#", QoS::ExactlyOnce),
                ("$iothub/twin/res/#", QoS::AtMostOnce),
                ("#", QoS::AtLeastOnce),
                ("devices/d2/messages/devicebound/#", QoS::AtLeastOnce),
                ("$iothub/methods/POST/#", QoS::AtLeastOnce),
            ],
        )
        .await;
    assert_eq!(
        codes,
        [
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Success(QoS::AtMostOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );
}

#[tokio::test]
async fn keep_alive_is_enforced_at_one_and_a_half_times() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let token = device_token(&hub.emu, "devices/d1", &key, now() + 3600);
    let Packet::Connect(mut c) = connect_packet(&hub.emu, "d1", &token, true) else {
        unreachable!()
    };
    c.keep_alive = 1;
    let (mut d, ack) = connect_with(tls(&hub.emu).await, Packet::Connect(c)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    // Pinging in time keeps it open past the deadline...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        d.send(Packet::PingReq).await;
        assert_eq!(d.next().await, Some(Packet::PingResp));
    }
    // ...silence closes it after 1.5 s.
    let started = std::time::Instant::now();
    assert!(d.closed().await);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1300), "{waited:?}");
}

/// Sends a cloud-to-device message as the service does (AMQP, through the registry).
async fn send_c2d(hub: &Hub, id: &str, body: &str, props: &[(&str, &str)]) {
    let registry = iothub_test_support::emulator::registry(&hub.emu);
    registry
        .send_c2d_message(id, body, props.iter().copied())
        .await
        .unwrap();
}

#[tokio::test]
async fn c2d_messages_are_delivered_and_puback_completes_them_with_feedback() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    // Queued before the device connects.
    send_c2d(
        &hub,
        "d1",
        "first",
        &[
            ("messageId", "mid-1"),
            ("iothub-ack", "positive"),
            ("color", "blue"),
        ],
    )
    .await;
    let r = hub.call(Method::GET, "/twins/d1", None).await;
    assert_eq!(r.body["cloudToDeviceMessageCount"], 1, "{}", r.raw);
    let mut d = online(&hub, "d1", &key).await;
    let codes = d
        .subscribe(
            1,
            &[("devices/d1/messages/devicebound/#", QoS::AtLeastOnce)],
        )
        .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    let m = d.incoming().await;
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert_eq!(&m.payload[..], b"first");
    assert!(
        m.topic.starts_with("devices/d1/messages/devicebound/"),
        "{}",
        m.topic
    );
    assert!(m.topic.contains("%24.mid=mid-1"), "{}", m.topic);
    assert!(m.topic.contains("color=blue"), "{}", m.topic);
    assert!(m.topic.contains("iothub-ack=positive"), "{}", m.topic);
    // Not acknowledged yet: still counted.
    assert_eq!(hub.emu.c2d_pending("d1", None), 1);
    d.send(Packet::PubAck(PubAck::new(m.pkid))).await;
    eventually("completed", async || hub.emu.c2d_pending("d1", None) == 0).await;

    // The positive feedback reaches the service's feedback receiver (HTTP here).
    let r = hub
        .call(Method::GET, "/messages/serviceBound/feedback", None)
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let records: Value = serde_json::from_str(&r.raw).unwrap();
    assert_eq!(records[0]["originalMessageId"], "mid-1", "{records}");
    assert_eq!(records[0]["statusCode"], "Success", "{records}");

    // Sent while connected and subscribed: delivered at once.
    send_c2d(&hub, "d1", "second", &[]).await;
    let m = d.incoming().await;
    assert_eq!(&m.payload[..], b"second");
}

#[tokio::test]
async fn unacknowledged_c2d_is_redelivered_and_clean_session_0_keeps_the_subscription() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let (mut d, ack) = online_with(&hub, "d1", &key, false).await;
    assert!(!ack.session_present);
    d.subscribe(
        1,
        &[("devices/d1/messages/devicebound/#", QoS::AtLeastOnce)],
    )
    .await;
    send_c2d(&hub, "d1", "once", &[]).await;
    let m = d.incoming().await;
    assert_eq!(&m.payload[..], b"once");
    // Gone without PUBACK.
    drop(d);
    eventually("disconnected", async || {
        connection_state(&hub, "/devices/d1").await == "Disconnected"
    })
    .await;
    // CleanSession 0: the subscription is still there, and the message comes again without
    // subscribing.
    let (mut d, ack) = online_with(&hub, "d1", &key, false).await;
    assert!(ack.session_present);
    let m = d.incoming().await;
    assert_eq!(&m.payload[..], b"once");
    d.send(Packet::PubAck(PubAck::new(m.pkid))).await;
    eventually("completed", async || hub.emu.c2d_pending("d1", None) == 0).await;
    drop(d);
    // CleanSession 1 forgets it.
    send_c2d(&hub, "d1", "later", &[]).await;
    let (mut d, ack) = online_with(&hub, "d1", &key, true).await;
    assert!(!ack.session_present);
    assert!(d.next_within(Duration::from_millis(1500)).await.is_err());
}

#[tokio::test]
async fn the_twin_over_mqtt() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let r = hub
        .call(
            Method::PATCH,
            "/twins/d1",
            Some(json!({"properties": {"desired": {"target": 20}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let mut d = online(&hub, "d1", &key).await;
    d.subscribe(
        1,
        &[
            ("$iothub/twin/res/#", QoS::AtMostOnce),
            ("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce),
        ],
    )
    .await;

    // GET
    d.publish("$iothub/twin/GET/?$rid=get1", QoS::AtMostOnce, 0, b"")
        .await;
    let res = d.incoming().await;
    assert_eq!(res.topic, "$iothub/twin/res/200/?$rid=get1");
    let twin: Value = serde_json::from_slice(&res.payload).unwrap();
    assert_eq!(twin["desired"]["target"], 20, "{twin}");
    assert_eq!(twin["desired"]["$version"], 2, "{twin}");
    assert!(twin["reported"]["$version"].is_i64(), "{twin}");
    assert!(twin["desired"].get("$metadata").is_none(), "{twin}");

    // Reported PATCH: 204 with the new version; the service sees it.
    d.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=rep1",
        QoS::AtMostOnce,
        0,
        br#"{"temperature": 21.5}"#,
    )
    .await;
    let res = d.incoming().await;
    assert!(
        res.topic
            .starts_with("$iothub/twin/res/204/?$rid=rep1&$version="),
        "{}",
        res.topic
    );
    let version: i64 = res.topic.rsplit('=').next().unwrap().parse().unwrap();
    let r = hub.call(Method::GET, "/twins/d1", None).await;
    assert_eq!(r.body["properties"]["reported"]["temperature"], 21.5);
    assert_eq!(r.body["properties"]["reported"]["$version"], version);

    // Not a JSON object: 400.
    d.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=bad",
        QoS::AtMostOnce,
        0,
        b"[1,2]",
    )
    .await;
    let res = d.incoming().await;
    assert!(
        res.topic.starts_with("$iothub/twin/res/400/?$rid=bad"),
        "{}",
        res.topic
    );

    // The service's desired change arrives as a patch with its version.
    let r = hub
        .call(
            Method::PATCH,
            "/twins/d1",
            Some(json!({"properties": {"desired": {"target": 22, "mode": "eco"}}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let patch = d.incoming().await;
    assert_eq!(
        patch.topic,
        "$iothub/twin/PATCH/properties/desired/?$version=3"
    );
    let body: Value = serde_json::from_slice(&patch.payload).unwrap();
    assert_eq!(body, json!({"target": 22, "mode": "eco", "$version": 3}));
    // A removal comes as null.
    hub.call(
        Method::PATCH,
        "/twins/d1",
        Some(json!({"properties": {"desired": {"mode": null}}})),
    )
    .await;
    let body: Value = serde_json::from_slice(&d.incoming().await.payload).unwrap();
    assert_eq!(body, json!({"mode": null, "$version": 4}));
    // Tags are not the device's business.
    hub.call(Method::PATCH, "/twins/d1", Some(json!({"tags": {"x": 1}})))
        .await;
    assert!(d.next_within(Duration::from_millis(500)).await.is_err());
}

#[tokio::test]
async fn twin_requests_are_throttled_with_the_service() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut d = online(&hub, "d1", &key).await;
    d.subscribe(1, &[("$iothub/twin/res/#", QoS::AtMostOnce)])
        .await;
    hub.emu.set_faults(iothub_emulator::FaultConfig {
        throttle_rate: 1.0,
        ..Default::default()
    });
    d.publish("$iothub/twin/GET/?$rid=1", QoS::AtMostOnce, 0, b"")
        .await;
    assert!(
        d.incoming()
            .await
            .topic
            .starts_with("$iothub/twin/res/429/?$rid=1")
    );
    d.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=2",
        QoS::AtMostOnce,
        0,
        b"{}",
    )
    .await;
    assert!(
        d.incoming()
            .await
            .topic
            .starts_with("$iothub/twin/res/429/?$rid=2")
    );
}

#[tokio::test]
async fn a_will_is_telemetry_when_the_connection_breaks() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let token = device_token(&hub.emu, "devices/d1", &key, now() + 3600);
    let will = |c: &mut Connect| {
        c.last_will = Some(rumqttc::mqttbytes::v4::LastWill::new(
            "devices/d1/messages/events/reason=lost",
            "gone",
            QoS::AtMostOnce,
            false,
        ));
    };
    // A clean DISCONNECT: no will.
    let Packet::Connect(mut c) = connect_packet(&hub.emu, "d1", &token, true) else {
        unreachable!()
    };
    will(&mut c);
    let (mut d, _) = connect_with(tls(&hub.emu).await, Packet::Connect(c.clone())).await;
    d.send(Packet::Disconnect).await;
    assert!(d.closed().await);
    // Dropped: the will is sent.
    let (d, _) = connect_with(tls(&hub.emu).await, Packet::Connect(c)).await;
    drop(d);
    eventually("the will", async || {
        !hub.emu.device_messages(Some("d1"), None).is_empty()
    })
    .await;
    let kept = hub.emu.device_messages(Some("d1"), None);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].body_text(), "gone");
    assert_eq!(kept[0].properties["iothub-MessageType"], "Will");
    assert_eq!(kept[0].properties["reason"], "lost");
}

#[tokio::test]
async fn the_model_id_in_the_username_sets_the_twins_model_id() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let token = device_token(&hub.emu, "devices/d1", &key, now() + 3600);
    let mut c = Connect::new("d1");
    c.set_login(
        format!(
            "{}/d1/?api-version=2021-04-12&model-id=dtmi%3Acom%3Aexample%3AThermostat%3B1",
            hub.emu.host()
        ),
        token,
    );
    let (_d, ack) = connect_with(tls(&hub.emu).await, Packet::Connect(c)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    let r = hub.call(Method::GET, "/twins/d1", None).await;
    assert_eq!(
        r.body["modelId"], "dtmi:com:example:Thermostat;1",
        "{}",
        r.raw
    );
}

async fn invoke(hub: &Hub, path: &str, body: Value) -> crate::hub::Reply {
    hub.call(Method::POST, path, Some(body)).await
}

#[tokio::test]
async fn direct_methods_reach_a_subscribed_device_and_its_answer_returns() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let mut d = online(&hub, "d1", &key).await;
    // Connected but not subscribed: not online for methods.
    let r = invoke(&hub, "/twins/d1/methods", json!({"methodName": "reboot"})).await;
    assert_eq!(r.status, 404, "{}", r.raw);
    assert_eq!(r.error_code(), "DeviceNotOnline");

    d.subscribe(1, &[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    let call = tokio::spawn({
        let url = hub.url("/twins/d1/methods");
        let token = hub.token("iothubowner").await;
        let http = iothub_test_support::emulator::https_client(&hub.emu);
        async move {
            http.post(url)
                .header("authorization", token)
                .json(&json!({"methodName": "reboot", "payload": {"delay": 5}, "responseTimeoutInSeconds": 10}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let request = d.incoming().await;
    assert!(
        request
            .topic
            .starts_with("$iothub/methods/POST/reboot/?$rid="),
        "{}",
        request.topic
    );
    let payload: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(payload, json!({"delay": 5}));
    let rid = request.topic.rsplit('=').next().unwrap().to_owned();
    d.publish(
        &format!("$iothub/methods/res/201/?$rid={rid}"),
        QoS::AtMostOnce,
        0,
        br#"{"rebooting": true}"#,
    )
    .await;
    let result = call.await.unwrap();
    assert_eq!(
        result,
        json!({"status": 201, "payload": {"rebooting": true}})
    );

    // No answer within the response timeout: 504101.
    let r = invoke(
        &hub,
        "/twins/d1/methods",
        json!({"methodName": "slow", "responseTimeoutInSeconds": 5}),
    )
    .await;
    assert_eq!(r.status, 504, "{}", r.raw);
    assert_eq!(r.error_code(), "GatewayTimeout");
    drop(d);
}

#[tokio::test]
async fn a_method_call_waits_for_the_device_to_connect_and_subscribe() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let call = tokio::spawn({
        let url = hub.url("/twins/d1/methods");
        let token = hub.token("iothubowner").await;
        let http = iothub_test_support::emulator::https_client(&hub.emu);
        async move {
            http.post(url)
                .header("authorization", token)
                .json(&json!({"methodName": "m", "connectTimeoutInSeconds": 20}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut d = online(&hub, "d1", &key).await;
    d.subscribe(1, &[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    let request = d.incoming().await;
    let rid = request.topic.rsplit('=').next().unwrap().to_owned();
    d.publish(
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        0,
        b"",
    )
    .await;
    assert_eq!(call.await.unwrap(), json!({"status": 200, "payload": null}));
}

#[tokio::test]
async fn modules_connect_send_telemetry_and_answer_methods() {
    let hub = Hub::start().await;
    create(&hub, "d1").await;
    let r = hub
        .call(
            Method::PUT,
            "/devices/d1/modules/m1",
            Some(json!({"deviceId": "d1", "moduleId": "m1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let key = r.body["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut m = online(&hub, "d1/m1", &key).await;
    assert_eq!(
        connection_state(&hub, "/devices/d1/modules/m1").await,
        "Connected"
    );
    m.publish(
        "devices/d1/modules/m1/messages/events/k=v",
        QoS::AtLeastOnce,
        3,
        b"hi",
    )
    .await;
    assert_eq!(m.expect().await, Packet::PubAck(PubAck::new(3)));
    let kept = hub.emu.device_messages(Some("d1"), Some("m1"));
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].module_id.as_deref(), Some("m1"));
    // Modules get no cloud-to-device subscription.
    let codes = m
        .subscribe(
            1,
            &[
                ("devices/d1/messages/devicebound/#", QoS::AtLeastOnce),
                ("$iothub/methods/POST/#", QoS::AtMostOnce),
                ("$iothub/twin/res/#", QoS::AtMostOnce),
            ],
        )
        .await;
    assert_eq!(codes[0], SubscribeReasonCode::Failure);
    m.publish(
        "$iothub/twin/PATCH/properties/reported/?$rid=1",
        QoS::AtMostOnce,
        0,
        br#"{"fw": "1.0"}"#,
    )
    .await;
    assert!(
        m.incoming()
            .await
            .topic
            .starts_with("$iothub/twin/res/204/")
    );
    let r = hub.call(Method::GET, "/twins/d1/modules/m1", None).await;
    assert_eq!(r.body["properties"]["reported"]["fw"], "1.0", "{}", r.raw);

    let call = tokio::spawn({
        let url = hub.url("/twins/d1/modules/m1/methods");
        let token = hub.token("iothubowner").await;
        let http = iothub_test_support::emulator::https_client(&hub.emu);
        async move {
            http.post(url)
                .header("authorization", token)
                .json(&json!({"methodName": "ping", "payload": 1}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    let request = m.incoming().await;
    let rid = request.topic.rsplit('=').next().unwrap().to_owned();
    m.publish(
        &format!("$iothub/methods/res/200/?$rid={rid}"),
        QoS::AtMostOnce,
        0,
        b"2",
    )
    .await;
    assert_eq!(call.await.unwrap(), json!({"status": 200, "payload": 2}));
    // The device itself is not connected by its module.
    assert_eq!(connection_state(&hub, "/devices/d1").await, "Disconnected");
}

#[tokio::test]
async fn mqtt_over_websockets_on_the_https_port() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let ws = crate::amqp::websocket_with(&hub.emu, "/$iothub/websocket", "mqtt")
        .await
        .unwrap();
    let token = device_token(&hub.emu, "devices/d1", &key, now() + 3600);
    let (mut d, ack) = connect_with(ws, connect_packet(&hub.emu, "d1", &token, true)).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    d.publish(
        "devices/d1/messages/events/",
        QoS::AtLeastOnce,
        9,
        b"over ws",
    )
    .await;
    assert_eq!(d.expect().await, Packet::PubAck(PubAck::new(9)));
    assert_eq!(
        hub.emu.device_messages(Some("d1"), None)[0].body_text(),
        "over ws"
    );
    // The hub answered with the subprotocol asked for.
    assert_eq!(d.io.subprotocol.as_deref(), Some("mqtt"));
    assert_eq!(connection_state(&hub, "/devices/d1").await, "Connected");
}

/// A self-signed client certificate and the rustls client that presents it.
fn x509_client(emu: &Emulator) -> (tokio_rustls::TlsConnector, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["d-x509".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let thumbprint: String = {
        use sha2::Digest as _;
        Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect()
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(
        emu.ca_certificate_pem().unwrap().as_bytes(),
    ) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![der],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (
        tokio_rustls::TlsConnector::from(Arc::new(config)),
        thumbprint,
    )
}

#[tokio::test]
async fn self_signed_x509_devices_connect_by_thumbprint() {
    let hub = Hub::start().await;
    let (connector, thumbprint) = x509_client(&hub.emu);
    let r = hub
        .call(
            Method::PUT,
            "/devices/d-x509",
            Some(json!({
                "deviceId": "d-x509",
                "authentication": {
                    "type": "selfSigned",
                    "x509Thumbprint": {"primaryThumbprint": thumbprint, "secondaryThumbprint": thumbprint}
                }
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let dial_to = async |addr| {
        let tcp = TcpStream::connect(addr).await.unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    };
    let dial = async || dial_to(hub.emu.mqtt_addr()).await;
    let mut c = Connect::new("d-x509");
    c.set_login(username(&hub.emu, "d-x509"), "");
    let (mut d, ack) = connect_with(dial().await, Packet::Connect(c.clone())).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    d.publish(
        "devices/d-x509/messages/events/",
        QoS::AtLeastOnce,
        1,
        b"x509",
    )
    .await;
    assert_eq!(d.expect().await, Packet::PubAck(PubAck::new(1)));
    drop(d);
    // Over WebSockets: the HTTPS listener asks for the certificate too.
    let ws = crate::amqp::websocket_on(
        dial_to(hub.emu.local_addr()).await,
        &hub.emu,
        "/$iothub/websocket",
        "mqtt",
    )
    .await
    .unwrap();
    let (mut d, ack) = connect_with(ws, Packet::Connect(c.clone())).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    d.send(Packet::Disconnect).await;
    // Without a certificate (nor a password): not authorized, over TLS and WebSockets.
    let ws = crate::amqp::websocket_with(&hub.emu, "/$iothub/websocket", "mqtt")
        .await
        .unwrap();
    let (_, ack) = connect_with(ws, Packet::Connect(c.clone())).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    let (_, ack) = connect_with(tls(&hub.emu).await, Packet::Connect(c.clone())).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    // The certificate of another device: not authorized.
    create(&hub, "d-sas").await;
    let mut other = Connect::new("d-sas");
    other.set_login(username(&hub.emu, "d-sas"), "");
    let (_, ack) = connect_with(dial().await, Packet::Connect(other)).await;
    assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
}

#[tokio::test]
async fn a_flood_closes_that_connection_only() {
    let hub = Hub::with(Emulator::builder().mqtt_max_packets_per_second(50)).await;
    let key = create(&hub, "d1").await;
    let key2 = create(&hub, "d2").await;
    let mut calm = online(&hub, "d2", &key2).await;
    let mut d = online(&hub, "d1", &key).await;
    let mut burst = BytesMut::new();
    for _ in 0..200 {
        Packet::PingReq.write(&mut burst, usize::MAX).unwrap();
    }
    d.send_raw(&burst).await;
    assert!(d.closed().await);
    calm.send(Packet::PingReq).await;
    assert_eq!(calm.next().await, Some(Packet::PingResp));
}

#[tokio::test]
async fn many_devices_at_once_each_woken_only_for_its_own_changes() {
    const N: usize = 100;
    let hub = Hub::start().await;
    let mut devices = Vec::new();
    for i in 0..N {
        let id = format!("many-{i}");
        let key = create(&hub, &id).await;
        let mut d = online(&hub, &id, &key).await;
        d.subscribe(
            1,
            &[
                ("$iothub/twin/PATCH/properties/desired/#", QoS::AtMostOnce),
                (
                    &format!("devices/{id}/messages/devicebound/#"),
                    QoS::AtLeastOnce,
                ),
            ],
        )
        .await;
        devices.push(d);
    }
    assert_eq!(hub.emu.mqtt_open_connections(), N);
    let stats = hub.call(Method::GET, "/statistics/service", None).await;
    assert_eq!(stats.body["connectedDeviceCount"], N, "{}", stats.raw);
    // One device's desired change and one message reach that device, and no other.
    hub.call(
        Method::PATCH,
        "/twins/many-7",
        Some(json!({"properties": {"desired": {"x": 1}}})),
    )
    .await;
    send_c2d(&hub, "many-9", "only me", &[]).await;
    let patch = devices[7].incoming().await;
    assert!(
        patch
            .topic
            .starts_with("$iothub/twin/PATCH/properties/desired/")
    );
    let message = devices[9].incoming().await;
    assert_eq!(&message.payload[..], b"only me");
    for (i, d) in devices.iter_mut().enumerate().filter(|(i, _)| *i % 10 == 0) {
        assert!(
            d.next_within(Duration::from_millis(100)).await.is_err(),
            "device {i} got something"
        );
    }
    drop(devices);
    eventually("all disconnected", async || {
        hub.emu.mqtt_open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn clean_session_0_carries_the_subscriptions_of_the_connection_it_replaces() {
    let hub = Hub::start().await;
    let key = create(&hub, "d1").await;
    let (mut first, _) = online_with(&hub, "d1", &key, false).await;
    first
        .subscribe(1, &[("$iothub/methods/POST/#", QoS::AtMostOnce)])
        .await;
    // A reconnect before the hub noticed the first connection was gone.
    let (mut second, ack) = online_with(&hub, "d1", &key, false).await;
    assert!(ack.session_present);
    assert!(first.closed().await);
    let call = tokio::spawn({
        let url = hub.url("/twins/d1/methods");
        let token = hub.token("iothubowner").await;
        let http = iothub_test_support::emulator::https_client(&hub.emu);
        async move {
            http.post(url)
                .header("authorization", token)
                .json(&json!({"methodName": "m", "responseTimeoutInSeconds": 5}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    });
    let request = second.incoming().await;
    let rid = request.topic.rsplit('=').next().unwrap().to_owned();
    second
        .publish(
            &format!("$iothub/methods/res/200/?$rid={rid}"),
            QoS::AtMostOnce,
            0,
            b"{}",
        )
        .await;
    assert_eq!(call.await.unwrap(), 200);
    // CleanSession 1 starts afresh.
    let (_third, ack) = online_with(&hub, "d1", &key, true).await;
    assert!(!ack.session_present);
    let r = invoke(&hub, "/twins/d1/methods", json!({"methodName": "m"})).await;
    assert_eq!(r.status, 404, "{}", r.raw);
}

/// Many distinct devices opening their connections at the same moment (the benchmark's
/// `--mqtt-devices` scenario, which saw some closed before their CONNACK): every one is
/// accepted. On a multi-threaded runtime, where the store's writers and the connections
/// really run in parallel, and with a data directory (a connect is not an fsync).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_devices_connecting_at_once_are_all_accepted() {
    const N: usize = 128;
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    let mut keys = Vec::new();
    for i in 0..N {
        let id = format!("crowd-{i}");
        keys.push((id.clone(), create(&hub, &id).await));
    }
    let emu = Arc::new(hub);
    let mut opening = tokio::task::JoinSet::new();
    for (id, key) in keys {
        let hub = emu.clone();
        opening.spawn(async move {
            let token = device_token(&hub.emu, &format!("devices/{id}"), &key, now() + 3600);
            let mut d = Device {
                io: tls(&hub.emu).await,
                buf: BytesMut::new(),
            };
            d.send(connect_packet(&hub.emu, &id, &token, true)).await;
            match d.next_within(Duration::from_secs(30)).await {
                Ok(Some(Packet::ConnAck(ack))) if ack.code == ConnectReturnCode::Success => Ok(d),
                Ok(Some(other)) => Err(format!("{id}: answered {other:?}")),
                Ok(None) => Err(format!("{id}: closed before its CONNACK")),
                Err(()) => Err(format!("{id}: no CONNACK in 30 s")),
            }
        });
    }
    let started = std::time::Instant::now();
    let mut open = Vec::new();
    let mut failed = Vec::new();
    while let Some(done) = opening.join_next().await {
        match done.unwrap() {
            Ok(d) => open.push(d),
            Err(e) => failed.push(e),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {N} failed: {failed:?}",
        failed.len()
    );
    eprintln!("{N} devices connected in {:?}", started.elapsed());
    assert_eq!(emu.emu.mqtt_open_connections(), N);
    let stats = emu.call(Method::GET, "/statistics/service", None).await;
    assert_eq!(stats.body["connectedDeviceCount"], N, "{}", stats.raw);
}
