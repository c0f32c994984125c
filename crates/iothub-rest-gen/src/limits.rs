//! Response bodies under a size cap: every response leaves the request hook with its body
//! wrapped so that reading more than the cap (or announcing more in `Content-Length`) fails
//! with [`ResponseTooLarge`] instead of growing memory.

use std::fmt;

use bytes::Bytes;
use futures::{Stream, StreamExt, stream};
use reqwest::ResponseBuilderExt;

/// The default cap on a success response's body: 128 MiB. The largest answers the service
/// gives are query pages and device lists (at most 1000 devices), a few MiB at most.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 128 * 1024 * 1024;

/// The default cap on an error response's body: 1 MiB. The service's error bodies are a few
/// hundred bytes.
pub const DEFAULT_MAX_ERROR_BODY: u64 = 1024 * 1024;

/// The caps on response bodies, by kind of response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    /// For 2xx responses.
    pub(crate) success: u64,
    /// For every other status.
    pub(crate) error: u64,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            success: DEFAULT_MAX_RESPONSE_BODY,
            error: DEFAULT_MAX_ERROR_BODY,
        }
    }
}

/// A response body that was larger than the cap for its status (or said it would be, in
/// `Content-Length`); reading it stopped there. It is the error inside the
/// [`reqwest::Error`] that reading such a body returns; find it with
/// [`ResponseTooLarge::find`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponseTooLarge {
    /// The status of the response.
    pub status: u16,
    /// The cap that applied, in bytes.
    pub limit: u64,
}

impl ResponseTooLarge {
    /// The `ResponseTooLarge` in `error`'s chain of sources (itself included), if any.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut next = Some(error);
        while let Some(error) = next {
            if let Some(found) = error.downcast_ref::<Self>() {
                return Some(*found);
            }
            next = error.source();
        }
        None
    }
}

impl fmt::Display for ResponseTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the body of the {} response is larger than {} bytes",
            self.status, self.limit
        )
    }
}

impl std::error::Error for ResponseTooLarge {}

/// `response` with its body capped by `limits`, for its status.
pub(crate) fn limit(mut response: reqwest::Response, limits: BodyLimits) -> reqwest::Response {
    let status = response.status();
    let limit = if status.is_success() {
        limits.success
    } else {
        limits.error
    };
    let too_large = ResponseTooLarge {
        status: status.as_u16(),
        limit,
    };
    let version = response.version();
    let url = response.url().clone();
    let headers = std::mem::take(response.headers_mut());
    let extensions = std::mem::take(response.extensions_mut());
    let announced = content_length(&headers);
    let body = if announced.is_some_and(|length| length > limit) {
        // Refused without reading a byte.
        reqwest::Body::wrap_stream(stream::once(async move { Err::<Bytes, _>(too_large) }))
    } else {
        reqwest::Body::wrap_stream(capped(response.bytes_stream(), too_large))
    };
    let mut rebuilt = http::Response::builder()
        .status(status)
        .version(version)
        .url(url)
        .body(body)
        .expect("status and version come from a valid response");
    *rebuilt.headers_mut() = headers;
    rebuilt.extensions_mut().extend(extensions);
    reqwest::Response::from(rebuilt)
}

fn content_length(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The chunks of `body` until their total passes the cap, then the error and nothing more.
fn capped(
    body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    too_large: ResponseTooLarge,
) -> impl Stream<Item = Result<Bytes, Box<dyn std::error::Error + Send + Sync>>> + Send + 'static {
    let mut read: u64 = 0;
    body.map(move |chunk| {
        let chunk = chunk?;
        read = read.saturating_add(chunk.len() as u64);
        if read > too_large.limit {
            return Err(too_large.into());
        }
        Ok(chunk)
    })
    .scan(false, |failed, item| {
        // One error ends the body.
        if *failed {
            return std::future::ready(None);
        }
        *failed = item.is_err();
        std::future::ready(Some(item))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(
        status: u16,
        headers: &[(&str, &str)],
        chunks: Vec<&'static [u8]>,
    ) -> reqwest::Response {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let body = reqwest::Body::wrap_stream(stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        ));
        reqwest::Response::from(builder.body(body).unwrap())
    }

    const SMALL: BodyLimits = BodyLimits {
        success: 10,
        error: 4,
    };

    #[tokio::test]
    async fn bodies_within_the_cap_pass_whole_with_their_head() {
        let original = response(
            200,
            &[
                ("x-ms-continuation", "next"),
                ("content-type", "application/json"),
            ],
            vec![b"[1,", b"2]"],
        );
        let limited = limit(original, SMALL);
        assert_eq!(limited.status(), 200);
        assert_eq!(limited.headers()["x-ms-continuation"], "next");
        assert_eq!(limited.bytes().await.unwrap(), &b"[1,2]"[..]);
        let at_the_cap = limit(response(404, &[], vec![b"ab", b"cd"]), SMALL);
        assert_eq!(at_the_cap.bytes().await.unwrap(), &b"abcd"[..]);
    }

    #[tokio::test]
    async fn a_body_past_the_cap_for_its_status_fails_with_the_cap() {
        for (status, chunks, limit_) in [
            (200, vec![&b"0123456"[..], b"789", b"x"], 10),
            (500, vec![&b"abc"[..], b"de"], 4),
        ] {
            let error = limit(response(status, &[], chunks), SMALL)
                .bytes()
                .await
                .unwrap_err();
            assert_eq!(
                ResponseTooLarge::find(&error),
                Some(ResponseTooLarge {
                    status,
                    limit: limit_
                }),
                "{error:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_announced_length_past_the_cap_is_refused_before_reading() {
        // The body would never end; it is not polled.
        let endless = reqwest::Body::wrap_stream(stream::repeat_with(|| {
            Ok::<_, std::io::Error>(Bytes::from_static(b"x"))
        }));
        let original = reqwest::Response::from(
            http::Response::builder()
                .status(200)
                .header("content-length", "5000000000")
                .body(endless)
                .unwrap(),
        );
        let error = limit(original, BodyLimits::default())
            .bytes()
            .await
            .unwrap_err();
        assert_eq!(
            ResponseTooLarge::find(&error),
            Some(ResponseTooLarge {
                status: 200,
                limit: DEFAULT_MAX_RESPONSE_BODY
            })
        );
        assert_eq!(
            ResponseTooLarge::find(&error).unwrap().to_string(),
            "the body of the 200 response is larger than 134217728 bytes"
        );
    }

    #[test]
    fn defaults() {
        assert_eq!(
            BodyLimits::default(),
            BodyLimits {
                success: 128 << 20,
                error: 1 << 20
            }
        );
    }
}
