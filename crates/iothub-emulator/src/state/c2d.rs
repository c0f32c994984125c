//! Cloud-to-device messaging state: per-device and per-module queues with the service's
//! limits, the device side (receive, complete, reject, abandon), expiry, and the feedback
//! and file-upload notifications the service sends back on its own links.
//!
//! The AMQP endpoint puts messages in; the control API (an emulated device) takes them out.
//!
//! Memory is bounded: each queue by the service's 50 messages of 64 KB, all queues together
//! by a byte budget, waiting feedback and file notifications by a count, feedback also by its
//! time to live and delivery count. With a data directory, queued messages and pending
//! feedback are stored durably (`persist.rs`) before anything is acknowledged, so they
//! survive a restart or a kill -9 as identities do; locks do not (a message locked at a crash
//! is delivered again, as after a lock timeout).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use super::blocking::off_worker;
use super::persist::{C2dChanges, Persist};
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
    /// All queues together hold the configured byte budget (`amqp:resource-limit-exceeded`).
    HubFull(usize),
    /// The message could not be stored durably (`amqp:internal-error`).
    NotStored,
}

/// The limits and settings of the cloud-to-device side.
#[derive(Debug, Clone)]
pub(crate) struct C2dSettings {
    /// Most bytes of message bodies queued (and, separately, kept in the accepted record).
    pub(crate) max_total_bytes: usize,
    /// Most feedback records, and separately file notifications, waiting.
    pub(crate) max_pending_notifications: usize,
    /// How long a feedback record waits for a receiver.
    pub(crate) feedback_ttl: Duration,
    /// How many times a feedback record is offered.
    pub(crate) feedback_max_delivery_count: u32,
    /// How long an offered feedback batch waits to be settled.
    pub(crate) feedback_lock_duration: Duration,
}

impl Default for C2dSettings {
    fn default() -> Self {
        Self {
            max_total_bytes: 64 * 1024 * 1024,
            max_pending_notifications: 10_000,
            feedback_ttl: Duration::from_secs(3600),
            feedback_max_delivery_count: 10,
            feedback_lock_duration: Duration::from_secs(60),
        }
    }
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

pub(crate) type Target = (String, Option<String>);

/// Arrivals a slow follower may fall behind by before it is told it lagged.
const ARRIVALS_QUEUE: usize = 1024;

#[derive(Debug, Clone)]
struct Queued {
    /// Its row in the durable store.
    seq: u64,
    message: C2dMessage,
    expires: DateTime<Utc>,
    deliveries: u32,
    generation_id: String,
}

/// A queued message as stored (its sequence number is the row's key).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredMessage {
    message: C2dMessage,
    /// Milliseconds since the Unix epoch.
    expires: i64,
    deliveries: u32,
    generation_id: String,
}

impl Queued {
    fn target(&self) -> Target {
        (
            self.message.device_id.clone(),
            self.message.module_id.clone(),
        )
    }

    fn row(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(&StoredMessage {
            message: self.message.clone(),
            expires: self.expires.timestamp_millis(),
            deliveries: self.deliveries,
            generation_id: self.generation_id.clone(),
        })
        .ok()
    }
}

struct Locked {
    target: Target,
    item: Queued,
    until: DateTime<Utc>,
}

/// A feedback record waiting for (or offered to) a receiver.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FeedbackRecord {
    seq: u64,
    /// The record as the feedback batch carries it.
    pub(crate) record: Value,
    expires: DateTime<Utc>,
    /// How many times it was offered.
    deliveries: u32,
}

/// A feedback record as stored.
#[derive(Serialize, Deserialize)]
struct StoredFeedback {
    record: Value,
    expires: i64,
    deliveries: u32,
}

impl FeedbackRecord {
    fn row(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(&StoredFeedback {
            record: self.record.clone(),
            expires: self.expires.timestamp_millis(),
            deliveries: self.deliveries,
        })
        .ok()
    }
}

/// A feedback batch received over HTTP: locked until completed, abandoned or timed out.
struct FeedbackLock {
    records: Vec<FeedbackRecord>,
    until: DateTime<Utc>,
}

/// A feedback batch as `GET /messages/serviceBound/feedback` answers it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FeedbackBatch {
    /// What completes or abandons the batch.
    pub(crate) lock_token: String,
    /// The records, as the AMQP feedback message carries them.
    pub(crate) records: Vec<Value>,
    /// How many times this batch's records were offered, this time included (the most of
    /// any record in it).
    pub(crate) delivery_count: u32,
}

#[derive(Default)]
struct State {
    queues: HashMap<Target, VecDeque<Queued>>,
    locked: HashMap<String, Locked>,
    feedback: VecDeque<FeedbackRecord>,
    /// Feedback batches received over HTTP and not yet settled, by lock token.
    feedback_locks: HashMap<String, FeedbackLock>,
    /// Records in `feedback_locks`: they count against the pending-record limit.
    locked_feedback: usize,
    file_notifications: VecDeque<Value>,
    accepted: VecDeque<C2dMessage>,
    /// Body bytes in `accepted`.
    accepted_bytes: usize,
    /// Body bytes queued and locked.
    queued_bytes: usize,
    /// The next row's sequence number.
    next_seq: u64,
    /// Changes not yet written to the durable store.
    journal: C2dChanges,
    /// No message expires and no lock times out before this (None: nothing is waiting). Lets
    /// every enqueue and receive skip the full scan, which otherwise made each send cost in
    /// proportion to everything queued.
    next_deadline: Option<DateTime<Utc>>,
}

impl State {
    fn note_deadline(&mut self, at: DateTime<Utc>) {
        self.next_deadline = Some(self.next_deadline.map_or(at, |d| d.min(at)));
    }

    fn seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// A message leaves the hub (settled, expired, purged, forgotten).
    fn drop_message(&mut self, item: &Queued) {
        self.queued_bytes = self.queued_bytes.saturating_sub(item.message.body.len());
        self.journal.messages.push((item.seq, None));
    }
}

/// The hub's cloud-to-device side.
pub(crate) struct C2d {
    state: Mutex<State>,
    settings: C2dSettings,
    persist: Option<Arc<Persist>>,
    /// Signalled when feedback records are queued.
    pub(crate) feedback_ready: Notify,
    /// Signalled when file notifications are queued.
    pub(crate) files_ready: Notify,
    /// The device (and module) for which a message became deliverable (queued, or back in
    /// its queue), so that a connected device (MQTT) takes it without polling. A follower
    /// that lags is told so and must look at every queue it serves.
    arrivals: tokio::sync::broadcast::Sender<Target>,
}

impl Default for C2d {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            settings: C2dSettings::default(),
            persist: None,
            feedback_ready: Notify::new(),
            files_ready: Notify::new(),
            arrivals: tokio::sync::broadcast::Sender::new(ARRIVALS_QUEUE),
        }
    }
}

impl C2d {
    /// The cloud-to-device side with these settings, restored from `persist` when given.
    pub(crate) fn new(
        settings: C2dSettings,
        persist: Option<Arc<Persist>>,
    ) -> Result<Self, crate::Error> {
        let mut state = State::default();
        if let Some(p) = &persist {
            let rows = p.load_c2d()?;
            let mut last = None;
            for (seq, bytes) in rows.messages {
                last = Some(seq);
                let Ok(stored) = serde_json::from_slice::<StoredMessage>(&bytes) else {
                    tracing::warn!(
                        seq,
                        "a stored cloud-to-device message cannot be read; dropped"
                    );
                    state.journal.messages.push((seq, None));
                    continue;
                };
                let item = Queued {
                    seq,
                    expires: DateTime::from_timestamp_millis(stored.expires)
                        .unwrap_or_else(Utc::now),
                    message: stored.message,
                    deliveries: stored.deliveries,
                    generation_id: stored.generation_id,
                };
                state.queued_bytes += item.message.body.len();
                state.note_deadline(item.expires);
                state
                    .queues
                    .entry(item.target())
                    .or_default()
                    .push_back(item);
            }
            for (seq, bytes) in rows.feedback {
                last = last.max(Some(seq));
                let Ok(stored) = serde_json::from_slice::<StoredFeedback>(&bytes) else {
                    tracing::warn!(seq, "a stored feedback record cannot be read; dropped");
                    state.journal.feedback.push((seq, None));
                    continue;
                };
                let expires =
                    DateTime::from_timestamp_millis(stored.expires).unwrap_or_else(Utc::now);
                state.note_deadline(expires);
                state.feedback.push_back(FeedbackRecord {
                    seq,
                    record: stored.record,
                    expires,
                    deliveries: stored.deliveries,
                });
            }
            state.next_seq = last.map_or(0, |l| l + 1);
        }
        let c2d = Self {
            state: Mutex::new(state),
            settings,
            persist,
            feedback_ready: Notify::new(),
            files_ready: Notify::new(),
            arrivals: tokio::sync::broadcast::Sender::new(ARRIVALS_QUEUE),
        };
        let mut state = c2d.lock();
        c2d.flush(&mut state);
        drop(state);
        Ok(c2d)
    }

    /// The state, waiting for it off the async workers when another caller holds it.
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                off_worker(|| self.state.lock().unwrap_or_else(|e| e.into_inner()))
            }
        }
    }

    /// Writes the journal durably (off the async workers); false when that failed.
    fn flush(&self, state: &mut State) -> bool {
        let changes = std::mem::take(&mut state.journal);
        let Some(persist) = &self.persist else {
            return true;
        };
        if changes.is_empty() {
            return true;
        }
        match off_worker(|| persist.write_c2d(&changes)) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "cloud-to-device state could not be stored");
                false
            }
        }
    }

    /// Changes whenever a message may have become deliverable.
    pub(crate) fn watch_arrivals(&self) -> tokio::sync::broadcast::Receiver<Target> {
        self.arrivals.subscribe()
    }

    fn arrived(&self, target: &Target) {
        if self.arrivals.receiver_count() > 0 {
            let _ = self.arrivals.send(target.clone());
        }
    }

    /// The settings in force.
    pub(crate) fn settings(&self) -> &C2dSettings {
        &self.settings
    }

    /// Queues a message for an existing device (or module) with generation id `generation_id`.
    pub(crate) fn enqueue(
        &self,
        mut message: C2dMessage,
        generation_id: String,
    ) -> Result<usize, Refusal> {
        let size = message.body.len();
        if size > MAX_MESSAGE_BYTES {
            return Err(Refusal::TooLarge(size));
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
            self.flush(&mut state);
            return Err(Refusal::QueueFull(target_name(&target)));
        }
        if state.queued_bytes + size > self.settings.max_total_bytes {
            self.flush(&mut state);
            return Err(Refusal::HubFull(self.settings.max_total_bytes));
        }
        let item = Queued {
            seq: state.seq(),
            message,
            expires,
            deliveries: 0,
            generation_id,
        };
        let row = item.row();
        state.journal.messages.push((item.seq, row));
        if !self.flush(&mut state) {
            return Err(Refusal::NotStored);
        }
        state.queued_bytes += size;
        self.remember(&mut state, item.message.clone());
        self.arrived(&target);
        state.queues.entry(target).or_default().push_back(item);
        state.note_deadline(expires);
        Ok(pending + 1)
    }

    /// Adds to the record of accepted messages, within its count and byte budget.
    fn remember(&self, state: &mut State, message: C2dMessage) {
        state.accepted_bytes += message.body.len();
        state.accepted.push_back(message);
        while state.accepted.len() > ACCEPTED_RECORD
            || state.accepted_bytes > self.settings.max_total_bytes
        {
            let Some(old) = state.accepted.pop_front() else {
                break;
            };
            state.accepted_bytes = state.accepted_bytes.saturating_sub(old.body.len());
        }
    }

    /// Messages waiting for (or locked by) a device or module.
    pub(crate) fn pending(&self, device_id: &str, module_id: Option<&str>) -> usize {
        let target = (device_id.to_owned(), module_id.map(str::to_owned));
        let mut state = self.lock();
        self.expire_locked(&mut state, Utc::now());
        self.flush(&mut state);
        pending_in(&state, &target)
    }

    /// The device takes the next message, which stays locked until settled.
    pub(crate) fn receive(&self, device_id: &str, module_id: Option<&str>) -> Option<ReceivedC2d> {
        let target = (device_id.to_owned(), module_id.map(str::to_owned));
        let now = Utc::now();
        let mut state = self.lock();
        self.expire_locked(&mut state, now);
        let Some(mut item) = state.queues.get_mut(&target).and_then(VecDeque::pop_front) else {
            self.flush(&mut state);
            return None;
        };
        item.deliveries += 1;
        let row = item.row();
        state.journal.messages.push((item.seq, row));
        self.flush(&mut state);
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
            Some(fate) => {
                state.drop_message(&locked.item);
                self.record(&mut state, &locked.item, fate);
            }
            None => requeue(self, &mut state, locked),
        }
        self.flush(&mut state);
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
            state.drop_message(item);
            self.record(&mut state, item, Fate::Purged);
        }
        self.flush(&mut state);
        purged.len()
    }

    /// Forgets a deleted device's messages without feedback.
    pub(crate) fn forget(&self, device_id: &str) {
        let mut state = self.lock();
        let mut gone = Vec::new();
        state.queues.retain(|(d, _), queue| {
            let keep = d != device_id;
            if !keep {
                gone.extend(queue.drain(..));
            }
            keep
        });
        state.locked.retain(|_, l| {
            let keep = l.target.0 != device_id;
            if !keep {
                gone.push(l.item.clone());
            }
            keep
        });
        for item in &gone {
            state.drop_message(item);
        }
        self.flush(&mut state);
    }

    /// The messages the hub accepted (the last [`ACCEPTED_RECORD`]), oldest first.
    pub(crate) fn accepted(&self) -> Vec<C2dMessage> {
        self.lock().accepted.iter().cloned().collect()
    }

    /// Empties the record of accepted messages.
    pub(crate) fn clear_accepted(&self) {
        let mut state = self.lock();
        state.accepted.clear();
        state.accepted_bytes = 0;
    }

    /// Expires what is due: queued messages past their expiry, locks past their timeout and
    /// feedback records past their time to live.
    pub(crate) fn sweep(&self) {
        let mut state = self.lock();
        self.expire_locked(&mut state, Utc::now());
        self.flush(&mut state);
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
        state.queues.retain(|_, queue| !queue.is_empty());
        for item in &expired {
            state.drop_message(item);
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
        let lapsed: Vec<String> = state
            .feedback_locks
            .iter()
            .filter(|(_, l)| l.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for token in lapsed {
            if let Some(lock) = state.feedback_locks.remove(&token) {
                state.locked_feedback = state.locked_feedback.saturating_sub(lock.records.len());
                self.requeue_feedback(state, lock.records, now);
                self.feedback_ready.notify_waiters();
            }
        }
        let mut gone = Vec::new();
        state.feedback.retain(|f| {
            let keep = f.expires > now;
            if !keep {
                gone.push(f.seq);
            }
            keep
        });
        state
            .journal
            .feedback
            .extend(gone.into_iter().map(|seq| (seq, None)));
        // What is left sets the next deadline: queued expiries, lock timeouts, the expiry
        // of each locked message (it goes back to its queue if the lock times out), and the
        // feedback records' time to live.
        let queued = state.queues.values().flatten().map(|q| q.expires);
        let locked = state
            .locked
            .values()
            .flat_map(|l| [l.until, l.item.expires]);
        let feedback = state.feedback.iter().map(|f| f.expires);
        let feedback_locks = state.feedback_locks.values().map(|l| l.until);
        state.next_deadline = queued
            .chain(locked)
            .chain(feedback)
            .chain(feedback_locks)
            .min();
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
        let now = Utc::now();
        let expires = now
            + chrono::Duration::from_std(self.settings.feedback_ttl)
                .unwrap_or_else(|_| chrono::Duration::hours(1));
        let record = FeedbackRecord {
            seq: state.seq(),
            record: json!({
                "originalMessageId": item.message.message_id,
                "enqueuedTimeUtc": service_time(now),
                "statusCode": fate.status(),
                "description": description,
                "deviceId": item.message.device_id,
                "deviceGenerationId": item.generation_id,
            }),
            expires,
            deliveries: 0,
        };
        let row = record.row();
        state.journal.feedback.push((record.seq, row));
        // Records locked by an HTTP receiver count too: together they stay within the limit.
        while state.feedback.len() + state.locked_feedback
            >= self.settings.max_pending_notifications.max(1)
        {
            let Some(old) = state.feedback.pop_front() else {
                break;
            };
            tracing::warn!("too many feedback records wait for a receiver; the oldest is dropped");
            state.journal.feedback.push((old.seq, None));
        }
        state.feedback.push_back(record);
        state.note_deadline(expires);
        self.feedback_ready.notify_waiters();
    }

    /// Takes up to [`FEEDBACK_BATCH`] feedback records to offer as one batch; each counts a
    /// delivery. Records offered the maximum number of times already, or expired, are
    /// dropped instead.
    pub(crate) fn take_feedback(&self) -> Vec<FeedbackRecord> {
        let mut state = self.lock();
        let batch = self.take_batch(&mut state, Utc::now());
        self.flush(&mut state);
        batch
    }

    fn take_batch(&self, state: &mut State, now: DateTime<Utc>) -> Vec<FeedbackRecord> {
        let mut batch = Vec::new();
        while batch.len() < FEEDBACK_BATCH {
            let Some(mut record) = state.feedback.pop_front() else {
                break;
            };
            if record.expires <= now
                || record.deliveries >= self.settings.feedback_max_delivery_count
            {
                state.journal.feedback.push((record.seq, None));
                continue;
            }
            record.deliveries += 1;
            let row = record.row();
            state.journal.feedback.push((record.seq, row));
            batch.push(record);
        }
        batch
    }

    /// Takes the next feedback batch for an HTTP receiver and locks it for the feedback
    /// lock duration under a new lock token; `None` when no record waits. The same records
    /// the AMQP receiver takes from, with the same delivery counts.
    pub(crate) fn lock_feedback(&self) -> Option<FeedbackBatch> {
        let mut state = self.lock();
        let now = Utc::now();
        self.expire_locked(&mut state, now);
        let batch = self.take_batch(&mut state, now);
        if batch.is_empty() {
            self.flush(&mut state);
            return None;
        }
        let until = now
            + chrono::Duration::from_std(self.settings.feedback_lock_duration)
                .unwrap_or_else(|_| chrono::Duration::seconds(60));
        // A GUID, as the service's lock tokens.
        let lock_token = crate::rest::errors::guid();
        let answer = FeedbackBatch {
            lock_token: lock_token.clone(),
            records: batch.iter().map(|r| r.record.clone()).collect(),
            delivery_count: batch.iter().map(|r| r.deliveries).max().unwrap_or(1),
        };
        state.locked_feedback += batch.len();
        state.feedback_locks.insert(
            lock_token,
            FeedbackLock {
                records: batch,
                until,
            },
        );
        state.note_deadline(until);
        self.flush(&mut state);
        Some(answer)
    }

    /// Completes a feedback batch received over HTTP: its records are done. False when no
    /// batch is locked with this token (never was, settled already, or its lock lapsed).
    pub(crate) fn complete_feedback_lock(&self, lock_token: &str) -> bool {
        let mut state = self.lock();
        self.expire_locked(&mut state, Utc::now());
        let Some(lock) = state.feedback_locks.remove(lock_token) else {
            self.flush(&mut state);
            return false;
        };
        state.locked_feedback = state.locked_feedback.saturating_sub(lock.records.len());
        state
            .journal
            .feedback
            .extend(lock.records.iter().map(|r| (r.seq, None)));
        self.flush(&mut state);
        true
    }

    /// Abandons a feedback batch received over HTTP: its records go back to the front of
    /// the queue (those offered the maximum number of times go). False as for complete.
    pub(crate) fn abandon_feedback_lock(&self, lock_token: &str) -> bool {
        let mut state = self.lock();
        let now = Utc::now();
        self.expire_locked(&mut state, now);
        let Some(lock) = state.feedback_locks.remove(lock_token) else {
            self.flush(&mut state);
            return false;
        };
        state.locked_feedback = state.locked_feedback.saturating_sub(lock.records.len());
        self.requeue_feedback(&mut state, lock.records, now);
        self.flush(&mut state);
        drop(state);
        self.feedback_ready.notify_waiters();
        true
    }

    /// Puts records back at the front, in order; what was offered the maximum number of
    /// times, or expired, goes instead.
    fn requeue_feedback(&self, state: &mut State, batch: Vec<FeedbackRecord>, now: DateTime<Utc>) {
        for record in batch.into_iter().rev() {
            if record.expires <= now
                || record.deliveries >= self.settings.feedback_max_delivery_count
            {
                state.journal.feedback.push((record.seq, None));
            } else {
                state.note_deadline(record.expires);
                state.feedback.push_front(record);
            }
        }
    }

    /// The receiver accepted a batch: its records are done.
    pub(crate) fn complete_feedback(&self, batch: &[FeedbackRecord]) {
        let mut state = self.lock();
        state
            .journal
            .feedback
            .extend(batch.iter().map(|r| (r.seq, None)));
        self.flush(&mut state);
    }

    /// Puts a batch the service did not complete back at the front (what has been offered
    /// the maximum number of times, or expired meanwhile, goes).
    pub(crate) fn return_feedback(&self, batch: Vec<FeedbackRecord>) {
        let mut state = self.lock();
        self.requeue_feedback(&mut state, batch, Utc::now());
        self.flush(&mut state);
        drop(state);
        self.feedback_ready.notify_waiters();
    }

    /// Feedback records waiting to be offered.
    pub(crate) fn feedback_pending(&self) -> usize {
        let mut state = self.lock();
        self.expire_locked(&mut state, Utc::now());
        self.flush(&mut state);
        state.feedback.len()
    }

    /// Queues a file-upload notification (as a device finishing an upload would).
    pub(crate) fn notify_file_upload(&self, notification: Value) {
        let mut state = self.lock();
        while state.file_notifications.len() >= self.settings.max_pending_notifications.max(1) {
            tracing::warn!(
                "too many file-upload notifications wait for a receiver; the oldest is dropped"
            );
            state.file_notifications.pop_front();
        }
        state.file_notifications.push_back(notification);
        drop(state);
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
    c2d.arrived(&locked.target);
    if locked.item.deliveries >= MAX_DELIVERY_COUNT {
        state.drop_message(&locked.item);
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
                    r.record["originalMessageId"].as_str().unwrap(),
                    r.record["statusCode"].as_str().unwrap(),
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
            c2d.take_feedback()[0].record["statusCode"],
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
        assert_eq!(c2d.take_feedback()[0].record["statusCode"], "Expired");
    }

    /// Enqueues a message for `d` and has the device complete it: one Success record.
    fn one_success(c2d: &C2d, id: &str) {
        let mut m = msg("d", "full");
        m.message_id = Some(id.to_owned());
        c2d.enqueue(m, "g".into()).unwrap();
        let r = c2d.receive("d", None).unwrap();
        assert!(c2d.complete(&r.lock_token));
    }

    #[test]
    fn http_feedback_locks_settle_once_and_count_against_the_limit() {
        let c2d = C2d::new(
            C2dSettings {
                max_pending_notifications: 2,
                ..C2dSettings::default()
            },
            None,
        )
        .unwrap();
        assert!(c2d.lock_feedback().is_none());
        one_success(&c2d, "a");
        let batch = c2d.lock_feedback().unwrap();
        assert_eq!(batch.records[0]["originalMessageId"], "a");
        assert_eq!(batch.delivery_count, 1);
        // Locked: neither receiver gets it.
        assert!(c2d.lock_feedback().is_none());
        assert!(c2d.take_feedback().is_empty());
        // Two more records while one is locked: with a limit of 2, the older new one goes.
        one_success(&c2d, "b");
        one_success(&c2d, "c");
        assert_eq!(c2d.feedback_pending(), 1);
        assert!(c2d.abandon_feedback_lock(&batch.lock_token));
        assert!(!c2d.abandon_feedback_lock(&batch.lock_token));
        let again = c2d.lock_feedback().unwrap();
        let ids: Vec<&str> = again
            .records
            .iter()
            .map(|r| r["originalMessageId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(again.delivery_count, 2);
        assert!(c2d.complete_feedback_lock(&again.lock_token));
        assert!(!c2d.complete_feedback_lock(&again.lock_token));
        assert!(!c2d.complete_feedback_lock("never-issued"));
        assert_eq!(c2d.feedback_pending(), 0);
    }
}
