//! Jobs over HTTPS: scheduled twin updates and device methods (Jobs v2) on the emulator's
//! clock, with their statistics, `devices.jobs`, cancellation, paging, validation,
//! throttling and durability; import and export (Jobs v1) against Azurite, every import
//! mode with `importErrors.log`, export with and without keys, one job at a time,
//! identity-based storage refused, and SAS signatures kept out of the request log.

use std::time::Duration;

use iothub_emulator::{Emulator, FaultConfig, Tier};
use iothub_test_support::azurite::{self, Container};
use reqwest::Method;
use serde_json::{Value, json};

use crate::hub::Hub;

/// An ISO-8601 UTC time `secs` from now.
fn at(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

async fn tagged(hub: &Hub, id: &str, env: &str) {
    hub.create(id).await;
    let r = hub
        .call(
            Method::PATCH,
            &format!("/twins/{id}"),
            Some(json!({"tags": {"env": env}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
}

/// Polls a job (v1 `/jobs/{id}` or v2 `/jobs/v2/{id}`) until it ends; answers it.
async fn wait(hub: &Hub, path: &str) -> Value {
    for _ in 0..300 {
        let r = hub.call(Method::GET, path, None).await;
        assert_eq!(r.status, 200, "{}", r.raw);
        if matches!(
            r.body["status"].as_str(),
            Some("completed" | "failed" | "cancelled")
        ) {
            return r.body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} did not finish");
}

fn twin_job(condition: &str, start: &str) -> Value {
    json!({
        "type": "scheduleUpdateTwin",
        "queryCondition": condition,
        "updateTwin": {"etag": "*", "tags": {"updated": true}, "properties": {"desired": {"x": 1}}},
        "startTime": start,
        "maxExecutionTimeInSeconds": 60,
    })
}

#[tokio::test]
async fn a_scheduled_twin_update_runs_at_its_start_time_on_the_selected_devices() {
    let hub = Hub::start().await;
    tagged(&hub, "p1", "prod").await;
    tagged(&hub, "p2", "prod").await;
    tagged(&hub, "t1", "test").await;
    let r = hub
        .call(
            Method::PUT,
            "/jobs/v2/twin1",
            Some(twin_job("tags.env = 'prod'", &at(1))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["jobId"], "twin1");
    assert_eq!(r.body["type"], "scheduleUpdateTwin");
    assert!(r.body["createdTime"].is_string());
    // Before its start time nothing changed.
    let twin = hub.call(Method::GET, "/twins/p1", None).await;
    assert!(twin.body["properties"]["desired"].get("x").is_none());
    let job = wait(&hub, "/jobs/v2/twin1").await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["endTime"].is_string());
    assert_eq!(
        job["deviceJobStatistics"],
        json!({"deviceCount": 2, "failedCount": 0, "succeededCount": 2, "runningCount": 0, "pendingCount": 0})
    );
    for (id, updated) in [("p1", true), ("p2", true), ("t1", false)] {
        let twin = hub.call(Method::GET, &format!("/twins/{id}"), None).await;
        assert_eq!(
            twin.body["properties"]["desired"].get("x").is_some(),
            updated,
            "{id}: {}",
            twin.raw
        );
        assert_eq!(twin.body["tags"].get("updated").is_some(), updated, "{id}");
    }
    // The devices' parts in the query language.
    let r = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT * FROM devices.jobs WHERE jobId = 'twin1'"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.header("x-ms-item-type"), Some("deviceJob"));
    let rows = r.body.as_array().unwrap();
    let ids: Vec<&str> = rows
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["p1", "p2"]);
    assert!(rows.iter().all(|d| d["status"] == "completed"
        && d["jobType"] == "scheduleUpdateTwin"
        && d["endTimeUtc"].is_string()));
    let r = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT COUNT() AS n FROM devices.jobs WHERE status = 'completed'"})),
        )
        .await;
    assert_eq!(r.body, json!([{"n": 2}]));
}

#[tokio::test]
async fn a_scheduled_method_calls_online_devices_and_fails_offline_ones() {
    let hub = Hub::start().await;
    tagged(&hub, "on", "lab").await;
    tagged(&hub, "off", "lab").await;
    // The device answers through the control API's handlers.
    let base = hub.emu.base_url();
    let r = hub
        .http
        .post(format!("{base}/_emulator/devices/on/connect"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = hub
        .http
        .put(format!("{base}/_emulator/devices/on/methods/reboot"))
        .body(r#"{"status": 200, "payload": {"rebooted": true}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let body = json!({
        "jobId": "m1",
        "type": "scheduleDeviceMethod",
        "queryCondition": "tags.env = 'lab'",
        "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 0}, "responseTimeoutInSeconds": 30},
        "startTime": at(0),
        "maxExecutionTimeInSeconds": 60,
    });
    let r = hub.call(Method::PUT, "/jobs/v2/m1", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"], "queued");
    let job = wait(&hub, "/jobs/v2/m1").await;
    assert_eq!(job["status"], "completed", "{job}");
    let stats = &job["deviceJobStatistics"];
    assert_eq!(
        (
            stats["deviceCount"].as_i64(),
            stats["succeededCount"].as_i64(),
            stats["failedCount"].as_i64()
        ),
        (Some(2), Some(1), Some(1)),
        "{job}"
    );
    let r = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT * FROM devices.jobs"})),
        )
        .await;
    let rows = r.body.as_array().unwrap().clone();
    let on = rows.iter().find(|d| d["deviceId"] == "on").unwrap();
    assert_eq!(on["status"], "completed");
    assert_eq!(
        on["outcome"]["deviceMethodResponse"],
        json!({"status": 200, "payload": {"rebooted": true}})
    );
    let off = rows.iter().find(|d| d["deviceId"] == "off").unwrap();
    assert_eq!(off["status"], "failed");
    assert_eq!(off["error"]["code"], "DeviceNotOnline", "{off}");
}

#[tokio::test]
async fn scheduled_jobs_are_checked_as_the_service_checks_them() {
    let hub = Hub::start().await;
    let method = |timeout: i64| {
        json!({
            "type": "scheduleDeviceMethod",
            "queryCondition": "deviceId = 'd'",
            "cloudToDeviceMethod": {"methodName": "m", "responseTimeoutInSeconds": timeout},
            "startTime": at(0),
            "maxExecutionTimeInSeconds": 60,
        })
    };
    let mut no_star = twin_job("deviceId = 'd'", &at(0));
    no_star["updateTwin"]["etag"] = json!("AAAAAAAAAAE=");
    let mut no_condition = twin_job("x", &at(0));
    no_condition
        .as_object_mut()
        .unwrap()
        .remove("queryCondition");
    let mut bad_type = twin_job("deviceId = 'd'", &at(0));
    bad_type["type"] = json!("export");
    let mut zero_time = twin_job("deviceId = 'd'", &at(0));
    zero_time["maxExecutionTimeInSeconds"] = json!(0);
    let mut other_id = twin_job("deviceId = 'd'", &at(0));
    other_id["jobId"] = json!("someone-else");
    for (what, body) in [
        ("timeout 4", method(4)),
        ("timeout 301", method(301)),
        ("etag not *", no_star),
        ("no condition", no_condition),
        ("bad condition", twin_job("deviceId = = 'd'", &at(0))),
        (
            "long condition",
            twin_job(&format!("deviceId = '{}'", "x".repeat(8200)), &at(0)),
        ),
        ("export type", bad_type),
        ("zero execution time", zero_time),
        ("ids differ", other_id),
    ] {
        let r = hub.call(Method::PUT, "/jobs/v2/bad", Some(body)).await;
        assert_eq!(r.status, 400, "{what}: {}", r.raw);
    }
    for timeout in [5, 300] {
        let r = hub
            .call(
                Method::PUT,
                &format!("/jobs/v2/ok{timeout}"),
                Some(method(timeout)),
            )
            .await;
        assert_eq!(r.status, 200, "{timeout}: {}", r.raw);
    }
    let r = hub.call(Method::PUT, "/jobs/v2/ok5", Some(method(5))).await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "JobAlreadyExists")
    );
    let r = hub.call(Method::GET, "/jobs/v2/nope", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "JobNotFound"));
    let r = hub.call(Method::POST, "/jobs/v2/nope/cancel", None).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn cancelling_a_queued_job_stops_it_before_any_device() {
    let hub = Hub::start().await;
    tagged(&hub, "d1", "prod").await;
    let r = hub
        .call(
            Method::PUT,
            "/jobs/v2/later",
            Some(twin_job("tags.env = 'prod'", &at(2))),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = hub.call(Method::POST, "/jobs/v2/later/cancel", None).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"], "cancelled");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let job = hub.call(Method::GET, "/jobs/v2/later", None).await;
    assert_eq!(job.body["status"], "cancelled");
    let twin = hub.call(Method::GET, "/twins/d1", None).await;
    assert!(twin.body["properties"]["desired"].get("x").is_none());
    // Cancelling a finished job leaves it as it ended.
    let r = hub.call(Method::POST, "/jobs/v2/later/cancel", None).await;
    assert_eq!(r.body["status"], "cancelled");
}

#[tokio::test]
async fn cancelling_a_running_method_job_cancels_its_pending_devices() {
    let hub = Hub::start().await;
    for i in 0..4 {
        tagged(&hub, &format!("s{i}"), "slow").await;
        hub.emu.connect_device(&format!("s{i}")).unwrap();
        hub.emu.set_method_response(
            &format!("s{i}"),
            None,
            "wait",
            iothub_emulator::MethodResponse::fixed(200, json!(null)).delayed(700),
        );
    }
    let body = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "tags.env = 'slow'",
        "cloudToDeviceMethod": {"methodName": "wait", "responseTimeoutInSeconds": 30},
        "startTime": at(0),
        "maxExecutionTimeInSeconds": 60,
    });
    let r = hub.call(Method::PUT, "/jobs/v2/slow", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // Wait for it to run, then cancel while devices are pending.
    for _ in 0..50 {
        let r = hub.call(Method::GET, "/jobs/v2/slow", None).await;
        if r.body["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = hub.call(Method::POST, "/jobs/v2/slow/cancel", None).await;
    assert_eq!(r.body["status"], "cancelled", "{}", r.raw);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let job = hub.call(Method::GET, "/jobs/v2/slow", None).await;
    let stats = &job.body["deviceJobStatistics"];
    assert_eq!(stats["deviceCount"], 4, "{}", job.raw);
    assert_eq!(stats["pendingCount"], 0, "{}", job.raw);
    assert!(
        stats["succeededCount"].as_i64().unwrap() < 4,
        "cancellation stopped pending devices: {}",
        job.raw
    );
    let r = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT * FROM devices.jobs WHERE status = 'canceled'"})),
        )
        .await;
    assert!(!r.body.as_array().unwrap().is_empty(), "{}", r.raw);
}

#[tokio::test]
async fn scheduled_jobs_are_queried_by_type_and_status_a_page_at_a_time() {
    let hub = Hub::start().await;
    for id in ["q1", "q2", "q3"] {
        let r = hub
            .call(
                Method::PUT,
                &format!("/jobs/v2/{id}"),
                Some(twin_job("deviceId = 'none'", &at(3600))),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.raw);
    }
    let r = hub
        .call_with(
            Method::GET,
            "/jobs/v2/query?jobType=scheduleUpdateTwin&jobStatus=queued",
            None,
            &[("x-ms-max-item-count", "2")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["type"], "jobResponse");
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["q1", "q2"]);
    let token = r.header("x-ms-continuation").unwrap().to_owned();
    assert_eq!(r.body["continuationToken"], token.as_str());
    let r = hub
        .call_with(
            Method::GET,
            "/jobs/v2/query?jobType=scheduleUpdateTwin",
            None,
            &[("x-ms-max-item-count", "2"), ("x-ms-continuation", &token)],
        )
        .await;
    assert_eq!(r.body["items"][0]["jobId"], "q3");
    assert!(r.header("x-ms-continuation").is_none());
    let r = hub
        .call(
            Method::GET,
            "/jobs/v2/query?jobType=scheduleDeviceMethod",
            None,
        )
        .await;
    assert_eq!(r.body["items"], json!([]));
    let r = hub
        .call(Method::GET, "/jobs/v2/query?jobStatus=completed", None)
        .await;
    assert_eq!(r.body["items"], json!([]));
}

#[tokio::test]
async fn jobs_are_throttled_at_100_per_minute_on_s1() {
    let hub = Hub::with(Emulator::builder().faults(FaultConfig {
        tier: Some(Tier::S1),
        ..Default::default()
    }))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(hub.call(Method::GET, "/jobs", None).await.status);
    }
    assert_eq!(statuses[0], 200);
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn jobs_survive_a_restart_and_a_job_running_then_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    tagged(&hub, "d1", "prod").await;
    let r = hub
        .call(
            Method::PUT,
            "/jobs/v2/done",
            Some(twin_job("tags.env = 'prod'", &at(0))),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(wait(&hub, "/jobs/v2/done").await["status"], "completed");
    let r = hub
        .call(
            Method::PUT,
            "/jobs/v2/tomorrow",
            Some(twin_job("tags.env = 'prod'", &at(86_400))),
        )
        .await;
    assert_eq!(r.status, 200);
    // A method job left running (its device takes a minute to answer) when the hub stops.
    hub.emu.connect_device("d1").unwrap();
    hub.emu.set_method_response(
        "d1",
        None,
        "slow",
        iothub_emulator::MethodResponse::fixed(200, json!(1)).delayed(60_000),
    );
    let body = json!({
        "type": "scheduleDeviceMethod",
        "queryCondition": "deviceId = 'd1'",
        "cloudToDeviceMethod": {"methodName": "slow", "responseTimeoutInSeconds": 120},
        "startTime": at(0),
    });
    let r = hub.call(Method::PUT, "/jobs/v2/cut", Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.raw);
    for _ in 0..50 {
        if hub.call(Method::GET, "/jobs/v2/cut", None).await.body["status"] == "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    hub.emu.shutdown().await;

    let hub = Hub::with(Emulator::builder().data_dir(dir.path())).await;
    let done = hub.call(Method::GET, "/jobs/v2/done", None).await;
    assert_eq!(done.body["status"], "completed", "{}", done.raw);
    assert_eq!(done.body["deviceJobStatistics"]["succeededCount"], 1);
    let tomorrow = hub.call(Method::GET, "/jobs/v2/tomorrow", None).await;
    assert_eq!(tomorrow.body["status"], "queued");
    let cut = hub.call(Method::GET, "/jobs/v2/cut", None).await;
    assert_eq!(cut.body["status"], "failed", "{}", cut.raw);
    assert!(
        cut.body["failureReason"]
            .as_str()
            .unwrap()
            .contains("restarted"),
        "{}",
        cut.raw
    );
    let r = hub
        .call(
            Method::POST,
            "/devices/query",
            Some(json!({"query": "SELECT * FROM devices.jobs WHERE jobId = 'done'"})),
        )
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 1, "{}", r.raw);
}

// ---- import and export against Azurite ----

/// Azurite's endpoint and a fresh container, or `None` (skipped).
async fn storage(test: &str, prefix: &str) -> Option<Container> {
    let endpoint = azurite::require(test)?;
    Some(Container::create(&endpoint, prefix).await.unwrap())
}

fn lines(bytes: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn export_writes_devices_txt_with_and_without_keys() {
    let Some(out) = storage("export_writes_devices_txt_with_and_without_keys", "export").await
    else {
        return;
    };
    let hub = Hub::start().await;
    tagged(&hub, "e1", "prod").await;
    hub.create("e2").await;
    let r = hub
        .call(
            Method::PUT,
            "/devices/e2/modules/m1",
            Some(json!({"moduleId": "m1"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let config = json!({
        "id": "cfg",
        "content": {"deviceContent": {"properties.desired.c": 1}},
        "targetCondition": "tags.env = 'prod'",
        "priority": 1,
    });
    assert_eq!(
        hub.call(Method::PUT, "/configurations/cfg", Some(config))
            .await
            .status,
        200
    );
    let sas = out.sas_url();
    let r = hub
        .call(
            Method::POST,
            "/jobs/create",
            Some(json!({
                "type": "export",
                "outputBlobContainerUri": sas,
                "excludeKeysInExport": false,
                "includeConfigurations": true,
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.body["status"], "enqueued");
    assert_eq!(r.body["type"], "export");
    let id = r.body["jobId"].as_str().unwrap().to_owned();
    let job = wait(&hub, &format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"], 100);
    assert!(job["endTimeUtc"].is_string());
    let exported = lines(&out.get("devices.txt").await.unwrap().unwrap());
    let ids: Vec<(String, Option<String>)> = exported
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_owned(),
                d["moduleId"].as_str().map(str::to_owned),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("e1".to_owned(), None),
            ("e2".to_owned(), None),
            ("e2".to_owned(), Some("m1".to_owned()))
        ]
    );
    let e1 = &exported[0];
    assert!(
        e1["authentication"]["symmetricKey"]["primaryKey"].is_string(),
        "{e1}"
    );
    assert_eq!(e1["tags"]["env"], "prod");
    assert_eq!(e1["properties"]["desired"]["c"], 1, "{e1}");
    assert!(e1["eTag"].is_string() && e1["twinETag"].is_string(), "{e1}");
    assert_eq!(e1["status"], "enabled");
    let configs = lines(&out.get("configurations.txt").await.unwrap().unwrap());
    assert_eq!(configs.len(), 1);
    assert_eq!(configs[0]["id"], "cfg");

    // Without keys, into another blob name.
    let r = hub
        .call(
            Method::POST,
            "/jobs/create",
            Some(json!({
                "type": "export",
                "outputBlobContainerUri": sas,
                "outputBlobName": "nokeys.txt",
                "excludeKeysInExport": true,
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let id = r.body["jobId"].as_str().unwrap().to_owned();
    assert_eq!(
        wait(&hub, &format!("/jobs/{id}")).await["status"],
        "completed"
    );
    let exported = lines(&out.get("nokeys.txt").await.unwrap().unwrap());
    assert_eq!(exported.len(), 3);
    for d in &exported {
        let keys = &d["authentication"]["symmetricKey"];
        assert!(
            keys.get("primaryKey").is_none_or(Value::is_null),
            "keys excluded: {d}"
        );
    }
    // Both jobs are listed, oldest first; the signature never reaches the request log.
    let r = hub.call(Method::GET, "/jobs", None).await;
    assert_eq!(r.body.as_array().unwrap().len(), 2, "{}", r.raw);
    let sig = sas.split("sig=").nth(1).unwrap().to_owned();
    for entry in hub.emu.request_log() {
        assert!(
            !entry.body.contains(&sig),
            "sig in the request log: {}",
            entry.body
        );
    }
}

#[tokio::test]
async fn import_applies_every_mode_and_logs_the_failed_lines() {
    let Some(input) = storage(
        "import_applies_every_mode_and_logs_the_failed_lines",
        "import",
    )
    .await
    else {
        return;
    };
    let endpoint = azurite::endpoint().unwrap();
    let output = Container::create(&endpoint, "import-out").await.unwrap();
    let hub = Hub::start().await;
    // Existing devices for the update and delete modes.
    for id in [
        "upd", "updetag", "del", "deletag", "twin", "twinetag", "exists",
    ] {
        hub.create(id).await;
    }
    let etag = |d: &Value| d["etag"].as_str().unwrap().to_owned();
    let updetag = etag(&hub.call(Method::GET, "/devices/updetag", None).await.body);
    let deletag = etag(&hub.call(Method::GET, "/devices/deletag", None).await.body);
    let twin_etag = hub.call(Method::GET, "/twins/twinetag", None).await.body["etag"]
        .as_str()
        .unwrap()
        .to_owned();
    let text = [
        json!({"id": "new1", "importMode": "create", "tags": {"t": 1}}).to_string(),
        json!({"id": "new1", "moduleId": "mod", "importMode": "create"}).to_string(),
        json!({"id": "upd", "importMode": "update", "status": "disabled", "statusReason": "import"}).to_string(),
        json!({"id": "updetag", "importMode": "updateIfMatchETag", "eTag": updetag, "status": "disabled"}).to_string(),
        json!({"id": "del", "importMode": "delete"}).to_string(),
        json!({"id": "deletag", "importMode": "deleteIfMatchETag", "eTag": deletag}).to_string(),
        json!({"id": "twin", "importMode": "updateTwin", "tags": {"k": "v"}, "properties": {"desired": {"d": 2}}}).to_string(),
        json!({"id": "twinetag", "importMode": "updateTwinIfMatchETag", "twinETag": twin_etag, "tags": {"k": "w"}}).to_string(),
        // The failures, one per kind.
        json!({"id": "exists", "importMode": "create"}).to_string(),
        json!({"id": "ghost", "importMode": "update"}).to_string(),
        json!({"id": "exists", "importMode": "updateIfMatchETag", "eTag": "\"nope\""}).to_string(),
        "this is not json".to_owned(),
        json!({"id": "bad id!", "importMode": "create"}).to_string(),
        String::new(),
    ]
    .join("\n");
    input.put("devices.txt", text).await.unwrap();
    let r = hub
        .call(
            Method::POST,
            "/jobs/create",
            Some(json!({
                "type": "import",
                "inputBlobContainerUri": input.sas_url(),
                "outputBlobContainerUri": output.sas_url(),
            })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let id = r.body["jobId"].as_str().unwrap().to_owned();
    let job = wait(&hub, &format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "completed", "{job}");

    let hub = &hub;
    let get = |path: String| async move { hub.call(Method::GET, &path, None).await };
    assert_eq!(get("/devices/new1".into()).await.status, 200);
    assert_eq!(get("/devices/new1/modules/mod".into()).await.status, 200);
    assert_eq!(get("/twins/new1".into()).await.body["tags"]["t"], 1);
    assert_eq!(get("/devices/upd".into()).await.body["status"], "disabled");
    assert_eq!(
        get("/devices/updetag".into()).await.body["status"],
        "disabled"
    );
    assert_eq!(get("/devices/del".into()).await.status, 404);
    assert_eq!(get("/devices/deletag".into()).await.status, 404);
    let twin = get("/twins/twin".into()).await.body;
    assert_eq!(
        (&twin["tags"]["k"], &twin["properties"]["desired"]["d"]),
        (&json!("v"), &json!(2))
    );
    assert_eq!(get("/twins/twinetag".into()).await.body["tags"]["k"], "w");
    assert_eq!(get("/devices/ghost".into()).await.status, 404);

    let errors = lines(&output.get("importErrors.log").await.unwrap().unwrap());
    let codes: Vec<(Option<&str>, &str)> = errors
        .iter()
        .map(|e| (e["deviceId"].as_str(), e["errorCode"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        [
            (Some("exists"), "DeviceAlreadyExists"),
            (Some("ghost"), "DeviceNotFound"),
            (Some("exists"), "PreconditionFailed"),
            (None, "ArgumentInvalid"),
            (None, "ArgumentInvalid"),
        ],
        "{errors:?}"
    );
    assert!(
        errors[3]["errorStatus"]
            .as_str()
            .unwrap()
            .starts_with("Line 12:"),
        "{errors:?}"
    );
    assert!(errors.iter().all(|e| e["errorStatus"].is_string()));
}

#[tokio::test]
async fn one_import_or_export_job_at_a_time_and_identity_based_storage_is_refused() {
    let Some(out) = storage("one_import_or_export_job_at_a_time", "one").await else {
        return;
    };
    let hub = Hub::start().await;
    hub.create("d").await;
    // The first job writes to storage that does not answer (nothing listens on port 9): it
    // stays running through the SDK's retries (more than a second), then fails.
    let unreachable = json!({
        "type": "export",
        "outputBlobContainerUri": "http://127.0.0.1:9/devstoreaccount1/c?sv=2019-12-12&sig=x",
    });
    let first = hub
        .call(Method::POST, "/jobs/create", Some(unreachable))
        .await;
    assert_eq!(first.status, 200, "{}", first.raw);
    let export = json!({"type": "export", "outputBlobContainerUri": out.sas_url()});
    let second = hub
        .call(Method::POST, "/jobs/create", Some(export.clone()))
        .await;
    assert_eq!(
        (second.status, second.error_code().as_str()),
        (429, "ThrottlingMaxActiveJobCountExceeded"),
        "{}",
        second.raw
    );
    let id = first.body["jobId"].as_str().unwrap().to_owned();
    assert_eq!(wait(&hub, &format!("/jobs/{id}")).await["status"], "failed");
    let third = hub.call(Method::POST, "/jobs/create", Some(export)).await;
    assert_eq!(third.status, 200, "{}", third.raw);
    let third_id = third.body["jobId"].as_str().unwrap().to_owned();
    // Cancel answers 204; a finished or cancelled job stays as it is.
    let r = hub
        .call(Method::DELETE, &format!("/jobs/{third_id}"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.raw);
    let job = wait(&hub, &format!("/jobs/{third_id}")).await;
    assert!(
        matches!(job["status"].as_str(), Some("cancelled" | "completed")),
        "{job}"
    );
    let r = hub.call(Method::DELETE, "/jobs/unknown", None).await;
    assert_eq!((r.status, r.error_code().as_str()), (404, "JobNotFound"));

    for auth in ["identityBased", "IdentityBased"] {
        let r = hub
            .call(
                Method::POST,
                "/jobs/create",
                Some(json!({
                    "type": "export",
                    "outputBlobContainerUri": out.url(),
                    "storageAuthenticationType": auth,
                })),
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.raw);
        assert!(r.raw.contains("not emulated"), "{}", r.raw);
    }
    let r = hub
        .call(
            Method::POST,
            "/jobs/create",
            Some(json!({"type": "import", "inputBlobContainerUri": out.sas_url()})),
        )
        .await;
    assert_eq!(
        r.status, 400,
        "an import needs an output container: {}",
        r.raw
    );
}

#[tokio::test]
async fn a_failed_export_says_why_without_the_signature() {
    let hub = Hub::start().await;
    hub.create("d").await;
    // Nothing listens on port 9 of loopback: the storage call fails.
    let uri = "http://127.0.0.1:9/devstoreaccount1/c?sv=2019-12-12&sig=SECRETSIG";
    let r = hub
        .call(
            Method::POST,
            "/jobs/create",
            Some(json!({"type": "export", "outputBlobContainerUri": uri})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let id = r.body["jobId"].as_str().unwrap().to_owned();
    let job = wait(&hub, &format!("/jobs/{id}")).await;
    assert_eq!(job["status"], "failed", "{job}");
    let reason = job["failureReason"].as_str().unwrap();
    assert!(
        !reason.is_empty() && !reason.contains("SECRETSIG"),
        "{reason}"
    );
    for entry in hub.emu.request_log() {
        assert!(!entry.body.contains("SECRETSIG"), "{}", entry.body);
    }
}
