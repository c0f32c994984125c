//! An answer before it is written: status, JSON body and headers, the service's error
//! answers, and the helpers handlers build answers with (etag header, JSON of a model); and
//! [`ResponseBody`], what every answer's body is (whole, or the request log streamed).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use chrono::Utc;
use http_body_util::Full;
use hyper::Response;
use hyper::body::{Frame, SizeHint};
use hyper::header::HeaderValue;
use serde::Serialize;
use serde_json::Value;

use super::errors::{ServiceError, guid, tracking_id};
use super::log::LogStream;

/// An answer before it is written.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The body's content type (JSON unless a handler says otherwise).
    pub(crate) content_type: &'static str,
}

const JSON: &str = "application/json; charset=utf-8";

impl Answer {
    pub(crate) fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            body: Some(body),
            headers: Vec::new(),
            content_type: JSON,
        }
    }

    pub(crate) fn empty(status: u16) -> Self {
        Self {
            status,
            body: None,
            headers: Vec::new(),
            content_type: JSON,
        }
    }

    pub(crate) fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Self {
        self.headers.extend(headers);
        self
    }

    /// Sets the body's content type (feedback batches have their own).
    pub(crate) fn with_content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
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
            content_type: JSON,
        }
    }

    pub(super) fn into_response(self) -> Response<Full<Bytes>> {
        let mut builder = Response::builder()
            .status(self.status)
            .header("x-ms-request-id", request_id());
        let body = match &self.body {
            Some(v) => {
                builder = builder.header("content-type", self.content_type);
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

/// The body of every answer the HTTPS listener writes: whole, or the request log written a
/// chunk at a time.
pub(crate) enum ResponseBody {
    Full(Full<Bytes>),
    Log(LogStream),
}

impl From<Full<Bytes>> for ResponseBody {
    fn from(body: Full<Bytes>) -> Self {
        Self::Full(body)
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(body) => Pin::new(body).poll_frame(cx),
            Self::Log(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(body) => body.is_end_stream(),
            Self::Log(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(body) => body.size_hint(),
            Self::Log(body) => body.size_hint(),
        }
    }
}

/// A 200 answer streaming the request log as a JSON array.
pub(super) fn log_response(log: LogStream) -> Response<ResponseBody> {
    Response::builder()
        .status(200)
        .header("x-ms-request-id", request_id())
        .header("content-type", "application/json; charset=utf-8")
        .body(ResponseBody::Log(log))
        .unwrap_or_else(|_| Response::new(ResponseBody::Full(Full::new(Bytes::new()))))
}

fn request_id() -> String {
    guid()
}

pub(super) fn quoted(etag: Option<&str>) -> Vec<(&'static str, String)> {
    etag.map(|e| vec![("etag", format!("\"{e}\""))])
        .unwrap_or_default()
}

pub(super) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
