//! Reliability under faults, counted: `iothub-registry` drives many operations (creates,
//! conditional twin patches, patches with a stale etag, deletes, bulk chunks, queries) against
//! an emulator that answers a stated share of requests with 429 or 5xx and drops connections
//! before or after applying writes. Then the emulator's state is read without faults, and what
//! the SDK reported for each operation is set against what the emulator applied:
//!
//! - every operation reported as successful is applied, and applied once;
//! - every operation reported as failed is applied entirely or not at all, and if it was
//!   applied, its error says it may have been (`Error::may_have_been_applied`);
//! - errors that say "may have been applied" for operations that were not are, for each kind
//!   of operation, no more than the requests of that kind left unapplied without their
//!   client knowing: those the emulator answered 500 or dropped before applying, by their own
//!   fault or with their connection (counted per request: over HTTP/2 one dropped connection
//!   fails every request on it), and those sent that never reached it (sent on a connection
//!   as it closed: the attempts the SDK made, less the requests the emulator saw). So an SDK
//!   that flagged every error would fail here: the twin replacements under a stale etag fail
//!   with a plain 412, which is not ambiguous;
//! - nothing else changed.
//!
//! It prints a reported-versus-applied table (also to `CARGO_TARGET_TMPDIR/reliability.txt`,
//! which `.ci/run` shows). The default size runs in about 15 s;
//! `IOTHUB_RELIABILITY_OPS=100000` runs it larger.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt as _;
use iothub_emulator::{Emulator, FaultConfig};
use iothub_registry::models::{DeviceStatus, ExportImportDevice, ImportMode};
use iothub_registry::{
    DeviceOptions, ETag, Error, ExponentialRetry, IfMatch, RegistryManager, RetryClass,
    RetryContext, RetryPolicy, SasKeys, TwinPatch,
};
use iothub_test_support::emulator::registry_builder;
use serde_json::Value;
use tokio::sync::Mutex;

const DEFAULT_OPS: usize = 10_000;
const WORKERS: usize = 16;
const BULK_CHUNK: usize = 10;
/// An etag no twin ever has: a write under it fails with 412 and changes nothing.
const STALE_ETAG: &str = "c3RhbGUtZXRhZw==";

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

/// The kinds of operation, as the table lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Create,
    Patch,
    StaleReplace,
    Delete,
    BulkChunk,
    Query,
}

impl Kind {
    /// The SDK operation it calls, as the retry policy sees it.
    fn operation(self) -> &'static str {
        match self {
            Kind::Create => "create_device_with_sas",
            Kind::Patch => "update_twin",
            Kind::StaleReplace => "replace_twin",
            Kind::Delete => "delete_device",
            Kind::BulkChunk => "bulk_create_or_update_devices",
            Kind::Query => "query_iot_hub",
        }
    }

    /// The write it sends, as the emulator's fault counts name it.
    fn write(self) -> Option<&'static str> {
        match self {
            Kind::Create => Some("PUT /devices/{id}"),
            Kind::Patch => Some("PATCH /twins/{id}"),
            Kind::StaleReplace => Some("PUT /twins/{id}"),
            Kind::Delete => Some("DELETE /devices/{id}"),
            Kind::BulkChunk => Some("POST /devices"),
            Kind::Query => None,
        }
    }
}

/// What the SDK said about one operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reported {
    Ok,
    /// Failed; `flagged`: the error says the operation may have been applied.
    Failed {
        flagged: bool,
    },
    /// A patch whose preceding read failed: the write was never sent.
    NotAttempted,
}

/// Attempts that ran out of time (the last or an earlier one of a failed operation).
static TIMEOUTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Reported {
    fn of<T>(result: &iothub_registry::Result<T>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(e) => Self::failed(e),
        }
    }

    fn failed(error: &Error) -> Self {
        let timed_out = |e: &Error| matches!(e, Error::Timeout { .. });
        let any_timeout = match error {
            Error::MaybeApplied { error, earlier, .. } => {
                timed_out(error) || earlier.as_deref().is_some_and(timed_out)
            }
            e => timed_out(e),
        };
        if any_timeout {
            TIMEOUTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Self::Failed {
            flagged: error.may_have_been_applied(),
        }
    }
}

/// What an operation was meant to change, to check against the state afterwards.
#[derive(Clone, Debug)]
enum Target {
    Device(String),
    Tag(String, String),
    Chunk(Vec<String>),
    Nothing,
}

#[derive(Default)]
struct Ledger {
    ops: Vec<(Kind, Reported, Target)>,
}

async fn worker(rm: RegistryManager, ledger: Arc<Mutex<Ledger>>, worker: usize, ops: usize) {
    // Devices this worker created (and may delete), and devices whose patch failed (kept, so
    // that the patch can be checked at the end).
    let mut mine: Vec<String> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for i in 0..ops {
        let op = match i % 10 {
            // Patches and deletes need a device of this worker's; until it has one, the
            // iteration creates one instead, so that every iteration runs (and counts) an
            // operation.
            4..=7 if mine.is_empty() => 0,
            op => op,
        };
        let (kind, reported, target) = match op {
            0..=3 => {
                let id = format!("r-{worker}-{i}");
                let result = rm
                    .create_device_with_sas(
                        &id,
                        SasKeys::generated(),
                        DeviceStatus::Enabled,
                        DeviceOptions::new(),
                    )
                    .await;
                if result.is_ok() {
                    mine.push(id.clone());
                }
                (Kind::Create, Reported::of(&result), Target::Device(id))
            }
            4..=6 => {
                let id = mine[i % mine.len()].clone();
                let tag = format!("p{i}");
                let reported = match rm.get_twin(&id).await {
                    Err(_) => Reported::NotAttempted,
                    Ok(twin) => {
                        let if_match = IfMatch::from_current(twin.etag.as_deref()).unwrap();
                        let patch = TwinPatch::new().tag(tag.as_str(), true);
                        Reported::of(&rm.update_twin(&id, patch, if_match).await)
                    }
                };
                if matches!(reported, Reported::Failed { .. }) {
                    mine.retain(|d| *d != id);
                    kept.push(id.clone());
                }
                (Kind::Patch, reported, Target::Tag(id, tag))
            }
            7 => {
                let Some(id) = mine.pop() else {
                    unreachable!("deletes run only when this worker has a device")
                };
                let result = rm.delete_device(&id, IfMatch::Any).await;
                (Kind::Delete, Reported::of(&result), Target::Device(id))
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
                let reported = match rm.bulk_create_or_update_devices(entries).await {
                    Ok(result) if result.is_successful == Some(true) => Reported::Ok,
                    // A result naming failed entries: the service says what it did.
                    Ok(_) => Reported::Failed { flagged: false },
                    Err(e) => Reported::failed(&e),
                };
                (Kind::BulkChunk, reported, Target::Chunk(ids))
            }
            _ if i % 20 == 9 && !(mine.is_empty() && kept.is_empty()) => {
                // A replacement under an etag the twin never had (someone else changed it):
                // a plain 412, never applied. Were it applied, the twin's tags would be this
                // one alone.
                let all: Vec<&String> = mine.iter().chain(&kept).collect();
                let id = all[i % all.len()].clone();
                let tag = format!("s{i}");
                let twin = TwinPatch::new().tag(tag.as_str(), true).into();
                let stale = IfMatch::from(ETag::new(STALE_ETAG).unwrap());
                let reported = Reported::of(&rm.replace_twin(&id, twin, stale).await);
                if let Some(at) = mine.iter().position(|d| *d == id) {
                    kept.push(mine.remove(at));
                }
                (Kind::StaleReplace, reported, Target::Tag(id, tag))
            }
            _ => {
                let result = rm
                    .query_iot_hub("SELECT deviceId FROM devices", None, Some(50))
                    .await;
                (Kind::Query, Reported::of(&result), Target::Nothing)
            }
        };
        ledger.lock().await.ops.push((kind, reported, target));
    }
}

/// The default policy with short delays, counting the retries it grants, per operation.
#[derive(Debug)]
struct Counting {
    inner: ExponentialRetry,
    retries: std::sync::Mutex<BTreeMap<&'static str, usize>>,
}

impl RetryPolicy for Counting {
    fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration> {
        let delay = self.inner.next_delay(class, context);
        if delay.is_some() {
            *self
                .retries
                .lock()
                .unwrap()
                .entry(context.operation)
                .or_default() += 1;
        }
        delay
    }
}

fn manager(emu: &Emulator, retry: Arc<Counting>) -> RegistryManager {
    registry_builder(emu, &emu.connection_string())
        .retry_policy(retry)
        // Every answer of the emulator takes milliseconds. Now and then a request handed to
        // the HTTP client's HTTP/2 connection just as a drop closes it is never sent nor
        // failed: it waits out its attempt's timeout (hyper's dispatch channel keeps a request
        // sent while the connection task drops its receiver until every sender is gone, and
        // the waiting request holds one; see seanmonstar/reqwest#1323). With the default 60 s
        // such a run took 65 s; 5 s keeps it short, and the timeout is reported (and counted)
        // like any other ambiguous failure.
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// One row of the table: counts by what was reported and what was applied.
#[derive(Default)]
struct Row {
    ops: usize,
    ok_applied: usize,
    ok_not_applied: usize,
    flagged_applied: usize,
    flagged_not_applied: usize,
    unflagged_applied: usize,
    unflagged_not_applied: usize,
    not_attempted: usize,
    reads_ok: usize,
    /// Calls of the SDK operation (a patch whose read failed makes none).
    calls: usize,
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
    let deleted: BTreeSet<&String> = l
        .ops
        .iter()
        .filter_map(|(kind, _, target)| match (kind, target) {
            (Kind::Delete, Target::Device(id)) => Some(id),
            _ => None,
        })
        .collect();
    let mut table: BTreeMap<Kind, Row> = BTreeMap::new();
    let mut lost = Vec::new();
    let mut half_applied = Vec::new();
    let mut misreported = Vec::new();
    let mut failed = 0;
    for (kind, reported, target) in &l.ops {
        let applied = match target {
            // Created and then deleted by this run: it was there.
            Target::Device(id) if *kind == Kind::Create => {
                Some(state.contains_key(id) || deleted.contains(id))
            }
            Target::Device(id) => Some(!state.contains_key(id)),
            // Patched, then deleted by this run: nothing left to check (only devices whose
            // patches all succeeded are deleted).
            Target::Tag(id, _) if !state.contains_key(id) && deleted.contains(id) => None,
            Target::Tag(id, tag) => Some(tags(id).contains(tag)),
            Target::Chunk(ids) => {
                let present = ids.iter().filter(|id| state.contains_key(*id)).count();
                if present != 0 && present != ids.len() {
                    half_applied.push(format!("{ids:?}: {present} of {}", ids.len()));
                }
                Some(present == ids.len())
            }
            Target::Nothing => None,
        };
        let row = table.entry(*kind).or_default();
        row.ops += 1;
        row.calls += usize::from(!matches!(reported, Reported::NotAttempted));
        if !matches!(reported, Reported::Ok) {
            failed += 1;
        }
        let Some(applied) = applied else {
            match reported {
                Reported::Ok if *kind == Kind::Query => row.reads_ok += 1,
                Reported::Ok => {}
                _ => row.not_attempted += 1,
            }
            continue;
        };
        match (reported, applied) {
            (Reported::Ok, true) => row.ok_applied += 1,
            (Reported::Ok, false) => {
                row.ok_not_applied += 1;
                lost.push(format!("{kind:?} {target:?}"));
            }
            (Reported::Failed { flagged: true }, true) => row.flagged_applied += 1,
            (Reported::Failed { flagged: true }, false) => row.flagged_not_applied += 1,
            (Reported::Failed { flagged: false }, true) => {
                row.unflagged_applied += 1;
                misreported.push(format!("{kind:?} {target:?}"));
            }
            (Reported::Failed { flagged: false }, false) => row.unflagged_not_applied += 1,
            (Reported::NotAttempted, _) => row.not_attempted += 1,
        }
    }

    // Each applied patch adds one tag and one twin version; more versions than tags means a
    // patch was applied twice.
    let mut duplicated = Vec::new();
    for (id, row) in &state {
        let version = row["version"].as_u64().unwrap_or(0) as usize;
        let applied = tags(id).len();
        if version != 1 + applied {
            duplicated.push(format!(
                "{id}: version {version} with {applied} patches applied"
            ));
        }
    }
    let known: BTreeSet<&String> = l
        .ops
        .iter()
        .flat_map(|(kind, _, target)| match (kind, target) {
            (Kind::Create, Target::Device(id)) => vec![id],
            (Kind::BulkChunk, Target::Chunk(ids)) => ids.iter().collect(),
            _ => Vec::new(),
        })
        .collect();
    let unexplained: Vec<&String> = state.keys().filter(|id| !known.contains(id)).collect();

    let sum = |f: fn(&Row) -> usize| table.values().map(f).sum::<usize>();
    let flagged_not_applied = sum(|r| r.flagged_not_applied);
    let retries = retry.retries.lock().unwrap().clone();
    // For each kind, the writes its client could not know the outcome of and that were not
    // applied: the emulator's count, and the attempts that never reached it.
    let unknown = |kind: Kind, row: &Row| -> (u64, u64) {
        let Some(write) = kind.write() else {
            return (0, 0);
        };
        let seen = stats
            .writes_by_operation
            .get(write)
            .copied()
            .unwrap_or_default();
        let attempts = row.calls + retries.get(kind.operation()).copied().unwrap_or(0);
        (
            seen.ambiguous_not_applied,
            (attempts as u64).saturating_sub(seen.requests),
        )
    };
    let mut report = String::new();
    writeln!(
        report,
        "reliability: {} operations, {failed} reported failed ({} after a 5 s attempt timeout), \
         {} retries",
        l.ops.len(),
        TIMEOUTS.load(std::sync::atomic::Ordering::Relaxed),
        retries.values().sum::<usize>(),
    )
    .unwrap();
    writeln!(
        report,
        "injected, per request: {} throttled, {} server errors ({} of them 500), {} dropped \
         before and {} after applying, {} lost with a connection another drop closed; writes \
         left unknown to their client: {} not applied, {} applied",
        stats.throttled,
        stats.server_errors,
        stats.internal_errors,
        stats.dropped_before,
        stats.dropped_after,
        stats.dropped_with_connection,
        stats.ambiguous_writes_not_applied,
        stats.ambiguous_writes_applied,
    )
    .unwrap();
    writeln!(
        report,
        "reported:     |      ok            |  failed, flagged \"may have been applied\"  |  failed, not flagged    | write not sent\n\
         {:<12} {:>5} | {:>7} {:>10} | {:>7} {:>11} {:>18} | {:>10} {:>11} | {:>6}",
        "operation",
        "ops",
        "applied",
        "NOT (lost)",
        "applied",
        "not applied",
        "(left unknown)",
        "APPLIED",
        "not applied",
        "",
    )
    .unwrap();
    for (kind, r) in &table {
        let ok = if *kind == Kind::Query {
            format!("{:>7} {:>10}", format!("{} read", r.reads_ok), "")
        } else {
            format!("{:>7} {:>10}", r.ok_applied, r.ok_not_applied)
        };
        writeln!(
            report,
            "{:<12} {:>5} | {ok} | {:>7} {:>11} {:>18} | {:>10} {:>11} | {:>6}",
            format!("{kind:?}"),
            r.ops,
            r.flagged_applied,
            r.flagged_not_applied,
            {
                let (faulted, unseen) = unknown(*kind, r);
                format!("(<= {faulted} + {unseen})")
            },
            r.unflagged_applied,
            r.unflagged_not_applied,
            r.not_attempted,
        )
        .unwrap();
    }
    writeln!(
        report,
        "reported failed but applied without saying it may have been: {}; flagged \"may have \
         been applied\" but not applied: {flagged_not_applied} (at most {} writes were left \
         unknown unapplied); lost {}, duplicated {}, half-applied {}",
        misreported.len(),
        stats.ambiguous_writes_not_applied,
        lost.len(),
        duplicated.len(),
        half_applied.len(),
    )
    .unwrap();
    print!("{report}");
    // .ci/run prints this file, so the counts show in CI.
    std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability.txt"),
        &report,
    )
    .unwrap();
    assert!(
        l.ops.len() >= total,
        "{} of {total} operations ran",
        l.ops.len()
    );
    assert!(stats.throttled + stats.server_errors + stats.dropped_before + stats.dropped_after > 0);
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    assert!(half_applied.is_empty(), "half-applied: {half_applied:?}");
    assert!(
        unexplained.is_empty(),
        "devices nobody created: {unexplained:?}"
    );
    assert!(
        misreported.is_empty(),
        "reported failed and applied, without an error saying it may have been: {misreported:?}"
    );
    // Errors flagged "may have been applied" for what was not: only after a fault that left a
    // write of that kind unapplied without its client knowing. Flagging the stale
    // replacements' plain 412s would break this.
    assert!(
        flagged_not_applied as u64 <= stats.ambiguous_writes_not_applied,
        "{flagged_not_applied} flagged but not applied, after {} ambiguous faults",
        stats.ambiguous_writes_not_applied
    );
    // The check has teeth: had every error of the stale replacements been flagged, it would
    // fail.
    let stale = &table[&Kind::StaleReplace];
    let (faulted, unseen) = unknown(Kind::StaleReplace, stale);
    assert!(
        (stale.flagged_not_applied + stale.unflagged_not_applied) as u64 > faulted + unseen,
        "too few stale replacements to tell"
    );
    for (kind, r) in &table {
        let (faulted, unseen) = unknown(*kind, r);
        assert!(
            r.flagged_not_applied as u64 <= faulted + unseen,
            "{kind:?}: {} flagged but not applied, after {faulted} ambiguous faults on {:?} \
             and {unseen} requests that never reached the emulator",
            r.flagged_not_applied,
            kind.write()
        );
    }
}
