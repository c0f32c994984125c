//! One device connection: CONNECT and its authentication, then IoT Hub's session rules
//! (subscriptions, QoS 0 and 1, keep-alive) and what each topic does to the hub.
//!
//! Everything a connection holds is bounded: its read buffer by the packet size cap, its
//! cloud-to-device deliveries in flight, its direct-method requests waiting for an answer.
//! Anything outside the contract closes this connection only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use iothub_rest_gen::types as wire;
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, LastWill, Packet, PubAck, Publish, SubAck, Subscribe,
    SubscribeReasonCode, UnsubAck, Unsubscribe,
};
use rumqttc::mqttbytes::{Error as PacketError, QoS};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::registry::{Attached, Command, Wake};
use super::telemetry::DeviceMessage;
use super::topics::{self, Identity, Inbound, Subscription};
use super::x509;
use crate::amqp::stopped;
use crate::faults::OpClass;
use crate::hub::Shared;
use crate::state::c2d::ReceivedC2d;

/// Largest CONNECT read before authentication: a SAS token and a username fit many times.
const MAX_CONNECT_BYTES: usize = 16 * 1024;
/// Largest telemetry payload (the service's 256 KB device-to-cloud limit).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Largest packet: the payload limit plus room for the topic and its property bag.
const MAX_PACKET_BYTES: usize = MAX_PAYLOAD_BYTES + 64 * 1024;
/// Read-buffer capacity a connection keeps between packets; beyond it the buffer is given
/// back once empty.
const IDLE_BUFFER_BYTES: usize = 16 * 1024;
/// Cloud-to-device messages delivered and not yet acknowledged, per connection.
const MAX_C2D_IN_FLIGHT: usize = 8;
/// Direct-method requests waiting for the device's answer, per connection.
const MAX_METHODS_WAITING: usize = 64;
/// Longest keep-alive honoured (the hub's cap), in seconds.
const MAX_KEEP_ALIVE_SECS: u64 = 1767;
/// How long one write to the device may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands (method calls, replacement) queued for one connection.
const COMMAND_QUEUE: usize = 64;

/// Why the connection ends.
#[derive(Debug)]
enum End {
    /// The device sent DISCONNECT: a clean end, its will is not sent.
    Disconnected,
    /// The connection broke, timed out, was replaced, or broke the contract.
    Closed,
}

type Step = Result<(), End>;

/// Who connected, and until when.
struct Accepted {
    who: Identity,
    /// Unix seconds at which the SAS token expires (none for X.509).
    expiry: Option<u64>,
    model_id: Option<String>,
}

/// Serves one connection until it ends.
pub(super) async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    client_cert: Option<Vec<u8>>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _open = shared.mqtt.registry.opened();
    let mut buf = BytesMut::with_capacity(1024);
    let limits = shared.mqtt.limits;
    let first = read_one(&mut io, &mut buf, MAX_CONNECT_BYTES);
    let first = if limits.auth_timeout.is_zero() {
        first.await
    } else {
        match tokio::time::timeout(limits.auth_timeout, first).await {
            Ok(read) => read,
            Err(_) => {
                tracing::debug!("MQTT connection closed: no CONNECT in time");
                return;
            }
        }
    };
    let connect = match first {
        Ok(Packet::Connect(connect)) => connect,
        Ok(other) => {
            tracing::debug!(packet = ?other, "MQTT connection closed: its first packet is not CONNECT");
            return;
        }
        Err(e) => {
            tracing::debug!(error = %e, "MQTT connection closed before a whole CONNECT was read");
            return;
        }
    };
    let accepted = match authenticate(&shared, &connect, client_cert.as_deref()) {
        Ok(a) => a,
        Err(code) => {
            tracing::debug!(client_id = %connect.client_id, ?code, "MQTT CONNECT refused");
            let _ = write(&mut io, Packet::ConnAck(ConnAck::new(code, false))).await;
            return;
        }
    };
    let who = accepted.who.clone();
    let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
    let Attached {
        connection,
        wake,
        restored,
    } = shared.mqtt.registry.attach(&who, tx, connect.clean_session);
    let session_present = restored.is_some();
    if let Err(e) = shared.set_connected(&who.device, who.module.as_deref(), true) {
        // Deleted between the check and now.
        tracing::debug!(who = %who.name(), error = ?e, "MQTT connection closed: its connection state could not be recorded");
        shared.mqtt.registry.detach(&who, connection);
        return;
    }
    if let Some(model_id) = &accepted.model_id {
        shared.set_model_id(&who.device, who.module.as_deref(), model_id);
    }
    tracing::debug!(who = %who.name(), clean = connect.clean_session, "MQTT device connected");
    let mut session = Session {
        shared: shared.clone(),
        who: who.clone(),
        connection,
        subscriptions: BTreeSet::new(),
        in_flight: HashMap::new(),
        next_pkid: 0,
        methods: HashMap::new(),
        next_rid: 0,
        desired: None,
        out: BytesMut::new(),
    };
    for s in restored.unwrap_or_default() {
        session.subscribed(s);
    }
    session
        .queue(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            session_present,
        )))
        .ok();
    let keep_alive = (connect.keep_alive > 0).then(|| {
        Duration::from_millis(u64::from(connect.keep_alive).min(MAX_KEEP_ALIVE_SECS) * 1500)
    });
    let expiry = accepted.expiry.map(|e| {
        let now = unix_now();
        Instant::now() + Duration::from_secs(e.saturating_sub(now))
    });
    let outcome = session
        .run(
            &mut io,
            &mut buf,
            rx,
            &wake,
            Deadlines { keep_alive, expiry },
            &mut shutdown,
        )
        .await;
    if !matches!(outcome, Err(End::Disconnected))
        && let Some(will) = &connect.last_will
    {
        session.will(will);
    }
    session.finish(connect.clean_session);
}

/// When a connection ends unless the device does something: its keep-alive (1.5 times the
/// client's, from the last bytes heard) and its SAS token's expiry.
struct Deadlines {
    keep_alive: Option<Duration>,
    expiry: Option<Instant>,
}

/// The state of one authenticated connection.
struct Session {
    shared: Arc<Shared>,
    who: Identity,
    connection: u64,
    subscriptions: BTreeSet<Subscription>,
    /// Cloud-to-device deliveries waiting for PUBACK: packet id to lock token.
    in_flight: HashMap<u16, String>,
    next_pkid: u16,
    /// Direct-method requests waiting for the device's answer, by `$rid`.
    methods: HashMap<String, oneshot::Sender<(i32, Value)>>,
    next_rid: u64,
    /// The desired properties last sent or read (version, properties), while subscribed to
    /// desired-property notifications: a notification is the difference from them.
    desired: Option<(i64, Map<String, Value>)>,
    /// Packets encoded and not yet written.
    out: BytesMut,
}

impl Session {
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        buf: &mut BytesMut,
        mut commands: mpsc::Receiver<Command>,
        wake: &Wake,
        Deadlines { keep_alive, expiry }: Deadlines,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Step {
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        let mut last_heard = Instant::now();
        let limit = self.shared.mqtt.limits.max_packets_per_second;
        let (mut window, mut packets) = (Instant::now(), 0u32);
        loop {
            // Act on every complete packet read so far.
            loop {
                match Packet::read(buf, MAX_PACKET_BYTES) {
                    Ok(packet) => {
                        packets += 1;
                        if limit > 0 && packets > limit {
                            if window.elapsed() < Duration::from_secs(1) {
                                tracing::debug!(who = %self.who.name(), "MQTT flood: closing");
                                return Err(End::Closed);
                            }
                            window = Instant::now();
                            packets = 1;
                        }
                        self.handle(packet)?;
                    }
                    Err(PacketError::InsufficientBytes(_)) => break,
                    Err(e) => {
                        tracing::debug!(who = %self.who.name(), error = %e, "MQTT bad packet: closing");
                        return Err(End::Closed);
                    }
                }
            }
            // A large packet leaves a large buffer behind; ten thousand idle devices must not
            // each keep one.
            if buf.is_empty() && buf.capacity() > IDLE_BUFFER_BYTES {
                *buf = BytesMut::with_capacity(1024);
            }
            self.deliver_c2d()?;
            self.flush(io).await?;
            let keep_alive_deadline = keep_alive.map_or(far, |k| last_heard + k);
            tokio::select! {
                read = io.read_buf(buf) => match read {
                    Ok(0) | Err(_) => return Err(End::Closed),
                    Ok(_) => last_heard = Instant::now(),
                },
                command = commands.recv() => match command {
                    Some(Command::Replaced) | None => {
                        tracing::debug!(who = %self.who.name(), "MQTT connection replaced by a new one");
                        return Err(End::Closed);
                    }
                    Some(Command::Method(call)) => self.method_request(call)?,
                },
                // Delivered at the top of the loop.
                () = wake.c2d.notified() => {}
                () = wake.identity.notified() => self.identity_changed()?,
                () = tokio::time::sleep_until(keep_alive_deadline) => {
                    tracing::debug!(who = %self.who.name(), "MQTT keep-alive expired: closing");
                    return Err(End::Closed);
                }
                () = tokio::time::sleep_until(expiry.unwrap_or(far)) => {
                    tracing::debug!(who = %self.who.name(), "MQTT SAS token expired: closing");
                    return Err(End::Closed);
                }
                () = stopped(shutdown) => return Err(End::Closed),
            }
        }
    }

    /// Encodes a packet for the next flush.
    fn queue(&mut self, packet: Packet) -> Step {
        packet
            .write(&mut self.out, usize::MAX)
            .map(|_| ())
            .map_err(|_| End::Closed)
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, io: &mut S) -> Step {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = self.out.split();
        match tokio::time::timeout(WRITE_TIMEOUT, async {
            io.write_all(&out).await?;
            io.flush().await
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            _ => Err(End::Closed),
        }
    }

    fn handle(&mut self, packet: Packet) -> Step {
        match packet {
            Packet::Publish(publish) => self.publish(publish),
            Packet::PubAck(ack) => {
                if let Some(lock) = self.in_flight.remove(&ack.pkid) {
                    // PUBACK completes the message (MQTT has no reject or abandon).
                    self.shared.c2d.complete(&lock);
                }
                Ok(())
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe),
            Packet::PingReq => self.queue(Packet::PingResp),
            Packet::Disconnect => Err(End::Disconnected),
            // A second CONNECT, QoS 2 flows, or server-side packets from a client.
            _ => Err(End::Closed),
        }
    }

    fn publish(&mut self, publish: Publish) -> Step {
        if publish.qos == QoS::ExactlyOnce {
            tracing::debug!(who = %self.who.name(), "MQTT QoS 2 publish: closing");
            return Err(End::Closed);
        }
        if publish.payload.len() > MAX_PAYLOAD_BYTES {
            tracing::debug!(who = %self.who.name(), "MQTT payload over 256 KB: closing");
            return Err(End::Closed);
        }
        let Ok(inbound) = topics::inbound(&self.who, &publish.topic) else {
            tracing::debug!(who = %self.who.name(), topic = %publish.topic, "MQTT topic outside the contract: closing");
            return Err(End::Closed);
        };
        match inbound {
            Inbound::Telemetry(bag) => self.telemetry(bag, &publish),
            Inbound::TwinGet { rid } => self.twin_get(&rid)?,
            Inbound::TwinReport { rid } => self.twin_report(&rid, &publish.payload)?,
            Inbound::MethodResponse { status, rid } => {
                if let Some(reply) = self.methods.remove(&rid) {
                    let payload = if publish.payload.is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_slice(&publish.payload).unwrap_or(Value::Null)
                    };
                    let _ = reply.send((status, payload));
                }
            }
        }
        if publish.qos == QoS::AtLeastOnce {
            self.queue(Packet::PubAck(PubAck::new(publish.pkid)))?;
        }
        Ok(())
    }

    fn telemetry(&self, bag: Vec<(String, Option<String>)>, publish: &Publish) {
        let mut properties = BTreeMap::new();
        let mut system_properties = BTreeMap::new();
        for (k, v) in bag {
            let v = v.unwrap_or_default();
            if k.starts_with("$.") {
                system_properties.insert(k, v);
            } else {
                properties.insert(k, v);
            }
        }
        if publish.retain {
            properties.insert("mqtt-retain".to_owned(), "true".to_owned());
        }
        self.shared.mqtt.telemetry.push(DeviceMessage {
            device_id: self.who.device.clone(),
            module_id: self.who.module.clone(),
            properties,
            system_properties,
            body: publish.payload.to_vec(),
            enqueued_time: crate::state::store::now_string(),
        });
    }

    /// The connection ended without DISCONNECT: its will, if it names the device's telemetry
    /// topic, is telemetry marked `iothub-MessageType=Will`, as the hub sends it.
    fn will(&self, will: &LastWill) {
        if let Ok(Inbound::Telemetry(mut bag)) = topics::inbound(&self.who, &will.topic) {
            bag.push(("iothub-MessageType".to_owned(), Some("Will".to_owned())));
            let mut publish =
                Publish::from_bytes(will.topic.clone(), QoS::AtMostOnce, will.message.clone());
            publish.retain = will.retain;
            self.telemetry(bag, &publish);
        }
    }

    fn subscribe(&mut self, subscribe: Subscribe) -> Step {
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        for filter in &subscribe.filters {
            match topics::subscription(&self.who, &filter.path) {
                Some(s) => {
                    self.subscribed(s);
                    // QoS 2 is granted as 1: the hub does not do exactly-once.
                    let qos = match filter.qos {
                        QoS::AtMostOnce => QoS::AtMostOnce,
                        _ => QoS::AtLeastOnce,
                    };
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                None => {
                    tracing::debug!(who = %self.who.name(), filter = %filter.path, "MQTT subscription refused");
                    codes.push(SubscribeReasonCode::Failure);
                }
            }
        }
        self.queue(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
    }

    fn subscribed(&mut self, s: Subscription) {
        self.subscriptions.insert(s);
        self.shared.mqtt.registry.set_subscriptions(
            &self.who,
            self.connection,
            &self.subscriptions,
        );
        match s {
            Subscription::Methods => {
                // Method calls waiting for their connect timeout look again.
                self.shared.methods.connected.notify_waiters();
            }
            Subscription::DesiredPatches => {
                self.desired = self.current_desired();
            }
            Subscription::CloudToDevice | Subscription::TwinResponses => {}
        }
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Step {
        for topic in &unsubscribe.topics {
            if let Some(s) = topics::subscription(&self.who, topic) {
                self.subscriptions.remove(&s);
                self.shared.mqtt.registry.set_subscriptions(
                    &self.who,
                    self.connection,
                    &self.subscriptions,
                );
                if s == Subscription::DesiredPatches {
                    self.desired = None;
                }
            }
        }
        self.queue(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
    }

    /// Hands queued cloud-to-device messages to the device while it is subscribed, up to the
    /// in-flight limit.
    fn deliver_c2d(&mut self) -> Step {
        if !self.subscriptions.contains(&Subscription::CloudToDevice) {
            return Ok(());
        }
        while self.in_flight.len() < MAX_C2D_IN_FLIGHT {
            let Some(received) = self.shared.c2d.receive(&self.who.device, None) else {
                break;
            };
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            while self.in_flight.contains_key(&self.next_pkid) {
                self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            }
            let pkid = self.next_pkid;
            let mut publish = Publish::from_bytes(
                c2d_topic(&self.who.device, &received),
                QoS::AtLeastOnce,
                received.message.body.clone().into(),
            );
            publish.pkid = pkid;
            self.in_flight.insert(pkid, received.lock_token);
            self.queue(Packet::Publish(publish))?;
        }
        Ok(())
    }

    fn twin_document(&self) -> Option<Value> {
        let devices = self.shared.store.read();
        let entry = devices.get(&self.who.device)?;
        if let Some(m) = &self.who.module
            && !entry.modules.contains_key(m)
        {
            return None;
        }
        Some(crate::state::render::render_twin(
            entry,
            self.who.module.as_deref(),
        ))
    }

    fn current_desired(&self) -> Option<(i64, Map<String, Value>)> {
        let twin = self.twin_document()?;
        let desired = section(&twin, "desired");
        let version = desired.get("$version").and_then(Value::as_i64).unwrap_or(0);
        Some((version, desired))
    }

    fn respond_twin(
        &mut self,
        status: u16,
        rid: &str,
        version: Option<i64>,
        body: Vec<u8>,
    ) -> Step {
        if !self.subscriptions.contains(&Subscription::TwinResponses) {
            // The device asked without listening: nothing to send it to.
            return Ok(());
        }
        // `$rid` and `$version` literally, as the hub writes them: the Python device SDK
        // finds the request id by splitting the topic on `$`.
        let mut topic = format!(
            "$iothub/twin/res/{status}/?$rid={}",
            topics::write_bag([(rid, None)])
        );
        if let Some(v) = version {
            topic.push_str(&format!("&$version={v}"));
        }
        self.queue(Packet::Publish(Publish::from_bytes(
            topic,
            QoS::AtMostOnce,
            body.into(),
        )))
    }

    fn twin_get(&mut self, rid: &str) -> Step {
        if let Some(status) = self.fault(OpClass::TwinRead) {
            return self.respond_twin(status, rid, None, error_body("Injected fault"));
        }
        match self.twin_document() {
            Some(twin) => {
                let body = serde_json::json!({
                    "desired": section(&twin, "desired"),
                    "reported": section(&twin, "reported"),
                });
                self.respond_twin(200, rid, None, body.to_string().into_bytes())
            }
            None => self.respond_twin(404, rid, None, Vec::new()),
        }
    }

    fn twin_report(&mut self, rid: &str, payload: &[u8]) -> Step {
        let patch: Value = match serde_json::from_slice(payload) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return self.respond_twin(
                    400,
                    rid,
                    None,
                    error_body("The reported properties must be a JSON object"),
                );
            }
        };
        if let Some(status) = self.fault(OpClass::TwinUpdate) {
            return self.respond_twin(status, rid, None, error_body("Injected fault"));
        }
        match self
            .shared
            .report(&self.who.device, self.who.module.as_deref(), &patch)
        {
            Ok(twin) => {
                let version = twin
                    .pointer("/properties/reported/$version")
                    .and_then(Value::as_i64);
                self.respond_twin(204, rid, version, Vec::new())
            }
            Err(e) => {
                let status = if e.status == 429 { 429 } else { 400 };
                self.respond_twin(status, rid, None, error_body(&e.message))
            }
        }
    }

    /// The status fault injection (throttling, a tier's rate, server errors) answers a
    /// device's twin request with, if any: the hub's throttles count device and service
    /// twin operations together.
    fn fault(&self, class: OpClass) -> Option<u16> {
        let decision = self.shared.faults.decide(class, 1);
        if decision.throttle.is_some() {
            Some(429)
        } else {
            decision.server_error
        }
    }

    /// A commit changed the device: a device deleted or disabled (or a module deleted) is
    /// disconnected, as by the hub; else what changed in its desired properties is sent.
    fn identity_changed(&mut self) -> Step {
        let allowed = {
            let devices = self.shared.store.read();
            devices.get(&self.who.device).is_some_and(|entry| {
                entry.device.status == Some(wire::DeviceStatus::Enabled)
                    && self
                        .who
                        .module
                        .as_ref()
                        .is_none_or(|m| entry.modules.contains_key(m))
            })
        };
        if !allowed {
            tracing::debug!(who = %self.who.name(), "MQTT identity deleted or disabled: closing");
            self.shared.mqtt.registry.forget_saved(&self.who);
            return Err(End::Closed);
        }
        self.desired_changed()
    }

    /// Sends what changed in the device's desired properties, when it listens for them.
    fn desired_changed(&mut self) -> Step {
        let Some((old_version, old)) = self.desired.take() else {
            return Ok(());
        };
        let Some((version, now)) = self.current_desired() else {
            self.desired = Some((old_version, old));
            return Ok(());
        };
        let mut patch = diff(&old, &now);
        self.desired = Some((version, now));
        if version == old_version || patch.is_empty() {
            return Ok(());
        }
        patch.insert("$version".to_owned(), Value::from(version));
        let topic = format!("$iothub/twin/PATCH/properties/desired/?$version={version}");
        self.queue(Packet::Publish(Publish::from_bytes(
            topic,
            QoS::AtMostOnce,
            Value::Object(patch).to_string().into_bytes().into(),
        )))
    }

    /// Sends a direct-method request; the answer goes to the caller when the device
    /// publishes it.
    fn method_request(&mut self, call: super::MethodCall) -> Step {
        self.methods.retain(|_, reply| !reply.is_closed());
        if self.methods.len() >= MAX_METHODS_WAITING
            || !self.subscriptions.contains(&Subscription::Methods)
        {
            // Dropping the reply answers the caller that the device did not respond.
            return Ok(());
        }
        self.next_rid += 1;
        let rid = self.next_rid.to_string();
        // The name as the service took it, escaped only where it would break the topic.
        let name = call.name.replace(['/', '?', '#', '+'], "_");
        let topic = format!("$iothub/methods/POST/{name}/?$rid={rid}");
        let body = serde_json::to_vec(&call.payload).unwrap_or_default();
        self.methods.insert(rid, call.reply);
        self.queue(Packet::Publish(Publish::from_bytes(
            topic,
            QoS::AtMostOnce,
            body.into(),
        )))
    }

    /// The connection ended: deliveries not acknowledged go back to the queue, the session
    /// is kept for CleanSession 0, and the device is disconnected unless a newer connection
    /// took its place.
    fn finish(self, clean_session: bool) {
        for lock in self.in_flight.values() {
            self.shared.c2d.abandon(lock);
        }
        let registry = &self.shared.mqtt.registry;
        if registry.detach(&self.who, self.connection) {
            if !clean_session {
                registry.save(&self.who, self.subscriptions.clone());
            }
            let _ = self
                .shared
                .set_connected(&self.who.device, self.who.module.as_deref(), false);
            tracing::debug!(who = %self.who.name(), "MQTT device disconnected");
        } else if !clean_session {
            // A newer connection has the identity; it restored (or cleared) the session.
        }
    }
}

/// The topic a cloud-to-device message is delivered on, its properties in the bag.
fn c2d_topic(device: &str, received: &ReceivedC2d) -> String {
    let m = &received.message;
    let to =
        m.to.clone()
            .unwrap_or_else(|| format!("/devices/{device}/messages/deviceBound"));
    let expiry = m
        .absolute_expiry_time
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(crate::rest::errors::service_time);
    let mut pairs: Vec<(String, Option<String>)> = Vec::new();
    for (k, v) in [
        ("$.mid", m.message_id.clone()),
        ("$.cid", m.correlation_id.clone()),
        ("$.uid", m.user_id.clone()),
        ("$.to", Some(to)),
        ("$.ct", m.content_type.clone()),
        ("$.ce", m.content_encoding.clone()),
        ("$.exp", expiry),
    ] {
        if let Some(v) = v {
            pairs.push((k.to_owned(), Some(v)));
        }
    }
    for (k, v) in &m.application_properties {
        let v = match v {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        };
        pairs.push((k.clone(), v));
    }
    let bag = topics::write_bag(pairs.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
    format!("devices/{device}/messages/devicebound/{bag}")
}

/// A twin section (`desired` or `reported`) as the device sees it: properties and
/// `$version`, without `$metadata`.
fn section(twin: &Value, which: &str) -> Map<String, Value> {
    let mut section = twin
        .pointer(&format!("/properties/{which}"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    section.remove("$metadata");
    section
}

/// The merge patch that turns `old` into `new` (removed keys as null), `$` keys left out.
fn diff(old: &Map<String, Value>, new: &Map<String, Value>) -> Map<String, Value> {
    let mut patch = Map::new();
    for (k, v) in new {
        if k.starts_with('$') {
            continue;
        }
        match (old.get(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => {
                let inner = diff(a, b);
                if !inner.is_empty() {
                    patch.insert(k.clone(), Value::Object(inner));
                }
            }
            (Some(a), b) if a == b => {}
            _ => {
                patch.insert(k.clone(), v.clone());
            }
        }
    }
    for k in old.keys() {
        if !k.starts_with('$') && !new.contains_key(k) {
            patch.insert(k.clone(), Value::Null);
        }
    }
    patch
}

fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "message": message })
        .to_string()
        .into_bytes()
}

/// Reads exactly one packet (the CONNECT), reading at most `max` bytes for it.
async fn read_one<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, PacketError> {
    loop {
        match Packet::read(buf, max) {
            Err(PacketError::InsufficientBytes(_)) => {
                if io.read_buf(buf).await? == 0 {
                    return Err(PacketError::InsufficientBytes(1));
                }
            }
            other => return other,
        }
    }
}

async fn write<S: AsyncWrite + Unpin>(io: &mut S, packet: Packet) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, usize::MAX)
        .map_err(std::io::Error::other)?;
    tokio::time::timeout(WRITE_TIMEOUT, async {
        io.write_all(&out).await?;
        io.flush().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

fn unix_now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// Checks the CONNECT: client id, username, and a SAS token or a client certificate that
/// belongs to an enabled device (or its module).
fn authenticate(
    shared: &Shared,
    connect: &Connect,
    client_cert: Option<&[u8]>,
) -> Result<Accepted, ConnectReturnCode> {
    let who = topics::identity(&connect.client_id).ok_or(ConnectReturnCode::BadClientId)?;
    let login = connect
        .login
        .as_ref()
        .ok_or(ConnectReturnCode::NotAuthorized)?;
    // `{host}/{device}[/{module}]/?api-version=…`: the identity must be the client id's.
    let path = login.username.split('?').next().unwrap_or_default();
    let mut segments = path.split('/').filter(|s| !s.is_empty()).skip(1);
    let named_device = segments.next();
    let named_module = segments.next();
    if named_device != Some(who.device.as_str()) || named_module != who.module.as_deref() {
        return Err(ConnectReturnCode::NotAuthorized);
    }
    let params = topics::username_params(&login.username);
    let devices = shared.store.read();
    let entry = devices
        .get(&who.device)
        .ok_or(ConnectReturnCode::NotAuthorized)?;
    if entry.device.status != Some(wire::DeviceStatus::Enabled) {
        return Err(ConnectReturnCode::NotAuthorized);
    }
    let authentication = match &who.module {
        None => entry.device.authentication.as_ref(),
        Some(m) => entry
            .modules
            .get(m)
            .ok_or(ConnectReturnCode::NotAuthorized)?
            .module
            .authentication
            .as_ref(),
    };
    let expiry = if login.password.is_empty() {
        let cert = client_cert.ok_or(ConnectReturnCode::NotAuthorized)?;
        let presented = x509::thumbprints(cert);
        let registered = authentication.and_then(|a| a.x509_thumbprint.as_ref());
        let matched = registered.is_some_and(|t| {
            [&t.primary_thumbprint, &t.secondary_thumbprint]
                .into_iter()
                .flatten()
                .any(|r| x509::matches(r, &presented))
        });
        if !matched {
            return Err(ConnectReturnCode::NotAuthorized);
        }
        None
    } else {
        let keys: Vec<&str> = authentication
            .and_then(|a| a.symmetric_key.as_ref())
            .map(|k| {
                [&k.primary_key, &k.secondary_key]
                    .into_iter()
                    .flatten()
                    .map(|s| s.expose_secret())
                    .collect()
            })
            .unwrap_or_default();
        let mut resource = vec!["devices", who.device.as_str()];
        if let Some(m) = &who.module {
            resource.extend(["modules", m.as_str()]);
        }
        let expiry = shared
            .auth
            .authorize_device(&login.password, &keys, &resource, unix_now())
            .map_err(|e| {
                tracing::debug!(who = %who.name(), error = %e, "MQTT SAS refused");
                ConnectReturnCode::NotAuthorized
            })?;
        Some(expiry)
    };
    Ok(Accepted {
        who,
        expiry,
        model_id: params.get("model-id").filter(|m| !m.is_empty()).cloned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn desired_patches_are_merge_patches() {
        let old = json!({"a": 1, "b": {"c": 1, "d": 2}, "gone": true, "$version": 1});
        let new = json!({"a": 1, "b": {"c": 2, "d": 2}, "added": "x", "$version": 2});
        let patch = diff(old.as_object().unwrap(), new.as_object().unwrap());
        assert_eq!(
            Value::Object(patch),
            json!({"b": {"c": 2}, "added": "x", "gone": null})
        );
    }
}
