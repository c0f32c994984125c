//! Cloud-to-device messaging state: per-device and per-module queues with the service's
//! limits, the device side (receive, complete, reject, abandon), expiry, and the feedback
//! and file-upload notifications the service sends back on its own links.
//!
//! The AMQP endpoint puts messages in; the control API (an emulated device) takes them out.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::rest::errors::service_time;

/// Most messages waiting for one device (or module).
pub const MAX_QUEUE_DEPTH: usize = 50;
/// Largest message body, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Time to live when the sender gives no absolute expiry.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// How long a received message stays locked before it is delivered again.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Deliveries before a message is dead-lettered with DeliveryCountExceeded.
pub const MAX_DELIVERY_COUNT: u32 = 10;
/// Records per feedback batch.
pub(crate) const FEEDBACK_BATCH: usize = 64;
/// How many accepted messages the emulator remembers for tests (the most recent), so that a
/// long-running emulator's memory stays bounded.
pub const ACCEPTED_RECORD: usize = 10_000;

/// A cloud-to-device message as the hub received it from the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct C2dMessage {
    /// Target device.
    pub device_id: String,
    /// Target module, for module messages.
    pub module_id: Option<String>,
    /// The AMQP `message-id`, as a string whatever its AMQP type.
    pub message_id: Option<String>,
    /// The AMQP `correlation-id`, as a string.
    pub correlation_id: Option<String>,
    /// The AMQP `user-id`, as UTF-8 (lossy).
    pub user_id: Option<String>,
    /// The AMQP `to` as sent.
    pub to: Option<String>,
    /// AMQP `content-type`.
    pub content_type: Option<String>,
    /// AMQP `content-encoding`.
    pub content_encoding: Option<String>,
    /// AMQP `absolute-expiry-time`, in milliseconds since the Unix epoch.
    pub absolute_expiry_time: Option<i64>,
    /// The application properties, as JSON values.
    pub application_properties: BTreeMap<String, Value>,
    /// The body bytes (a Data section, or the bytes or string of an AmqpValue body).
    #[serde(with = "body_base64")]
    pub body: Vec<u8>,
    /// When the hub accepted it (RFC 3339).
    pub enqueued_time: String,
}

impl C2dMessage {
    /// The `iothub-ack` application property: `none`, `positive`, `negative` or `full`.
    pub fn ack(&self) -> &str {
        self.application_properties
            .get("iothub-ack")
            .and_then(Value::as_str)
            .unwrap_or("none")
    }

    fn wants(&self, positive: bool) -> bool {
        match self.ack().to_ascii_lowercase().as_str() {
            "full" => true,
            "positive" => positive,
            "negative" => !positive,
            _ => false,
        }
    }
}

mod body_base64 {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(body: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(body))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// A message handed to an emulated device, locked until it is settled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedC2d {
    /// Settles this delivery through complete, reject or abandon.
    pub lock_token: String,
    /// How many times it has been delivered, this time included.
    pub delivery_count: u32,
    /// The message.
    pub message: C2dMessage,
}

/// Why the hub refused a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 50 messages already wait (`amqp:resource-limit-exceeded`).
    QueueFull(String),
    /// The body is over 64 KB (`amqp:link:message-size-exceeded`).
    TooLarge(usize),
}

/// How a delivery ended, for feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Success,
    Expired,
    DeliveryCountExceeded,
    Rejected,
    Purged,
}

impl Fate {
    fn status(self) -> &'static str {
        match self {
            Self::Success => "Success",
            Self::Expired => "Expired",
            Self::DeliveryCountExceeded => "DeliveryCountExceeded",
            Self::Rejected => "Rejected",
            Self::Purged => "Purged",
        }
    }

    fn positive(self) -> bool {
        self == Self::Success
    }
}

type Target = (String, Option<String>);

#[derive(Debug, Clone)]
struct Queued {
    message: C2dMessage,
    expires: DateTime<Utc>,
    deliveries: u32,
    generation_id: String,
}

struct Locked {
    target: Target,
    item: Queued,
    until: DateTime<Utc>,
}

#[derive(Default)]
struct State {
    queues: HashMap<Target, VecDeque<Queued>>,
    locked: HashMap<String, Locked>,
    feedback: VecDeque<Value>,
    file_notifications: VecDeque<Value>,
    accepted: VecDeque<C2dMessage>,
    /// No message expires and no lock times out before this (None: nothing is waiting). Lets
    /// every enqueue and receive skip the full scan, which otherwise made each send cost in
    /// proportion to everything queued.
    next_deadline: Option<DateTime<Utc>>,
}

impl State {
    fn note_deadline(&mut self, at: DateTime<Utc>) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
    }
}

/// The hub's cloud-to-device side.
#[derive(Default)]
pub(crate) struct C2d {
    state: Mutex<State>,
    /// Signalled when feedback records are queued.
    pub(crate) feedback_ready: Notify,
    /// Signalled when file notifications are queued.
    pub(crate) files_ready: Notify,
}

impl C2d {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message for an existing device (or module) with generation id `generation_id`.
    pub(crate) fn enqueue(
        &self,
        mut message: C2dMessage,
        generation_id: String,
    ) -> Result<usize, Refusal> {
        if message.body.len() > MAX_MESSAGE_BYTES {
            return Err(Refusal::TooLarge(message.body.len()));
        }
        let now = Utc::now();
        message.enqueued_time = service_time(now);
        let expires = message
            .absolute_expiry_time
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(|| now + DEFAULT_TTL);
        let target = (message.device_id.clone(), message.module_id.clone());
        let mut state = self.lock();
        self.expire_locked(&mut state, now);
        let pending = pending_in(&state, &target);
        if pending >= MAX_QUEUE_DEPTH {
            return Err(Refusal::QueueFull(target_name(&target)));
        }
        if state.accepted.len() == ACCEPTED_RECORD {
            state.accepted.pop_front();
        }
        state.accepted.push_back(message.clone());
        state.queues.entry(target).or_default().push_back(Queued {
            message,
            expires,
            deliveries: 0,
            generation_id,
        });
        state.note_deadline(expires);
        Ok(pending + 1)
    }

    /// Messages waiting for (or locked by) a device or module.
    pub(crate) fn pending(&self, device_id: &str, module_id: Option<&str>) -> usize {
        let target = (device_id.to_owned(), module_id.map(str::to_owned));
        let mut state = self.lock();
        self.expire_locked(&mut state, Utc::now());
        pending_in(&state, &target)
    }

    /// The device takes the next message, which stays locked until settled.
    pub(crate) fn receive(&self, device_id: &str, module_id: Option<&str>) -> Option<ReceivedC2d> {
        let target = (device_id.to_owned(), module_id.map(str::to_owned));
        let now = Utc::now();
        let mut state = self.lock();
        self.expire_locked(&mut state, now);
        let mut item = state.queues.get_mut(&target)?.pop_front()?;
        item.deliveries += 1;
        let lock_token = crate::rest::errors::tracking_id();
        let received = ReceivedC2d {
            lock_token: lock_token.clone(),
            delivery_count: item.deliveries,
            message: item.message.clone(),
        };
        let until = now + LOCK_TIMEOUT;
        state.note_deadline(until);
        state.locked.insert(
            lock_token,
            Locked {
                target,
                item,
                until,
            },
        );
        Some(received)
    }

    /// Completes a delivery: the message is done (Success feedback if asked for).
    pub(crate) fn complete(&self, lock_token: &str) -> bool {
        self.settle(lock_token, Some(Fate::Success))
    }

    /// Rejects a delivery: the message is dead-lettered (Rejected feedback if asked for).
    pub(crate) fn reject(&self, lock_token: &str) -> bool {
        self.settle(lock_token, Some(Fate::Rejected))
    }

    /// Abandons a delivery: the message goes back to the queue, or is dead-lettered with
    /// DeliveryCountExceeded after the last allowed delivery.
    pub(crate) fn abandon(&self, lock_token: &str) -> bool {
        self.settle(lock_token, None)
    }

    fn settle(&self, lock_token: &str, fate: Option<Fate>) -> bool {
        let mut state = self.lock();
        let Some(locked) = state.locked.remove(lock_token) else {
            return false;
        };
        match fate {
            Some(fate) => self.record(&mut state, &locked.item, fate),
            None => requeue(self, &mut state, locked),
        }
        true
    }

    /// Purges a device's queue (and its modules'); returns how many messages went.
    pub(crate) fn purge(&self, device_id: &str) -> usize {
        let mut state = self.lock();
        let targets: Vec<Target> = state
            .queues
            .keys()
            .filter(|(d, _)| d == device_id)
            .cloned()
            .collect();
        let mut purged = Vec::new();
        for target in targets {
            if let Some(queue) = state.queues.remove(&target) {
                purged.extend(queue);
            }
        }
        let locks: Vec<String> = state
            .locked
            .iter()
            .filter(|(_, l)| l.target.0 == device_id)
            .map(|(k, _)| k.clone())
            .collect();
        for lock in locks {
            if let Some(l) = state.locked.remove(&lock) {
                purged.push(l.item);
            }
        }
        for item in &purged {
            self.record(&mut state, item, Fate::Purged);
        }
        purged.len()
    }

    /// Forgets a deleted device's messages without feedback.
    pub(crate) fn forget(&self, device_id: &str) {
        let mut state = self.lock();
        state.queues.retain(|(d, _), _| d != device_id);
        state.locked.retain(|_, l| l.target.0 != device_id);
    }

    /// The messages the hub accepted (the last [`ACCEPTED_RECORD`]), oldest first.
    pub(crate) fn accepted(&self) -> Vec<C2dMessage> {
        self.lock().accepted.iter().cloned().collect()
    }

    /// Empties the record of accepted messages.
    pub(crate) fn clear_accepted(&self) {
        self.lock().accepted.clear();
    }

    /// Expires what is due: queued messages past their expiry and locks past their timeout.
    pub(crate) fn sweep(&self) {
        let mut state = self.lock();
        self.expire_locked(&mut state, Utc::now());
    }

    fn expire_locked(&self, state: &mut State, now: DateTime<Utc>) {
        if state.next_deadline.is_none_or(|due| now < due) {
            return;
        }
        let mut expired = Vec::new();
        for queue in state.queues.values_mut() {
            queue.retain(|q| {
                let keep = q.expires > now;
                if !keep {
                    expired.push(q.clone());
                }
                keep
            });
        }
        for item in &expired {
            self.record(state, item, Fate::Expired);
        }
        let timed_out: Vec<String> = state
            .locked
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for lock in timed_out {
            if let Some(locked) = state.locked.remove(&lock) {
                requeue(self, state, locked);
            }
        }
        // What is left sets the next deadline: queued expiries, lock timeouts, and the expiry
        // of each locked message (it goes back to its queue if the lock times out).
        let queued = state.queues.values().flatten().map(|q| q.expires);
        let locked = state
            .locked
            .values()
            .flat_map(|l| [l.until, l.item.expires]);
        state.next_deadline = queued.chain(locked).min();
    }

    fn record(&self, state: &mut State, item: &Queued, fate: Fate) {
        if !item.message.wants(fate.positive()) {
            return;
        }
        let description = match fate {
            Fate::Success => "Success",
            Fate::Expired => "Message Expired",
            Fate::DeliveryCountExceeded => "Delivery Count Exceeded",
            Fate::Rejected => "Message Rejected",
            Fate::Purged => "Message Purged",
        };
        state.feedback.push_back(json!({
            "originalMessageId": item.message.message_id,
            "enqueuedTimeUtc": service_time(Utc::now()),
            "statusCode": fate.status(),
            "description": description,
            "deviceId": item.message.device_id,
            "deviceGenerationId": item.generation_id,
        }));
        self.feedback_ready.notify_waiters();
    }

    /// Takes up to [`FEEDBACK_BATCH`] feedback records to send as one batch.
    pub(crate) fn take_feedback(&self) -> Vec<Value> {
        let mut state = self.lock();
        let n = state.feedback.len().min(FEEDBACK_BATCH);
        state.feedback.drain(..n).collect()
    }

    /// Puts a batch the service did not complete back at the front.
    pub(crate) fn return_feedback(&self, batch: Vec<Value>) {
        let mut state = self.lock();
        for record in batch.into_iter().rev() {
            state.feedback.push_front(record);
        }
        drop(state);
        self.feedback_ready.notify_waiters();
    }

    /// Feedback records waiting to be sent.
    #[cfg(test)]
    pub(crate) fn feedback_pending(&self) -> usize {
        self.lock().feedback.len()
    }

    /// Queues a file-upload notification (as a device finishing an upload would).
    pub(crate) fn notify_file_upload(&self, notification: Value) {
        self.lock().file_notifications.push_back(notification);
        self.files_ready.notify_waiters();
    }

    /// Takes the next file-upload notification.
    pub(crate) fn take_file_notification(&self) -> Option<Value> {
        self.lock().file_notifications.pop_front()
    }

    /// Puts a notification the service did not complete back at the front.
    pub(crate) fn return_file_notification(&self, notification: Value) {
        self.lock().file_notifications.push_front(notification);
        self.files_ready.notify_waiters();
    }
}

fn requeue(c2d: &C2d, state: &mut State, locked: Locked) {
    if locked.item.deliveries >= MAX_DELIVERY_COUNT {
        c2d.record(state, &locked.item, Fate::DeliveryCountExceeded);
    } else {
        state
            .queues
            .entry(locked.target)
            .or_default()
            .push_front(locked.item);
    }
}

fn pending_in(state: &State, target: &Target) -> usize {
    state.queues.get(target).map_or(0, VecDeque::len)
        + state
            .locked
            .values()
            .filter(|l| &l.target == target)
            .count()
}

fn target_name(target: &Target) -> String {
    match &target.1 {
        Some(m) => format!("{}/{m}", target.0),
        None => target.0.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(device: &str, ack: &str) -> C2dMessage {
        let mut props = BTreeMap::new();
        props.insert("iothub-ack".to_owned(), json!(ack));
        C2dMessage {
            device_id: device.to_owned(),
            module_id: None,
            message_id: Some(format!("id-{ack}")),
            correlation_id: None,
            user_id: None,
            to: None,
            content_type: None,
            content_encoding: None,
            absolute_expiry_time: None,
            application_properties: props,
            body: b"hi".to_vec(),
            enqueued_time: String::new(),
        }
    }

    #[test]
    fn the_record_of_accepted_messages_keeps_the_most_recent() {
        let c2d = C2d::default();
        let devices = ACCEPTED_RECORD / MAX_QUEUE_DEPTH + 1;
        for n in 0..devices * MAX_QUEUE_DEPTH {
            let mut message = msg(&format!("d{}", n / MAX_QUEUE_DEPTH), "none");
            message.message_id = Some(n.to_string());
            c2d.enqueue(message, "g".into()).unwrap();
        }
        let record = c2d.accepted();
        assert_eq!(record.len(), ACCEPTED_RECORD);
        let first = devices * MAX_QUEUE_DEPTH - ACCEPTED_RECORD;
        assert_eq!(record[0].message_id, Some(first.to_string()));
        assert_eq!(
            record.last().unwrap().message_id,
            Some((devices * MAX_QUEUE_DEPTH - 1).to_string())
        );
    }

    #[test]
    fn queue_limits() {
        let c2d = C2d::default();
        for i in 0..MAX_QUEUE_DEPTH {
            assert_eq!(c2d.enqueue(msg("d", "none"), "g".into()), Ok(i + 1));
        }
        assert_eq!(
            c2d.enqueue(msg("d", "none"), "g".into()),
            Err(Refusal::QueueFull("d".into()))
        );
        // Another device has its own queue.
        assert!(c2d.enqueue(msg("e", "none"), "g".into()).is_ok());
        let mut big = msg("e", "none");
        big.body = vec![0; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            c2d.enqueue(big, "g".into()),
            Err(Refusal::TooLarge(MAX_MESSAGE_BYTES + 1))
        );
        assert_eq!(c2d.purge("d"), MAX_QUEUE_DEPTH);
        assert_eq!(c2d.pending("d", None), 0);
    }

    #[test]
    fn settling_produces_the_feedback_asked_for() {
        let c2d = C2d::default();
        for ack in ["full", "positive", "negative", "none"] {
            c2d.enqueue(msg("d", ack), "g".into()).unwrap();
        }
        // full: completed → Success; positive: rejected → nothing; negative: rejected →
        // Rejected; none: completed → nothing.
        let outcomes = [true, false, false, true];
        for complete in outcomes {
            let r = c2d.receive("d", None).unwrap();
            assert!(if complete {
                c2d.complete(&r.lock_token)
            } else {
                c2d.reject(&r.lock_token)
            });
        }
        let batch = c2d.take_feedback();
        let got: Vec<(&str, &str)> = batch
            .iter()
            .map(|r| {
                (
                    r["originalMessageId"].as_str().unwrap(),
                    r["statusCode"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(got, [("id-full", "Success"), ("id-negative", "Rejected")]);
        assert!(!c2d.complete("unknown"));
        c2d.return_feedback(batch);
        assert_eq!(c2d.feedback_pending(), 2);
    }

    #[test]
    fn abandon_redelivers_until_the_delivery_count_is_spent() {
        let c2d = C2d::default();
        c2d.enqueue(msg("d", "full"), "g".into()).unwrap();
        for n in 1..=MAX_DELIVERY_COUNT {
            let r = c2d.receive("d", None).unwrap();
            assert_eq!(r.delivery_count, n);
            assert!(c2d.abandon(&r.lock_token));
        }
        assert!(c2d.receive("d", None).is_none());
        assert_eq!(
            c2d.take_feedback()[0]["statusCode"],
            "DeliveryCountExceeded"
        );
    }

    #[test]
    fn expired_messages_leave_with_feedback() {
        let c2d = C2d::default();
        let mut m = msg("d", "negative");
        m.absolute_expiry_time = Some(Utc::now().timestamp_millis() - 1);
        c2d.enqueue(m, "g".into()).unwrap();
        assert!(c2d.receive("d", None).is_none());
        assert_eq!(c2d.take_feedback()[0]["statusCode"], "Expired");
    }
}
