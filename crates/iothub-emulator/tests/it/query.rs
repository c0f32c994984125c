//! POST /devices/query: the language, paging and errors.

use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::Hub;

async fn seed(hub: &Hub, n: usize) {
    let devices: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "id": format!("q{i:03}"),
                "importMode": "create",
                "status": if i % 2 == 0 { "enabled" } else { "disabled" },
                "tags": {"floor": i % 3, "name": format!("n{i}")},
            })
        })
        .collect();
    for chunk in devices.chunks(100) {
        let r = hub
            .call(Method::POST, "/devices", Some(Value::Array(chunk.to_vec())))
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
}

async fn query(hub: &Hub, q: &str, page: Option<usize>, cont: Option<&str>) -> crate::hub::Reply {
    let page = page.map(|p| p.to_string());
    let mut headers = vec![];
    if let Some(p) = page.as_deref() {
        headers.push(("x-ms-max-item-count", p));
    }
    if let Some(c) = cont {
        headers.push(("x-ms-continuation", c));
    }
    hub.call_with(
        Method::POST,
        "/devices/query",
        Some(json!({"query": q})),
        &headers,
    )
    .await
}

#[tokio::test]
async fn pages_through_every_match_exactly_once() {
    let hub = Hub::start().await;
    seed(&hub, 250).await;
    let mut seen = Vec::new();
    let mut cont: Option<String> = None;
    let mut pages = 0;
    loop {
        let r = query(
            &hub,
            "SELECT * FROM devices WHERE tags.floor = 1",
            Some(30),
            cont.as_deref(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        assert_eq!(r.header("x-ms-item-type"), Some("twin"));
        pages += 1;
        for twin in r.body.as_array().unwrap() {
            seen.push(twin["deviceId"].as_str().unwrap().to_owned());
        }
        match r.header("x-ms-continuation") {
            Some(c) => {
                assert!(!c.is_empty());
                cont = Some(c.to_owned());
            }
            None => break,
        }
    }
    let expected: Vec<String> = (0..250)
        .filter(|i| i % 3 == 1)
        .map(|i| format!("q{i:03}"))
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn projections_counts_and_group_by() {
    let hub = Hub::start().await;
    seed(&hub, 12).await;
    let r = query(&hub, "SELECT COUNT() AS total FROM devices", None, None).await;
    assert_eq!(r.body, json!([{"total": 12}]));
    assert!(r.header("x-ms-continuation").is_none());
    let r = query(
        &hub,
        "select tags.floor AS floor, count() as n from devices where status = 'enabled' group by tags.floor",
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let total: u64 = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["n"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 6);
    let r = query(
        &hub,
        "SELECT deviceId, tags.name FROM devices WHERE tags.name IN ['n1', 'n2']",
        None,
        None,
    )
    .await;
    assert_eq!(
        r.body,
        json!([{"deviceId": "q001", "name": "n1"}, {"deviceId": "q002", "name": "n2"}])
    );
    let r = query(&hub, "SELECT TOP 5 * FROM devices", Some(2), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = query(
        &hub,
        "SELECT * FROM devices WHERE STARTSWITH(deviceId, 'q01') AND NOT (tags.floor = 0)",
        None,
        None,
    )
    .await;
    let ids: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["q010", "q011"]);
}

#[tokio::test]
async fn top_is_honoured_across_pages() {
    let hub = Hub::start().await;
    seed(&hub, 20).await;
    let r = query(&hub, "SELECT TOP 5 * FROM devices", Some(3), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 3);
    let cont = r.header("x-ms-continuation").unwrap().to_owned();
    let r = query(&hub, "SELECT TOP 5 * FROM devices", Some(3), Some(&cont)).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    assert!(r.header("x-ms-continuation").is_none());
}

#[tokio::test]
async fn module_queries() {
    let hub = Hub::start().await;
    hub.call(
        Method::PUT,
        "/devices/e",
        Some(json!({"capabilities": {"iotEdge": true}})),
    )
    .await;
    hub.create("plain").await;
    hub.call(Method::PUT, "/devices/plain/modules/m", Some(json!({})))
        .await;
    let r = query(&hub, "SELECT * FROM devices.modules", Some(2), None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let cont = r.header("x-ms-continuation").unwrap().to_owned();
    let r = query(&hub, "SELECT * FROM devices.modules", Some(2), Some(&cont)).await;
    let rows = r.body.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["moduleId"], "m");
    let r = query(
        &hub,
        "SELECT * FROM devices.modules WHERE moduleId = '$edgeHub'",
        None,
        None,
    )
    .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_queries_get_400_not_a_crash() {
    let hub = Hub::start().await;
    hub.create("x").await;
    for q in [
        "",
        "SELECT",
        "SELECT * FROM",
        "SELECT * FROM devices WHERE",
        "SELECT * FROM devices WHERE (tags.a = 1",
        "SELECT * FROM devices WHERE tags.a = 'open",
        "SELECT * FROM nowhere",
        "DROP TABLE devices",
        &"(".repeat(10_000),
    ] {
        let r = query(&hub, q, None, None).await;
        assert_eq!(r.status, 400, "{q:?}: {}", r.raw);
    }
    let r = hub
        .call(Method::POST, "/devices/query", Some(json!({"nope": 1})))
        .await;
    assert_eq!(r.status, 400);
    let r = query(&hub, "SELECT * FROM devices", None, Some("garbage")).await;
    assert_eq!(r.status, 400);
    let r = query(&hub, "SELECT * FROM devices", Some(0), None).await;
    assert_eq!(r.status, 400);
    let r = query(&hub, "SELECT * FROM devices", None, None).await;
    assert_eq!(r.status, 200);
}
