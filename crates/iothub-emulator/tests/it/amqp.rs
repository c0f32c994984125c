//! The AMQP endpoint, driven by fe2o3-amqp as a client (and by hand where an SDK does
//! something fe2o3 cannot): authentication the ways the SDKs do it, the outcomes of
//! cloud-to-device sends, feedback and file notifications, expiry, idleness, WebSockets.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use fe2o3_amqp::connection::{ConnectionHandle, OpenError};
use fe2o3_amqp::frames::amqp::{Frame as AmqpFrame, FrameBody};
use fe2o3_amqp::frames::sasl::Frame as SaslFrame;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::transport::Transport;
use fe2o3_amqp::types::definitions::{
    AmqpError, ConnectionError, ErrorCondition, LinkError, ReceiverSettleMode,
};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::performatives::Open;
use fe2o3_amqp::types::primitives::{Binary, SimpleValue, Timestamp, Uuid, Value};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use iothub_auth::{HostName, SasToken, SharedAccessKey};
use iothub_emulator::{Emulator, FaultConfig};
use reqwest::Method;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value as Json, json};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::hub::{Hub, now};

pub(crate) const DEVICEBOUND: &str = "/messages/devicebound";
pub(crate) const SAS_TYPE: &str = "servicebus.windows.net:sastoken";

// ---------------------------------------------------------------------------------------
// Connecting

fn client_tls(emu: &Emulator) -> TlsConnector {
    client_tls_trusting(emu.ca_certificate_pem().unwrap())
}

/// A TLS connector trusting the CA in `ca_pem`.
pub(crate) fn client_tls_trusting(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_to(emu: &Emulator, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    client_tls(emu).connect(name, tcp).await.unwrap()
}

async fn amqps(emu: &Emulator) -> TlsStream<TcpStream> {
    tls_to(emu, emu.amqp_addr().unwrap()).await
}

pub(crate) async fn open_on<Io>(
    io: Io,
    sasl: Option<SaslProfile>,
) -> Result<ConnectionHandle<()>, OpenError>
where
    Io: AsyncRead + AsyncWrite + std::fmt::Debug + Send + Unpin + 'static,
{
    let mut builder = Connection::builder()
        .container_id("emulator-test")
        .hostname("localhost");
    if let Some(profile) = sasl {
        builder = builder.sasl_profile(profile);
    }
    builder.open_with_stream(io).await
}

async fn open(emu: &Emulator, sasl: Option<SaslProfile>) -> ConnectionHandle<()> {
    open_on(amqps(emu).await, sasl).await.unwrap()
}

/// A SAS token for `policy` as the SDKs put it on `$cbs`.
fn sas(emu: &Emulator, policy: &str, expiry: u64) -> String {
    let p = emu.policies().iter().find(|p| p.name == policy).unwrap();
    let host: HostName = emu.host().parse().unwrap();
    let key = SharedAccessKey::new(&p.primary_key).unwrap();
    SasToken::for_amqp(&host, policy, &key, expiry)
        .as_secret()
        .expose_secret()
        .to_owned()
}

fn owner_token(emu: &Emulator) -> String {
    sas(emu, "iothubowner", now() + 3600)
}

/// The two `$cbs` links of a session.
pub(crate) struct Cbs {
    sender: Sender,
    receiver: Receiver,
}

pub(crate) struct CbsReply {
    pub(crate) status: Option<SimpleValue>,
    pub(crate) description: Option<String>,
    correlation_id: Option<MessageId>,
}

impl Cbs {
    pub(crate) async fn attach(session: &mut SessionHandle<()>) -> Self {
        let sender = Sender::attach(session, "cbs-sender", "$cbs").await.unwrap();
        let receiver = Receiver::builder()
            .name("cbs-receiver")
            .source("$cbs")
            .target("cbs")
            .attach(session)
            .await
            .unwrap();
        Self { sender, receiver }
    }

    pub(crate) async fn put_token(&mut self, id: MessageId, kind: &str, token: &str) -> CbsReply {
        let request = Message::builder()
            .properties(
                Properties::builder()
                    .message_id(id)
                    .reply_to("cbs")
                    .to("$cbs")
                    .build(),
            )
            .application_properties(
                ApplicationProperties::builder()
                    .insert("operation", "put-token")
                    .insert("type", kind)
                    .insert("name", "localhost")
                    .build(),
            )
            .value(token.to_owned())
            .build();
        let outcome = self.sender.send(request).await.unwrap();
        assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
        let reply =
            tokio::time::timeout(Duration::from_secs(5), self.receiver.recv::<Body<Value>>())
                .await
                .expect("a $cbs reply")
                .unwrap();
        self.receiver.accept(&reply).await.unwrap();
        let message = reply.message();
        let prop = |name: &str| {
            message
                .application_properties
                .as_ref()
                .and_then(|p| p.0.get(name).cloned())
        };
        CbsReply {
            status: prop("status-code"),
            description: match prop("status-description") {
                Some(SimpleValue::String(s)) => Some(s),
                _ => None,
            },
            correlation_id: message
                .properties
                .as_ref()
                .and_then(|p| p.correlation_id.clone()),
        }
    }

    /// Attaches and puts the owner's token. Keep the links until the connection is closed:
    /// fe2o3 fails its own `close` when the answer to a detach crosses it.
    async fn authorized(session: &mut SessionHandle<()>, emu: &Emulator) -> Self {
        let mut cbs = Self::attach(session).await;
        let id = MessageId::String("auth".into());
        let reply = cbs.put_token(id, SAS_TYPE, &owner_token(emu)).await;
        assert_eq!(reply.status, Some(SimpleValue::Int(200)));
        cbs
    }
}

/// A session with a sender on `/messages/devicebound`.
async fn c2d_sender(connection: &mut ConnectionHandle<()>) -> (SessionHandle<()>, Sender) {
    let mut session = Session::begin(connection).await.unwrap();
    let sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    (session, sender)
}

fn c2d(to: &str, body: &[u8]) -> Message<Data> {
    Message::builder()
        .properties(
            Properties::builder()
                .to(to.to_owned())
                .message_id(String::from("m"))
                .build(),
        )
        .data(Binary::from(body.to_vec()))
        .build()
}

/// A message to a device with its own id, asking for `ack` feedback.
pub(crate) fn acked(device: &str, body: &[u8], id: &str, ack: &str) -> Message<Data> {
    let mut message = c2d(&to(device), body);
    message.properties.as_mut().unwrap().message_id = Some(MessageId::String(id.into()));
    message.application_properties = Some(
        ApplicationProperties::builder()
            .insert("iothub-ack", ack)
            .build(),
    );
    message
}

fn to(device: &str) -> String {
    format!("/devices/{device}/messages/devicebound")
}

/// The rejection condition of an outcome, or None when it was accepted.
pub(crate) fn rejection(outcome: &Outcome) -> Option<ErrorCondition> {
    match outcome {
        Outcome::Accepted(_) => None,
        Outcome::Rejected(r) => Some(
            r.error
                .as_ref()
                .map(|e| e.condition.clone())
                .expect("a rejection carries an error"),
        ),
        other => panic!("unexpected outcome {other:?}"),
    }
}

async fn send(sender: &mut Sender, message: Message<Data>) -> Option<ErrorCondition> {
    rejection(&sender.send(message).await.unwrap())
}

const NOT_FOUND: ErrorCondition = ErrorCondition::AmqpError(AmqpError::NotFound);
const UNAUTHORIZED: ErrorCondition = ErrorCondition::AmqpError(AmqpError::UnauthorizedAccess);

// ---------------------------------------------------------------------------------------
// Authentication

#[tokio::test]
async fn without_sasl_a_put_token_answers_200_and_sends_are_accepted() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let mut connection = open(&hub.emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;

    // The reply correlates whatever the request id's type: a string (Node) or ulong (uamqp).
    for id in [MessageId::String("req-1".into()), MessageId::Ulong(0)] {
        let reply = cbs
            .put_token(id.clone(), SAS_TYPE, &owner_token(&hub.emu))
            .await;
        assert_eq!(reply.status, Some(SimpleValue::Int(200)));
        assert_eq!(reply.description.as_deref(), Some("OK"));
        assert_eq!(reply.correlation_id, Some(id));
    }

    let (_s, mut sender) = c2d_sender(&mut connection).await;
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"hello")).await, None);
    let accepted = hub.emu.c2d_messages();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].device_id, "dev1");
    assert_eq!(accepted[0].body, b"hello");
    assert_eq!(hub.emu.c2d_pending("dev1", None), 1);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn sasl_anonymous_then_cbs_with_the_csharp_token_type() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let mut connection = open(&hub.emu, Some(SaslProfile::Anonymous)).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let id = MessageId::Uuid(Uuid::from([7; 16]));
    let reply = cbs
        .put_token(
            id.clone(),
            "azure-devices.net:sastoken",
            &owner_token(&hub.emu),
        )
        .await;
    assert_eq!(reply.status, Some(SimpleValue::Int(200)));
    assert_eq!(reply.correlation_id, Some(id));
    // Target spelled as C# v1 does.
    let mut sender = Sender::attach(
        &mut session,
        "c2d",
        "amqps://localhost:5671/messages/deviceBound",
    )
    .await
    .unwrap();
    let to = "/devices/dev1/messages/deviceBound";
    assert_eq!(send(&mut sender, c2d(to, b"x")).await, None);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn sasl_plain_with_a_sas_password_authenticates_the_connection() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let plain = |user: &str, password: String| SaslProfile::Plain {
        username: user.to_owned(),
        password,
    };
    let token = owner_token(&hub.emu);
    let mut connection = open(
        &hub.emu,
        Some(plain("iothubowner@sas.root.emulator", token.clone())),
    )
    .await;
    let (_s, mut sender) = c2d_sender(&mut connection).await;
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    connection.close().await.unwrap();

    // A bad signature, another hub, a policy other than the token's, a device identity.
    let forged = token.replace("sig=", "sig=AAAA");
    for (user, password) in [
        ("iothubowner@sas.root.emulator", forged),
        ("iothubowner@sas.root.otherhub", token.clone()),
        ("service@sas.root.emulator", token.clone()),
        ("dev1@sas.emulator", token.clone()),
    ] {
        let refused = open_on(amqps(&hub.emu).await, Some(plain(user, password))).await;
        assert!(
            matches!(
                refused,
                Err(OpenError::SaslError {
                    code: SaslCode::Auth,
                    ..
                })
            ),
            "{user}: {refused:?}"
        );
    }
}

/// uamqp (the Python SDK) insists on MSSBCBS, which fe2o3 cannot send: do SASL by hand,
/// then continue on the same stream with fe2o3 and CBS.
#[tokio::test]
async fn mssbcbs_is_offered_and_leads_to_cbs() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let mut stream = amqps(&hub.emu).await;
    stream.write_all(b"AMQP\x03\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(&header, b"AMQP\x03\x01\x00\x00");
    let mut sasl = Transport::<_, SaslFrame>::bind(stream, 512, None);
    let Some(Ok(SaslFrame::Mechanisms(offered))) = sasl.next().await else {
        panic!("expected sasl-mechanisms");
    };
    let offered: Vec<&str> = offered
        .sasl_server_mechanisms
        .0
        .iter()
        .map(|m| m.as_str())
        .collect();
    assert_eq!(offered, ["MSSBCBS", "PLAIN", "ANONYMOUS"]);
    let init = SaslInit {
        mechanism: "MSSBCBS".into(),
        initial_response: None,
        hostname: Some("localhost".into()),
    };
    sasl.send(SaslFrame::Init(init)).await.unwrap();
    let Some(Ok(SaslFrame::Outcome(outcome))) = sasl.next().await else {
        panic!("expected sasl-outcome");
    };
    assert_eq!(outcome.code, SaslCode::Ok);
    // The hub sends its AMQP header right after the outcome: keep what was read ahead.
    let (write, read) = sasl.into_framed_codec();
    let read_ahead = read.read_buffer().to_vec();
    let stream = tokio::io::join(
        io::Cursor::new(read_ahead).chain(read.into_inner()),
        write.into_inner(),
    );

    let mut connection = open_on(stream, None).await.unwrap();
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), b"x")).await,
        Some(UNAUTHORIZED)
    );
    let _cbs = Cbs::authorized(&mut session, &hub.emu).await;
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn a_bad_token_answers_401_and_leaves_sends_unauthorized() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let mut connection = open(&hub.emu, Some(SaslProfile::Anonymous)).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    // Before any token.
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), b"x")).await,
        Some(UNAUTHORIZED)
    );

    let mut cbs = Cbs::attach(&mut session).await;
    let expired = sas(&hub.emu, "iothubowner", now() - 10);
    let forged = owner_token(&hub.emu).replace("sig=", "sig=AAAA");
    // registryRead lacks ServiceConnect.
    let weak = sas(&hub.emu, "registryRead", now() + 3600);
    for token in [expired, forged, weak, "not a token".to_owned()] {
        let reply = cbs.put_token(MessageId::Ulong(1), SAS_TYPE, &token).await;
        assert_eq!(reply.status, Some(SimpleValue::Int(401)), "{token}");
        assert!(
            reply
                .description
                .is_some_and(|d| d.starts_with("Unauthorized"))
        );
        assert_eq!(reply.correlation_id, Some(MessageId::Ulong(1)));
    }
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), b"x")).await,
        Some(UNAUTHORIZED)
    );
    assert!(hub.emu.c2d_messages().is_empty());
    connection.close().await.unwrap();
}

#[tokio::test]
async fn a_bearer_token_is_checked_like_the_rest_api_does() {
    let hub = Hub::with(Emulator::builder().bearer_token("jwt-for-tests")).await;
    hub.create("dev1").await;
    let mut connection = open(&hub.emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let reply = cbs
        .put_token(MessageId::Ulong(1), "bearer", "Bearer wrong")
        .await;
    assert_eq!(reply.status, Some(SimpleValue::Int(401)));
    let reply = cbs
        .put_token(MessageId::Ulong(2), "Bearer", "Bearer jwt-for-tests")
        .await;
    assert_eq!(reply.status, Some(SimpleValue::Int(200)));
    let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    connection.close().await.unwrap();
}

/// A connection whose `$cbs` got `token` as `type`; the put-token's status.
async fn put_on_new_connection(
    emu: &Emulator,
    kind: &str,
    token: &str,
) -> (i32, String, ConnectionHandle<()>, (SessionHandle<()>, Cbs)) {
    let mut connection = open(emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let reply = cbs.put_token(MessageId::Ulong(0), kind, token).await;
    let Some(SimpleValue::Int(status)) = reply.status else {
        panic!("no status: {:?}", reply.status);
    };
    (
        status,
        reply.description.unwrap_or_default(),
        connection,
        (session, cbs),
    )
}

#[tokio::test]
async fn entra_tokens_on_cbs_allow_what_the_principals_roles_allow() {
    let hub = Hub::with(crate::entra::with_clients(Emulator::builder())).await;
    hub.create("dev1").await;
    let token = |client| crate::entra::token_for(&hub, client);

    // Data Contributor: as uamqp and iothub-amqp put it, and as a bare `jwt`.
    let contributor = token("contributor").await;
    for (kind, value) in [
        ("bearer", format!("Bearer {contributor}")),
        ("jwt", contributor.clone()),
    ] {
        let (status, _, mut connection, (mut session, _cbs)) =
            put_on_new_connection(&hub.emu, kind, &value).await;
        assert_eq!(status, 200, "{kind}");
        let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
            .await
            .unwrap();
        assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
        connection.close().await.unwrap();
    }

    // Data Reader: file-upload notifications only, so the token is taken but sends are not.
    let reader = format!("Bearer {}", token("reader").await);
    let (status, _, mut connection, (mut session, _cbs)) =
        put_on_new_connection(&hub.emu, "bearer", &reader).await;
    assert_eq!(status, 200);
    let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), b"x")).await,
        Some(UNAUTHORIZED)
    );
    connection.close().await.unwrap();

    // Registry Contributor: nothing AMQP carries.
    let registry = format!("Bearer {}", token("registry").await);
    let (status, description, mut connection, _links) =
        put_on_new_connection(&hub.emu, "bearer", &registry).await;
    assert_eq!(status, 401);
    assert!(description.contains("role assignments"), "{description}");
    connection.close().await.unwrap();

    // Another emulator's token, same tenant and client.
    let other = Hub::with(crate::entra::with_clients(Emulator::builder())).await;
    let foreign = format!(
        "Bearer {}",
        crate::entra::token_for(&other, "contributor").await
    );
    let (status, _, mut connection, _links) =
        put_on_new_connection(&hub.emu, "bearer", &foreign).await;
    assert_eq!(status, 401);
    connection.close().await.unwrap();
    assert_eq!(hub.emu.c2d_messages().len(), 2);
}

#[tokio::test]
async fn an_expired_entra_token_is_refused_on_cbs_and_closes_the_connection_it_opened() {
    let hub = Hub::with(
        crate::entra::with_clients(Emulator::builder())
            .entra_token_lifetime(Duration::from_secs(2)),
    )
    .await;
    let token = format!(
        "Bearer {}",
        crate::entra::token_for(&hub, "contributor").await
    );
    let (status, _, mut connection, _links) =
        put_on_new_connection(&hub.emu, "bearer", &token).await;
    assert_eq!(status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.on_close())
        .await
        .expect("closed by the hub at the token's exp");
    match closed {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => {
            assert_eq!(e.condition, UNAUTHORIZED);
        }
        other => panic!("expected a close with unauthorized-access, got {other:?}"),
    }
    let (status, description, mut connection, _links) =
        put_on_new_connection(&hub.emu, "bearer", &token).await;
    assert_eq!(status, 401);
    assert!(description.contains("expired"), "{description}");
    connection.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Cloud-to-device outcomes

/// An authorized connection and a cloud-to-device sender, with the session and the `$cbs`
/// links to keep until the connection is closed.
pub(crate) async fn authorized_sender(
    hub: &Hub,
) -> (ConnectionHandle<()>, (SessionHandle<()>, Cbs), Sender) {
    let mut connection = open(&hub.emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let cbs = Cbs::authorized(&mut session, &hub.emu).await;
    let sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    (connection, (session, cbs), sender)
}

#[tokio::test]
async fn recipients_are_devices_and_modules_that_exist() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let module = hub
        .call(
            Method::PUT,
            "/devices/dev1/modules/mod1",
            Some(json!({"deviceId": "dev1", "moduleId": "mod1"})),
        )
        .await;
    assert_eq!(module.status, 200, "{}", module.raw);
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;

    assert_eq!(
        send(&mut sender, c2d(&to("nosuch"), b"x")).await,
        Some(NOT_FOUND)
    );
    let module_to = "/devices/dev1/modules/mod1/messages/deviceBound";
    assert_eq!(send(&mut sender, c2d(module_to, b"m")).await, None);
    let other_module = "/devices/dev1/modules/nosuch/messages/devicebound";
    assert_eq!(
        send(&mut sender, c2d(other_module, b"x")).await,
        Some(NOT_FOUND)
    );
    assert_eq!(
        send(&mut sender, c2d("/devices/dev1/messages/events", b"x")).await,
        Some(NOT_FOUND)
    );

    let accepted = hub.emu.c2d_messages();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].module_id.as_deref(), Some("mod1"));
    assert_eq!(hub.emu.c2d_pending("dev1", Some("mod1")), 1);
    assert_eq!(hub.emu.c2d_pending("dev1", None), 0);

    // Links to anything else are attached and closed with amqp:not-found.
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut stray = Sender::attach(&mut session, "stray", "/messages/events")
        .await
        .unwrap();
    let detached = tokio::time::timeout(Duration::from_secs(5), stray.on_detach())
        .await
        .unwrap();
    assert!(format!("{detached:?}").contains("NotFound"), "{detached:?}");
    connection.close().await.unwrap();
}

#[tokio::test]
async fn the_51st_waiting_message_is_refused_with_resource_limit_exceeded() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    for _ in 0..50 {
        assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    }
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), b"x")).await,
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
    );
    assert_eq!(hub.emu.c2d_pending("dev1", None), 50);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn injected_throttling_rejects_as_the_hub_throttles() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    hub.emu.set_faults(FaultConfig {
        throttle_rate: 1.0,
        ..FaultConfig::default()
    });
    let throttled = ErrorCondition::Custom("com.microsoft:device-container-throttled".into());
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), b"x")).await,
        Some(throttled)
    );
    assert_eq!(hub.emu.fault_stats().throttled, 1);
    hub.emu.set_faults(FaultConfig::default());
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    assert_eq!(hub.emu.c2d_pending("dev1", None), 1);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn bodies_over_64_kb_are_refused_with_message_size_exceeded() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    let limit = 64 * 1024;
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), &vec![1; limit])).await,
        None
    );
    assert_eq!(
        send(&mut sender, c2d(&to("dev1"), &vec![1; limit + 1])).await,
        Some(ErrorCondition::LinkError(LinkError::MessageSizeExceeded))
    );
    assert_eq!(hub.emu.c2d_pending("dev1", None), 1);
    connection.close().await.unwrap();
}

#[tokio::test]
async fn message_properties_land_in_the_queue() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    let expiry = chrono::Utc::now().timestamp_millis() + 60_000;
    let message = Message::builder()
        .properties(
            Properties::builder()
                .to(to("dev1"))
                .message_id(MessageId::Uuid(Uuid::from([0xab; 16])))
                .correlation_id(MessageId::Ulong(42))
                .user_id(Binary::from(b"svc".to_vec()))
                .content_type("application/json")
                .content_encoding("utf-8")
                .absolute_expiry_time(Timestamp::from_milliseconds(expiry))
                .build(),
        )
        .application_properties(
            ApplicationProperties::builder()
                .insert("iothub-ack", "full")
                .insert("color", "red")
                .insert("count", SimpleValue::Long(3))
                .build(),
        )
        .data_batch(vec![
            Data(Binary::from(b"{\"a\":".to_vec())),
            Data(Binary::from(b"1}".to_vec())),
        ])
        .build();
    assert_eq!(rejection(&sender.send(message).await.unwrap()), None);
    // proton sends bytes as an AmqpValue(binary) body.
    let value = Message::builder()
        .properties(Properties::builder().to(to("dev1")).build())
        .body(AmqpValue(Value::Binary(vec![9, 8].into())))
        .build();
    assert_eq!(rejection(&sender.send(value).await.unwrap()), None);

    let accepted = hub.emu.c2d_messages();
    let m = &accepted[0];
    assert_eq!(
        m.message_id.as_deref(),
        Some("abababab-abab-abab-abab-abababababab")
    );
    assert_eq!(m.correlation_id.as_deref(), Some("42"));
    assert_eq!(m.user_id.as_deref(), Some("svc"));
    assert_eq!(m.to.as_deref(), Some("/devices/dev1/messages/devicebound"));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(m.absolute_expiry_time, Some(expiry));
    assert_eq!(m.ack(), "full");
    assert_eq!(m.application_properties["color"], json!("red"));
    assert_eq!(m.application_properties["count"], json!(3));
    assert_eq!(m.body, b"{\"a\":1}");
    assert!(!m.enqueued_time.is_empty());
    assert_eq!(accepted[1].body, [9, 8]);
    assert_eq!(accepted[1].message_id, None);
    connection.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Feedback and file notifications

pub(crate) async fn next_json(
    receiver: &mut Receiver,
) -> (fe2o3_amqp::Delivery<Body<Value>>, Json) {
    let delivery = tokio::time::timeout(Duration::from_secs(5), receiver.recv::<Body<Value>>())
        .await
        .expect("a message from the hub")
        .unwrap();
    let Body::Data(sections) = delivery.body() else {
        panic!("a Data body: {:?}", delivery.body());
    };
    let bytes: Vec<u8> = sections.iter().flat_map(|d| d.0.to_vec()).collect();
    let json = serde_json::from_slice(&bytes).unwrap();
    (delivery, json)
}

fn content_type(delivery: &fe2o3_amqp::Delivery<Body<Value>>) -> String {
    let properties = delivery.message().properties.as_ref().unwrap();
    properties
        .content_type
        .as_ref()
        .unwrap()
        .as_str()
        .to_owned()
}

#[tokio::test]
async fn feedback_comes_back_in_batches_and_released_batches_come_again() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let (mut connection, (mut session, _cbs), mut sender) = authorized_sender(&hub).await;
    let message = acked("dev1", b"x", "fb-1", "full");
    assert_eq!(rejection(&sender.send(message).await.unwrap()), None);

    // The device completes it.
    let received = hub.emu.receive_c2d("dev1", None).unwrap();
    assert!(hub.emu.complete_c2d(&received.lock_token));

    let mut feedback = Receiver::attach(&mut session, "fb", "/messages/serviceBound/feedback")
        .await
        .unwrap();
    let (delivery, batch) = next_json(&mut feedback).await;
    assert_eq!(
        content_type(&delivery),
        "application/vnd.microsoft.iothub.feedback.json"
    );
    let properties = delivery.message().properties.as_ref().unwrap();
    assert_eq!(
        properties.user_id.as_ref().map(|u| u.as_slice()),
        Some(b"emulator".as_slice())
    );
    assert!(properties.message_id.is_some());
    let annotations = delivery.message().message_annotations.as_ref().unwrap();
    assert!(format!("{annotations:?}").contains("iothub-enqueuedtime"));
    assert_eq!(batch[0]["originalMessageId"], "fb-1");
    assert_eq!(batch[0]["statusCode"], "Success");
    assert_eq!(batch[0]["deviceId"], "dev1");
    assert_eq!(batch.as_array().unwrap().len(), 1);

    // Released: the same batch comes again; accepted: it is gone.
    feedback.release(&delivery).await.unwrap();
    let (again, batch_again) = next_json(&mut feedback).await;
    assert_eq!(batch_again, batch);
    feedback.accept(&again).await.unwrap();
    let nothing =
        tokio::time::timeout(Duration::from_millis(500), feedback.recv::<Body<Value>>()).await;
    assert!(nothing.is_err(), "nothing more");

    // A batch taken by a receiver that goes away is not lost either.
    hub.emu.clear_c2d_messages();
    let message = acked("dev1", b"y", "fb-2", "negative");
    assert_eq!(rejection(&sender.send(message).await.unwrap()), None);
    let received = hub.emu.receive_c2d("dev1", None).unwrap();
    assert!(hub.emu.reject_c2d(&received.lock_token));
    let (unsettled, first) = next_json(&mut feedback).await;
    assert_eq!(first[0]["statusCode"], "Rejected");
    drop(unsettled);
    feedback.close().await.unwrap();
    let mut second = Receiver::attach(&mut session, "fb2", "/messages/servicebound/feedback")
        .await
        .unwrap();
    let (delivery, again) = next_json(&mut second).await;
    assert_eq!(again[0]["originalMessageId"], "fb-2");
    second.accept(&delivery).await.unwrap();
    connection.close().await.unwrap();
}

#[tokio::test]
async fn file_upload_notifications_arrive_one_per_message() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let mut connection = open(&hub.emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    // Settling second, as uamqp receivers ask to.
    let mut files = Receiver::builder()
        .name("files")
        .source("/messages/serviceBound/filenotifications")
        .receiver_settle_mode(ReceiverSettleMode::Second)
        .attach(&mut session)
        .await
        .unwrap();
    hub.emu.notify_file_upload("dev1", "a.txt", 42).unwrap();
    // Nothing before the connection is authorized.
    let early = tokio::time::timeout(Duration::from_millis(300), files.recv::<Body<Value>>()).await;
    assert!(early.is_err(), "no notification before a token");
    let _cbs = Cbs::authorized(&mut session, &hub.emu).await;

    let (delivery, notification) = next_json(&mut files).await;
    assert_eq!(
        content_type(&delivery),
        "application/vnd.microsoft.iothub.filenotification.json"
    );
    assert_eq!(notification["deviceId"], "dev1");
    assert_eq!(notification["blobName"], "dev1/a.txt");
    assert_eq!(notification["blobSizeInBytes"], 42);
    files.accept(&delivery).await.unwrap();
    connection.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Connection lifetime

#[tokio::test]
async fn a_connection_whose_token_expires_unrenewed_is_closed() {
    let hub = Hub::start().await;
    let mut connection = open(&hub.emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let short = sas(&hub.emu, "iothubowner", now() + 2);
    let reply = cbs.put_token(MessageId::Ulong(0), SAS_TYPE, &short).await;
    assert_eq!(reply.status, Some(SimpleValue::Int(200)));
    let closed = tokio::time::timeout(Duration::from_secs(5), connection.on_close())
        .await
        .expect("closed by the hub");
    match closed {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => {
            assert_eq!(e.condition, UNAUTHORIZED);
        }
        other => panic!("expected a close with unauthorized-access, got {other:?}"),
    }
}

#[tokio::test]
async fn renewing_the_token_keeps_the_connection() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    let mut connection = open(&hub.emu, None).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut cbs = Cbs::attach(&mut session).await;
    let short = sas(&hub.emu, "iothubowner", now() + 2);
    cbs.put_token(MessageId::Ulong(0), SAS_TYPE, &short).await;
    cbs.put_token(MessageId::Ulong(1), SAS_TYPE, &owner_token(&hub.emu))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    connection.close().await.unwrap();
}

/// A client that sends the header and `open`, then nothing, not even heartbeats.
#[tokio::test]
async fn silent_connections_are_closed_after_the_idle_timeout_but_heartbeats_keep_them() {
    let hub = Hub::with(Emulator::builder().amqp_idle_timeout(Duration::from_secs(1))).await;
    hub.create("dev1").await;

    // fe2o3 sends empty frames at the advertised half of the limit.
    let mut alive = open(&hub.emu, None).await;

    let mut stream = amqps(&hub.emu).await;
    stream.write_all(b"AMQP\x00\x01\x00\x00").await.unwrap();
    let mut header = [0u8; 8];
    stream.read_exact(&mut header).await.unwrap();
    assert_eq!(&header, b"AMQP\x00\x01\x00\x00");
    let mut raw = Transport::<_, AmqpFrame>::bind(stream, 64 * 1024, None);
    let open = Open {
        container_id: "silent".into(),
        hostname: Some("localhost".into()),
        max_frame_size: Default::default(),
        channel_max: Default::default(),
        idle_time_out: None,
        outgoing_locales: None,
        incoming_locales: None,
        offered_capabilities: None,
        desired_capabilities: None,
        properties: None,
    };
    raw.send(AmqpFrame::new(0u16, FrameBody::Open(open)))
        .await
        .unwrap();
    let start = Instant::now();
    let Some(Ok(frame)) = raw.next().await else {
        panic!("expected open");
    };
    let FrameBody::Open(theirs) = frame.body() else {
        panic!("expected open");
    };
    assert_eq!(
        theirs.idle_time_out,
        Some(500),
        "half the limit is advertised"
    );
    let close = tokio::time::timeout(Duration::from_secs(5), raw.next())
        .await
        .expect("closed by the hub");
    let elapsed = start.elapsed();
    let Some(Ok(frame)) = close else {
        panic!("expected close, got {close:?}");
    };
    let FrameBody::Close(close) = frame.body() else {
        panic!("expected close");
    };
    let error = close.error.as_ref().unwrap();
    assert_eq!(
        error.condition,
        ErrorCondition::ConnectionError(ConnectionError::ConnectionForced)
    );
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");

    // Meanwhile the heartbeating connection stayed open past the limit and still works.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut session = Session::begin(&mut alive).await.unwrap();
    let _cbs = Cbs::authorized(&mut session, &hub.emu).await;
    let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
        .await
        .unwrap();
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    alive.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// Limits: what a connection may hold, and how much the hub keeps

/// Waits (at most 10 s) until `done` holds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Nothing the emulator counts as open is left.
async fn all_freed(emu: &Emulator) {
    eventually("every connection, session and link freed", || {
        (
            emu.amqp_open_connections(),
            emu.amqp_open_sessions(),
            emu.amqp_open_links(),
        ) == (0, 0, 0)
    })
    .await;
}

async fn closed_with(connection: &mut ConnectionHandle<()>) -> ErrorCondition {
    let closed = tokio::time::timeout(Duration::from_secs(10), connection.on_close())
        .await
        .expect("closed by the hub");
    match closed {
        Err(fe2o3_amqp::connection::Error::RemoteClosedWithError(e)) => e.condition,
        other => panic!("expected a close with an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_connection_without_a_token_is_closed_at_the_deadline_and_freed() {
    let hub = Hub::with(Emulator::builder().amqp_auth_timeout(Duration::from_secs(1))).await;
    // Heartbeats (fe2o3 sends them) keep it from idling out; links do not authenticate it.
    let mut connection = open(&hub.emu, Some(SaslProfile::Anonymous)).await;
    let mut session = Session::begin(&mut connection).await.unwrap();
    let mut links = Vec::new();
    for i in 0..3 {
        links.push(
            Sender::attach(&mut session, format!("l{i}"), DEVICEBOUND)
                .await
                .unwrap(),
        );
    }
    assert!(hub.emu.amqp_open_links() >= 3);
    assert_eq!(hub.emu.amqp_open_connections(), 1);
    assert_eq!(closed_with(&mut connection).await, UNAUTHORIZED);
    all_freed(&hub.emu).await;

    // With a token in time, the deadline does not apply.
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    hub.create("dev1").await;
    assert_eq!(send(&mut sender, c2d(&to("dev1"), b"x")).await, None);
    connection.close().await.unwrap();
    all_freed(&hub.emu).await;
}

#[tokio::test]
async fn one_link_or_session_too_many_closes_the_connection() {
    let hub = Hub::with(
        Emulator::builder()
            .amqp_max_links_per_connection(4)
            .amqp_max_sessions_per_connection(2),
    )
    .await;
    // $cbs (two links) and the sender: three links, then one more is allowed.
    let (mut connection, (mut session, _cbs), _sender) = authorized_sender(&hub).await;
    let _fourth = Sender::attach(&mut session, "fourth", DEVICEBOUND)
        .await
        .unwrap();
    let fifth = tokio::time::timeout(
        Duration::from_secs(10),
        Sender::attach(&mut session, "fifth", DEVICEBOUND),
    )
    .await
    .expect("the attach is answered or the connection closed");
    assert!(fifth.is_err(), "a fifth link is not attached");
    assert_eq!(
        closed_with(&mut connection).await,
        ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)
    );
    all_freed(&hub.emu).await;

    let mut connection = open(&hub.emu, None).await;
    let _one = Session::begin(&mut connection).await.unwrap();
    let _two = Session::begin(&mut connection).await.unwrap();
    let _three = tokio::time::timeout(Duration::from_secs(10), Session::begin(&mut connection))
        .await
        .expect("the begin is answered or the connection closed");
    assert_eq!(
        closed_with(&mut connection).await,
        ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded)
    );
    all_freed(&hub.emu).await;
}

#[tokio::test]
async fn the_queues_together_hold_at_most_their_byte_budget() {
    let hub = Hub::with(Emulator::builder().c2d_max_total_bytes(100_000)).await;
    for d in ["d1", "d2"] {
        hub.create(d).await;
    }
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    let body = vec![7u8; 60_000];
    assert_eq!(send(&mut sender, c2d(&to("d1"), &body)).await, None);
    // Another device, its own queue empty: the hub's budget is spent all the same.
    assert_eq!(
        send(&mut sender, c2d(&to("d2"), &body)).await,
        Some(ErrorCondition::AmqpError(AmqpError::ResourceLimitExceeded))
    );
    assert_eq!(hub.emu.c2d_pending("d2", None), 0);
    // Once d1's message is done, there is room again.
    let received = hub.emu.receive_c2d("d1", None).unwrap();
    assert!(hub.emu.complete_c2d(&received.lock_token));
    assert_eq!(send(&mut sender, c2d(&to("d2"), &body)).await, None);
    // The record of accepted messages keeps within the budget too.
    let kept: usize = hub.emu.c2d_messages().iter().map(|m| m.body.len()).sum();
    assert!(kept <= 100_000, "{kept}");
    connection.close().await.unwrap();
}

#[tokio::test]
async fn feedback_nobody_receives_expires() {
    let hub = Hub::with(Emulator::builder().feedback_ttl(Duration::from_secs(1))).await;
    hub.create("dev1").await;
    let (mut connection, _links, mut sender) = authorized_sender(&hub).await;
    let message = acked("dev1", b"x", "fb-ttl", "full");
    assert_eq!(rejection(&sender.send(message).await.unwrap()), None);
    let received = hub.emu.receive_c2d("dev1", None).unwrap();
    assert!(hub.emu.complete_c2d(&received.lock_token));
    assert_eq!(hub.emu.feedback_pending(), 1);
    eventually("the feedback record expired", || {
        hub.emu.feedback_pending() == 0
    })
    .await;
    connection.close().await.unwrap();
}

#[tokio::test]
async fn feedback_is_offered_again_after_its_lock_and_at_most_max_delivery_count_times() {
    let hub = Hub::with(
        Emulator::builder()
            .feedback_lock_duration(Duration::from_secs(1))
            .feedback_max_delivery_count(2),
    )
    .await;
    hub.create("dev1").await;
    let (mut connection, (mut session, _cbs), mut sender) = authorized_sender(&hub).await;
    let message = acked("dev1", b"x", "fb-lock", "full");
    assert_eq!(rejection(&sender.send(message).await.unwrap()), None);
    let received = hub.emu.receive_c2d("dev1", None).unwrap();
    assert!(hub.emu.complete_c2d(&received.lock_token));

    let mut feedback = Receiver::attach(&mut session, "fb", "/messages/serviceBound/feedback")
        .await
        .unwrap();
    // Not settled: after the lock duration it comes again on the same link.
    let (first, batch) = next_json(&mut feedback).await;
    assert_eq!(batch[0]["originalMessageId"], "fb-lock");
    let (second, again) = next_json(&mut feedback).await;
    assert_eq!(again, batch);
    // Offered twice, the maximum: it is gone.
    eventually("the record was dropped after its deliveries", || {
        hub.emu.feedback_pending() == 0
    })
    .await;
    let third =
        tokio::time::timeout(Duration::from_millis(2500), feedback.recv::<Body<Value>>()).await;
    assert!(third.is_err(), "no third delivery");
    drop((first, second));
    connection.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------
// WebSockets

/// A WebSocket as a byte stream, as the SDKs' transports do it.
pub(crate) struct WsIo<S> {
    ws: tokio_tungstenite::WebSocketStream<S>,
    pending: Vec<u8>,
    /// The subprotocol the server chose.
    pub(crate) subprotocol: Option<String>,
}

impl<S> std::fmt::Debug for WsIo<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WsIo")
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                Some(Ok(WsMessage::Binary(b))) => self.pending = b.to_vec(),
                Some(Ok(WsMessage::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut self.ws)
            .start_send(WsMessage::Binary(buf.to_vec().into()))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

async fn websocket(
    emu: &Emulator,
    path: &str,
    subprotocol: &str,
) -> Result<WsIo<TlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    let ws = websocket_with(emu, path, subprotocol).await?;
    assert_eq!(ws.subprotocol.as_deref(), Some("AMQPWSB10"));
    Ok(ws)
}

/// A WebSocket to the HTTPS port asking for `subprotocol`, as a byte stream; it records the
/// subprotocol the server chose.
pub(crate) async fn websocket_with(
    emu: &Emulator,
    path: &str,
    subprotocol: &str,
) -> Result<WsIo<TlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    websocket_on(tls_to(emu, emu.local_addr()).await, emu, path, subprotocol).await
}

/// [`websocket_with`] over a stream of the caller's (a TLS connection with a client
/// certificate).
pub(crate) async fn websocket_on<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    emu: &Emulator,
    path: &str,
    subprotocol: &str,
) -> Result<WsIo<S>, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("wss://{}{path}", emu.host())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", subprotocol.parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    let subprotocol = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(WsIo {
        ws,
        pending: Vec::new(),
        subprotocol,
    })
}

#[tokio::test]
async fn amqp_over_websockets_with_amqpwsb10_and_only_that() {
    let hub = Hub::start().await;
    hub.create("dev1").await;
    for path in ["/$iothub/websocket", "/$servicebus/websocket/"] {
        let ws = websocket(&hub.emu, path, "AMQPWSB10").await.unwrap();
        let mut connection = open_on(ws, None).await.unwrap();
        let mut session = Session::begin(&mut connection).await.unwrap();
        let _cbs = Cbs::authorized(&mut session, &hub.emu).await;
        let mut sender = Sender::attach(&mut session, "c2d", DEVICEBOUND)
            .await
            .unwrap();
        assert_eq!(
            send(&mut sender, c2d(&to("dev1"), b"ws")).await,
            None,
            "{path}"
        );
        connection.close().await.unwrap();
    }
    assert_eq!(hub.emu.c2d_pending("dev1", None), 2);

    for subprotocol in ["amqp", "AMQPWSB11"] {
        match websocket(&hub.emu, "/$iothub/websocket", subprotocol).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{subprotocol}");
            }
            Err(e) => panic!("{subprotocol}: expected a 400, got {e}"),
            Ok(_) => panic!("{subprotocol}: accepted"),
        }
    }
    // The upgrades are not service requests.
    assert!(
        hub.emu
            .request_log()
            .iter()
            .all(|r| !r.path.contains("websocket")),
        "{:?}",
        hub.emu.request_log()
    );
}
