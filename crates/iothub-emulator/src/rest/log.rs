//! The request log: every service request as received (method, raw path and query,
//! headers, body) with its answer, secrets redacted. Tests read it to check the wire.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One service request as the emulator received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLogEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it arrived (RFC 3339, UTC).
    pub time: String,
    /// HTTP method.
    pub method: String,
    /// The path exactly as sent, percent-encoding included.
    pub path: String,
    /// The raw query string (without `?`), empty when there was none.
    pub query: String,
    /// Headers in arrival order, names lower-cased; `authorization` has its signature
    /// or token replaced by `REDACTED`.
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8); symmetric keys inside JSON are `REDACTED`.
    pub body: String,
    /// The status answered, or `None` when the connection was dropped by fault injection.
    pub status: Option<u16>,
}

impl RequestLogEntry {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, if it is JSON.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A bounded log: the oldest entries go first when it is full.
pub(crate) struct RequestLog {
    entries: Mutex<(u64, VecDeque<RequestLogEntry>)>,
    capacity: usize,
}

impl RequestLog {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new((0, VecDeque::new())),
            capacity,
        }
    }

    /// Adds an entry, numbering it; returns its number.
    pub(crate) fn push(&self, mut entry: RequestLogEntry) -> u64 {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard.0 += 1;
        entry.seq = guard.0;
        if self.capacity == 0 {
            return entry.seq;
        }
        if guard.1.len() == self.capacity {
            guard.1.pop_front();
        }
        let seq = entry.seq;
        guard.1.push_back(entry);
        seq
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestLogEntry> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        guard.1.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }
}

/// Redacts the secret part of an `Authorization` value, keeping what tests compare.
pub(crate) fn redact_authorization(value: &str) -> String {
    if let Some(rest) = value.strip_prefix("SharedAccessSignature ") {
        let fields: Vec<String> = rest
            .split('&')
            .map(|field| match field.split_once('=') {
                Some(("sig", _)) => "sig=REDACTED".to_owned(),
                _ => field.to_owned(),
            })
            .collect();
        return format!("SharedAccessSignature {}", fields.join("&"));
    }
    match value.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} REDACTED"),
        None => "REDACTED".to_owned(),
    }
}

/// Redacts symmetric keys in a JSON body; other bodies are kept as sent.
pub(crate) fn redact_body(body: &[u8]) -> String {
    if let Ok(mut json) = serde_json::from_slice::<Value>(body)
        && redact_keys(&mut json)
    {
        return json.to_string();
    }
    String::from_utf8_lossy(body).into_owned()
}

fn redact_keys(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if (k == "primaryKey" || k == "secondaryKey") && v.is_string() {
                    *v = Value::String("REDACTED".into());
                    changed = true;
                } else {
                    changed |= redact_keys(v);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                changed |= redact_keys(v);
            }
        }
        _ => {}
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_signatures_and_keys() {
        assert_eq!(
            redact_authorization("SharedAccessSignature sr=h&sig=abc%3D&se=1&skn=owner"),
            "SharedAccessSignature sr=h&sig=REDACTED&se=1&skn=owner"
        );
        assert_eq!(redact_authorization("Bearer eyJ"), "Bearer REDACTED");
        let body =
            br#"{"authentication":{"symmetricKey":{"primaryKey":"c2VjcmV0","secondaryKey":"x"}}}"#;
        let out = redact_body(body);
        assert!(!out.contains("c2VjcmV0"));
        assert!(out.contains("REDACTED"));
        assert_eq!(redact_body(b"not json"), "not json");
    }

    #[test]
    fn the_log_is_bounded() {
        let log = RequestLog::new(2);
        for _ in 0..3 {
            log.push(RequestLogEntry {
                seq: 0,
                time: String::new(),
                method: "GET".into(),
                path: "/".into(),
                query: String::new(),
                headers: vec![],
                body: String::new(),
                status: Some(200),
            });
        }
        let seqs: Vec<u64> = log.snapshot().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
    }
}
