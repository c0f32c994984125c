//! Checks our tokens and connection-string parsing against vectors produced by the official
//! Python SDK (`scripts/sas_vectors.py` writes `testdata/sas_vectors.json`).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use iothub_auth::{
    CbsTokenType, ConnectionString, Credential, HostName, ManualClock, SasToken, SharedAccessKey,
};
use serde::Deserialize;

const VECTORS: &str = include_str!("../../testdata/sas_vectors.json");

#[derive(Deserialize)]
struct Document {
    package: String,
    sas: Vec<SasVector>,
    connection_strings: Vec<ConnectionStringVector>,
    device_package: String,
    device_sas: Vec<DeviceSasVector>,
}

#[derive(Deserialize)]
struct DeviceSasVector {
    host: String,
    device_id: String,
    module_id: Option<String>,
    key: String,
    expiry: u64,
    token: String,
}

#[derive(Deserialize)]
struct SasVector {
    host: String,
    key_name: String,
    key: String,
    expiry: u64,
    transport: String,
    token: String,
    audience: Option<String>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct ConnectionStringVector {
    input: String,
    accepted: bool,
    host: Option<String>,
    key_name: Option<String>,
    key: Option<String>,
}

fn document() -> Document {
    serde_json::from_str(VECTORS).expect("testdata/sas_vectors.json is valid")
}

fn signature(token: &str) -> &str {
    let (_, rest) = token.split_once("&sig=").expect("token has sig");
    rest.split('&').next().unwrap_or_default()
}

#[test]
fn vectors_come_from_the_reference_package_and_cover_the_tricky_cases() {
    let doc = document();
    assert_eq!(doc.package, "azure-iot-hub 2.7.0");
    let count = |transport: &str, pred: &dyn Fn(&SasVector) -> bool| {
        doc.sas
            .iter()
            .filter(|v| v.transport == transport && pred(v))
            .count()
    };
    for transport in ["http", "amqp"] {
        assert!(
            count(transport, &|v| signature(&v.token).contains('/')) > 0,
            "{transport} '/'"
        );
        assert!(
            count(transport, &|v| signature(&v.token).contains("%2B")) > 0,
            "{transport} '+'"
        );
        assert!(
            count(transport, &|v| signature(&v.token).ends_with("%3D")) > 0,
            "{transport} '='"
        );
        assert!(
            count(transport, &|v| v.host.contains(':')) > 0,
            "{transport} port"
        );
        assert!(count(transport, &|v| v.host.ends_with(".azure-devices.net")) > 0);
        assert!(count(transport, &|v| v.host.ends_with(".azure-devices.cn")) > 0);
        for len in [16, 32, 64] {
            assert!(
                count(transport, &|v| v
                    .key
                    .parse::<SharedAccessKey>()
                    .unwrap()
                    .len()
                    == len)
                    > 0,
                "{transport} {len}-byte key"
            );
        }
    }
    assert!(doc.connection_strings.iter().any(|c| c.accepted));
    assert!(doc.connection_strings.iter().any(|c| !c.accepted));
}

#[test]
fn tokens_are_byte_identical_to_python() {
    let doc = document();
    for v in &doc.sas {
        let host: HostName = v.host.parse().unwrap();
        let key: SharedAccessKey = v.key.parse().unwrap();
        let token = match v.transport.as_str() {
            "http" => SasToken::for_http(&host, &v.key_name, &key, v.expiry),
            "amqp" => SasToken::for_amqp(&host, &v.key_name, &key, v.expiry),
            other => panic!("unknown transport {other}"),
        };
        assert_eq!(
            token.as_secret().expose_secret(),
            v.token,
            "{} {} {}",
            v.transport,
            v.host,
            v.expiry
        );
    }
}

#[test]
fn device_and_module_tokens_are_byte_identical_to_the_device_sdk() {
    let doc = document();
    assert_eq!(doc.device_package, "azure-iot-device 2.14.0");
    assert!(doc.device_sas.iter().any(|v| v.module_id.is_some()));
    assert!(doc.device_sas.iter().any(|v| v.host.contains(':')));
    for v in &doc.device_sas {
        let host: HostName = v.host.parse().unwrap();
        let key: SharedAccessKey = v.key.parse().unwrap();
        let token =
            SasToken::for_device(&host, &v.device_id, v.module_id.as_deref(), &key, v.expiry);
        assert_eq!(
            token.as_secret().expose_secret(),
            v.token,
            "{} {} {:?}",
            v.host,
            v.device_id,
            v.module_id
        );
        assert_eq!(token.key_name(), None);
        assert_eq!(token.expiry_unix(), v.expiry);
    }
}

#[tokio::test]
async fn credential_produces_the_same_tokens_audience_and_type() {
    let doc = document();
    for v in &doc.sas {
        let host: HostName = v.host.parse().unwrap();
        let key: SharedAccessKey = v.key.parse().unwrap();
        // The Python SDK computes `int(time.time() + 3600)`.
        let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(v.expiry - 3600));
        let credential = Credential::from_shared_access_key(host, v.key_name.clone(), key)
            .unwrap()
            .with_clock(Arc::new(clock));
        match v.transport.as_str() {
            "http" => {
                let header = credential.http_authorization().await.unwrap();
                assert_eq!(header.expose_secret(), v.token);
            }
            _ => {
                let cbs = credential.cbs_token().await.unwrap();
                assert_eq!(cbs.token.expose_secret(), v.token);
                assert_eq!(Some(&cbs.audience), v.audience.as_ref());
                assert_eq!(Some(cbs.token_type.as_str()), v.token_type.as_deref());
                assert_eq!(cbs.token_type, CbsTokenType::SharedAccessSignature);
                assert_eq!(cbs.expires_at, UNIX_EPOCH + Duration::from_secs(v.expiry));
            }
        }
    }
}

#[test]
fn connection_strings_agree_with_python() {
    // We are stricter than Python (device strings, bad base64, trailing ';' handling), so the
    // vectors only hold service strings Python accepts and strings Python rejects.
    for c in document().connection_strings {
        let parsed = c.input.parse::<ConnectionString>();
        if !c.accepted {
            assert!(
                parsed.is_err(),
                "Python rejects {:?} but we accept it",
                c.input
            );
            continue;
        }
        let cs = parsed.unwrap_or_else(|e| panic!("Python accepts {:?}: {e}", c.input));
        assert_eq!(Some(cs.host_name().as_str()), c.host.as_deref());
        assert_eq!(cs.shared_access_key_name(), c.key_name.as_deref());
        // Same key bytes: signing with both gives the same token.
        let theirs: SharedAccessKey = c.key.as_deref().unwrap().parse().unwrap();
        let ours = cs.shared_access_key().unwrap();
        assert_eq!(
            SasToken::for_http(cs.host_name(), "k", ours, 1).as_secret(),
            SasToken::for_http(cs.host_name(), "k", &theirs, 1).as_secret()
        );
    }
}
