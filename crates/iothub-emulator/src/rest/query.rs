//! `POST /devices/query`: runs a query (see `crate::query`) over device or module twins (or
//! the devices' parts in scheduled jobs, `devices.jobs`), a
//! page at a time, with the continuation token that says where the next page starts.

use std::ops::Bound;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iothub_rest_gen::types as wire;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::answer::Answer;
use super::errors::ServiceError;
use super::request::{Req, json_body};
use super::twins::twin_json;
use crate::hub::Shared;
use crate::query::{Query, Source};
use crate::state::blocking::off_worker;
use crate::state::identity::parse_model;
use crate::state::store::Snapshot;

/// Page size of a query when the client names none, and the most it may ask for.
pub(crate) const DEFAULT_PAGE: usize = 100;
pub(crate) const MAX_PAGE: usize = 1000;

/// What a continuation token carries: where the last page ended.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Continuation {
    /// Key of the last document returned (`device` or `device/module`).
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    after: Option<String>,
    /// Rows returned so far (for TOP) or, for aggregates, the row offset.
    #[serde(rename = "n")]
    done: usize,
    /// A fingerprint of the query text, so a token is not reused for another query.
    #[serde(rename = "q")]
    query: u64,
}

impl Continuation {
    fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(token: &str, query: u64) -> Result<Self, ServiceError> {
        let bad = || ServiceError::argument_invalid("The continuation token is invalid");
        let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| bad())?;
        let c: Self = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if c.query != query {
            return Err(bad());
        }
        Ok(c)
    }
}

fn fingerprint(text: &str) -> u64 {
    // FNV-1a: stable across runs and restarts, unlike the std hasher.
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

pub(super) fn query(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let spec: wire::QuerySpecification = parse_model(&json_body(req)?, "query specification")?;
    let text = spec
        .query
        .filter(|q| !q.trim().is_empty())
        .ok_or_else(|| ServiceError::argument_null("The query is required"))?;
    let query = Query::parse(&text).map_err(|e| ServiceError::argument_invalid(e.to_string()))?;
    let page = match req.header("x-ms-max-item-count") {
        None => DEFAULT_PAGE,
        Some(n) => match n.trim().parse::<usize>() {
            Ok(n) if n > 0 => n.min(MAX_PAGE),
            _ => {
                return Err(ServiceError::argument_invalid(format!(
                    "Invalid x-ms-max-item-count '{n}'"
                )));
            }
        },
    };
    let print = fingerprint(&text);
    let cont = match req.header("x-ms-continuation").filter(|c| !c.is_empty()) {
        Some(token) => Continuation::decode(token, print)?,
        None => Continuation {
            after: None,
            done: 0,
            query: print,
        },
    };
    // A scan can take long on a large registry: it runs on a snapshot, off the async workers.
    off_worker(|| run(shared, &query, page, cont, print))
}

/// Runs a parsed query for one page.
fn run(
    shared: &Shared,
    query: &Query,
    page: usize,
    cont: Continuation,
    print: u64,
) -> Result<Answer, ServiceError> {
    let devices = shared.store.read();
    let source = query.source();
    let (rows, next) = if query.is_aggregate() {
        let mut docs = Vec::new();
        scan(shared, &devices, source, None, |_, doc| {
            docs.push(doc);
            true
        });
        let mut all = query.aggregate(docs.iter());
        if let Some(top) = query.top() {
            all.truncate(top);
        }
        let rows: Vec<Value> = all.iter().skip(cont.done).take(page).cloned().collect();
        let done = cont.done + rows.len();
        let next = (done < all.len()).then_some(Continuation {
            after: None,
            done,
            query: print,
        });
        (rows, next)
    } else {
        let limit = query.top().map(|t| t.saturating_sub(cont.done));
        let want = limit.map_or(page, |l| l.min(page));
        let mut rows = Vec::new();
        let mut last = None;
        let mut more = false;
        if want > 0 {
            scan(
                shared,
                &devices,
                source,
                cont.after.as_deref(),
                |key, doc| {
                    if !query.matches(&doc) {
                        return true;
                    }
                    if rows.len() == want {
                        more = true;
                        return false;
                    }
                    rows.push(query.project(&doc));
                    last = Some(key);
                    true
                },
            );
        }
        let done = cont.done + rows.len();
        let more = more && limit.is_none_or(|l| rows.len() < l);
        let next = more.then_some(Continuation {
            after: last,
            done,
            query: print,
        });
        (rows, next)
    };
    let item_type = match (query.is_star(), source) {
        (true, Source::DeviceJobs) => "deviceJob",
        (true, _) => "twin",
        (false, _) => "raw",
    };
    let mut headers = vec![("x-ms-item-type", item_type.to_owned())];
    if let Some(next) = next {
        headers.push(("x-ms-continuation", next.encode()));
    }
    Ok(Answer::json(200, Value::Array(rows)).with_headers(headers))
}

/// Visits twin documents in key order after `after`; `visit` returns false to stop.
fn scan(
    shared: &Shared,
    devices: &Snapshot,
    source: Source,
    after: Option<&str>,
    mut visit: impl FnMut(String, Value) -> bool,
) {
    let (after_device, after_module) = match after {
        None => (None, None),
        Some(key) => match key.split_once('/') {
            Some((d, m)) => (Some(d), Some(m)),
            None => (Some(key), None),
        },
    };
    #[cfg(test)]
    shared.scan_gate.pass();
    if source == Source::DeviceJobs {
        // Keys are `<job creation number>/<device id>`, in order.
        for (key, doc) in shared.jobs.device_job_documents() {
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            if !visit(key, doc) {
                return;
            }
        }
        return;
    }
    let start = match (source, after_device) {
        (_, None) | (Source::DeviceJobs, _) => Bound::Unbounded,
        (Source::Devices, Some(d)) => Bound::Excluded(d),
        (Source::Modules, Some(d)) => Bound::Included(d),
    };
    for (id, entry) in devices.range_from(start) {
        match source {
            Source::Devices => {
                if !visit(id.to_owned(), twin_json(shared, entry, None)) {
                    return;
                }
            }
            Source::DeviceJobs => return,
            Source::Modules => {
                let same = after_device == Some(id);
                for mid in entry.modules.keys() {
                    if same && after_module.is_some_and(|a| mid.as_str() <= a) {
                        continue;
                    }
                    if !visit(format!("{id}/{mid}"), twin_json(shared, entry, Some(mid))) {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_round_trip_and_are_checked() {
        let c = Continuation {
            after: Some("d/m".into()),
            done: 3,
            query: 9,
        };
        assert_eq!(Continuation::decode(&c.encode(), 9).unwrap(), c);
        assert!(Continuation::decode(&c.encode(), 8).is_err());
        assert!(Continuation::decode("%%%", 9).is_err());
        assert!(Continuation::decode("e30", 9).is_err());
    }

    /// A scan held in progress (by the test gate) neither keeps other requests from being
    /// answered, reads and writes alike, nor the health check: scans run off the async
    /// workers, on a snapshot of the registry.
    #[test]
    fn a_scan_in_progress_stalls_nothing_else() {
        use std::time::Duration;

        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hub = server
            .block_on(
                crate::Emulator::builder()
                    .plain_http()
                    .bearer_token("scan-test")
                    .start(),
            )
            .unwrap();
        let base = hub.base_url();
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::new();
        let api = "api-version=2021-04-12";
        let bound = Duration::from_secs(10);
        let call = |method: reqwest::Method, path: &str, body: Option<&str>| {
            let mut request = http
                .request(method, format!("{base}{path}"))
                .header("authorization", "Bearer scan-test");
            if let Some(body) = body {
                request = request.body(body.to_owned());
            }
            async move {
                match tokio::time::timeout(bound, request.send()).await {
                    Ok(Ok(r)) => Some(r.status().as_u16()),
                    _ => None,
                }
            }
        };
        let outcome = client.block_on(async {
            for i in 0..50 {
                let path = format!("/devices/d{i}?{api}");
                assert_eq!(
                    call(reqwest::Method::PUT, &path, Some("{}")).await,
                    Some(200)
                );
            }
            hub.shared.scan_gate.close();
            let queries: Vec<_> = (0..3)
                .map(|_| {
                    tokio::spawn(call(
                        reqwest::Method::POST,
                        &format!("/devices/query?{api}"),
                        Some(r#"{"query": "SELECT COUNT() FROM devices"}"#),
                    ))
                })
                .collect();
            // Two scans in progress: as many as the runtime has workers.
            let deadline = tokio::time::Instant::now() + bound;
            while hub.shared.scan_gate.waiting() < 2 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let scanning = hub.shared.scan_gate.waiting();
            let health = call(reqwest::Method::GET, "/_emulator/health", None).await;
            let read = call(reqwest::Method::GET, &format!("/devices/d7?{api}"), None).await;
            let write = call(
                reqwest::Method::PUT,
                &format!("/devices/new?{api}"),
                Some("{}"),
            )
            .await;
            let still_scanning = hub.shared.scan_gate.waiting();
            hub.shared.scan_gate.open();
            let mut answered = Vec::new();
            for q in queries {
                answered.push(
                    tokio::time::timeout(bound, q)
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten(),
                );
            }
            (scanning, health, read, write, still_scanning, answered)
        });
        let (scanning, health, read, write, still_scanning, answered) = outcome;
        assert!(scanning >= 2, "scans in progress: {scanning}");
        assert_eq!(
            (health, read, write),
            (Some(200), Some(200), Some(200)),
            "health, GET and PUT during a scan"
        );
        assert!(still_scanning >= 2, "the scans were still in progress");
        assert_eq!(answered, [Some(200); 3]);
        drop(hub);
        server.shutdown_timeout(Duration::from_secs(5));
    }
}
