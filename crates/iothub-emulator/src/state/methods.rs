//! Direct methods: what emulated devices answer (set through the control API), and the
//! wait for a device to connect within `connectTimeoutInSeconds`.

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

type Target = (String, Option<String>);

/// Method handlers per device or module, and a signal for connects.
#[derive(Default)]
pub(crate) struct Methods {
    handlers: Mutex<HashMap<Target, HashMap<String, MethodResponse>>>,
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
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Target, HashMap<String, MethodResponse>>> {
        self.handlers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, id: &str, mid: Option<&str>, name: &str, response: MethodResponse) {
        self.lock()
            .entry((id.to_owned(), mid.map(str::to_owned)))
            .or_default()
            .insert(name.to_owned(), response);
    }

    pub(crate) fn remove(&self, id: &str, mid: Option<&str>, name: &str) -> bool {
        self.lock()
            .get_mut(&(id.to_owned(), mid.map(str::to_owned)))
            .is_some_and(|m| m.remove(name).is_some())
    }

    /// Forgets every handler of a device (deleted devices lose them).
    pub(crate) fn forget(&self, id: &str) {
        self.lock().retain(|(d, _), _| d != id);
    }

    /// The device's answer to `name`: its handler, else its default handler, else 501 as the
    /// device SDKs answer an unregistered method.
    pub(crate) fn outcome(&self, id: &str, mid: Option<&str>, name: &str) -> Outcome {
        let handlers = self.lock();
        let Some(map) = handlers.get(&(id.to_owned(), mid.map(str::to_owned))) else {
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
}
