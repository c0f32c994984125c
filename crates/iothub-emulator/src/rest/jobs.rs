//! Jobs: import and export (`POST /jobs/create`, `GET /jobs`, `GET` and `DELETE
//! /jobs/{id}`) and scheduled jobs (`PUT` and `GET /jobs/v2/{id}`,
//! `POST /jobs/v2/{id}/cancel`, `GET /jobs/v2/query`). The records, rules and runs are in
//! `crate::jobs`; the query over the devices' parts (`devices.jobs`) is `query.rs`'s.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iothub_rest_gen::types::{self as wire, QueryResultType};
use serde_json::Value;

use super::answer::{Answer, to_json};
use super::errors::ServiceError;
use super::query::{DEFAULT_PAGE, MAX_PAGE};
use super::request::{Req, json_body};
use crate::hub::Shared;
use crate::jobs::{BLOB_ENABLED, NO_BLOB, import_export_input, scheduled_input};

/// `POST /jobs/create`: an import or export job, `enqueued`; 429 while another runs.
pub(super) fn create_import_export(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let props = import_export_input(&json_body(req)?)?;
    if !BLOB_ENABLED {
        return Err(ServiceError::not_emulated(NO_BLOB));
    }
    let job = shared.jobs.create_import_export(props)?;
    Ok(Answer::json(200, to_json(&job)))
}

/// `GET /jobs/{id}`.
pub(super) fn get_import_export(shared: &Shared, id: &str) -> Result<Answer, ServiceError> {
    let job = shared
        .jobs
        .import_export(id)
        .ok_or_else(|| ServiceError::job_not_found(id))?;
    Ok(Answer::json(200, to_json(&job)))
}

/// `GET /jobs`: every kept import or export job, oldest first.
pub(super) fn list_import_export(shared: &Shared) -> Answer {
    let jobs: Vec<Value> = shared
        .jobs
        .import_export_list()
        .iter()
        .map(to_json)
        .collect();
    Answer::json(200, Value::Array(jobs))
}

/// `DELETE /jobs/{id}`: cancels; 204 (every SDK takes it; Python and Node also 200).
pub(super) fn cancel_import_export(shared: &Shared, id: &str) -> Result<Answer, ServiceError> {
    shared.jobs.cancel_import_export(id)?;
    Ok(Answer::empty(204))
}

/// `PUT /jobs/v2/{id}`: a scheduled job, `queued` until its start time.
pub(super) fn create_scheduled(
    shared: &Shared,
    id: &str,
    req: &Req,
) -> Result<Answer, ServiceError> {
    let job = scheduled_input(id, &json_body(req)?)?;
    let job = shared.jobs.create_scheduled(id, job)?;
    Ok(Answer::json(200, to_json(&job)))
}

/// `GET /jobs/v2/{id}`.
pub(super) fn get_scheduled(shared: &Shared, id: &str) -> Result<Answer, ServiceError> {
    let job = shared
        .jobs
        .scheduled(id)
        .ok_or_else(|| ServiceError::job_not_found(id))?;
    Ok(Answer::json(200, to_json(&job)))
}

/// `POST /jobs/v2/{id}/cancel`: answers the job, `cancelled` unless it had finished.
pub(super) fn cancel_scheduled(shared: &Shared, id: &str) -> Result<Answer, ServiceError> {
    let job = shared.jobs.cancel_scheduled(id)?;
    Ok(Answer::json(200, to_json(&job)))
}

/// `GET /jobs/v2/query?jobType=&jobStatus=`: a page of jobs, oldest first, as a
/// `QueryResult` (the spec's and Python's answer) whose continuation token is also in the
/// `x-ms-continuation` header (where Node's `Query` reads it), with `x-ms-item-type`.
pub(super) fn query_scheduled(shared: &Shared, req: &Req) -> Result<Answer, ServiceError> {
    let job_type = req.query_param("jobType").filter(|t| !t.is_empty());
    let status = req.query_param("jobStatus").filter(|s| !s.is_empty());
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
    let skip = match req.header("x-ms-continuation").filter(|c| !c.is_empty()) {
        None => 0,
        Some(token) => decode(token)?,
    };
    let all = shared
        .jobs
        .query_scheduled(job_type.as_deref(), status.as_deref());
    let items: Vec<Value> = all.iter().skip(skip).take(page).map(to_json).collect();
    let next = skip + items.len();
    let continuation = (next < all.len()).then(|| encode(next));
    let result = wire::QueryResult {
        continuation_token: continuation.clone(),
        items,
        type_: Some(QueryResultType::JobResponse),
    };
    // `items` always, even empty (the generated model leaves an empty list out).
    let mut body = to_json(&result);
    body["items"] = Value::Array(result.items);
    let mut headers = vec![("x-ms-item-type", "jobResponse".to_owned())];
    if let Some(token) = continuation {
        headers.push(("x-ms-continuation", token));
    }
    Ok(Answer::json(200, body).with_headers(headers))
}

fn encode(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("jobs:{offset}"))
}

fn decode(token: &str) -> Result<usize, ServiceError> {
    let bad = || ServiceError::argument_invalid("The continuation token is invalid");
    let bytes = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    text.strip_prefix("jobs:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_round_trip() {
        assert_eq!(decode(&encode(42)).unwrap(), 42);
        assert!(decode("%%").is_err());
        assert!(decode(&URL_SAFE_NO_PAD.encode("other:1")).is_err());
    }
}
