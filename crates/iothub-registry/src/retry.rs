//! Retry policies: whether and when a failed attempt is repeated.
//!
//! Every failure is classified ([`RetryClass`]) by what it says about the operation: not
//! performed (safe to repeat anything), maybe performed (repeat only what repeating cannot
//! change), or permanent. Every operation has an [`OperationKind`], and
//! [`OperationKind::may_repeat`] is the one rule that says which kinds may be repeated after
//! which class of failure. A [`RetryPolicy`] turns the class, the kind and the attempts so far
//! into a delay or a "give up". [`ExponentialRetry`] is the default (it applies the rule);
//! [`NoRetry`] disables retries; anything implementing the trait can replace them.

use std::sync::Arc;
use std::time::Duration;

/// How a failed attempt may be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// The service says it did not perform the operation (408 except from a direct method,
    /// 429, 503, throttling codes, or a connect failure before anything was sent): safe to
    /// retry any operation.
    NotPerformed {
        /// The delay the service asked for in `Retry-After`, if any.
        retry_after: Option<Duration>,
    },
    /// The request may have reached the service and been applied (timeout after sending, reset
    /// mid-response, 500, 502, 504, a direct method's 408): repeat only what repeating cannot
    /// change ([`OperationKind::may_repeat`]).
    MaybePerformed,
    /// Retrying will not help.
    Permanent,
}

/// What an operation does, as far as repeating it is concerned. Chosen per call: an update
/// with [`IfMatch::Any`](crate::IfMatch::Any) is an [`UnconditionalWrite`](Self::UnconditionalWrite),
/// the same update with an etag a [`ConditionalWrite`](Self::ConditionalWrite).
///
/// | operation | kind |
/// |---|---|
/// | `get_device`, `get_devices`, `get_module`, `get_modules`, `get_twin`, `get_module_twin`, `get_device_registry_statistics`, `get_service_statistics`; `get_configuration`, `get_configurations`, `test_configuration_queries` (a `POST` that changes nothing); `get_import_export_job`, `get_import_export_jobs`, `get_scheduled_job`; `get_digital_twin` | [`Read`](Self::Read) |
/// | `query_iot_hub` (and every page of [`query`](crate::RegistryManager::query)); `query_scheduled_jobs` (and every page of [`query_jobs`](crate::JobManager::query_jobs)) | [`Query`](Self::Query) |
/// | `delete_device`, `delete_module`, `delete_configuration` (with or without an etag); `complete_feedback_notification` (the lock token is spent by the first completion); `cancel_import_export_job`, `cancel_scheduled_job` (cancelling a cancelled job changes nothing) | [`Delete`](Self::Delete) |
/// | `update_*` and `replace_*`, `update_twin`, `update_module_twin`, `update_configuration`, `update_digital_twin` with an etag; `abandon_feedback_notification` (conditional on its lock token) | [`ConditionalWrite`](Self::ConditionalWrite) |
/// | the same with [`IfMatch::Any`](crate::IfMatch::Any); `purge_c2d_queue`; `send_c2d_message`; `apply_configuration_on_edge_device`; `create_import_export_job` (the hub chooses the job id: a repeat starts a second job) | [`UnconditionalWrite`](Self::UnconditionalWrite) |
/// | `create_device_with_*`, `create_module_with_*`, `create_configuration`; `create_scheduled_job` (the caller chooses the job id: a repeat answers 409) | [`Create`](Self::Create) |
/// | `receive_feedback_notification` | [`Receive`](Self::Receive) |
/// | `invoke_device_method`, `invoke_device_module_method`; `invoke_command`, `invoke_component_command` (a digital twin's command is a direct method) | [`DirectMethod`](Self::DirectMethod) |
/// | `bulk_create_or_update_devices` (and every call of [`bulk`](crate::RegistryManager::bulk)) | the least repeatable kind among its entries: [`UnconditionalWrite`](Self::UnconditionalWrite) if one is a forced update (or has no mode), else [`Create`](Self::Create) if one creates, else [`ConditionalWrite`](Self::ConditionalWrite) if one is conditional on an etag, else [`Delete`](Self::Delete) |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OperationKind {
    /// Reads only (get, list, statistics).
    Read,
    /// A query page: reads only.
    Query,
    /// Deletes an identity. Repeated after its first attempt was applied, it finds the identity
    /// gone, which is what was asked for.
    Delete,
    /// A write conditional on an etag. Repeated after its first attempt was applied, it fails
    /// with 412 instead of applying twice.
    ConditionalWrite,
    /// Creates an identity. Repeated after its first attempt was applied, it fails with 409 for
    /// an identity it created itself.
    Create,
    /// A write without a precondition (a forced update, a twin patch with `If-Match: *`, a
    /// purge). Repeated, it applies again: it may undo a concurrent change, bump versions and
    /// notify devices twice.
    UnconditionalWrite,
    /// Runs code on a device. Repeated, it runs again.
    DirectMethod,
    /// Locks the next batch of a queue for the caller (HTTP feedback). Repeated after its first
    /// attempt was applied, it locks the batch after; the first one, locked for nobody, returns
    /// to the queue when its lock expires. Nothing is lost or settled twice, so it is repeated;
    /// but it changes the queue, so a failure after an ambiguous attempt is reported as
    /// [`Error::MaybeApplied`](crate::Error::MaybeApplied).
    Receive,
}

impl OperationKind {
    /// The one rule of the SDK for repeating an operation, given what its failure proves:
    ///
    /// - After [`RetryClass::NotPerformed`] (the service did not process the request), any
    ///   operation may be repeated.
    /// - After [`RetryClass::MaybePerformed`] (it may have been applied), only what repeating
    ///   cannot change: [`Read`](Self::Read), [`Query`](Self::Query),
    ///   [`Delete`](Self::Delete), [`ConditionalWrite`](Self::ConditionalWrite) and
    ///   [`Receive`](Self::Receive).
    /// - After [`RetryClass::Permanent`], never.
    ///
    /// ```
    /// use iothub_registry::{OperationKind, RetryClass};
    ///
    /// let lost = RetryClass::MaybePerformed;
    /// assert!(OperationKind::ConditionalWrite.may_repeat(lost));
    /// assert!(!OperationKind::UnconditionalWrite.may_repeat(lost));
    /// let throttled = RetryClass::NotPerformed { retry_after: None };
    /// assert!(OperationKind::DirectMethod.may_repeat(throttled));
    /// ```
    pub fn may_repeat(self, class: RetryClass) -> bool {
        match class {
            RetryClass::Permanent => false,
            RetryClass::NotPerformed { .. } => true,
            RetryClass::MaybePerformed => self.repeats_harmlessly(),
        }
    }

    /// Whether repeating it after it was applied changes nothing that matters: reads, queries,
    /// deletes, writes conditional on an etag, and receives (the batch a lost answer locked
    /// comes back when its lock expires).
    pub fn repeats_harmlessly(self) -> bool {
        matches!(
            self,
            Self::Read | Self::Query | Self::Delete | Self::ConditionalWrite | Self::Receive
        )
    }

    /// Whether it changes the hub (everything but reads and queries), so that a failure may
    /// leave it applied.
    pub fn changes_state(self) -> bool {
        !matches!(self, Self::Read | Self::Query)
    }
}

/// What the policy knows about the operation and the attempts so far.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RetryContext {
    /// The operation's name, as in the Python reference (`get_twin`, `update_device_with_sas`…).
    pub operation: &'static str,
    /// Attempts made so far, including the one that just failed (so at least 1).
    pub attempt: u32,
    /// Time since the first attempt started.
    pub elapsed: Duration,
    /// Whether repeating the operation after it was applied is harmless:
    /// `kind.repeats_harmlessly()`. Kept for policies written before [`kind`](Self::kind).
    pub idempotent: bool,
    /// What the operation does, which decides what may be repeated
    /// ([`OperationKind::may_repeat`]).
    pub kind: OperationKind,
}

impl RetryContext {
    /// A context, for testing a custom [`RetryPolicy`] (the struct is `non_exhaustive`, so it
    /// cannot be built literally outside this crate). `idempotent` stands for a kind:
    /// [`OperationKind::Read`] when true, [`OperationKind::UnconditionalWrite`] when false;
    /// see [`for_kind`](Self::for_kind) to give one.
    pub fn new(operation: &'static str, attempt: u32, elapsed: Duration, idempotent: bool) -> Self {
        let kind = if idempotent {
            OperationKind::Read
        } else {
            OperationKind::UnconditionalWrite
        };
        Self::for_kind(operation, attempt, elapsed, kind)
    }

    /// A context for an operation of `kind`.
    pub fn for_kind(
        operation: &'static str,
        attempt: u32,
        elapsed: Duration,
        kind: OperationKind,
    ) -> Self {
        Self {
            operation,
            attempt,
            elapsed,
            idempotent: kind.repeats_harmlessly(),
            kind,
        }
    }
}

/// Decides whether and when to retry. Implement it to replace the default.
///
/// ```
/// use std::time::Duration;
/// use iothub_registry::{RetryClass, RetryContext, RetryPolicy};
///
/// /// Retries only throttled or unavailable requests, three times, one second apart.
/// #[derive(Debug)]
/// struct Patient;
///
/// impl RetryPolicy for Patient {
///     fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration> {
///         match class {
///             RetryClass::NotPerformed { retry_after } if context.attempt < 4 => {
///                 Some(retry_after.unwrap_or(Duration::from_secs(1)))
///             }
///             _ => None,
///         }
///     }
/// }
///
/// let context = RetryContext::new("get_twin", 1, Duration::ZERO, true);
/// let class = RetryClass::NotPerformed { retry_after: None };
/// assert_eq!(Patient.next_delay(class, &context), Some(Duration::from_secs(1)));
/// ```
pub trait RetryPolicy: Send + Sync + std::fmt::Debug {
    /// The delay before the next attempt, or None to give up.
    fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration>;
}

/// A shared policy is a policy.
impl<P: RetryPolicy + ?Sized> RetryPolicy for Arc<P> {
    fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration> {
        (**self).next_delay(class, context)
    }
}

/// A boxed policy is a policy.
impl<P: RetryPolicy + ?Sized> RetryPolicy for Box<P> {
    fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration> {
        (**self).next_delay(class, context)
    }
}

/// The default policy: exponential backoff with equal jitter, bounded by attempts and total
/// time, honouring `Retry-After`.
///
/// - **Which failures.** As [`OperationKind::may_repeat`] says, for the context's
///   [`kind`](RetryContext::kind): [`RetryClass::Permanent`]: never.
///   [`RetryClass::NotPerformed`]: any operation. [`RetryClass::MaybePerformed`]: only reads,
///   queries, deletes and conditional writes, unless
///   [`retry_non_idempotent`](Self::retry_non_idempotent) is set.
/// - **How long.** After attempt *n* the backoff is `min(max_delay, initial_delay × 2^(n-1))`,
///   then drawn uniformly from its upper half (equal jitter: `[b/2, b]`). Equal rather than full
///   jitter so a retry is never almost immediate, which matters for a throttled hub.
/// - **`Retry-After`.** The delay is the *larger* of the service's `Retry-After` and the
///   backoff: the header says "not before", and backoff keeps growing if the hub keeps asking
///   for the same short wait. `max_delay` caps the backoff, not the service's request.
/// - **Limits.** `max_attempts` counts all attempts, the first included. No attempt starts more
///   than `max_elapsed` after the first one: a backoff that would cross that line is shortened
///   to end on it, and a `Retry-After` that would cross it means giving up at once rather than
///   sleeping for nothing.
///
/// Defaults: 5 attempts, 500 ms initial delay, 30 s maximum delay, 2 min in total. Peers range
/// from no retries (Java, Node's registry) to unbounded (C# v2); the closest bounded ones are
/// Python's 4 attempts with 0.8 s backoff and azure_core's 30 s delay cap. Five attempts give
/// 3.75 to 7.5 s of backoff in all for a blip, and two minutes outlast the one-minute window
/// of IoT Hub's per-unit quotas, so a `Retry-After` from a throttled hub is usually honoured.
///
/// ```
/// use std::time::Duration;
/// use iothub_registry::{ExponentialRetry, OperationKind, RetryClass, RetryContext, RetryPolicy};
///
/// // More patient than the default, e.g. for a batch job on a busy hub.
/// let policy = ExponentialRetry::new()
///     .max_attempts(10)
///     .initial_delay(Duration::from_secs(1))
///     .max_delay(Duration::from_secs(60))
///     .max_elapsed(Duration::from_secs(10 * 60));
///
/// // A throttled request is retried, not before the time the hub asked for.
/// let throttled = RetryClass::NotPerformed { retry_after: Some(Duration::from_secs(5)) };
/// let create = OperationKind::Create;
/// let context = RetryContext::for_kind("bulk_create_or_update_devices", 1, Duration::ZERO, create);
/// assert!(policy.next_delay(throttled, &context) >= Some(Duration::from_secs(5)));
///
/// // A method invocation that may have run is not repeated; a conditional write is.
/// let method = OperationKind::DirectMethod;
/// let context = RetryContext::for_kind("invoke_device_method", 1, Duration::ZERO, method);
/// assert_eq!(policy.next_delay(RetryClass::MaybePerformed, &context), None);
/// let patch = OperationKind::ConditionalWrite;
/// let context = RetryContext::for_kind("update_twin", 1, Duration::ZERO, patch);
/// assert!(policy.next_delay(RetryClass::MaybePerformed, &context).is_some());
/// ```
///
/// Give it to the manager with `RegistryManagerBuilder::retry_policy`.
#[derive(Debug, Clone)]
pub struct ExponentialRetry {
    max_attempts: u32,
    initial_delay: Duration,
    max_delay: Duration,
    max_elapsed: Duration,
    retry_non_idempotent: bool,
    jitter: bool,
}

impl Default for ExponentialRetry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(120),
            retry_non_idempotent: false,
            jitter: true,
        }
    }
}

impl ExponentialRetry {
    /// The default policy (see the type's documentation).
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts in total, the first included (default 5). `0` and `1` both mean no retry.
    #[must_use]
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// The backoff after the first attempt, before jitter (default 500 ms); it doubles after
    /// each further attempt.
    #[must_use]
    pub fn initial_delay(mut self, d: Duration) -> Self {
        self.initial_delay = d;
        self
    }

    /// The largest backoff, before jitter (default 30 s). A longer `Retry-After` is still
    /// honoured if the time budget allows it.
    #[must_use]
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    /// No attempt starts later than this after the first one (default 2 min).
    #[must_use]
    pub fn max_elapsed(mut self, d: Duration) -> Self {
        self.max_elapsed = d;
        self
    }

    /// Also repeat, after an ambiguous failure, the operations the rule keeps from it
    /// (creates, unconditional writes, direct methods). Off by default: the operation may be
    /// applied twice.
    #[must_use]
    pub fn retry_non_idempotent(mut self, yes: bool) -> Self {
        self.retry_non_idempotent = yes;
        self
    }

    /// Randomise each backoff within `[b/2, b]` (default on). Turn it off for predictable
    /// delays in tests; in production jitter keeps many clients from retrying in lockstep.
    #[must_use]
    pub fn jitter(mut self, yes: bool) -> Self {
        self.jitter = yes;
        self
    }

    /// The backoff after `attempt` attempts, before jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32
            .checked_pow(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    fn jittered(&self, backoff: Duration) -> Duration {
        if !self.jitter {
            return backoff;
        }
        // u64 nanoseconds cover 584 years, far above any sane max_delay; saturate beyond.
        let nanos = u64::try_from(backoff.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(nanos / 2..=nanos))
    }
}

impl RetryPolicy for ExponentialRetry {
    fn next_delay(&self, class: RetryClass, context: &RetryContext) -> Option<Duration> {
        let overridden = class == RetryClass::MaybePerformed && self.retry_non_idempotent;
        if !context.kind.may_repeat(class) && !overridden {
            return None;
        }
        let retry_after = match class {
            RetryClass::NotPerformed { retry_after } => retry_after,
            _ => None,
        };
        if context.attempt >= self.max_attempts {
            return None;
        }
        let remaining = self
            .max_elapsed
            .checked_sub(context.elapsed)
            .filter(|remaining| !remaining.is_zero())?;
        // Retrying before the service's time is pointless, and sleeping past the budget only
        // delays an error the caller will get anyway.
        if retry_after.is_some_and(|retry_after| retry_after > remaining) {
            return None;
        }
        let backoff = self.jittered(self.backoff(context.attempt));
        // Since retry_after <= remaining, the clamp never cuts below the service's request.
        Some(backoff.max(retry_after.unwrap_or_default()).min(remaining))
    }
}

/// Never retries: every failure is returned after one attempt.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRetry;

impl RetryPolicy for NoRetry {
    fn next_delay(&self, _class: RetryClass, _context: &RetryContext) -> Option<Duration> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_PERFORMED: RetryClass = RetryClass::NotPerformed { retry_after: None };

    fn context(attempt: u32, elapsed: Duration, idempotent: bool) -> RetryContext {
        RetryContext::new("test_operation", attempt, elapsed, idempotent)
    }

    fn first(idempotent: bool) -> RetryContext {
        context(1, Duration::ZERO, idempotent)
    }

    fn fixed() -> ExponentialRetry {
        ExponentialRetry::new().jitter(false)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn defaults() {
        let policy = ExponentialRetry::new();
        assert_eq!(policy.max_attempts, 5);
        assert_eq!(policy.initial_delay, ms(500));
        assert_eq!(policy.max_delay, secs(30));
        assert_eq!(policy.max_elapsed, secs(120));
        assert!(!policy.retry_non_idempotent);
        assert!(policy.jitter);
    }

    /// The one rule: which kinds may be repeated after which class of failure.
    #[test]
    fn the_rule_over_every_kind_and_class() {
        use OperationKind::*;
        let maybe = RetryClass::MaybePerformed;
        // (kind, repeated after MaybePerformed, changes state)
        let table = [
            (Read, true, false),
            (Query, true, false),
            (Delete, true, true),
            (ConditionalWrite, true, true),
            (Create, false, true),
            (UnconditionalWrite, false, true),
            (DirectMethod, false, true),
            (Receive, true, true),
        ];
        for (kind, after_maybe, changes) in table {
            assert!(kind.may_repeat(NOT_PERFORMED), "{kind:?}");
            assert!(!kind.may_repeat(RetryClass::Permanent), "{kind:?}");
            assert_eq!(kind.may_repeat(maybe), after_maybe, "{kind:?}");
            assert_eq!(kind.repeats_harmlessly(), after_maybe, "{kind:?}");
            assert_eq!(kind.changes_state(), changes, "{kind:?}");
            // The default policy applies the rule, and the context's `idempotent` agrees.
            let context = RetryContext::for_kind("op", 1, Duration::ZERO, kind);
            assert_eq!(context.idempotent, after_maybe);
            assert_eq!(fixed().next_delay(maybe, &context).is_some(), after_maybe);
            assert!(fixed().next_delay(NOT_PERFORMED, &context).is_some());
            // ...unless told to repeat everything.
            let eager = fixed().retry_non_idempotent(true);
            assert!(eager.next_delay(maybe, &context).is_some(), "{kind:?}");
        }
        // A context made the old way stands for a kind that agrees with its flag.
        assert_eq!(RetryContext::new("op", 1, Duration::ZERO, true).kind, Read);
        assert_eq!(
            RetryContext::new("op", 1, Duration::ZERO, false).kind,
            UnconditionalWrite
        );
    }

    #[test]
    fn permanent_is_never_retried() {
        for policy in [fixed(), fixed().retry_non_idempotent(true)] {
            for idempotent in [true, false] {
                assert_eq!(
                    policy.next_delay(RetryClass::Permanent, &first(idempotent)),
                    None
                );
            }
        }
    }

    #[test]
    fn maybe_performed_is_retried_only_when_idempotent() {
        let policy = fixed();
        assert_eq!(
            policy.next_delay(RetryClass::MaybePerformed, &first(true)),
            Some(ms(500))
        );
        assert_eq!(
            policy.next_delay(RetryClass::MaybePerformed, &first(false)),
            None
        );
    }

    #[test]
    fn maybe_performed_non_idempotent_is_retried_when_allowed() {
        let policy = fixed().retry_non_idempotent(true);
        assert_eq!(
            policy.next_delay(RetryClass::MaybePerformed, &first(false)),
            Some(ms(500))
        );
        assert_eq!(
            policy.next_delay(RetryClass::MaybePerformed, &first(true)),
            Some(ms(500))
        );
    }

    #[test]
    fn not_performed_is_retried_for_any_operation() {
        let policy = fixed();
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &first(true)),
            Some(ms(500))
        );
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &first(false)),
            Some(ms(500))
        );
    }

    #[test]
    fn attempt_limit_counts_all_attempts() {
        let policy = fixed().max_attempts(3);
        assert!(
            policy
                .next_delay(NOT_PERFORMED, &context(1, Duration::ZERO, true))
                .is_some()
        );
        assert!(
            policy
                .next_delay(NOT_PERFORMED, &context(2, Duration::ZERO, true))
                .is_some()
        );
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &context(3, Duration::ZERO, true)),
            None
        );
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &context(4, Duration::ZERO, true)),
            None
        );
        // The default allows five attempts, i.e. four retries.
        let default = fixed();
        assert!(
            default
                .next_delay(NOT_PERFORMED, &context(4, Duration::ZERO, true))
                .is_some()
        );
        assert_eq!(
            default.next_delay(NOT_PERFORMED, &context(5, Duration::ZERO, true)),
            None
        );
    }

    #[test]
    fn zero_or_one_attempt_means_no_retry() {
        for n in [0, 1] {
            let policy = fixed().max_attempts(n);
            assert_eq!(policy.next_delay(NOT_PERFORMED, &first(true)), None);
        }
    }

    #[test]
    fn elapsed_budget_stops_retries() {
        let policy = fixed().max_elapsed(secs(10));
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &context(1, secs(10), true)),
            None
        );
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &context(1, secs(11), true)),
            None
        );
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &context(1, secs(9), true)),
            Some(ms(500))
        );
    }

    #[test]
    fn backoff_is_shortened_to_end_on_the_budget() {
        let policy = fixed().max_elapsed(secs(10));
        // 500 ms of backoff, 200 ms of budget left.
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &context(1, ms(9_800), true)),
            Some(ms(200))
        );
    }

    #[test]
    fn retry_after_is_a_minimum() {
        let policy = fixed();
        let class = RetryClass::NotPerformed {
            retry_after: Some(secs(3)),
        };
        // Longer than the 500 ms backoff: the service's value wins.
        assert_eq!(policy.next_delay(class, &first(false)), Some(secs(3)));
        // Shorter than the 4 s backoff after attempt 4: the backoff wins.
        let class = RetryClass::NotPerformed {
            retry_after: Some(secs(1)),
        };
        assert_eq!(
            policy.next_delay(class, &context(4, Duration::ZERO, false)),
            Some(secs(4))
        );
    }

    #[test]
    fn retry_after_is_not_capped_by_max_delay() {
        let policy = fixed().max_delay(secs(1));
        let class = RetryClass::NotPerformed {
            retry_after: Some(secs(20)),
        };
        assert_eq!(policy.next_delay(class, &first(true)), Some(secs(20)));
    }

    #[test]
    fn retry_after_beyond_the_budget_gives_up() {
        let policy = fixed().max_elapsed(secs(60));
        let class = RetryClass::NotPerformed {
            retry_after: Some(secs(30)),
        };
        assert_eq!(
            policy.next_delay(class, &context(1, secs(30), true)),
            Some(secs(30))
        );
        assert_eq!(policy.next_delay(class, &context(1, secs(31), true)), None);
        let class = RetryClass::NotPerformed {
            retry_after: Some(secs(600)),
        };
        assert_eq!(policy.next_delay(class, &first(true)), None);
    }

    #[test]
    fn zero_retry_after_falls_back_to_backoff() {
        let class = RetryClass::NotPerformed {
            retry_after: Some(Duration::ZERO),
        };
        assert_eq!(fixed().next_delay(class, &first(true)), Some(ms(500)));
    }

    #[test]
    fn backoff_doubles_and_is_capped_by_max_delay() {
        let policy = fixed()
            .max_attempts(u32::MAX)
            .max_elapsed(Duration::MAX)
            .initial_delay(ms(100))
            .max_delay(secs(2));
        let delays: Vec<_> = (1..=8)
            .map(|n| policy.next_delay(NOT_PERFORMED, &context(n, Duration::ZERO, true)))
            .collect();
        let expected = [100, 200, 400, 800, 1600, 2000, 2000, 2000].map(|n| Some(ms(n)));
        assert_eq!(delays, expected);
    }

    #[test]
    fn backoff_does_not_overflow() {
        let policy = fixed()
            .max_attempts(u32::MAX)
            .max_elapsed(Duration::MAX)
            .initial_delay(Duration::MAX)
            .max_delay(Duration::MAX);
        for attempt in [1, 2, 33, 64, u32::MAX - 1] {
            let delay = policy.next_delay(NOT_PERFORMED, &context(attempt, Duration::ZERO, true));
            assert!(delay.is_some(), "attempt {attempt}");
        }
        let jittered = policy.clone().jitter(true);
        assert!(
            jittered
                .next_delay(NOT_PERFORMED, &context(64, Duration::ZERO, true))
                .is_some()
        );
    }

    #[test]
    fn max_delay_below_initial_delay_wins() {
        let policy = fixed().initial_delay(secs(5)).max_delay(secs(1));
        assert_eq!(
            policy.next_delay(NOT_PERFORMED, &first(true)),
            Some(secs(1))
        );
    }

    #[test]
    fn jitter_stays_within_the_upper_half_of_the_backoff() {
        fastrand::seed(7);
        let policy = ExponentialRetry::new()
            .max_attempts(10)
            .max_elapsed(Duration::MAX);
        for attempt in 1..10 {
            let backoff = fixed().max_attempts(10).backoff(attempt);
            let mut seen = std::collections::HashSet::new();
            for _ in 0..500 {
                let delay = policy
                    .next_delay(NOT_PERFORMED, &context(attempt, Duration::ZERO, true))
                    .unwrap();
                assert!(
                    delay >= backoff / 2 && delay <= backoff,
                    "{delay:?} vs {backoff:?}"
                );
                seen.insert(delay);
            }
            // It does vary (500 draws from hundreds of millions of nanoseconds).
            assert!(
                seen.len() > 400,
                "attempt {attempt}: {} distinct",
                seen.len()
            );
        }
    }

    #[test]
    fn jitter_does_not_go_below_retry_after_or_above_the_budget() {
        fastrand::seed(11);
        let policy = ExponentialRetry::new().max_elapsed(secs(10));
        let class = RetryClass::NotPerformed {
            retry_after: Some(ms(600)),
        };
        for _ in 0..500 {
            let delay = policy
                .next_delay(class, &context(3, ms(8_000), true))
                .unwrap();
            // Backoff after attempt 3 is 2 s, jittered to [1 s, 2 s]; 2 s of budget remain.
            assert!(delay >= secs(1) && delay <= secs(2), "{delay:?}");
            let delay = policy
                .next_delay(class, &context(3, ms(9_000), true))
                .unwrap();
            assert_eq!(delay, secs(1), "clamped to the remaining budget");
        }
    }

    #[test]
    fn no_retry_never_retries() {
        let classes = [
            NOT_PERFORMED,
            RetryClass::MaybePerformed,
            RetryClass::Permanent,
        ];
        for class in classes {
            for idempotent in [true, false] {
                assert_eq!(NoRetry.next_delay(class, &first(idempotent)), None);
            }
        }
        let class = RetryClass::NotPerformed {
            retry_after: Some(ms(1)),
        };
        assert_eq!(NoRetry.next_delay(class, &first(true)), None);
    }

    #[test]
    fn shared_and_boxed_policies_delegate() {
        let shared: Arc<dyn RetryPolicy> = Arc::new(fixed());
        assert_eq!(
            shared.next_delay(NOT_PERFORMED, &first(true)),
            Some(ms(500))
        );
        let boxed: Box<dyn RetryPolicy> = Box::new(NoRetry);
        assert_eq!(boxed.next_delay(NOT_PERFORMED, &first(true)), None);
    }
}
