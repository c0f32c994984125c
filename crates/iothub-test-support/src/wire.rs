//! wiremock servers standing in for a hub, clients pointed at them, and the recorder that
//! turns a received request into the JSON the wire snapshots hold.

use std::fmt::Display;
use std::time::Duration;

use iothub_auth::Credential;
use iothub_registry::{ExponentialRetry, RegistryManager, RegistryManagerBuilder};
use serde_json::{Map, Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// A mock hub answering `GET /statistics/service` with `connectedDeviceCount`.
pub async fn statistics_server(connected_device_count: u64) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/statistics/service"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "connectedDeviceCount": connected_device_count })),
        )
        .mount(&server)
        .await;
    server
}

/// One case of a wire test: the call to make (`C`, e.g. a function of the client), the
/// request it must send (`method` at the raw `path`), and the canned answer.
#[derive(Debug)]
pub struct Case<C> {
    /// Names the case in failures and its snapshot.
    pub name: &'static str,
    /// The method the call must send.
    pub method: &'static str,
    /// The path the call must send, raw (percent-encoded as on the wire).
    pub path: String,
    /// The status of the answer.
    pub status: u16,
    /// The JSON body of the answer, if any.
    pub response: Option<Value>,
    /// Headers of the answer.
    pub response_headers: &'static [(&'static str, &'static str)],
    /// What the test calls.
    pub call: C,
}

/// A [`Case`] answering without headers; add some with
/// `Case { response_headers: &[…], ..case(…) }`.
pub fn case<C>(
    name: &'static str,
    method: &'static str,
    path: impl Into<String>,
    status: u16,
    response: Option<Value>,
    call: C,
) -> Case<C> {
    Case {
        name,
        method,
        path: path.into(),
        status,
        response,
        response_headers: &[],
        call,
    }
}

impl<C> Case<C> {
    /// A mock hub expecting exactly this case's one request and giving its answer;
    /// `server.verify().await` checks that the request came.
    pub async fn server(&self) -> MockServer {
        let server = MockServer::start().await;
        let mut response = ResponseTemplate::new(self.status);
        if let Some(body) = &self.response {
            response = response.set_body_json(body);
        }
        for (name, value) in self.response_headers {
            response = response.insert_header(*name, *value);
        }
        Mock::given(method(self.method))
            .and(path(self.path.as_str()))
            .respond_with(response)
            .expect(1)
            .mount(&server)
            .await;
        server
    }
}

/// A `RegistryManager` builder sending plain HTTP to `address` (a mock server's
/// `127.0.0.1:port`), signing with `credential`.
pub fn registry_builder(address: impl Display, credential: Credential) -> RegistryManagerBuilder {
    RegistryManager::builder(credential)
        .endpoint(format!("http://{address}"))
        .allow_http_on_loopback(true)
}

/// A generated-client builder sending plain HTTP to `address`, signing with `credential`.
pub fn rest_client_builder(
    address: impl Display,
    credential: Credential,
) -> iothub_rest_gen::ClientBuilder {
    iothub_rest_gen::Client::builder(format!("http://{address}"), credential)
        .allow_http_on_loopback(true)
}

/// The default retry policy with millisecond delays (1 ms, at most 5 ms), for mock servers.
pub fn fast_retries() -> ExponentialRetry {
    ExponentialRetry::new()
        .initial_delay(Duration::from_millis(1))
        .max_delay(Duration::from_millis(5))
}

/// The parts of a request a wire snapshot pins: method, raw path, query, the headers
/// `keep_header` selects (by lower-case name) and the JSON body (`null` when empty).
///
/// An `Authorization` header, if selected, is recorded with the values of `sig` and `se`
/// replaced by `<redacted>`: they change with every run and must not land in a snapshot.
///
/// # Panics
///
/// If a selected header is not ASCII or the body is not JSON.
pub fn record(request: &Request, keep_header: impl Fn(&str) -> bool) -> Value {
    let mut headers = Map::new();
    for (name, value) in &request.headers {
        let name = name.as_str();
        if !keep_header(name) {
            continue;
        }
        let value = value.to_str().expect("an ASCII header value");
        let value = if name == "authorization" {
            redact(value)
        } else {
            value.to_owned()
        };
        headers.insert(name.into(), json!(value));
    }
    let body = if request.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&request.body).expect("request bodies are JSON")
    };
    json!({
        "method": request.method.as_str(),
        "path": request.url.path(),
        "query": request.url.query(),
        "headers": headers,
        "body": body,
    })
}

/// `SharedAccessSignature sr=h&sig=x&se=1&skn=p` → `… sig=<redacted>&se=<redacted> …`.
fn redact(authorization: &str) -> String {
    let Some(fields) = authorization.strip_prefix("SharedAccessSignature ") else {
        return authorization
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_owned()
            + " <redacted>";
    };
    let fields: Vec<String> = fields
        .split('&')
        .map(|field| match field.split_once('=') {
            Some((name @ ("sig" | "se"), _)) => format!("{name}=<redacted>"),
            _ => field.to_owned(),
        })
        .collect();
    format!("SharedAccessSignature {}", fields.join("&"))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn signatures_and_expiries_are_redacted() {
        assert_eq!(
            redact("SharedAccessSignature sr=h%3A1&sig=abc%3D&se=1700000000&skn=iothubowner"),
            "SharedAccessSignature sr=h%3A1&sig=<redacted>&se=<redacted>&skn=iothubowner"
        );
        assert_eq!(
            redact("Bearer header.payload.signature"),
            "Bearer <redacted>"
        );
    }
}
