//! Direct methods: what emulated devices answer (set through the control API), and the
//! wait for a device to connect within `connectTimeoutInSeconds`.
//!
//! What the control API registers is bounded: in number and in payload bytes over all
//! devices, each payload at most the service's direct-method payload limit.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

/// How an emulated device answers a direct method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MethodResponse {
    /// The device's status code, returned as `status` (default 200).
    #[serde(default = "ok")]
    pub status: i32,
    /// The payload returned; ignored when `echo` is set.
    #[serde(default)]
    pub payload: Value,
    /// Answer with the request's payload instead.
    #[serde(default)]
    pub echo: bool,
    /// How long the device takes to answer.
    #[serde(default)]
    pub delay_ms: u64,
}

fn ok() -> i32 {
    200
}

impl MethodResponse {
    /// A fixed answer.
    pub fn fixed(status: i32, payload: Value) -> Self {
        Self {
            status,
            payload,
            echo: false,
            delay_ms: 0,
        }
    }

    /// Echo the request payload with status 200.
    pub fn echo() -> Self {
        Self {
            status: 200,
            payload: Value::Null,
            echo: true,
            delay_ms: 0,
        }
    }

    /// The same answer, after `delay_ms`.
    pub fn delayed(mut self, delay_ms: u64) -> Self {
        self.delay_ms = delay_ms;
        self
    }
}

/// The method name that stands for "any method without its own handler".
pub const DEFAULT_METHOD: &str = "*";

/// Largest payload of one answer, in bytes of JSON: the service's direct-method payload
/// limit (128 KB).
pub(crate) const MAX_PAYLOAD_BYTES: usize = 128 * 1024;
/// Longest answer delay, in milliseconds: the longest a caller can wait
/// (`responseTimeoutInSeconds` is at most 300).
pub(crate) const MAX_DELAY_MS: u64 = 300_000;

type Target = (String, Option<String>);

/// How much the control API may register.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most handlers over all devices and modules.
    pub(crate) max_handlers: usize,
    /// Most payload bytes (plus method names) over all of them.
    pub(crate) max_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_handlers: 1_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The answer's payload is larger than [`MAX_PAYLOAD_BYTES`].
    #[error("the payload is {0} bytes; a direct method payload is at most {MAX_PAYLOAD_BYTES}")]
    PayloadTooLarge(usize),
    /// The delay is longer than [`MAX_DELAY_MS`].
    #[error("delayMs is at most {MAX_DELAY_MS} (the longest a method call waits); it was {0}")]
    DelayTooLong(u64),
    /// All handlers together would exceed the limits.
    #[error(
        "the emulator keeps at most {0} method handlers and {1} bytes of their payloads \
         (max_method_handlers, max_method_handler_bytes); remove some first"
    )]
    Full(usize, usize),
}

#[derive(Default)]
struct Handlers {
    map: HashMap<Target, HashMap<String, MethodResponse>>,
    count: usize,
    bytes: usize,
}

fn weight(name: &str, response: &MethodResponse) -> usize {
    name.len() + payload_bytes(response)
}

fn payload_bytes(response: &MethodResponse) -> usize {
    serde_json::to_vec(&response.payload).map_or(0, |v| v.len())
}

/// Method handlers per device or module, and a signal for connects.
#[derive(Default)]
pub(crate) struct Methods {
    handlers: Mutex<Handlers>,
    limits: Limits,
    pub(crate) connected: Notify,
}

/// What the device does with a call.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// No handler registered at all: the service reports the device as not online.
    NoHandler,
    /// The device answers.
    Answer(MethodResponse),
}

impl Methods {
    pub(crate) fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Handlers> {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an answer (for [`crate::Emulator::set_method_response`]: the caller is the
    /// test itself, so no limit applies).
    pub(crate) fn set(&self, id: &str, mid: Option<&str>, name: &str, response: MethodResponse) {
        let mut handlers = self.lock();
        insert(&mut handlers, id, mid, name, response);
    }

    /// Registers an answer within the limits (for the control API); the device's existence
    /// is the caller's to check.
    pub(crate) fn set_checked(
        &self,
        id: &str,
        mid: Option<&str>,
        name: &str,
        response: MethodResponse,
    ) -> Result<(), Refused> {
        let size = payload_bytes(&response);
        if size > MAX_PAYLOAD_BYTES {
            return Err(Refused::PayloadTooLarge(size));
        }
        if response.delay_ms > MAX_DELAY_MS {
            return Err(Refused::DelayTooLong(response.delay_ms));
        }
        let mut handlers = self.lock();
        let replaced = handlers
            .map
            .get(&(id.to_owned(), mid.map(str::to_owned)))
            .and_then(|m| m.get(name))
            .map(|old| weight(name, old));
        let count = handlers.count + usize::from(replaced.is_none());
        let bytes = handlers.bytes - replaced.unwrap_or(0) + weight(name, &response);
        if count > self.limits.max_handlers || bytes > self.limits.max_bytes {
            return Err(Refused::Full(
                self.limits.max_handlers,
                self.limits.max_bytes,
            ));
        }
        insert(&mut handlers, id, mid, name, response);
        Ok(())
    }

    pub(crate) fn remove(&self, id: &str, mid: Option<&str>, name: &str) -> bool {
        let mut handlers = self.lock();
        let target = (id.to_owned(), mid.map(str::to_owned));
        let Some(map) = handlers.map.get_mut(&target) else {
            return false;
        };
        let Some(old) = map.remove(name) else {
            return false;
        };
        if map.is_empty() {
            handlers.map.remove(&target);
        }
        handlers.count -= 1;
        handlers.bytes -= weight(name, &old);
        true
    }

    /// Forgets every handler of a device (deleted devices lose them).
    pub(crate) fn forget(&self, id: &str) {
        let mut handlers = self.lock();
        let mut gone = (0, 0);
        handlers.map.retain(|(d, _), map| {
            let keep = d != id;
            if !keep {
                gone.0 += map.len();
                gone.1 += map.iter().map(|(n, r)| weight(n, r)).sum::<usize>();
            }
            keep
        });
        handlers.count -= gone.0;
        handlers.bytes -= gone.1;
    }

    /// The device's answer to `name`: its handler, else its default handler, else 501 as the
    /// device SDKs answer an unregistered method.
    pub(crate) fn outcome(&self, id: &str, mid: Option<&str>, name: &str) -> Outcome {
        let handlers = self.lock();
        let Some(map) = handlers.map.get(&(id.to_owned(), mid.map(str::to_owned))) else {
            return Outcome::NoHandler;
        };
        if map.is_empty() {
            return Outcome::NoHandler;
        }
        match map.get(name).or_else(|| map.get(DEFAULT_METHOD)) {
            Some(r) => Outcome::Answer(r.clone()),
            None => Outcome::Answer(MethodResponse::fixed(
                501,
                serde_json::json!({ "message": format!("Method '{name}' is not implemented") }),
            )),
        }
    }
}

fn insert(
    handlers: &mut Handlers,
    id: &str,
    mid: Option<&str>,
    name: &str,
    response: MethodResponse,
) {
    let added = weight(name, &response);
    let old = handlers
        .map
        .entry((id.to_owned(), mid.map(str::to_owned)))
        .or_default()
        .insert(name.to_owned(), response);
    match old {
        Some(old) => handlers.bytes = handlers.bytes - weight(name, &old) + added,
        None => {
            handlers.count += 1;
            handlers.bytes += added;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_order() {
        let m = Methods::default();
        assert_eq!(m.outcome("d", None, "x"), Outcome::NoHandler);
        m.set("d", None, "reboot", MethodResponse::fixed(200, json!("ok")));
        assert_eq!(
            m.outcome("d", None, "reboot"),
            Outcome::Answer(MethodResponse::fixed(200, json!("ok")))
        );
        let Outcome::Answer(r) = m.outcome("d", None, "other") else {
            panic!()
        };
        assert_eq!(r.status, 501);
        m.set("d", None, DEFAULT_METHOD, MethodResponse::echo());
        assert_eq!(
            m.outcome("d", None, "other"),
            Outcome::Answer(MethodResponse::echo())
        );
        assert_eq!(m.outcome("d", Some("m"), "reboot"), Outcome::NoHandler);
        m.forget("d");
        assert_eq!(m.outcome("d", None, "reboot"), Outcome::NoHandler);
    }

    #[test]
    fn responses_read_from_control_json() {
        let r: MethodResponse =
            serde_json::from_value(json!({"status": 201, "payload": {"a": 1}, "delayMs": 5}))
                .unwrap();
        assert_eq!(r, MethodResponse::fixed(201, json!({"a": 1})).delayed(5));
        let r: MethodResponse = serde_json::from_value(json!({"echo": true})).unwrap();
        assert_eq!(r, MethodResponse::echo());
        assert!(serde_json::from_value::<MethodResponse>(json!({"bogus": 1})).is_err());
    }

    #[test]
    fn registrations_are_bounded_in_number_and_bytes() {
        let m = Methods::with_limits(Limits {
            max_handlers: 2,
            max_bytes: 100,
        });
        let small = || MethodResponse::fixed(200, json!("x"));
        m.set_checked("a", None, "m", small()).unwrap();
        // Replacing does not count twice.
        m.set_checked("a", None, "m", small()).unwrap();
        m.set_checked("b", None, "m", small()).unwrap();
        assert_eq!(
            m.set_checked("c", None, "m", small()),
            Err(Refused::Full(2, 100))
        );
        assert!(m.remove("b", None, "m"));
        let big = MethodResponse::fixed(200, json!("y".repeat(200)));
        assert_eq!(
            m.set_checked("c", None, "m", big),
            Err(Refused::Full(2, 100))
        );
        m.forget("a");
        m.set_checked("c", None, "m", small()).unwrap();
        m.set_checked("d", None, "m", small()).unwrap();
        let huge = MethodResponse::fixed(200, json!("z".repeat(MAX_PAYLOAD_BYTES)));
        assert!(matches!(
            m.set_checked("c", None, "m", huge),
            Err(Refused::PayloadTooLarge(_))
        ));
        assert_eq!(
            m.set_checked("c", None, "m", small().delayed(u64::MAX)),
            Err(Refused::DelayTooLong(u64::MAX))
        );
    }
}
