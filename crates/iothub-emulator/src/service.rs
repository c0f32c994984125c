//! The service's REST operations (api-version 2021-04-12): routing, permissions and the
//! handlers, with the service's statuses, headers and error bodies.

use std::collections::HashSet;
use std::ops::Bound;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::Method;
use iothub_rest_gen::types as wire;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Shared;
use crate::auth::Permission;
use crate::errors::ServiceError;
use crate::etag::IfMatch;
use crate::faults::OpClass;
use crate::http::{Answer, Req};
use crate::ids::{check_device_id, check_module_id};
use crate::methods::Outcome;
use crate::query::{Query, Source};
use crate::store::{DeviceEntry, parse_model, render_twin};
use crate::twin::TwinChange;

/// api-versions the emulator answers; others get 400 InvalidProtocolVersion.
pub(crate) const API_VERSIONS: &[&str] = &[
    "2018-06-30",
    "2019-03-30",
    "2019-10-01",
    "2020-03-13",
    "2020-09-30",
    "2021-04-12",
];

/// Most entries in one bulk request.
pub(crate) const MAX_BULK: usize = 100;
/// Most devices `GET /devices` returns.
pub(crate) const MAX_LIST: usize = 1000;
/// Page size of a query when the client names none, and the most it may ask for.
pub(crate) const DEFAULT_PAGE: usize = 100;
pub(crate) const MAX_PAGE: usize = 1000;

/// A service operation, with its decoded ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    ListDevices,
    Bulk,
    Query,
    GetDevice(String),
    PutDevice(String),
    DeleteDevice(String),
    ListModules(String),
    GetModule(String, String),
    PutModule(String, String),
    DeleteModule(String, String),
    Purge(String),
    GetTwin(String, Option<String>),
    UpdateTwin(String, Option<String>, bool),
    Invoke(String, Option<String>),
    DeviceStats,
    ServiceStats,
}

impl Route {
    /// Matches a request line; ids are checked here so that handlers see valid ones.
    pub(crate) fn parse(method: &Method, segs: &[String]) -> Result<Self, ServiceError> {
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let m = method.as_str();
        let id = |i: usize| -> Result<String, ServiceError> {
            check_device_id(s[i])?;
            Ok(s[i].to_owned())
        };
        let mid = |i: usize| -> Result<String, ServiceError> {
            check_module_id(s[i])?;
            Ok(s[i].to_owned())
        };
        let route = match (m, s.as_slice()) {
            ("GET", ["devices"]) => Self::ListDevices,
            ("POST", ["devices"]) => Self::Bulk,
            ("POST", ["devices", "query"]) => Self::Query,
            ("GET", ["devices", _]) => Self::GetDevice(id(1)?),
            ("PUT", ["devices", _]) => Self::PutDevice(id(1)?),
            ("DELETE", ["devices", _]) => Self::DeleteDevice(id(1)?),
            ("GET", ["devices", _, "modules"]) => Self::ListModules(id(1)?),
            ("GET", ["devices", _, "modules", _]) => Self::GetModule(id(1)?, mid(3)?),
            ("PUT", ["devices", _, "modules", _]) => Self::PutModule(id(1)?, mid(3)?),
            ("DELETE", ["devices", _, "modules", _]) => Self::DeleteModule(id(1)?, mid(3)?),
            ("DELETE", ["devices", _, "commands"]) => Self::Purge(id(1)?),
            ("GET", ["twins", _]) => Self::GetTwin(id(1)?, None),
            ("PATCH", ["twins", _]) => Self::UpdateTwin(id(1)?, None, false),
            ("PUT", ["twins", _]) => Self::UpdateTwin(id(1)?, None, true),
            ("GET", ["twins", _, "modules", _]) => Self::GetTwin(id(1)?, Some(mid(3)?)),
            ("PATCH", ["twins", _, "modules", _]) => Self::UpdateTwin(id(1)?, Some(mid(3)?), false),
            ("PUT", ["twins", _, "modules", _]) => Self::UpdateTwin(id(1)?, Some(mid(3)?), true),
            ("POST", ["twins", _, "methods"]) => Self::Invoke(id(1)?, None),
            ("POST", ["twins", _, "modules", _, "methods"]) => Self::Invoke(id(1)?, Some(mid(3)?)),
            ("GET", ["statistics", "devices"]) => Self::DeviceStats,
            ("GET", ["statistics", "service"]) => Self::ServiceStats,
            (
                _,
                ["devices"]
                | ["devices", "query"]
                | ["devices", _]
                | ["devices", _, "modules"]
                | ["devices", _, "modules", _]
                | ["devices", _, "commands"]
                | ["twins", _]
                | ["twins", _, "modules", _]
                | ["twins", _, "methods"]
                | ["twins", _, "modules", _, "methods"]
                | ["statistics", "devices" | "service"],
            ) => {
                return Err(ServiceError::method_not_allowed(format!(
                    "The requested resource does not support http method '{m}'."
                )));
            }
            _ => {
                return Err(ServiceError::not_found(
                    "The requested resource does not exist on this hub.",
                ));
            }
        };
        Ok(route)
    }

    /// The permissions that allow this operation (any one of them).
    pub(crate) fn permissions(&self) -> &'static [Permission] {
        use Permission::{RegistryRead, RegistryWrite, ServiceConnect};
        match self {
            Self::ListDevices
            | Self::GetDevice(_)
            | Self::ListModules(_)
            | Self::GetModule(..)
            | Self::DeviceStats => &[RegistryRead],
            Self::Bulk
            | Self::PutDevice(_)
            | Self::DeleteDevice(_)
            | Self::PutModule(..)
            | Self::DeleteModule(..) => &[RegistryWrite],
            Self::Query | Self::GetTwin(..) => &[RegistryRead, ServiceConnect],
            Self::UpdateTwin(..) => &[RegistryWrite, ServiceConnect],
            Self::Invoke(..) | Self::Purge(_) | Self::ServiceStats => &[ServiceConnect],
        }
    }

    /// The throttling class.
    pub(crate) fn class(&self) -> OpClass {
        match self {
            Self::ListDevices
            | Self::Bulk
            | Self::GetDevice(_)
            | Self::PutDevice(_)
            | Self::DeleteDevice(_)
            | Self::ListModules(_)
            | Self::GetModule(..)
            | Self::PutModule(..)
            | Self::DeleteModule(..) => OpClass::Registry,
            Self::Query => OpClass::Query,
            Self::GetTwin(..) => OpClass::TwinRead,
            Self::UpdateTwin(..) => OpClass::TwinUpdate,
            Self::Invoke(..) => OpClass::Method,
            Self::Purge(_) | Self::DeviceStats | Self::ServiceStats => OpClass::Other,
        }
    }
}

fn json_body(req: &Req) -> Result<Value, ServiceError> {
    if req.body.is_empty() {
        return Err(ServiceError::argument_null("The request body is required"));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ServiceError::format_error(format!("The request body is not valid JSON: {e}")))
}

fn if_match(req: &Req) -> IfMatch {
    IfMatch::parse(req.header("if-match"))
}

fn quoted(etag: Option<&str>) -> Vec<(&'static str, String)> {
    etag.map(|e| vec![("etag", format!("\"{e}\""))])
        .unwrap_or_default()
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Runs one operation.
pub(crate) async fn handle(
    shared: &Shared,
    route: Route,
    req: &Req,
) -> Result<Answer, ServiceError> {
    match route {
        Route::ListDevices => list_devices(shared, req),
        Route::GetDevice(id) => {
            let devices = shared.store.read();
            let entry = devices
                .get(&id)
                .ok_or_else(|| ServiceError::device_not_found(&id))?;
            Ok(Answer::json(200, device_json(shared, &entry.device))
                .with_headers(quoted(entry.device.etag.as_deref())))
        }
        Route::PutDevice(id) => {
            let body = json_body(req)?;
            let mut tx = shared.store.begin();
            let device = tx.put_device(&id, &body, &if_match(req))?;
            tx.commit()?;
            Ok(Answer::json(200, to_json(&device)).with_headers(quoted(device.etag.as_deref())))
        }
        Route::DeleteDevice(id) => {
            let mut tx = shared.store.begin();
            tx.delete_device(&id, &if_match(req))?;
            tx.commit()?;
            shared.methods.forget(&id);
            shared.c2d.forget(&id);
            Ok(Answer::empty(204))
        }
        Route::ListModules(id) => {
            let devices = shared.store.read();
            let entry = devices
                .get(&id)
                .ok_or_else(|| ServiceError::device_not_found(&id))?;
            let modules: Vec<Value> = entry.modules.values().map(|m| to_json(&m.module)).collect();
            Ok(Answer::json(200, Value::Array(modules)))
        }
        Route::GetModule(id, mid) => {
            let devices = shared.store.read();
            let entry = devices
                .get(&id)
                .ok_or_else(|| ServiceError::device_not_found(&id))?;
            let module = entry
                .modules
                .get(&mid)
                .ok_or_else(|| ServiceError::module_not_found(&id, &mid))?;
            Ok(Answer::json(200, to_json(&module.module)))
        }
        Route::PutModule(id, mid) => {
            let body = json_body(req)?;
            let mut tx = shared.store.begin();
            let module = tx.put_module(&id, &mid, &body, &if_match(req))?;
            tx.commit()?;
            Ok(Answer::json(200, to_json(&module)))
        }
        Route::DeleteModule(id, mid) => {
            let mut tx = shared.store.begin();
            tx.delete_module(&id, &mid, &if_match(req))?;
            tx.commit()?;
            Ok(Answer::empty(204))
        }
        Route::Purge(id) => {
            if !shared.store.read().contains_key(&id) {
                return Err(ServiceError::device_not_found(&id));
            }
            let purged = i32::try_from(shared.c2d.purge(&id)).unwrap_or(i32::MAX);
            let result = wire::PurgeMessageQueueResult {
                device_id: Some(id),
                module_id: None,
                total_messages_purged: Some(purged),
            };
            Ok(Answer::json(200, to_json(&result)))
        }
        Route::GetTwin(id, mid) => {
            let devices = shared.store.read();
            let entry = devices
                .get(&id)
                .ok_or_else(|| ServiceError::device_not_found(&id))?;
            check_module(entry, &id, mid.as_deref())?;
            Ok(Answer::json(200, twin_json(shared, entry, mid.as_deref())))
        }
        Route::UpdateTwin(id, mid, replace) => {
            let change = TwinChange::from_body(&json_body(req)?)?;
            let mut tx = shared.store.begin();
            let twin = tx.update_twin(&id, mid.as_deref(), &change, replace, &if_match(req))?;
            tx.commit()?;
            Ok(Answer::json(200, twin))
        }
        Route::Bulk => bulk(shared, req),
        Route::Query => query(shared, req),
        Route::Invoke(id, mid) => invoke(shared, &id, mid.as_deref(), req).await,
        Route::DeviceStats => {
            let devices = shared.store.read();
            let enabled = devices
                .values()
                .filter(|e| e.device.status == Some(wire::DeviceStatus::Enabled))
                .count();
            let total = devices.len();
            let stats = wire::RegistryStatistics {
                total_device_count: Some(count(total)),
                enabled_device_count: Some(count(enabled)),
                disabled_device_count: Some(count(total - enabled)),
            };
            Ok(Answer::json(200, to_json(&stats)))
        }
        Route::ServiceStats => {
            let devices = shared.store.read();
            let connected = devices
                .values()
                .filter(|e| e.device.connection_state == Some(wire::ConnectionState::Connected))
                .count();
            let stats = wire::ServiceStatistics {
                connected_device_count: Some(count(connected)),
            };
            Ok(Answer::json(200, to_json(&stats)))
        }
    }
}

/// A device as the service shows it, with its live cloud-to-device queue length.
fn device_json(shared: &Shared, device: &wire::Device) -> Value {
    let mut json = to_json(device);
    let id = device.device_id.as_deref().unwrap_or_default();
    json["cloudToDeviceMessageCount"] = Value::from(shared.c2d.pending(id, None));
    json
}

/// A twin document with the live cloud-to-device queue length.
fn twin_json(shared: &Shared, entry: &DeviceEntry, mid: Option<&str>) -> Value {
    let mut doc = render_twin(entry, mid);
    let id = entry.device.device_id.as_deref().unwrap_or_default();
    doc["cloudToDeviceMessageCount"] = Value::from(shared.c2d.pending(id, mid));
    doc
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn check_module(entry: &DeviceEntry, id: &str, mid: Option<&str>) -> Result<(), ServiceError> {
    match mid {
        Some(mid) if !entry.modules.contains_key(mid) => {
            Err(ServiceError::module_not_found(id, mid))
        }
        _ => Ok(()),
    }
}

fn list_devices(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let top = match req.query_param("top") {
        None => MAX_LIST,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ServiceError::argument_invalid(format!("Invalid value for top: '{t}'")))?
            .min(MAX_LIST),
    };
    let devices = shared.store.read();
    let list: Vec<Value> = devices
        .values()
        .take(top)
        .map(|e| to_json(&e.device))
        .collect();
    Ok(Answer::json(200, Value::Array(list)))
}

fn bulk(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let Value::Array(items) = json_body(req)? else {
        return Err(ServiceError::argument_invalid(
            "The bulk request must be a JSON array of devices",
        ));
    };
    if items.is_empty() {
        return Err(ServiceError::argument_invalid(
            "The bulk request has no devices",
        ));
    }
    if items.len() > MAX_BULK {
        return Err(ServiceError::too_many_devices(format!(
            "A bulk request may hold at most {MAX_BULK} devices; it held {}",
            items.len()
        )));
    }
    // Parse and check everything before applying anything.
    let mut entries = Vec::with_capacity(items.len());
    let mut seen = HashSet::new();
    for mut item in items {
        // Node copies the caller's object, so the etag may come as `etag`.
        if let Value::Object(map) = &mut item
            && !map.contains_key("eTag")
            && let Some(etag) = map.remove("etag")
        {
            map.insert("eTag".into(), etag);
        }
        let entry: wire::ExportImportDevice = parse_model(&item, "bulk device")?;
        let id = entry
            .id
            .clone()
            .ok_or_else(|| ServiceError::argument_null("Every bulk device needs an id"))?;
        check_device_id(&id)?;
        if let Some(mid) = &entry.module_id {
            check_module_id(mid)?;
        }
        if !seen.insert((id.clone(), entry.module_id.clone())) {
            return Err(ServiceError::device_defined_multiple_times(format!(
                "The device '{id}' appears more than once in the request"
            )));
        }
        entries.push(entry);
    }
    let mut tx = shared.store.begin();
    let mut errors = Vec::new();
    for entry in &entries {
        let savepoint = tx.savepoint(entry.id.as_deref().unwrap_or_default());
        if let Err(e) = apply_bulk_entry(&mut tx, entry) {
            tx.rollback_to(savepoint);
            let mut error = json!({
                "deviceId": entry.id,
                "errorCode": e.name,
                "errorStatus": e.message,
            });
            if let Some(mid) = &entry.module_id {
                error["moduleId"] = json!(mid);
            }
            errors.push(error);
        }
    }
    tx.commit()?;
    for entry in &entries {
        let mode = entry
            .import_mode
            .as_ref()
            .map(|m| m.as_str().to_ascii_lowercase());
        if mode.as_deref().is_some_and(|m| m.starts_with("delete")) && entry.module_id.is_none() {
            shared
                .methods
                .forget(entry.id.as_deref().unwrap_or_default());
        }
    }
    let ok = errors.is_empty();
    let body = json!({ "isSuccessful": ok, "errors": errors, "warnings": [] });
    Ok(Answer::json(if ok { 200 } else { 400 }, body))
}

fn apply_bulk_entry(
    tx: &mut crate::store::Tx<'_>,
    e: &wire::ExportImportDevice,
) -> Result<(), ServiceError> {
    let mode = e
        .import_mode
        .as_ref()
        .map_or("createorupdate".to_owned(), |m| {
            m.as_str().to_ascii_lowercase()
        });
    let etag_cond = || -> Result<IfMatch, ServiceError> {
        let etag = e
            .e_tag
            .as_deref()
            .map(|t| t.trim_matches('"'))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ServiceError::argument_null("This importMode needs the device's eTag")
            })?;
        Ok(if etag == "*" {
            IfMatch::Any
        } else {
            IfMatch::Etag(etag.to_owned())
        })
    };
    let twin_cond = || -> Result<IfMatch, ServiceError> {
        let etag = e
            .twin_e_tag
            .as_deref()
            .map(|t| t.trim_matches('"'))
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ServiceError::argument_null("This importMode needs the twin's twinETag")
            })?;
        Ok(if etag == "*" {
            IfMatch::Any
        } else {
            IfMatch::Etag(etag.to_owned())
        })
    };
    let id = e.id.as_deref().unwrap_or_default();
    match mode.as_str() {
        "create" => tx.bulk_create(e),
        "update" => tx.bulk_update(e, &IfMatch::Any, false),
        "updateifmatchetag" => tx.bulk_update(e, &etag_cond()?, false),
        "createorupdate" => tx.bulk_update(e, &IfMatch::Any, true),
        "createorupdateifmatchetag" => tx.bulk_update(e, &etag_cond()?, true),
        "delete" => tx.bulk_delete(e, &IfMatch::Any),
        "deleteifmatchetag" => tx.bulk_delete(e, &etag_cond()?),
        "updatetwin" => tx.bulk_twin(id, e.module_id.as_deref(), e, &IfMatch::Any),
        "updatetwinifmatchetag" => tx.bulk_twin(id, e.module_id.as_deref(), e, &twin_cond()?),
        other => Err(ServiceError::argument_invalid(format!(
            "Unknown importMode '{other}'"
        ))),
    }
}

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

fn query(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
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
    let item_type = if query.is_star() { "twin" } else { "raw" };
    let mut headers = vec![("x-ms-item-type", item_type.to_owned())];
    if let Some(next) = next {
        headers.push(("x-ms-continuation", next.encode()));
    }
    Ok(Answer::json(200, Value::Array(rows)).with_headers(headers))
}

/// Visits twin documents in key order after `after`; `visit` returns false to stop.
fn scan(
    shared: &Shared,
    devices: &std::collections::BTreeMap<String, DeviceEntry>,
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
    let start = match (source, after_device) {
        (_, None) => Bound::Unbounded,
        (Source::Devices, Some(d)) => Bound::Excluded(d.to_owned()),
        (Source::Modules, Some(d)) => Bound::Included(d.to_owned()),
    };
    for (id, entry) in devices.range::<String, _>((start, Bound::Unbounded)) {
        match source {
            Source::Devices => {
                if !visit(id.clone(), twin_json(shared, entry, None)) {
                    return;
                }
            }
            Source::Modules => {
                let same = after_device == Some(id.as_str());
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

async fn invoke(
    shared: &Shared,
    id: &str,
    mid: Option<&str>,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let call: wire::CloudToDeviceMethod = parse_model(&json_body(req)?, "method invocation")?;
    let name = call
        .method_name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ServiceError::argument_null("methodName is required"))?;
    let response_timeout = match call.response_timeout_in_seconds {
        None | Some(0) => 30,
        Some(t @ 5..=300) => u64::try_from(t).unwrap_or(30),
        Some(t) => {
            return Err(ServiceError::argument_invalid(format!(
                "responseTimeoutInSeconds must be between 5 and 300; it was {t}"
            )));
        }
    };
    let connect_timeout = match call.connect_timeout_in_seconds {
        None => 0,
        Some(t @ 0..=300) => u64::try_from(t).unwrap_or(0),
        Some(t) => {
            return Err(ServiceError::argument_invalid(format!(
                "connectTimeoutInSeconds must be between 0 and 300; it was {t}"
            )));
        }
    };
    let online = || -> Result<bool, ServiceError> {
        let devices = shared.store.read();
        let entry = devices
            .get(id)
            .ok_or_else(|| ServiceError::device_not_found(id))?;
        let state = match mid {
            None => entry.device.connection_state.clone(),
            Some(m) => entry
                .modules
                .get(m)
                .ok_or_else(|| ServiceError::module_not_found(id, m))?
                .module
                .connection_state
                .clone(),
        };
        Ok(state == Some(wire::ConnectionState::Connected))
    };
    // The service waits up to connectTimeoutInSeconds for the device to come online.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(connect_timeout);
    loop {
        let notified = shared.methods.connected.notified();
        if online()? {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return Err(ServiceError::device_not_online(id, connect_timeout));
        }
    }
    let response = match shared.methods.outcome(id, mid, &name) {
        Outcome::NoHandler => return Err(ServiceError::device_not_online(id, connect_timeout)),
        Outcome::Answer(r) => r,
    };
    if response.delay_ms > 0 {
        let delay = Duration::from_millis(response.delay_ms);
        let limit = Duration::from_secs(response_timeout);
        if delay > limit {
            tokio::time::sleep(limit).await;
            return Err(ServiceError::gateway_timeout());
        }
        tokio::time::sleep(delay).await;
    }
    let payload = if response.echo {
        call.payload.unwrap_or(Value::Null)
    } else {
        response.payload
    };
    let result = wire::CloudToDeviceMethodResult {
        status: Some(response.status),
        payload: Some(payload),
    };
    Ok(Answer::json(200, to_json(&result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<String> {
        path.split('/').map(str::to_owned).collect()
    }

    #[test]
    fn routes_and_permissions() {
        let r = Route::parse(&Method::GET, &segs("devices/d1")).unwrap();
        assert_eq!(r, Route::GetDevice("d1".into()));
        assert_eq!(r.permissions(), &[Permission::RegistryRead]);
        let r = Route::parse(&Method::POST, &segs("devices/query")).unwrap();
        assert_eq!(r, Route::Query);
        // A device may be called "query": only POST is the query operation.
        assert_eq!(
            Route::parse(&Method::GET, &segs("devices/query")).unwrap(),
            Route::GetDevice("query".into())
        );
        assert_eq!(
            Route::parse(&Method::PATCH, &segs("twins/d/modules/$edgeAgent")).unwrap(),
            Route::UpdateTwin("d".into(), Some("$edgeAgent".into()), false)
        );
        let e = Route::parse(&Method::POST, &segs("devices/d1")).unwrap_err();
        assert_eq!(e.status, 405);
        let e = Route::parse(&Method::GET, &segs("nope")).unwrap_err();
        assert_eq!(e.status, 404);
        let e = Route::parse(&Method::GET, &segs("devices/a b")).unwrap_err();
        assert_eq!(e.status, 400);
    }

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
}
