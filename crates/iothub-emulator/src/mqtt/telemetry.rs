//! Device-to-cloud messages (telemetry) as the hub received them, kept in a bounded per-hub
//! buffer that tests ([`crate::Emulator::device_messages`]) and the control API read: the
//! oldest go first when it is full, by count or by bytes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A telemetry message a device (or module) sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceMessage {
    /// The sending device.
    pub device_id: String,
    /// The sending module, for module telemetry.
    pub module_id: Option<String>,
    /// Application properties (a key sent without `=` has an empty value).
    pub properties: BTreeMap<String, String>,
    /// System properties by their topic names: `$.mid` (message id), `$.cid` (correlation
    /// id), `$.ct` (content type), `$.ce` (content encoding), `$.uid`, `$.to`, `$.exp`, …
    pub system_properties: BTreeMap<String, String>,
    /// The payload.
    #[serde(with = "body_base64")]
    pub body: Vec<u8>,
    /// When the hub received it (RFC 3339).
    pub enqueued_time: String,
}

impl DeviceMessage {
    /// The `$.mid` system property.
    pub fn message_id(&self) -> Option<&str> {
        self.system_properties.get("$.mid").map(String::as_str)
    }

    /// The `$.ct` system property.
    pub fn content_type(&self) -> Option<&str> {
        self.system_properties.get("$.ct").map(String::as_str)
    }

    /// The body as UTF-8 (lossy), for assertions.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn weight(&self) -> usize {
        self.body.len()
            + self
                .properties
                .iter()
                .chain(&self.system_properties)
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
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

#[derive(Default)]
struct Kept {
    messages: VecDeque<DeviceMessage>,
    bytes: usize,
}

/// The hub's telemetry buffer.
pub(crate) struct Telemetry {
    kept: Mutex<Kept>,
    capacity: usize,
    max_bytes: usize,
    received: std::sync::atomic::AtomicU64,
}

impl Telemetry {
    pub(crate) fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            kept: Mutex::default(),
            capacity,
            max_bytes,
            received: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a message, dropping the oldest beyond the limits.
    pub(crate) fn push(&self, message: DeviceMessage) {
        self.received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.capacity == 0 {
            return;
        }
        let mut kept = self.lock();
        kept.bytes += message.weight();
        kept.messages.push_back(message);
        while kept.messages.len() > self.capacity || kept.bytes > self.max_bytes {
            let Some(old) = kept.messages.pop_front() else {
                break;
            };
            kept.bytes = kept.bytes.saturating_sub(old.weight());
        }
    }

    /// The messages kept, oldest first, of one device (and module, if given) or of all.
    pub(crate) fn list(&self, device: Option<&str>, module: Option<&str>) -> Vec<DeviceMessage> {
        self.lock()
            .messages
            .iter()
            .filter(|m| device.is_none_or(|d| m.device_id == d))
            .filter(|m| module.is_none_or(|x| m.module_id.as_deref() == Some(x)))
            .cloned()
            .collect()
    }

    /// Forgets every kept message.
    pub(crate) fn clear(&self) {
        *self.lock() = Kept::default();
    }

    /// How many messages were received since start (kept or not).
    pub(crate) fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(device: &str, body: &str) -> DeviceMessage {
        DeviceMessage {
            device_id: device.into(),
            module_id: None,
            properties: BTreeMap::new(),
            system_properties: BTreeMap::new(),
            body: body.as_bytes().to_vec(),
            enqueued_time: String::new(),
        }
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let t = Telemetry::new(2, 10);
        t.push(message("a", "1"));
        t.push(message("b", "2"));
        t.push(message("a", "3"));
        let kept: Vec<String> = t.list(None, None).iter().map(|m| m.body_text()).collect();
        assert_eq!(kept, ["2", "3"]);
        assert_eq!(t.list(Some("a"), None).len(), 1);
        t.push(message("c", "0123456789"));
        assert_eq!(t.list(None, None).len(), 1);
        assert_eq!(t.received(), 4);
        t.clear();
        assert!(t.list(None, None).is_empty());
    }
}
