//! The request log: every service request as received (method, raw path and query,
//! headers, body) with its answer, secrets redacted. Tests read it to check the wire.
//!
//! Bounded three ways: entries, bytes per entry (the body cut first) and bytes in total (the
//! oldest entries go first). A request refused by authentication keeps a short entry without
//! its body (which is never read). Read out through the control API as a stream, a chunk at a
//! time, never built whole.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::Frame;
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
    /// The body as text (lossy UTF-8), at most what the log keeps per entry; keys (and
    /// signatures) are `[REDACTED]`, in JSON or not. Empty for a request refused by
    /// authentication, whose body is never read.
    pub body: String,
    /// The status answered, or `None` when the connection was dropped by fault injection.
    pub status: Option<u16>,
    /// Whether the entry was cut to the log's per-entry limit (the body first).
    #[serde(default)]
    pub truncated: bool,
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

/// What the log keeps: entries, bytes per entry, bytes in total.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogLimits {
    /// Most entries; 0 keeps none.
    pub(crate) capacity: usize,
    /// Most bytes one entry keeps (its body cut first).
    pub(crate) max_entry_bytes: usize,
    /// Most bytes over all entries; 0 keeps none.
    pub(crate) max_total_bytes: usize,
}

/// What one refused request keeps at most, whatever the per-entry limit: its line and headers.
const SHORT_ENTRY_BYTES: usize = 2048;
/// What an entry costs beyond its text (its fields, the `Arc`, the queue slot), for the totals.
const ENTRY_OVERHEAD: usize = 128;
/// What a header costs beyond its name and value.
const HEADER_OVERHEAD: usize = 16;
/// How much of the path and query an entry keeps when its headers alone exceed its limit.
const LINE_PART_BYTES: usize = 256;
/// About how many bytes of JSON one chunk of the streamed log carries.
const STREAM_CHUNK: usize = 64 * 1024;

/// A bounded log: the oldest entries go first when it holds its capacity or its bytes.
pub(crate) struct RequestLog {
    inner: Arc<Mutex<Inner>>,
    limits: LogLimits,
}

#[derive(Default)]
struct Inner {
    /// The number of the latest entry pushed (kept or not).
    last_seq: u64,
    /// Entries, oldest first, with what each costs.
    entries: VecDeque<(usize, Arc<RequestLogEntry>)>,
    /// What the kept entries cost together.
    bytes: usize,
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl RequestLog {
    pub(crate) fn new(limits: LogLimits) -> Self {
        Self {
            inner: Arc::default(),
            limits,
        }
    }

    /// Adds an entry, numbering it and cutting it to the per-entry limit; returns its number.
    pub(crate) fn push(&self, entry: RequestLogEntry) -> u64 {
        self.keep(entry, self.limits.max_entry_bytes)
    }

    /// Adds the short entry of a request refused before its body was read: no body, and at
    /// most a couple of kilobytes of line and headers.
    pub(crate) fn push_short(&self, mut entry: RequestLogEntry) -> u64 {
        entry.body.clear();
        self.keep(entry, self.limits.max_entry_bytes.min(SHORT_ENTRY_BYTES))
    }

    fn keep(&self, mut entry: RequestLogEntry, max_bytes: usize) -> u64 {
        let size = fit(&mut entry, max_bytes);
        let mut inner = lock(&self.inner);
        inner.last_seq += 1;
        entry.seq = inner.last_seq;
        let seq = entry.seq;
        let LogLimits {
            capacity,
            max_total_bytes,
            ..
        } = self.limits;
        if capacity == 0 || size > max_total_bytes {
            return seq;
        }
        while inner.entries.len() >= capacity || inner.bytes + size > max_total_bytes {
            let Some((gone, _)) = inner.entries.pop_front() else {
                break;
            };
            inner.bytes -= gone;
        }
        inner.bytes += size;
        inner.entries.push_back((size, Arc::new(entry)));
        seq
    }

    pub(crate) fn snapshot(&self) -> Vec<RequestLogEntry> {
        let inner = lock(&self.inner);
        inner.entries.iter().map(|(_, e)| (**e).clone()).collect()
    }

    pub(crate) fn clear(&self) {
        let mut inner = lock(&self.inner);
        inner.entries.clear();
        inner.bytes = 0;
    }

    /// The entries kept now, as a JSON array written a chunk at a time while it is read:
    /// nothing is built beforehand, and entries that go meanwhile are left out.
    pub(crate) fn stream(&self) -> LogStream {
        let last = lock(&self.inner).last_seq;
        LogStream {
            inner: self.inner.clone(),
            after: 0,
            last,
            state: StreamState::Start,
        }
    }
}

/// The text an entry keeps, in bytes, as the totals count it.
fn cost(entry: &RequestLogEntry) -> usize {
    ENTRY_OVERHEAD
        + entry.method.len()
        + entry.time.len()
        + entry.path.len()
        + entry.query.len()
        + entry.body.len()
        + entry
            .headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + HEADER_OVERHEAD)
            .sum::<usize>()
}

/// Cuts `entry` to `max` bytes (its body first; then its path, query and last headers) and
/// marks it truncated when it was cut; returns what it costs.
fn fit(entry: &mut RequestLogEntry, max: usize) -> usize {
    let size = cost(entry);
    if size <= max {
        return size;
    }
    entry.truncated = true;
    let without_body = size - entry.body.len();
    if without_body < max {
        cut(&mut entry.body, max - without_body);
        return cost(entry);
    }
    entry.body.clear();
    cut(&mut entry.path, LINE_PART_BYTES);
    cut(&mut entry.query, LINE_PART_BYTES);
    while cost(entry) > max && entry.headers.pop().is_some() {}
    cost(entry)
}

/// Shortens `text` to at most `max` bytes, on a character boundary.
fn cut(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

enum StreamState {
    Start,
    Entries { first: bool },
    Done,
}

/// The request log as a response body: `[`, the entries a chunk at a time, `]`.
pub(crate) struct LogStream {
    inner: Arc<Mutex<Inner>>,
    /// Entries up to this number were written.
    after: u64,
    /// The newest entry to write.
    last: u64,
    state: StreamState,
}

impl LogStream {
    /// The next chunk of JSON, or None after the closing bracket.
    fn next_chunk(&mut self) -> Option<Bytes> {
        match self.state {
            StreamState::Start => {
                self.state = StreamState::Entries { first: true };
                Some(Bytes::from_static(b"["))
            }
            StreamState::Entries { mut first } => {
                let batch: Vec<Arc<RequestLogEntry>> = {
                    let inner = lock(&self.inner);
                    let from = inner.entries.partition_point(|(_, e)| e.seq <= self.after);
                    let mut bytes = 0;
                    inner
                        .entries
                        .range(from..)
                        .take_while(|(size, e)| {
                            let more = e.seq <= self.last && bytes < STREAM_CHUNK;
                            bytes += size;
                            more
                        })
                        .map(|(_, e)| e.clone())
                        .collect()
                };
                if batch.is_empty() {
                    self.state = StreamState::Done;
                    return Some(Bytes::from_static(b"]"));
                }
                let mut out = Vec::with_capacity(STREAM_CHUNK);
                for entry in &batch {
                    if !first {
                        out.push(b',');
                    }
                    first = false;
                    // Plain data: serializing it cannot fail.
                    let _ = serde_json::to_writer(&mut out, &**entry);
                    self.after = entry.seq;
                }
                self.state = StreamState::Entries { first };
                Some(Bytes::from(out))
            }
            StreamState::Done => None,
        }
    }
}

impl hyper::body::Body for LogStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().next_chunk().map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, StreamState::Done)
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

/// The body as the log keeps it: symmetric keys in JSON `REDACTED`, and in any text (JSON cut
/// short or malformed included) whatever looks like a key, a `sig=` or a `SharedAccessKey=`
/// value `[REDACTED]` (`iothub_rest_gen::redact_secrets`).
pub(crate) fn redact_body(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<Value>(body) {
        Ok(mut json) => {
            if redact_keys(&mut json) {
                json.to_string()
            } else {
                String::from_utf8_lossy(body).into_owned()
            }
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    iothub_rest_gen::redact_secrets(&text)
}

fn redact_keys(value: &mut Value) -> bool {
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if (k == "primaryKey" || k == "secondaryKey") && v.is_string() {
                    *v = Value::String("[REDACTED]".into());
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

    fn entry(path: &str, body: &str) -> RequestLogEntry {
        RequestLogEntry {
            seq: 0,
            time: String::new(),
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            headers: vec![("authorization".into(), "SharedAccessSignature x".into())],
            body: body.into(),
            status: Some(200),
            truncated: false,
        }
    }

    fn limits(capacity: usize, max_entry_bytes: usize, max_total_bytes: usize) -> LogLimits {
        LogLimits {
            capacity,
            max_entry_bytes,
            max_total_bytes,
        }
    }

    #[test]
    fn keys_in_text_that_is_not_json_are_redacted() {
        let cut_short = br#"{"deviceId":"d","authentication":{"symmetricKey":{"primaryKey":"c2VjcmV0","secondaryKey" :"b3RoZXI="#;
        let out = redact_body(cut_short);
        assert!(
            !out.contains("c2VjcmV0") && !out.contains("b3RoZXI"),
            "{out}"
        );
        assert!(out.starts_with(r#"{"deviceId":"d""#), "{out}");
        let connection_string = b"HostName=h;SharedAccessKeyName=o;SharedAccessKey=c2VjcmV0";
        assert!(!redact_body(connection_string).contains("c2VjcmV0"));
    }

    #[test]
    fn the_log_is_bounded_by_entries() {
        let log = RequestLog::new(limits(2, 4096, 1 << 20));
        for _ in 0..3 {
            log.push(entry("/", ""));
        }
        let seqs: Vec<u64> = log.snapshot().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [2, 3]);
        let none = RequestLog::new(limits(0, 4096, 1 << 20));
        assert_eq!(none.push(entry("/", "")), 1);
        assert!(none.snapshot().is_empty());
    }

    #[test]
    fn an_entry_is_cut_to_its_limit_body_first() {
        let log = RequestLog::new(limits(10, 1024, 1 << 20));
        log.push(entry("/devices/d", &"é".repeat(2000)));
        let kept = log.snapshot().pop().unwrap();
        assert!(kept.truncated);
        assert!(cost(&kept) <= 1024, "{}", cost(&kept));
        assert!(kept.body.starts_with('é') && kept.path == "/devices/d");
        // Headers alone beyond the limit: the body goes, then the line is cut, then headers.
        let mut huge = entry(&"p".repeat(5000), "body");
        huge.headers.push(("x-big".into(), "v".repeat(5000)));
        log.push(huge);
        let kept = log.snapshot().pop().unwrap();
        assert!(kept.truncated && kept.body.is_empty());
        assert!(cost(&kept) <= 1024, "{}", cost(&kept));
        assert_eq!(kept.path.len(), LINE_PART_BYTES);
        assert_eq!(kept.headers.len(), 1, "the authorization header stays");
        // A refused request keeps no body, however large the limit.
        log.push_short(entry("/devices/d", "secret body"));
        let kept = log.snapshot().pop().unwrap();
        assert!(kept.body.is_empty() && !kept.truncated);
    }

    #[test]
    fn the_log_is_bounded_by_bytes() {
        let log = RequestLog::new(limits(1000, 1024, 4096));
        for i in 0..50 {
            log.push(entry(&format!("/devices/{i}"), &"b".repeat(500)));
        }
        let kept = log.snapshot();
        let total: usize = kept.iter().map(cost).sum();
        assert!(total <= 4096, "{total}");
        assert_eq!(kept.last().unwrap().path, "/devices/49");
        assert!(kept.len() < 50 && kept.len() >= 4096 / 1024);
        // An entry larger than the whole log is numbered but not kept.
        let tiny = RequestLog::new(limits(1000, 4096, 1024));
        tiny.push(entry("/", &"b".repeat(2000)));
        assert!(tiny.snapshot().is_empty());
    }

    fn drain(mut stream: LogStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk() {
            out.extend_from_slice(&chunk);
        }
        out
    }

    #[test]
    fn the_stream_writes_the_entries_kept_when_it_began() {
        let log = RequestLog::new(limits(1000, 64 * 1024, 1 << 30));
        assert_eq!(drain(log.stream()), b"[]");
        for i in 0..40 {
            log.push(entry(&format!("/devices/{i}"), &"b".repeat(10_000)));
        }
        let mut stream = log.stream();
        // Several chunks, not one.
        let mut chunks = 0;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next_chunk() {
            chunks += 1;
            out.extend_from_slice(&chunk);
        }
        assert!(chunks > 3, "{chunks}");
        let parsed: Vec<RequestLogEntry> = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed, log.snapshot());
        // Entries pushed after it began are left out; entries cleared meanwhile too.
        let mut stream = log.stream();
        assert_eq!(stream.next_chunk().unwrap(), "[");
        let first = stream.next_chunk().unwrap();
        log.push(entry("/later", ""));
        let rest = drain(stream);
        let text = format!(
            "[{}{}",
            &String::from_utf8_lossy(&first)[..],
            String::from_utf8_lossy(&rest)
        );
        assert!(!text.contains("/later"));
        let mut stream = log.stream();
        stream.next_chunk();
        log.clear();
        assert_eq!(drain(stream), b"]");
    }
}
