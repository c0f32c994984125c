//! A request as handlers see it: read in full, with its decoded path segments and query
//! parameters, its JSON body and its `If-Match` condition; and [`read_body`], how a body is
//! read (a size limit and a deadline).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::Method;
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use percent_encoding::percent_decode_str;
use serde_json::Value;
use tokio::sync::Semaphore;

use super::errors::ServiceError;
use crate::state::etag::IfMatch;

/// A request, read in full.
pub(crate) struct Req {
    pub(crate) method: Method,
    /// The path as sent, still percent-encoded.
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A query parameter, percent-decoded.
    pub(crate) fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (k == name).then(|| {
                percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    }

    /// The decoded path segments, without the leading slash or one trailing slash.
    pub(crate) fn segments(&self) -> Result<Vec<String>, ServiceError> {
        let trimmed = self.path.strip_prefix('/').unwrap_or(&self.path);
        let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
        trimmed
            .split('/')
            .map(|s| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| ServiceError::argument_invalid("The path is not valid UTF-8"))
            })
            .collect()
    }
}

pub(super) fn json_body(req: &Req) -> Result<Value, ServiceError> {
    if req.body.is_empty() {
        return Err(ServiceError::argument_null("The request body is required"));
    }
    serde_json::from_slice(&req.body)
        .map_err(|e| ServiceError::format_error(format!("The request body is not valid JSON: {e}")))
}

pub(super) fn if_match(req: &Req) -> IfMatch {
    IfMatch::parse(req.header("if-match"))
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyError {
    /// Longer than allowed.
    TooLarge,
    /// Not received in full before the deadline.
    TooSlow,
    /// The client went away mid-body (or its connection was closed).
    Gone,
}

/// Reads a body of at most `max` bytes within `deadline` (zero: no deadline), once one of
/// `readers` is free (waiting counts against the deadline): so many bodies are in memory at
/// once, at most.
pub(crate) async fn read_body(
    body: Incoming,
    max: usize,
    deadline: Duration,
    readers: &Semaphore,
) -> Result<Bytes, BodyError> {
    let collect = async {
        // Never closed: the emulator owns it.
        let _reader = readers.acquire().await;
        Limited::new(body, max).collect().await
    };
    let collected = if deadline.is_zero() {
        collect.await
    } else {
        tokio::time::timeout(deadline, collect)
            .await
            .map_err(|_| BodyError::TooSlow)?
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Gone),
    }
}
