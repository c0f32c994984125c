//! Fault injection: throttling (at a rate or by tier limits), server errors, latency and
//! dropped connections, decided per service request, and counted per request: over HTTP/2 one
//! dropped connection fails every request in flight on it, and each of those counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use serde::{Deserialize, Serialize};

/// What faults to inject. All rates are fractions of service requests (0.0 to 1.0).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Answered 429 ThrottlingException with `Retry-After`.
    pub throttle_rate: f64,
    /// The `Retry-After` seconds of injected 429s (0 is sent as 0).
    pub retry_after_secs: u64,
    /// Answered 500 ServerError or 503 ServiceUnavailable (half each).
    pub server_error_rate: f64,
    /// The connection is closed without an answer, before the request is applied.
    pub drop_before_rate: f64,
    /// The request is applied, then the connection is closed without an answer.
    pub drop_after_rate: f64,
    /// Added to every service request.
    pub latency_ms: u64,
    /// Up to this much more, uniformly.
    pub latency_jitter_ms: u64,
    /// Throttle by a tier's published per-unit limits (429 when a class's budget is spent).
    pub tier: Option<Tier>,
    /// Units of the tier (default 1).
    pub units: Option<u32>,
    /// Seed for reproducible fault sequences.
    pub seed: Option<u64>,
}

/// An IoT Hub standard tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tier {
    /// S1.
    S1,
    /// S2.
    S2,
    /// S3.
    S3,
}

/// How many faults were injected so far, counted per request.
///
/// A client can check its reporting of writes against the last three: a write it reports as
/// failed and "not applied" must not be one of `ambiguous_writes_applied`, and a write it
/// reports as "may have been applied" that was not must be one of
/// `ambiguous_writes_not_applied`, or a request it sent that never reached the emulator (one
/// it sent on a connection just as another request's drop closed it; `writes_by_operation`
/// counts the requests that did).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FaultStats {
    /// 429s from `throttle_rate`.
    pub throttled: u64,
    /// 429s from tier limits.
    pub tier_throttled: u64,
    /// 500s and 503s.
    pub server_errors: u64,
    /// Of `server_errors`, the 500s (the others are 503s).
    pub internal_errors: u64,
    /// Connections dropped before applying.
    pub dropped_before: u64,
    /// Connections dropped after applying.
    pub dropped_after: u64,
    /// Requests whose answer was lost because another request's injected drop closed their
    /// connection (HTTP/2 carries many requests on one connection).
    pub dropped_with_connection: u64,
    /// Writes (every request but a GET or a query) the emulator did not apply and whose client
    /// cannot tell: dropped before being applied (by their own fault or with their
    /// connection), or answered 500.
    pub ambiguous_writes_not_applied: u64,
    /// Writes the emulator applied whose answer the client never got: dropped after being
    /// applied, by their own fault or with their connection.
    pub ambiguous_writes_applied: u64,
    /// Per operation, named by method and path template (`"PUT /devices/{id}"`,
    /// `"PATCH /twins/{id}"`, `"POST /devices"`…): the write requests that reached the
    /// emulator, and the two counts above.
    pub writes_by_operation: BTreeMap<String, WriteFaults>,
}

/// The write requests of one operation that reached the emulator, and those whose client
/// cannot tell whether they were applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteFaults {
    /// Requests that reached the emulator, whatever became of them.
    pub requests: u64,
    /// Not applied, and the client cannot tell: dropped before being applied (by their own
    /// fault or with their connection), or answered 500.
    pub ambiguous_not_applied: u64,
    /// Applied, and the answer dropped.
    pub ambiguous_applied: u64,
}

/// The throttling class of a request, as the service's quotas group operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum OpClass {
    /// Identity create, get, list, update, delete (bulk counts one per entry).
    Registry,
    TwinRead,
    TwinUpdate,
    Query,
    Method,
    /// Configurations and edge deployments: create, read, update, delete, test queries,
    /// apply to an edge device.
    Configurations,
    /// Jobs operations: create, get, list, cancel and query, import/export and scheduled.
    Jobs,
    Other,
}

impl OpClass {
    /// Requests per second per unit, and the floor some tiers guarantee.
    fn rate(self, tier: Tier, units: f64) -> f64 {
        let per_min = |n: f64| n / 60.0;
        match (self, tier) {
            (Self::Registry, Tier::S1 | Tier::S2) => per_min(100.0) * units,
            (Self::Registry, Tier::S3) => per_min(5000.0) * units,
            (Self::TwinRead, Tier::S1) => 100.0,
            (Self::TwinRead, Tier::S2) => (10.0 * units).max(100.0),
            (Self::TwinRead, Tier::S3) => (50.0 * units).max(100.0),
            (Self::TwinUpdate, Tier::S1) => 50.0,
            (Self::TwinUpdate, Tier::S2) => (5.0 * units).max(50.0),
            (Self::TwinUpdate, Tier::S3) => (25.0 * units).max(50.0),
            (Self::Query, Tier::S1 | Tier::S2) => per_min(20.0) * units,
            (Self::Query, Tier::S3) => per_min(1000.0) * units,
            (Self::Method, Tier::S1) => 20.0 * units,
            (Self::Method, Tier::S2) => 60.0 * units,
            (Self::Method, Tier::S3) => 3000.0 * units,
            // 20 per minute per unit on every tier (the quotas page: S3 as S1 and S2).
            (Self::Configurations, _) => per_min(20.0) * units,
            // The quotas page: 100 per minute per unit on S1 and S2, 83.33 per second per
            // unit on S3.
            (Self::Jobs, Tier::S1 | Tier::S2) => per_min(100.0) * units,
            (Self::Jobs, Tier::S3) => 83.33 * units,
            (Self::Other, _) => f64::INFINITY,
        }
    }
}

/// What to do with one request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Decision {
    pub(crate) delay: Duration,
    pub(crate) drop_before: bool,
    /// 429 with this Retry-After.
    pub(crate) throttle: Option<u64>,
    /// 500 or 503.
    pub(crate) server_error: Option<u16>,
    pub(crate) drop_after: bool,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Inner {
    config: FaultConfig,
    rng: fastrand::Rng,
    stats: FaultStats,
    buckets: HashMap<OpClass, Bucket>,
}

/// The live fault settings and counters.
pub(crate) struct Faults(Mutex<Inner>);

impl Faults {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let rng = config
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Self(Mutex::new(Inner {
            config,
            rng,
            stats: FaultStats::default(),
            buckets: HashMap::new(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set(&self, config: FaultConfig) {
        let mut inner = self.lock();
        if let Some(seed) = config.seed {
            inner.rng = fastrand::Rng::with_seed(seed);
        }
        inner.config = config;
        inner.buckets.clear();
    }

    pub(crate) fn config(&self) -> FaultConfig {
        self.lock().config.clone()
    }

    pub(crate) fn stats(&self) -> FaultStats {
        self.lock().stats.clone()
    }

    /// Counts a request whose answer is lost after it was handled: its own `drop_after`, or
    /// its connection closed by another request's drop (`with_connection`). `write`: the
    /// operation, for a request that would change the hub; `applied`: it did (a write
    /// answered with success).
    pub(crate) fn lost(&self, write: Option<&str>, applied: bool, with_connection: bool) {
        let mut inner = self.lock();
        if with_connection {
            inner.stats.dropped_with_connection += 1;
        }
        if let Some(operation) = write {
            inner.stats.count_ambiguous_write(operation, applied);
        }
    }

    /// Counts a write request of `operation` that reached the emulator.
    pub(crate) fn count_request(&self, operation: &str) {
        let mut inner = self.lock();
        let per = inner
            .stats
            .writes_by_operation
            .entry(operation.to_owned())
            .or_default();
        per.requests += 1;
    }

    /// Counts what `decision` does to a write request of `operation` whose client cannot tell
    /// the outcome: dropped before being applied, or answered 500. A drop after applying is
    /// counted once the request is handled ([`lost`](Self::lost)).
    pub(crate) fn count_write(&self, decision: &Decision, operation: &str) {
        if decision.drop_before || decision.server_error == Some(500) {
            self.lock().stats.count_ambiguous_write(operation, false);
        }
    }

    /// Decides the faults for one request of `class` costing `cost` operations.
    pub(crate) fn decide(&self, class: OpClass, cost: u32) -> Decision {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let c = &inner.config;
        let mut d = Decision::default();
        if c.latency_ms > 0 || c.latency_jitter_ms > 0 {
            let jitter = if c.latency_jitter_ms > 0 {
                inner.rng.u64(0..=c.latency_jitter_ms)
            } else {
                0
            };
            d.delay = Duration::from_millis(c.latency_ms + jitter);
        }
        if hit(&mut inner.rng, c.drop_before_rate) {
            d.drop_before = true;
            inner.stats.dropped_before += 1;
            return d;
        }
        if hit(&mut inner.rng, c.throttle_rate) {
            d.throttle = Some(c.retry_after_secs);
            inner.stats.throttled += 1;
            return d;
        }
        if let Some(tier) = c.tier {
            let rate = class.rate(tier, f64::from(c.units.unwrap_or(1).max(1)));
            if rate.is_finite() {
                let now = Instant::now();
                let bucket = inner.buckets.entry(class).or_insert(Bucket {
                    tokens: rate.max(1.0),
                    at: now,
                });
                let elapsed = now.duration_since(bucket.at).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * rate).min(rate.max(1.0));
                bucket.at = now;
                let cost = f64::from(cost.max(1));
                if bucket.tokens >= cost {
                    bucket.tokens -= cost;
                } else {
                    let wait = ((cost - bucket.tokens) / rate).ceil();
                    // Saturating float-to-int conversion: `as` is exact for these small values.
                    d.throttle = Some((wait as u64).max(1));
                    inner.stats.tier_throttled += 1;
                    return d;
                }
            }
        }
        if hit(&mut inner.rng, c.server_error_rate) {
            let status = if inner.rng.bool() { 500 } else { 503 };
            d.server_error = Some(status);
            inner.stats.server_errors += 1;
            // A 500 does not say whether the operation ran; a 503 says it did not.
            inner.stats.internal_errors += u64::from(status == 500);
            return d;
        }
        if hit(&mut inner.rng, c.drop_after_rate) {
            // Counted as ambiguous once the request is handled (see `lost`): it may fail.
            d.drop_after = true;
            inner.stats.dropped_after += 1;
        }
        d
    }
}

impl FaultStats {
    fn count_ambiguous_write(&mut self, operation: &str, applied: bool) {
        let per = self
            .writes_by_operation
            .entry(operation.to_owned())
            .or_default();
        if applied {
            self.ambiguous_writes_applied += 1;
            per.ambiguous_applied += 1;
        } else {
            self.ambiguous_writes_not_applied += 1;
            per.ambiguous_not_applied += 1;
        }
    }
}

/// What becomes of one connection: a request's injected drop closes it, and every other
/// request in flight on it loses its answer.
#[derive(Default)]
pub(crate) struct ConnectionFate {
    dropped: AtomicBool,
    close: Notify,
}

impl ConnectionFate {
    /// Closes the connection without an answer to any request on it.
    pub(crate) fn drop_connection(&self) {
        self.dropped.store(true, Ordering::SeqCst);
        self.close.notify_one();
    }

    /// Whether a request's drop closed the connection.
    pub(crate) fn is_dropped(&self) -> bool {
        self.dropped.load(Ordering::SeqCst)
    }

    /// Completes when a request drops the connection.
    pub(crate) async fn dropped(&self) {
        self.close.notified().await;
    }
}

fn hit(rng: &mut fastrand::Rng, rate: f64) -> bool {
    rate > 0.0 && rng.f64() < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_faults_by_default() {
        let f = Faults::new(FaultConfig::default());
        for _ in 0..100 {
            assert_eq!(f.decide(OpClass::Registry, 1), Decision::default());
        }
    }

    #[test]
    fn rates_are_roughly_honoured_and_counted() {
        let f = Faults::new(FaultConfig {
            throttle_rate: 0.2,
            retry_after_secs: 2,
            seed: Some(7),
            ..Default::default()
        });
        let throttled = (0..10_000)
            .filter(|_| f.decide(OpClass::Registry, 1).throttle == Some(2))
            .count();
        assert!((1_700..2_300).contains(&throttled), "{throttled}");
        assert_eq!(f.stats().throttled, throttled as u64);
    }

    #[test]
    fn ambiguous_writes_are_counted_per_request() {
        let f = Faults::new(FaultConfig {
            drop_before_rate: 0.1,
            server_error_rate: 0.2,
            seed: Some(3),
            ..Default::default()
        });
        let (mut dropped, mut internal) = (0, 0);
        for i in 0..1_000 {
            let d = f.decide(OpClass::Registry, 1);
            if i % 2 == 0 {
                f.count_write(&d, "PUT /devices/{id}");
                dropped += u64::from(d.drop_before);
                internal += u64::from(d.server_error == Some(500));
            }
        }
        let stats = f.stats();
        assert!(stats.internal_errors > 0 && stats.internal_errors < stats.server_errors);
        // Only the writes' drops and 500s, not their 503s, not the reads'.
        assert_eq!(stats.ambiguous_writes_not_applied, dropped + internal);
        // Answers lost after handling: applied writes, failed writes, reads.
        f.lost(Some("PATCH /twins/{id}"), true, false);
        f.lost(Some("PUT /devices/{id}"), false, true);
        f.lost(None, true, true);
        let after = f.stats();
        assert_eq!(after.ambiguous_writes_applied, 1);
        assert_eq!(
            after.ambiguous_writes_not_applied,
            stats.ambiguous_writes_not_applied + 1
        );
        assert_eq!(after.dropped_with_connection, 2);
        f.count_request("PATCH /twins/{id}");
        let per = &f.stats().writes_by_operation;
        assert_eq!(
            per["PUT /devices/{id}"].ambiguous_not_applied,
            stats.ambiguous_writes_not_applied + 1
        );
        assert_eq!(
            per["PATCH /twins/{id}"],
            WriteFaults {
                requests: 1,
                ambiguous_not_applied: 0,
                ambiguous_applied: 1
            }
        );
    }

    #[tokio::test]
    async fn a_dropped_connection_is_seen_by_every_request_on_it() {
        let fate = std::sync::Arc::new(ConnectionFate::default());
        assert!(!fate.is_dropped());
        let waiter = tokio::spawn({
            let fate = fate.clone();
            async move { fate.dropped().await }
        });
        fate.drop_connection();
        waiter.await.unwrap();
        assert!(fate.is_dropped());
    }

    #[test]
    fn tier_limits_throttle_bursts() {
        let f = Faults::new(FaultConfig {
            tier: Some(Tier::S1),
            ..Default::default()
        });
        // S1 queries: 20 per minute, a burst of one.
        assert_eq!(f.decide(OpClass::Query, 1).throttle, None);
        let second = f.decide(OpClass::Query, 1).throttle;
        assert!(second.is_some_and(|s| s >= 1), "{second:?}");
        assert_eq!(f.stats().tier_throttled, 1);
    }

    #[test]
    fn configurations_are_throttled_at_20_per_minute_per_unit() {
        let f = Faults::new(FaultConfig {
            tier: Some(Tier::S1),
            ..Default::default()
        });
        assert_eq!(f.decide(OpClass::Configurations, 1).throttle, None);
        let second = f.decide(OpClass::Configurations, 1).throttle;
        // 20 per minute: the next token comes in 3 s.
        assert!(second.is_some_and(|s| (1..=3).contains(&s)), "{second:?}");
        // Registry operations have their own bucket.
        assert_eq!(f.decide(OpClass::Registry, 1).throttle, None);
    }

    #[test]
    fn jobs_are_throttled_at_100_per_minute_per_unit_on_s1_and_s2() {
        for tier in [Tier::S1, Tier::S2] {
            let f = Faults::new(FaultConfig {
                tier: Some(tier),
                ..Default::default()
            });
            assert_eq!(f.decide(OpClass::Jobs, 1).throttle, None);
            let second = f.decide(OpClass::Jobs, 1).throttle;
            // 100 per minute: the next token comes within a second.
            assert_eq!(second, Some(1), "{tier:?}");
            // Configurations have their own bucket.
            assert_eq!(f.decide(OpClass::Configurations, 1).throttle, None);
        }
    }
}
