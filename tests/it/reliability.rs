//! Reliability under faults, counted: `iothub-registry` drives many operations (creates,
//! conditional twin patches, deletes, bulk chunks, queries) against an emulator that answers
//! a stated share of requests with 429 or 5xx and drops connections before or after applying
//! writes. Then the emulator's state is read without faults and checked:
//!
//! - every operation reported as successful is applied, and applied once;
//! - every operation reported as failed is applied entirely or not at all (a failure after
//!   the write was applied is ambiguous, and counted as such);
//! - nothing else changed.
//!
//! It prints the counts (also to `CARGO_TARGET_TMPDIR/reliability.txt`, which `.ci/run`
//! shows) and fails on any loss, duplicate or half-applied write. A failure reported after
//! the write was applied is ambiguous: the SDK retries only what is safe to repeat, so a
//! create whose answer was lost is reported failed (the caller can read it back). The
//! default size runs in about 20 s; `IOTHUB_RELIABILITY_OPS=100000` runs it larger.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use iothub_emulator::{Emulator, FaultConfig};
use iothub_registry::models::{DeviceStatus, ExportImportDevice, ImportMode, Twin};
use iothub_registry::{
    DeviceOptions, ExponentialRetry, IfMatch, RegistryManager, RetryClass, RetryContext,
    RetryPolicy, SasKeys,
};
use iothub_test_support::emulator::registry_builder;
use serde_json::{Value, json};
use tokio::sync::Mutex;

const DEFAULT_OPS: usize = 10_000;
const WORKERS: usize = 16;
const BULK_CHUNK: usize = 10;

/// The stated mix: about 20% of requests answered 429 or 503/500, and 4% of connections
/// dropped, half of them after the write was applied.
fn faults() -> FaultConfig {
    FaultConfig {
        throttle_rate: 0.12,
        retry_after_secs: 0,
        server_error_rate: 0.08,
        drop_before_rate: 0.02,
        drop_after_rate: 0.02,
        seed: Some(2026),
        ..Default::default()
    }
}

/// What the client was told, per operation.
#[derive(Default)]
struct Ledger {
    ops: usize,
    failed: usize,
    /// Devices whose create was reported successful.
    created: BTreeSet<String>,
    /// Devices whose create was reported failed.
    create_failed: BTreeSet<String>,
    /// Devices whose delete was reported successful / failed.
    deleted: BTreeSet<String>,
    delete_failed: BTreeSet<String>,
    /// Twin tags whose patch was reported successful / failed, per device.
    patched: BTreeMap<String, BTreeSet<String>>,
    patch_failed: BTreeMap<String, BTreeSet<String>>,
    /// Bulk chunks (their device ids) reported successful / failed.
    chunks_ok: Vec<Vec<String>>,
    chunks_failed: Vec<Vec<String>>,
    queries: usize,
}

async fn worker(rm: RegistryManager, ledger: Arc<Mutex<Ledger>>, worker: usize, ops: usize) {
    let mut mine: Vec<String> = Vec::new();
    for i in 0..ops {
        let op = match i % 10 {
            // Patches and deletes need a device of this worker's; until it has one, the
            // iteration creates one instead, so that every iteration runs (and counts) an
            // operation.
            4..=7 if mine.is_empty() => 0,
            op => op,
        };
        let ok = match op {
            0..=3 => {
                let id = format!("r-{worker}-{i}");
                let ok = rm
                    .create_device_with_sas(
                        &id,
                        SasKeys::generated(),
                        DeviceStatus::Enabled,
                        DeviceOptions::new(),
                    )
                    .await
                    .is_ok();
                let mut l = ledger.lock().await;
                if ok {
                    l.created.insert(id.clone());
                    mine.push(id);
                } else {
                    l.create_failed.insert(id);
                }
                ok
            }
            4..=6 => {
                let id = mine[i % mine.len()].clone();
                let tag = format!("p{i}");
                let result = async {
                    let twin = rm.get_twin(&id).await?;
                    let patch: Twin =
                        serde_json::from_value(json!({"tags": {&tag: true}})).unwrap();
                    rm.update_twin(&id, patch, IfMatch::from_current(twin.etag.as_deref())?)
                        .await
                }
                .await;
                let mut l = ledger.lock().await;
                let book = if result.is_ok() {
                    &mut l.patched
                } else {
                    &mut l.patch_failed
                };
                book.entry(id).or_default().insert(tag);
                result.is_ok()
            }
            7 => {
                let Some(id) = mine.pop() else {
                    unreachable!("deletes run only when this worker has a device")
                };
                let ok = rm.delete_device(&id, IfMatch::Any).await.is_ok();
                let mut l = ledger.lock().await;
                if ok {
                    l.deleted.insert(id)
                } else {
                    l.delete_failed.insert(id)
                };
                ok
            }
            8 => {
                let ids: Vec<String> = (0..BULK_CHUNK)
                    .map(|j| format!("rb-{worker}-{i}-{j}"))
                    .collect();
                let entries = ids
                    .iter()
                    .map(|id| ExportImportDevice {
                        id: Some(id.clone()),
                        import_mode: Some(ImportMode::Create),
                        ..Default::default()
                    })
                    .collect();
                let ok = rm
                    .bulk_create_or_update_devices(entries)
                    .await
                    .is_ok_and(|r| r.is_successful == Some(true));
                let mut l = ledger.lock().await;
                if ok {
                    l.chunks_ok.push(ids)
                } else {
                    l.chunks_failed.push(ids)
                };
                ok
            }
            _ => {
                let ok = rm
                    .query_iot_hub("SELECT deviceId FROM devices", None, Some(50))
                    .await
                    .is_ok();
                ledger.lock().await.queries += 1;
                ok
            }
        };
        let mut l = ledger.lock().await;
        l.ops += 1;
        if !ok {
            l.failed += 1;
        }
    }
}

/// The default policy with short delays, counting the retries it grants.
#[derive(Debug)]
struct Counting {
    inner: ExponentialRetry,
    retries: std::sync::atomic::AtomicUsize,
}

impl RetryPolicy for Counting {
    fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration> {
        let delay = self.inner.next_delay(class, context);
        if delay.is_some() {
            self.retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        delay
    }
}

fn manager(emu: &Emulator, retry: Arc<Counting>) -> RegistryManager {
    registry_builder(emu, &emu.connection_string())
        .retry_policy(retry)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_lost_nothing_duplicated_under_faults() {
    let total: usize = std::env::var("IOTHUB_RELIABILITY_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_OPS);
    let emu = Emulator::builder()
        .request_log_capacity(0)
        .faults(faults())
        .start()
        .await
        .unwrap();
    let retry = Arc::new(Counting {
        inner: ExponentialRetry::new()
            .initial_delay(Duration::from_millis(1))
            .max_delay(Duration::from_millis(20))
            .max_attempts(8),
        retries: Default::default(),
    });
    let rm = manager(&emu, retry.clone());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let per_worker = total.div_ceil(WORKERS);
    let tasks: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(rm.clone(), ledger.clone(), w, per_worker)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = emu.fault_stats();
    emu.set_faults(FaultConfig::default());

    // The state, read without faults: every device with its tags and twin version.
    let rows: Vec<Value> = rm
        .query("SELECT deviceId, tags, version FROM devices")
        .page_size(1000)
        .stream()
        .try_collect()
        .await
        .unwrap();
    let state: BTreeMap<String, &Value> = rows
        .iter()
        .map(|r| (r["deviceId"].as_str().unwrap().to_owned(), r))
        .collect();
    let tags = |id: &str| -> BTreeSet<String> {
        state
            .get(id)
            .and_then(|r| r["tags"].as_object())
            .map(|t| t.keys().cloned().collect())
            .unwrap_or_default()
    };

    let l = ledger.lock().await;
    let mut lost = Vec::new();
    let mut duplicated = Vec::new();
    let mut half_applied = Vec::new();
    let mut ambiguous = 0;
    let mut unexplained = Vec::new();
    for id in &l.created {
        if !state.contains_key(id) && !l.deleted.contains(id) && !l.delete_failed.contains(id) {
            lost.push(format!("create {id}"));
        }
    }
    for id in &l.deleted {
        if state.contains_key(id) {
            lost.push(format!("delete {id}"));
        }
    }
    // Reported failed but applied: the answer was lost after the write (counted, allowed).
    ambiguous += l
        .create_failed
        .iter()
        .filter(|id| state.contains_key(*id))
        .count();
    ambiguous += l
        .delete_failed
        .iter()
        .filter(|id| !state.contains_key(*id))
        .count();
    for (id, patched) in &l.patched {
        if !state.contains_key(id) {
            continue; // deleted afterwards
        }
        let present = tags(id);
        for tag in patched.difference(&present) {
            lost.push(format!("patch {id}.{tag}"));
        }
    }
    for (id, failed) in &l.patch_failed {
        ambiguous += failed.intersection(&tags(id)).count();
    }

    // Each applied patch adds one tag and one twin version; more versions than tags means a
    // patch was applied twice.
    for (id, row) in &state {
        let version = row["version"].as_u64().unwrap_or(0) as usize;
        let applied = tags(id).len();
        if version != 1 + applied {
            duplicated.push(format!(
                "{id}: version {version} with {applied} patches applied"
            ));
        }
    }
    for chunk in &l.chunks_ok {
        for id in chunk {
            if !state.contains_key(id) {
                lost.push(format!("bulk {id}"));
            }
        }
    }
    for chunk in &l.chunks_failed {
        let present = chunk.iter().filter(|id| state.contains_key(*id)).count();
        if present == chunk.len() {
            ambiguous += 1;
        } else if present != 0 {
            half_applied.push(format!("{chunk:?}: {present} of {}", chunk.len()));
        }
    }
    let known: BTreeSet<&String> = l
        .created
        .iter()
        .chain(&l.create_failed)
        .chain(l.chunks_ok.iter().flatten())
        .chain(l.chunks_failed.iter().flatten())
        .collect();
    for id in state.keys() {
        if !known.contains(id) {
            unexplained.push(id.clone());
        }
    }
    let summary = format!(
        "reliability: {} operations ({} reported failed, {} ambiguous), {} retries, injected faults: {} throttled, \
         {} server errors, {} dropped before and {} after applying; lost {}, duplicated {}, half-applied {}",
        l.ops,
        l.failed,
        ambiguous,
        retry.retries.load(std::sync::atomic::Ordering::Relaxed),
        stats.throttled,
        stats.server_errors,
        stats.dropped_before,
        stats.dropped_after,
        lost.len(),
        duplicated.len(),
        half_applied.len()
    );
    println!("{summary}");
    // .ci/run prints this file, so the counts show in CI.
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability.txt"),
        format!("{summary}\n"),
    )
    .unwrap();
    assert!(l.ops >= total, "{} of {total} operations ran", l.ops);
    assert!(stats.throttled + stats.server_errors + stats.dropped_before + stats.dropped_after > 0);
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    assert!(half_applied.is_empty(), "half-applied: {half_applied:?}");
    assert!(
        unexplained.is_empty(),
        "devices nobody created: {unexplained:?}"
    );
}
