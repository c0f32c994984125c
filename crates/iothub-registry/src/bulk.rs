//! Bulk registry operations (`POST /devices`): one call of up to 100 identities like the
//! reference, and a helper that applies any number in chunks.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use iothub_rest_gen::ResponseValue;
use iothub_rest_gen::types::{
    AuthenticationMechanism, AuthenticationType, BulkRegistryOperationResult,
    DeviceRegistryOperationError, DeviceRegistryOperationWarning, ExportImportDevice, ImportMode,
};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::identity::check_mechanism;
use crate::ids::{validate_device_id, validate_module_id};
use crate::manager::{Call, RegistryManager};
use crate::retry::OperationKind;

/// The most identities the service takes in one bulk call.
pub const MAX_BULK_DEVICES: usize = 100;

impl RegistryManager {
    /// Creates, updates or deletes up to 100 identities in one call, each as its `importMode`
    /// says. Like the reference, a 400 with per-device errors is returned as the result
    /// (`is_successful == Some(false)`), not as an error. A 400 is a result only when its body
    /// carries one (`isSuccessful`, or a non-empty `errors` or `warnings`): the service also
    /// answers 400 with its ordinary error body when it applied nothing, and that is
    /// [`Error::Service`], with its code and tracking id.
    ///
    /// Every entry is checked first (an id, a valid id, at most 100 entries, no identity
    /// twice); nothing is sent if one is wrong. For more than 100 use
    /// [`RegistryManager::bulk`].
    pub async fn bulk_create_or_update_devices(
        &self,
        devices: Vec<ExportImportDevice>,
    ) -> Result<BulkRegistryOperationResult> {
        if devices.is_empty() || devices.len() > MAX_BULK_DEVICES {
            return Err(Error::InvalidArgument {
                argument: "devices",
                reason: format!(
                    "{} identities; one bulk call takes 1 to {MAX_BULK_DEVICES} (RegistryManager::bulk splits larger sets)",
                    devices.len()
                ),
            });
        }
        check_entries(&devices)?;
        self.bulk_call(devices).await
    }

    /// Applies any number of identities in calls of 100, with bounded concurrency, optional
    /// pacing and progress reports. See [`Bulk`].
    ///
    /// ```no_run
    /// use iothub_registry::{RegistryManager, models::{ExportImportDevice, ImportMode}};
    ///
    /// # async fn run(registry: RegistryManager) -> iothub_registry::Result<()> {
    /// let devices = (0..1_000).map(|i| ExportImportDevice {
    ///     id: Some(format!("sensor-{i}")),
    ///     import_mode: Some(ImportMode::Create),
    ///     ..Default::default()
    /// });
    /// let report = registry
    ///     .bulk(devices)
    ///     .concurrency(2)
    ///     .operations_per_minute(100) // an S1 hub with one unit
    ///     .on_progress(|p| eprintln!("{}/{}", p.done, p.total))
    ///     .send()
    ///     .await?;
    /// println!("{} failed", report.errors.len());
    /// # Ok(()) }
    /// ```
    pub fn bulk(&self, devices: impl IntoIterator<Item = ExportImportDevice>) -> Bulk {
        Bulk {
            manager: self.clone(),
            devices: devices.into_iter().collect(),
            concurrency: 1,
            per_minute: None,
            progress: None,
        }
    }

    async fn bulk_call(
        &self,
        devices: Vec<ExportImportDevice>,
    ) -> Result<BulkRegistryOperationResult> {
        let call = Call::new("bulk_create_or_update_devices", bulk_kind(&devices));
        let outcome = self
            .execute(call, || {
                let rest = &self.rest;
                let devices = devices.as_slice();
                async move {
                    rest.bulk_registry_update_registry_keeping_errors(devices)
                        .await
                        .map(ResponseValue::into_inner)
                }
            })
            .await;
        match outcome {
            // The service's answer when some entries failed: a result, not an error. Only as
            // the answer to this call's last attempt with nothing ambiguous before it: after an
            // attempt whose outcome is unknown, the entries it reports may be its own doing
            // (and the error says so, as `Error::MaybeApplied`).
            Err(Error::Service(service)) if service.status() == 400 => {
                match bulk_result(service.raw_body()) {
                    Some(result) => Ok(result),
                    None => Err(Error::Service(service)),
                }
            }
            outcome => outcome,
        }
    }
}

/// A 400's body as a bulk result, when it is one: it carries `isSuccessful`, or a non-empty
/// `errors` or `warnings`. The service's ordinary error body
/// (`{"Message":…,"ExceptionMessage":…}`) is not, though every field of the result being
/// optional, it would decode as an empty one.
fn bulk_result(body: &str) -> Option<BulkRegistryOperationResult> {
    let value: Value = serde_json::from_str(body).ok()?;
    let non_empty = |field: &str| {
        value
            .get(field)
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
    };
    if value.get("isSuccessful").is_none() && !non_empty("errors") && !non_empty("warnings") {
        return None;
    }
    serde_json::from_value(value).ok()
}

/// What a bulk call is, for the retry rule: the least repeatable kind among its entries.
/// Conditional entries and deletes repeat harmlessly; a repeated create reports conflicts for
/// identities it created itself; a forced update or an entry without a mode (the service
/// creates or updates) applies again.
fn bulk_kind(devices: &[ExportImportDevice]) -> OperationKind {
    let kind = |device: &ExportImportDevice| match &device.import_mode {
        Some(ImportMode::UpdateIfMatchETag | ImportMode::UpdateTwinIfMatchETag) => {
            OperationKind::ConditionalWrite
        }
        Some(ImportMode::Delete | ImportMode::DeleteIfMatchETag) => OperationKind::Delete,
        Some(ImportMode::Create) => OperationKind::Create,
        _ => OperationKind::UnconditionalWrite,
    };
    let kinds: Vec<OperationKind> = devices.iter().map(kind).collect();
    let any = |k: OperationKind| kinds.contains(&k);
    if any(OperationKind::UnconditionalWrite) {
        OperationKind::UnconditionalWrite
    } else if any(OperationKind::Create) {
        OperationKind::Create
    } else if any(OperationKind::ConditionalWrite) {
        OperationKind::ConditionalWrite
    } else {
        OperationKind::Delete
    }
}

/// Every entry names a valid identity, and none appears twice.
/// A SAS identity whose request would carry no keys (`"symmetricKey": {}`, or none at all).
fn leaves_keys_to_the_service(auth: &AuthenticationMechanism) -> bool {
    let sas = auth
        .type_
        .as_ref()
        .is_none_or(|t| *t == AuthenticationType::Sas);
    let missing = |key: &Option<iothub_rest_gen::SecretString>| {
        key.as_ref().is_none_or(|k| k.expose_secret().is_empty())
    };
    sas && auth
        .symmetric_key
        .as_ref()
        .is_none_or(|k| missing(&k.primary_key) || missing(&k.secondary_key))
}

fn check_entries(devices: &[ExportImportDevice]) -> Result<()> {
    let mut seen = HashSet::new();
    for (i, device) in devices.iter().enumerate() {
        let id = device.id.as_deref().ok_or_else(|| Error::InvalidArgument {
            argument: "devices",
            reason: format!("entry {i} has no id"),
        })?;
        validate_device_id(id)?;
        if let Some(module_id) = &device.module_id {
            validate_module_id(module_id)?;
        }
        if let Some(auth) = &device.authentication {
            let updates = matches!(
                device.import_mode,
                Some(ImportMode::Update | ImportMode::UpdateIfMatchETag)
            );
            if updates && leaves_keys_to_the_service(auth) {
                return Err(Error::InvalidArgument {
                    argument: "devices",
                    reason: format!(
                        "entry {i} ({id:?}): an update with SAS keys left to the service would \
                         regenerate the keys of an existing device, locking out whatever uses \
                         them; give its keys with SasKeys::new, or use ImportMode::Create \
                         (bulk_entry::create) for new devices"
                    ),
                });
            }
            check_mechanism(auth).map_err(|error| match error {
                Error::InvalidArgument { argument, reason } => Error::InvalidArgument {
                    argument: "devices",
                    reason: format!("entry {i} ({id:?}): `{argument}` {reason}"),
                },
                other => other,
            })?;
        }
        if !seen.insert((id, device.module_id.as_deref())) {
            return Err(Error::InvalidArgument {
                argument: "devices",
                reason: format!("{id:?} appears more than once (entry {i})"),
            });
        }
    }
    Ok(())
}

/// Progress of a [`Bulk`] run, reported after each call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkProgress {
    /// Identities whose call has finished (applied or not).
    pub done: usize,
    /// Identities in the run.
    pub total: usize,
    /// Identities reported as failed so far, including whole calls that failed.
    pub failed: usize,
}

/// A call of a [`Bulk`] run that failed as a whole. Its identities were not applied, unless
/// [`error`](Self::error)`.`[`may_have_been_applied`](Error::may_have_been_applied)`()` says they may have been
/// (the call's outcome is unknown: read them back). With the default retry policy, transient
/// failures were already retried.
#[derive(Debug)]
#[non_exhaustive]
pub struct FailedChunk {
    /// The identities of the call, in order.
    pub device_ids: Vec<String>,
    /// Why the call failed.
    pub error: Error,
}

/// The merged outcome of a [`Bulk`] run.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct BulkReport {
    /// Identities in the run.
    pub total: usize,
    /// Per-identity errors the service reported, from every call.
    pub errors: Vec<DeviceRegistryOperationError>,
    /// Per-identity warnings the service reported, from every call.
    pub warnings: Vec<DeviceRegistryOperationWarning>,
    /// Calls that failed as a whole.
    pub failed_chunks: Vec<FailedChunk>,
    /// Calls whose result the service did not mark successful (`isSuccessful` false or
    /// absent), with the identities of each; those with per-identity errors have them in
    /// [`errors`](Self::errors) too.
    pub unsuccessful_chunks: Vec<Vec<String>>,
}

impl BulkReport {
    /// Whether every identity was applied: every call answered with a result marked
    /// successful (`isSuccessful: true`) and no per-identity error. Computed from what each
    /// call reported, never assumed: an empty run is successful, a call whose result does not
    /// say so is not.
    pub fn is_successful(&self) -> bool {
        self.errors.is_empty()
            && self.failed_chunks.is_empty()
            && self.unsuccessful_chunks.is_empty()
    }
}

/// When each call may start, after the run's start: a call waits until the identities sent
/// before it fit in the per-minute budget. Without a budget every call may start at once.
fn pace(sizes: &[usize], per_minute: Option<u32>) -> Vec<Duration> {
    let mut sent = 0;
    sizes
        .iter()
        .map(|size| {
            let offset = per_minute.map_or(Duration::ZERO, |per_minute| {
                Duration::from_secs_f64(sent as f64 * 60.0 / f64::from(per_minute))
            });
            sent += size;
            offset
        })
        .collect()
}

type ProgressFn = Arc<dyn Fn(BulkProgress) + Send + Sync>;

/// Applies many identities in calls of [`MAX_BULK_DEVICES`]; see [`RegistryManager::bulk`].
#[must_use = "a bulk run does nothing until sent"]
pub struct Bulk {
    manager: RegistryManager,
    devices: Vec<ExportImportDevice>,
    concurrency: usize,
    per_minute: Option<u32>,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk")
            .field("devices", &self.devices.len())
            .field("concurrency", &self.concurrency)
            .field("per_minute", &self.per_minute)
            .finish_non_exhaustive()
    }
}

impl Bulk {
    /// How many calls may be in flight at once (default 1, at least 1).
    pub fn concurrency(mut self, calls: usize) -> Self {
        self.concurrency = calls.max(1);
        self
    }

    /// Paces calls so that at most this many identities are sent per minute. The service
    /// counts every identity of a bulk call against the registry-operations throttle (S1: 100
    /// per minute per unit), so pacing avoids a storm of 429s on large runs.
    pub fn operations_per_minute(mut self, identities: u32) -> Self {
        self.per_minute = Some(identities.max(1));
        self
    }

    /// Called after each call with the progress so far.
    pub fn on_progress(mut self, progress: impl Fn(BulkProgress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(progress));
        self
    }

    /// Checks every entry (nothing is sent if one is invalid), then runs the calls and merges
    /// their results. A call that fails as a whole is reported in
    /// [`BulkReport::failed_chunks`] with its identities; the other calls still run.
    pub async fn send(self) -> Result<BulkReport> {
        check_entries(&self.devices)?;
        let total = self.devices.len();
        let mut chunks = Vec::new();
        let mut devices = self.devices.into_iter().peekable();
        while devices.peek().is_some() {
            chunks.push(devices.by_ref().take(MAX_BULK_DEVICES).collect::<Vec<_>>());
        }
        let sizes: Vec<usize> = chunks.iter().map(Vec::len).collect();
        let started = tokio::time::Instant::now();
        let starts = pace(&sizes, self.per_minute)
            .into_iter()
            .map(|offset| started + offset);
        let chunks: Vec<_> = starts.zip(chunks).collect();

        let manager = &self.manager;
        let mut results = stream::iter(chunks)
            .map(|(start, chunk)| async move {
                tokio::time::sleep_until(start).await;
                let ids: Vec<String> = chunk.iter().filter_map(|d| d.id.clone()).collect();
                (ids, manager.bulk_call(chunk).await)
            })
            .buffer_unordered(self.concurrency);

        let mut report = BulkReport {
            total,
            ..BulkReport::default()
        };
        let mut done = 0;
        while let Some((ids, result)) = results.next().await {
            done += ids.len();
            match result {
                Ok(result) => {
                    if result.is_successful != Some(true) {
                        report.unsuccessful_chunks.push(ids);
                    }
                    report.errors.extend(result.errors);
                    report.warnings.extend(result.warnings);
                }
                Err(error) => report.failed_chunks.push(FailedChunk {
                    device_ids: ids,
                    error,
                }),
            }
            if let Some(progress) = &self.progress {
                let failed = report.errors.len()
                    + report
                        .failed_chunks
                        .iter()
                        .map(|c| c.device_ids.len())
                        .sum::<usize>();
                progress(BulkProgress {
                    done,
                    total,
                    failed,
                });
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_call_is_as_repeatable_as_its_least_repeatable_entry() {
        let with = |modes: &[Option<ImportMode>]| {
            let entries: Vec<_> = modes
                .iter()
                .map(|mode| ExportImportDevice {
                    import_mode: mode.clone(),
                    ..entry("d")
                })
                .collect();
            bulk_kind(&entries)
        };
        use ImportMode::*;
        assert_eq!(
            with(&[Some(UpdateIfMatchETag), Some(UpdateTwinIfMatchETag)]),
            OperationKind::ConditionalWrite
        );
        assert_eq!(
            with(&[Some(Delete), Some(DeleteIfMatchETag)]),
            OperationKind::Delete
        );
        assert_eq!(
            with(&[Some(DeleteIfMatchETag), Some(UpdateIfMatchETag)]),
            OperationKind::ConditionalWrite
        );
        assert_eq!(
            with(&[Some(Create), Some(DeleteIfMatchETag)]),
            OperationKind::Create
        );
        for forced in [Some(Update), Some(UpdateTwin), None] {
            assert_eq!(
                with(&[Some(Create), forced]),
                OperationKind::UnconditionalWrite
            );
        }
    }

    #[test]
    fn a_400_is_a_bulk_result_only_when_it_carries_one() {
        let result = |body: &str| bulk_result(body).map(|r| r.is_successful);
        assert_eq!(
            result(r#"{"isSuccessful":false,"errors":[],"warnings":[]}"#),
            Some(Some(false))
        );
        assert_eq!(
            result(r#"{"errors":[{"deviceId":"a","errorCode":"DeviceAlreadyExists"}]}"#),
            Some(None)
        );
        assert_eq!(result(r#"{"warnings":[{"deviceId":"a"}]}"#), Some(None));
        // The service's ordinary error body, an empty result, or no JSON: not a result.
        for body in [
            r#"{"Message":"ErrorCode:ArgumentInvalid;bad","ExceptionMessage":"Tracking ID:x"}"#,
            r#"{"errors":[],"warnings":[]}"#,
            "{}",
            "",
            "<html>",
        ] {
            assert!(bulk_result(body).is_none(), "{body}");
        }
    }

    #[test]
    fn pacing_spreads_identities_over_minutes() {
        assert_eq!(pace(&[100, 100, 50], None), [Duration::ZERO; 3]);
        let s = |secs: u64| Duration::from_secs(secs);
        // S1 with one unit: 100 identities a minute.
        assert_eq!(pace(&[100, 100, 50], Some(100)), [s(0), s(60), s(120)]);
        assert_eq!(pace(&[100, 100], Some(400)), [s(0), s(15)]);
    }

    fn entry(id: &str) -> ExportImportDevice {
        ExportImportDevice {
            id: Some(id.into()),
            ..Default::default()
        }
    }

    #[test]
    fn entries_are_checked_before_anything_is_sent() {
        assert!(check_entries(&[entry("a"), entry("b")]).is_ok());
        let err = check_entries(&[entry("a"), entry("a")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("appears more than once"), "{err}");
        let err = check_entries(&[entry("a"), ExportImportDevice::default()]).unwrap_err();
        assert!(err.to_string().contains("entry 1 has no id"), "{err}");
        assert!(check_entries(&[entry("bad id")]).is_err());
        // Keys and thumbprints follow the single-identity rules, and the entry is named.
        let short_key = crate::bulk_entry::create("k", crate::SasKeys::new("AAAA", "AAAA"));
        let err = check_entries(&[entry("a"), short_key])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("entry 1 (\"k\"): `primary_key` decodes to 3 bytes"),
            "{err}"
        );
        let bad_thumbprint =
            crate::bulk_entry::create("t", crate::X509Thumbprints::new("not hex", "b".repeat(40)));
        let err = check_entries(&[bad_thumbprint]).unwrap_err().to_string();
        assert!(err.contains("`primary_thumbprint`"), "{err}");
        // Keys left to the service pass on a create, and are refused on an update: for an
        // existing device it would rotate them.
        let generated = crate::bulk_entry::create("g", crate::SasKeys::generated());
        assert!(check_entries(&[generated]).is_ok());
        let rotating = crate::bulk_entry::create_or_update("u", crate::SasKeys::generated());
        let err = check_entries(&[rotating]).unwrap_err().to_string();
        assert!(
            err.contains("entry 0 (\"u\"): an update with SAS keys left"),
            "{err}"
        );
        let kept = crate::bulk_entry::create_or_update(
            "u",
            crate::SasKeys::new("AAECAwQFBgcICQoLDA0ODw==", "EBESExQVFhcYGRobHB0eHw=="),
        );
        assert!(check_entries(&[kept]).is_ok());
        // A device and its module are different identities.
        let module = ExportImportDevice {
            module_id: Some("m".into()),
            ..entry("a")
        };
        assert!(check_entries(&[entry("a"), module]).is_ok());
    }
}
