//! An answer before it is written: status, JSON body and headers, the service's error
//! answers, and the helpers handlers build answers with (etag header, JSON of a model).

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::Response;
use hyper::header::HeaderValue;
use serde::Serialize;
use serde_json::Value;

use super::errors::{ServiceError, tracking_id};

/// An answer before it is written.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    pub(crate) headers: Vec<(&'static str, String)>,
}

impl Answer {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    pub(crate) fn error(e: &ServiceError) -> Self {
        let mut headers = vec![("iothub-errorcode", e.name.to_owned())];
        if let Some(secs) = e.retry_after {
            headers.push(("retry-after", secs.to_string()));
        }
        Self {
            status: e.status,
            body: Some(e.body(&tracking_id(), Utc::now())),
            headers,
        }
    }

    pub(super) fn into_response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("x-ms-request-id", request_id());
        let body = match &self.body {
            Some(v) => {
                builder = builder.header("content-type", "application/json; charset=utf-8");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        for (name, value) in &self.headers {
            if let Ok(value) = HeaderValue::from_str(value) {
                builder = builder.header(*name, value);
            }
        }
        builder
            .body(Full::new(body))
            .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }
}

fn request_id() -> String {
    let id = tracking_id();
    format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    )
}

pub(super) fn quoted(etag: Option<&str>) -> Vec<(&'static str, String)> {
    etag.map(|e| vec![("etag", format!("\"{e}\""))])
        .unwrap_or_default()
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
