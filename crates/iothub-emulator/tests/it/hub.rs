//! A started emulator and a raw HTTPS client that signs like the SDKs.

use std::time::{SystemTime, UNIX_EPOCH};

use iothub_auth::{ConnectionString, Credential, HostName, SasToken, SharedAccessKey};
use iothub_emulator::Emulator;
use iothub_test_support::emulator::https_client;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub(crate) const API: &str = "api-version=2021-04-12";

pub(crate) struct Hub {
    pub(crate) emu: Emulator,
    pub(crate) http: reqwest::Client,
}

/// One answer: status, headers and the JSON body (Null when empty).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Value,
    pub(crate) raw: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code name from the header, checked against shape A or B of the body.
    pub(crate) fn error_code(&self) -> String {
        let header = self
            .header("iothub-errorcode")
            .unwrap_or_default()
            .to_owned();
        let message = self.body["Message"].as_str().unwrap_or_default();
        if let Some(rest) = message.strip_prefix("ErrorCode:") {
            let name = rest.split(';').next().unwrap_or_default();
            assert_eq!(name, header, "header and body disagree: {}", self.raw);
        } else {
            let inner: Value = serde_json::from_str(message).expect("shape B body");
            assert!(inner["errorCode"].as_u64().is_some(), "{}", self.raw);
        }
        header
    }
}

impl Hub {
    pub(crate) async fn start() -> Self {
        Self::with(Emulator::builder()).await
    }

    pub(crate) async fn with(builder: iothub_emulator::EmulatorBuilder) -> Self {
        let emu = builder.start().await.unwrap();
        let http = https_client(&emu);
        Self { emu, http }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}{API}", self.emu.base_url())
    }

    /// A fresh SAS token for a policy, as the SDKs send it over HTTP.
    pub(crate) async fn token(&self, policy: &str) -> String {
        let cs: ConnectionString = self
            .emu
            .connection_string_for(policy)
            .unwrap()
            .parse()
            .unwrap();
        let cred = Credential::from_connection_string(&cs);
        cred.http_authorization()
            .await
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    /// A token for `policy` expiring at `expiry` (unix seconds).
    pub(crate) fn token_expiring(&self, policy: &str, expiry: u64) -> String {
        let p = self
            .emu
            .policies()
            .iter()
            .find(|p| p.name == policy)
            .unwrap();
        let host: HostName = self.emu.host().parse().unwrap();
        let key = SharedAccessKey::new(&p.primary_key).unwrap();
        SasToken::for_http(&host, policy, &key, expiry)
            .as_secret()
            .expose_secret()
            .to_owned()
    }

    pub(crate) async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let token = self.token("iothubowner").await;
        self.raw(
            method,
            &self.url(path),
            body,
            &[("authorization", token.as_str())],
        )
        .await
    }

    pub(crate) async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let token = self.token("iothubowner").await;
        let mut all = vec![("authorization", token.as_str())];
        all.extend_from_slice(headers);
        self.raw(method, &self.url(path), body, &all).await
    }

    pub(crate) async fn raw(
        &self,
        method: Method,
        url: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json; charset=utf-8")
                .body(body.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.text().await.unwrap();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&raw).unwrap()
        };
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub(crate) async fn create(&self, id: &str) -> Value {
        let r = self
            .call(
                Method::PUT,
                &format!("/devices/{id}"),
                Some(serde_json::json!({"deviceId": id})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        r.body
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
