//! Configurations (automatic device management and IoT Edge deployments) over HTTPS: every
//! operation with its statuses, etags and limits, targeting and priority, re-targeting when
//! tags change, metrics, `testQueries`, `applyConfigurationContent`, throttling, and
//! durability across a restart.

use iothub_emulator::{Emulator, FaultConfig, Tier};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::Hub;

/// A device configuration setting desired `x` (and `by`) on twins matching `condition`.
fn device_config(id: &str, condition: &str, priority: i32, x: &str) -> Value {
    json!({
        "id": id,
        "labels": {"team": "emulator"},
        "content": {"deviceContent": {"properties.desired.x": x, "properties.desired.by": id}},
        "targetCondition": condition,
        "priority": priority,
    })
}

async fn put(hub: &Hub, id: &str, body: Value, if_match: Option<&str>) -> crate::hub::Reply {
    let headers: Vec<(&str, &str)> = if_match.map(|m| ("if-match", m)).into_iter().collect();
    hub.call_with(
        Method::PUT,
        &format!("/configurations/{id}"),
        Some(body),
        &headers,
    )
    .await
}

async fn get(hub: &Hub, id: &str) -> Value {
    let r = hub
        .call(Method::GET, &format!("/configurations/{id}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body
}

async fn desired(hub: &Hub, path: &str) -> Value {
    let r = hub.call(Method::GET, path, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.body["properties"]["desired"].clone()
}

async fn patch_tags(hub: &Hub, id: &str, tags: Value) {
    let r = hub
        .call(
            Method::PATCH,
            &format!("/twins/{id}"),
            Some(json!({"tags": tags})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

fn counts(config: &Value) -> (i64, i64) {
    let results = &config["systemMetrics"]["results"];
    (
        results["targetedCount"].as_i64().unwrap(),
        results["appliedCount"].as_i64().unwrap(),
    )
}

#[tokio::test]
async fn create_get_list_update_and_delete_with_etags_as_devices() {
    let hub = Hub::start().await;
    let body = device_config("c1", "tags.env = 'prod'", 1, "one");
    let r = put(&hub, "c1", body.clone(), None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["etag"], "MQ==");
    assert_eq!(r.header("etag"), Some("\"MQ==\""));
    assert_eq!(r.body["schemaVersion"], "1.0");
    assert_eq!(r.body["labels"]["team"], "emulator");
    let created = r.body["createdTimeUtc"].clone();
    assert!(created.is_string(), "{}", r.raw);
    assert_eq!(counts(&r.body), (0, 0));

    // Without If-Match a PUT creates: 409 for an existing one.
    let r = put(&hub, "c1", body.clone(), None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "ConfigurationAlreadyExists")
    );
    // An unquoted etag is ignored, as the service did (Python's update sends it raw): 409.
    let r = put(&hub, "c1", body.clone(), Some("MQ==")).await;
    assert_eq!(r.status, 409, "{}", r.raw);
    // A stale quoted etag: 412.
    let r = put(&hub, "c1", body.clone(), Some("\"Mg==\"")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    // The current etag, then `*` and `"*"`: updated, new etag, created time kept.
    let mut update = body.clone();
    update["priority"] = json!(7);
    let r = put(&hub, "c1", update.clone(), Some("\"MQ==\"")).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["etag"], "Mg==");
    assert_eq!(r.body["priority"], 7);
    assert_eq!(r.body["createdTimeUtc"], created);
    for any in ["*", "\"*\""] {
        let r = put(&hub, "c1", update.clone(), Some(any)).await;
        assert_eq!(r.status, 200, "{any}: {}", r.raw);
    }
    // The content is fixed once created.
    let mut changed = update.clone();
    changed["content"]["deviceContent"]["properties.desired.x"] = json!("two");
    let r = put(&hub, "c1", changed, Some("*")).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ArgumentInvalid")
    );
    // A quoted etag for a configuration that does not exist: 404.
    let r = put(
        &hub,
        "c9",
        device_config("c9", "*", 0, "v"),
        Some("\"MQ==\""),
    )
    .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ConfigurationNotFound")
    );

    let got = hub.call(Method::GET, "/configurations/c1", None).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["etag"], "NA==");
    assert_eq!(got.header("etag"), Some("\"NA==\""));
    assert_eq!(got.body["targetCondition"], "tags.env = 'prod'");
    let r = hub.call(Method::GET, "/configurations/nope", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ConfigurationNotFound")
    );

    let r = put(
        &hub,
        "c2",
        device_config("c2", "tags.env = 'test'", 0, "t"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let list = hub.call(Method::GET, "/configurations", None).await;
    assert_eq!(list.status, 200);
    let ids: Vec<&str> = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    let list = hub.call(Method::GET, "/configurations?top=1", None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 1);
    let r = hub.call(Method::GET, "/configurations?top=x", None).await;
    assert_eq!(r.status, 400);

    // Delete: a stale quoted etag 412, then without If-Match (as Node sends), then 404.
    let r = hub
        .call_with(
            Method::DELETE,
            "/configurations/c1",
            None,
            &[("if-match", "\"MQ==\"")],
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "PreconditionFailed")
    );
    let r = hub
        .call_with(
            Method::DELETE,
            "/configurations/c1",
            None,
            &[("if-match", "\"NA==\"")],
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.raw);
    let r = hub.call(Method::DELETE, "/configurations/c2", None).await;
    assert_eq!(r.status, 204, "{}", r.raw);
    let r = hub.call(Method::DELETE, "/configurations/c2", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "ConfigurationNotFound")
    );
    let list = hub.call(Method::GET, "/configurations", None).await;
    assert_eq!(list.body, json!([]));
}

#[tokio::test]
async fn limits_ids_and_inputs_are_checked() {
    let hub = Hub::start().await;
    let ok = |id: &str| device_config(id, "tags.a = 1", 0, "v");
    for bad in ["Upper", "a.b", &"a".repeat(129)] {
        let r = put(&hub, bad, ok(bad), None).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.raw);
    }
    let long_condition = format!("tags.a = '{}'", "x".repeat(8 * 1024));
    let big = "y".repeat(4000);
    let big_content: serde_json::Map<String, Value> = (0..9)
        .map(|i| (format!("properties.desired.k{i}"), json!(big)))
        .collect();
    let metrics: serde_json::Map<String, Value> = (0..11)
        .map(|i| (format!("m{i}"), json!("SELECT deviceId FROM devices")))
        .collect();
    for (what, body) in [
        (
            "a long condition",
            json!({"targetCondition": long_condition}),
        ),
        ("a bad condition", json!({"targetCondition": "tags.a = "})),
        (
            "content over 32 KB",
            json!({"content": {"deviceContent": big_content}}),
        ),
        (
            "content outside desired",
            json!({"content": {"deviceContent": {"tags.a": 1}}}),
        ),
        ("a negative priority", json!({"priority": -1})),
        ("eleven metrics", json!({"metrics": {"queries": metrics}})),
        (
            "a bad metric",
            json!({"metrics": {"queries": {"m": "SELECT FROM"}}}),
        ),
        ("another id in the body", json!({"id": "other"})),
        (
            "module content over devices",
            json!({"content": {"moduleContent": {"properties.desired.a": 1}}, "targetCondition": "tags.a = 1"}),
        ),
    ] {
        let r = put(&hub, "c", body, None).await;
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "ArgumentInvalid"),
            "{what}: {}",
            r.raw
        );
    }
    // 100 configurations per hub, then 413.
    for i in 0..100 {
        let id = format!("c{i}");
        let r = put(&hub, &id, ok(&id), None).await;
        assert_eq!(r.status, 200, "{id}: {}", r.raw);
    }
    let r = put(&hub, "c100", ok("c100"), None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "ConfigurationCountLimitExceeded")
    );
    let list = hub.call(Method::GET, "/configurations", None).await;
    assert_eq!(list.body.as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn the_highest_priority_wins_and_ties_go_to_the_most_recently_created() {
    let hub = Hub::start().await;
    hub.create("d1").await;
    patch_tags(&hub, "d1", json!({"env": "prod"})).await;
    for (id, priority) in [("low", 1), ("high", 5), ("tie-a", 1)] {
        let r = put(
            &hub,
            id,
            device_config(id, "tags.env = 'prod'", priority, id),
            None,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
    let d = desired(&hub, "/twins/d1").await;
    assert_eq!(
        (d["x"].as_str(), d["by"].as_str()),
        (Some("high"), Some("high")),
        "{d}"
    );
    assert_eq!(counts(&get(&hub, "high").await), (1, 1));
    assert_eq!(counts(&get(&hub, "low").await), (1, 0));
    assert_eq!(counts(&get(&hub, "tie-a").await), (1, 0));

    // The winner goes: of the two with priority 1, the one created last wins.
    let r = hub.call(Method::DELETE, "/configurations/high", None).await;
    assert_eq!(r.status, 204);
    let d = desired(&hub, "/twins/d1").await;
    assert_eq!(d["x"], "tie-a", "{d}");
    assert_eq!(counts(&get(&hub, "tie-a").await), (1, 1));
    assert_eq!(counts(&get(&hub, "low").await), (1, 0));

    // Raising a priority re-targets too.
    let low = device_config("low", "tags.env = 'prod'", 9, "low");
    let r = put(&hub, "low", low, Some("*")).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(desired(&hub, "/twins/d1").await["x"], "low");
    assert_eq!(counts(&get(&hub, "low").await), (1, 1));
}

#[tokio::test]
async fn twins_are_retargeted_when_tags_change_and_devices_go() {
    let hub = Hub::start().await;
    for id in ["d1", "d2", "d3"] {
        hub.create(id).await;
    }
    patch_tags(&hub, "d1", json!({"env": "prod"})).await;
    let r = put(
        &hub,
        "prod",
        device_config("prod", "tags.env = 'prod'", 0, "p"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(counts(&r.body), (1, 1));
    assert_eq!(desired(&hub, "/twins/d1").await["x"], "p");
    assert!(desired(&hub, "/twins/d2").await.get("x").is_none());

    // A PATCH of tags brings d2 in; a PUT of the twin brings d3 in.
    patch_tags(&hub, "d2", json!({"env": "prod"})).await;
    assert_eq!(desired(&hub, "/twins/d2").await["x"], "p");
    let r = hub
        .call(
            Method::PUT,
            "/twins/d3",
            Some(json!({"tags": {"env": "prod"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // The answer is the twin as written; the configuration applies right after (the
    // service takes its time; the emulator does it in the same transaction).
    assert_eq!(desired(&hub, "/twins/d3").await["x"], "p");
    assert_eq!(counts(&get(&hub, "prod").await), (3, 3));

    // A bulk twin update moves d1 out; a delete takes d2 away.
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([{"id": "d1", "importMode": "updateTwin", "tags": {"env": "test"}}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub.call(Method::DELETE, "/devices/d2", None).await;
    assert_eq!(r.status, 204);
    assert_eq!(counts(&get(&hub, "prod").await), (1, 1));
    // Content applied stays when the twin leaves the target (the service removes nothing).
    assert_eq!(desired(&hub, "/twins/d1").await["x"], "p");

    // Leaving and coming back applies the content again, over the user's own change.
    let r = hub
        .call(
            Method::PATCH,
            "/twins/d1",
            Some(json!({"properties": {"desired": {"x": "mine"}}})),
        )
        .await;
    assert_eq!(r.status, 200);
    patch_tags(&hub, "d1", json!({"env": "prod"})).await;
    assert_eq!(desired(&hub, "/twins/d1").await["x"], "p");

    // A device created with matching tags by bulk is targeted at once.
    let r = hub
        .call(
            Method::POST,
            "/devices",
            Some(json!([{"id": "d4", "importMode": "create", "tags": {"env": "prod"}}])),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(desired(&hub, "/twins/d4").await["x"], "p");
}

#[tokio::test]
async fn module_configurations_target_module_twins() {
    let hub = Hub::start().await;
    hub.create("d1").await;
    for m in ["m1", "m2"] {
        let r = hub
            .call(
                Method::PUT,
                &format!("/devices/d1/modules/{m}"),
                Some(json!({"moduleId": m})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
    let body = json!({
        "content": {"moduleContent": {"properties.desired.mode": "fast"}},
        "targetCondition": "FROM devices.modules WHERE moduleId = 'm1'",
        "priority": 1,
    });
    let r = put(&hub, "mods", body, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(counts(&r.body), (1, 1));
    assert_eq!(
        r.body["systemMetrics"]["queries"]["targetedCount"],
        "select moduleId FROM devices.modules WHERE moduleId = 'm1'"
    );
    assert_eq!(desired(&hub, "/twins/d1/modules/m1").await["mode"], "fast");
    assert!(
        desired(&hub, "/twins/d1/modules/m2")
            .await
            .get("mode")
            .is_none()
    );
    // The device twin is not a module twin.
    assert!(desired(&hub, "/twins/d1").await.get("mode").is_none());
}

#[tokio::test]
async fn custom_metrics_count_the_rows_of_their_queries_when_asked() {
    let hub = Hub::start().await;
    for id in ["d1", "d2", "d3"] {
        hub.create(id).await;
        patch_tags(&hub, id, json!({"env": "prod"})).await;
    }
    let mut body = device_config("m", "tags.env = 'prod'", 0, "v");
    body["metrics"] = json!({"queries": {
        "done": "SELECT deviceId FROM devices WHERE properties.reported.done = true",
        "all": "SELECT COUNT() AS n FROM devices",
    }});
    let r = put(&hub, "m", body, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["metrics"]["results"]["done"], 0);
    hub.emu
        .report_properties("d1", None, &json!({"done": true}))
        .unwrap();
    hub.emu
        .report_properties("d3", None, &json!({"done": true}))
        .unwrap();
    let got = get(&hub, "m").await;
    assert_eq!(got["metrics"]["results"]["done"], 2, "{got}");
    // COUNT() answers one row.
    assert_eq!(got["metrics"]["results"]["all"], 1, "{got}");
    assert_eq!(
        got["metrics"]["queries"]["done"],
        "SELECT deviceId FROM devices WHERE properties.reported.done = true"
    );
}

#[tokio::test]
async fn test_queries_answers_the_errors_of_invalid_queries() {
    let hub = Hub::start().await;
    let r = hub
        .call(
            Method::POST,
            "/configurations/testQueries",
            Some(json!({
                "targetCondition": "tags.env = 'prod'",
                "customMetricQueries": {"ok": "SELECT deviceId FROM devices WHERE tags.a = 1"},
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(r.body.get("targetConditionError").is_none(), "{}", r.raw);
    assert!(r.body.get("customMetricQueryErrors").is_none(), "{}", r.raw);
    let r = hub
        .call(
            Method::POST,
            "/configurations/testQueries",
            Some(json!({
                "targetCondition": "tags.env = ",
                "customMetricQueries": {"bad": "SELECT FROM devices", "ok": "SELECT * FROM devices"},
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert!(
        r.body["targetConditionError"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        r.raw
    );
    let errors = r.body["customMetricQueryErrors"].as_object().unwrap();
    assert_eq!(errors.keys().collect::<Vec<_>>(), ["bad"], "{}", r.raw);
}

fn edge_content(tag: &str) -> Value {
    json!({"modulesContent": {
        "$edgeAgent": {"properties.desired": {"schemaVersion": "1.1", "runtime": {"type": "docker"}, "tag": tag}},
        "$edgeHub": {"properties.desired": {"schemaVersion": "1.1", "routes": {"all": "FROM /messages/* INTO $upstream"}}},
    }})
}

#[tokio::test]
async fn apply_configuration_content_writes_the_edge_modules_desired_properties() {
    let hub = Hub::start().await;
    let r = hub
        .call(
            Method::PUT,
            "/devices/edge",
            Some(json!({"capabilities": {"iotEdge": true}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    hub.create("leaf").await;
    let path = "/devices/edge/applyConfigurationContent";
    let r = hub
        .call(Method::POST, path, Some(edge_content("one")))
        .await;
    assert_eq!((r.status, r.raw.as_str()), (204, ""));
    let agent = desired(&hub, "/twins/edge/modules/$edgeAgent").await;
    assert_eq!(
        (agent["tag"].as_str(), agent["runtime"]["type"].as_str()),
        (Some("one"), Some("docker"))
    );
    let edge_hub = desired(&hub, "/twins/edge/modules/$edgeHub").await;
    assert_eq!(edge_hub["routes"]["all"], "FROM /messages/* INTO $upstream");
    // Applied again, it replaces what was there.
    let mut next = edge_content("two");
    next["modulesContent"]["$edgeAgent"]["properties.desired"] = json!({"tag": "two"});
    let r = hub.call(Method::POST, path, Some(next)).await;
    assert_eq!(r.status, 204, "{}", r.raw);
    let agent = desired(&hub, "/twins/edge/modules/$edgeAgent").await;
    assert_eq!(agent["tag"], "two");
    assert!(agent.get("runtime").is_none(), "{agent}");

    let r = hub
        .call(
            Method::POST,
            "/devices/leaf/applyConfigurationContent",
            Some(edge_content("x")),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ArgumentInvalid")
    );
    let r = hub
        .call(
            Method::POST,
            "/devices/nobody/applyConfigurationContent",
            Some(edge_content("x")),
        )
        .await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "DeviceNotFound"));
    let r = hub
        .call(
            Method::POST,
            path,
            Some(json!({"deviceContent": {"properties.desired.a": 1}})),
        )
        .await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "ArgumentInvalid")
    );
}

#[tokio::test]
async fn edge_deployments_reach_the_modules_of_targeted_edge_devices_only() {
    let hub = Hub::start().await;
    for (id, edge) in [("e1", true), ("e2", true), ("leaf", false)] {
        let r = hub
            .call(
                Method::PUT,
                &format!("/devices/{id}"),
                Some(json!({"capabilities": {"iotEdge": edge}})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
        patch_tags(&hub, id, json!({"site": "a"})).await;
    }
    patch_tags(&hub, "e2", json!({"site": "b"})).await;
    let body = json!({"content": edge_content("deployed"), "targetCondition": "tags.site = 'a'", "priority": 10});
    let r = put(&hub, "deploy", body, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(counts(&r.body), (1, 1));
    assert_eq!(
        desired(&hub, "/twins/e1/modules/$edgeAgent").await["tag"],
        "deployed"
    );
    assert!(
        desired(&hub, "/twins/e2/modules/$edgeAgent")
            .await
            .get("tag")
            .is_none()
    );
    patch_tags(&hub, "e2", json!({"site": "a"})).await;
    assert_eq!(
        desired(&hub, "/twins/e2/modules/$edgeAgent").await["tag"],
        "deployed"
    );
    assert_eq!(counts(&get(&hub, "deploy").await), (2, 2));
}

#[tokio::test]
async fn configurations_are_throttled_at_20_per_minute_on_s1() {
    let hub = Hub::with(Emulator::builder().faults(FaultConfig {
        tier: Some(Tier::S1),
        ..Default::default()
    }))
    .await;
    let r = hub.call(Method::GET, "/configurations", None).await;
    assert_eq!(r.status, 200);
    let r = hub.call(Method::GET, "/configurations", None).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "ThrottlingException")
    );
    assert!(r.header("retry-after").is_some());
    // Registry operations are another class: not throttled by it.
    let r = hub.call(Method::GET, "/devices", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn configurations_and_what_they_applied_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    hub.create("d1").await;
    patch_tags(&hub, "d1", json!({"env": "prod"})).await;
    let r = put(
        &hub,
        "kept",
        device_config("kept", "tags.env = 'prod'", 3, "k"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = put(
        &hub,
        "gone",
        device_config("gone", "tags.env = 'prod'", 1, "g"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub.call(Method::DELETE, "/configurations/gone", None).await;
    assert_eq!(r.status, 204);
    let before = get(&hub, "kept").await;
    hub.emu.shutdown().await;

    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    let after = get(&hub, "kept").await;
    for field in [
        "etag",
        "createdTimeUtc",
        "lastUpdatedTimeUtc",
        "priority",
        "content",
        "labels",
    ] {
        assert_eq!(after[field], before[field], "{field}");
    }
    assert_eq!(counts(&after), (1, 1));
    let r = hub.call(Method::GET, "/configurations/gone", None).await;
    assert_eq!(r.status, 404);
    assert_eq!(desired(&hub, "/twins/d1").await["x"], "k");
    // Creation order survives too: a new configuration of equal priority wins the tie.
    let r = put(
        &hub,
        "newer",
        device_config("newer", "tags.env = 'prod'", 3, "n"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(desired(&hub, "/twins/d1").await["x"], "n");
    hub.emu.shutdown().await;
}
