//! Fault injection: what a client sees, and that writes are applied (or not) as stated.

use iothub_emulator::{Emulator, FaultConfig, Tier};
use reqwest::Method;
use serde_json::json;

use crate::hub::Hub;

#[tokio::test]
async fn throttling_and_server_errors() {
    let hub = Hub::start().await;
    hub.emu.set_faults(FaultConfig {
        throttle_rate: 1.0,
        retry_after_secs: 3,
        ..Default::default()
    });
    let r = hub.call(Method::GET, "/devices", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "ThrottlingException")
    );
    assert_eq!(r.header("retry-after"), Some("3"));
    hub.emu.set_faults(FaultConfig {
        server_error_rate: 1.0,
        ..Default::default()
    });
    let r = hub.call(Method::GET, "/devices", None).await;
    assert!(matches!(r.status, 500 | 503), "{}", r.status);
    let stats = hub.emu.fault_stats();
    assert_eq!((stats.throttled, stats.server_errors), (1, 1));
    hub.emu.set_faults(FaultConfig::default());
    assert_eq!(hub.call(Method::GET, "/devices", None).await.status, 200);
}

#[tokio::test]
async fn dropped_connections_before_and_after_the_write() {
    let hub = Hub::start().await;
    let put = |id: &'static str| {
        let hub = &hub;
        async move {
            let token = hub.token("iothubowner").await;
            hub.http
                .put(hub.url(&format!("/devices/{id}")))
                .header("authorization", token)
                .body("{}")
                .send()
                .await
        }
    };
    hub.emu.set_faults(FaultConfig {
        drop_before_rate: 1.0,
        ..Default::default()
    });
    assert!(put("before").await.is_err());
    hub.emu.set_faults(FaultConfig {
        drop_after_rate: 1.0,
        ..Default::default()
    });
    assert!(put("after").await.is_err());
    hub.emu.set_faults(FaultConfig::default());
    assert_eq!(
        hub.call(Method::GET, "/devices/before", None).await.status,
        404
    );
    assert_eq!(
        hub.call(Method::GET, "/devices/after", None).await.status,
        200
    );
    let stats = hub.emu.fault_stats();
    assert_eq!((stats.dropped_before, stats.dropped_after), (1, 1));
    let dropped: Vec<_> = hub
        .emu
        .request_log()
        .into_iter()
        .filter(|e| e.status.is_none())
        .collect();
    assert_eq!(dropped.len(), 2);
}

#[tokio::test]
async fn tier_limits_throttle_with_retry_after() {
    let hub = Hub::with(Emulator::builder().faults(FaultConfig {
        tier: Some(Tier::S1),
        ..Default::default()
    }))
    .await;
    // S1 allows 20 queries a minute per unit: the second at once is throttled.
    let q = json!({"query": "SELECT * FROM devices"});
    assert_eq!(
        hub.call(Method::POST, "/devices/query", Some(q.clone()))
            .await
            .status,
        200
    );
    let r = hub.call(Method::POST, "/devices/query", Some(q)).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
}
