//! `iothub bulk import FILE`: identities from JSON lines, applied in calls of 100, paced, with
//! a progress bar and an ETA, each call's outcome printed, and a summary of failures.
//!
//! Resumable by re-running: an entry the hub refuses because the identity already exists is
//! read back and counts as done when it already has what the entry asks for.

use std::collections::HashSet;
use std::io::IsTerminal as _;
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use iothub_registry::models::{AuthenticationType, DeviceStatus, ExportImportDevice, ImportMode};
use iothub_registry::{MAX_BULK_DEVICES, RegistryManager};
use serde_json::{Value, json};

use super::Context;
use crate::cli::{BulkCommand, BulkMode};
use crate::error::{CliError, Result};

/// One identity the run could not apply.
struct Failure {
    id: String,
    module_id: Option<String>,
    code: String,
    message: String,
}

/// What one call did.
#[derive(Default)]
struct ChunkOutcome {
    applied: usize,
    already: usize,
    failures: Vec<Failure>,
}

/// Runs `bulk …`.
pub(crate) async fn run(cx: &Context, command: BulkCommand) -> Result<()> {
    let BulkCommand::Import {
        file,
        mode,
        per_minute,
        concurrency,
        no_progress,
    } = command;
    // The whole file is read and checked before the first call: a bad line stops nothing
    // half-way.
    let entries = read_entries(&file, mode)?;
    let registry = cx.registry()?;
    let total = entries.len();
    let chunks: Vec<Vec<ExportImportDevice>> = entries
        .chunks(MAX_BULK_DEVICES)
        .map(<[_]>::to_vec)
        .collect();
    let count = chunks.len();
    let bar = if no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:40} {pos}/{len} identities, {per_sec}, ETA {eta}")
        {
            bar.set_style(style);
        }
        bar
    };
    let say = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let started = Instant::now();
    let mut sent_before = 0usize;
    let calls = chunks.into_iter().enumerate().map(|(index, chunk)| {
        // Each call starts when the identities sent before it fit in the per-minute budget.
        let offset = per_minute.map_or(Duration::ZERO, |pm| {
            Duration::from_secs_f64(sent_before as f64 * 60.0 / f64::from(pm))
        });
        sent_before += chunk.len();
        let registry = registry.clone();
        async move {
            tokio::time::sleep_until((started + offset).into()).await;
            let outcome = apply(&registry, &chunk).await;
            (index, chunk, outcome)
        }
    });
    let mut results = futures::stream::iter(calls).buffer_unordered(usize::from(concurrency));
    let (mut applied, mut already, mut failures) = (0, 0, Vec::new());
    while let Some((index, chunk, outcome)) = results.next().await {
        let first = chunk.first().and_then(|e| e.id.clone()).unwrap_or_default();
        let last = chunk.last().and_then(|e| e.id.clone()).unwrap_or_default();
        say(format!(
            "call {}/{count} ({first} … {last}): {} applied, {} already there, {} failed",
            index + 1,
            outcome.applied,
            outcome.already,
            outcome.failures.len()
        ));
        bar.inc(chunk.len() as u64);
        applied += outcome.applied;
        already += outcome.already;
        failures.extend(outcome.failures);
    }
    bar.finish_and_clear();
    failures.sort_by(|a, b| (&a.id, &a.module_id).cmp(&(&b.id, &b.module_id)));
    let summary = json!({
        "total": total,
        "applied": applied,
        "alreadyDone": already,
        "failed": failures.len(),
        "failures": failures.iter().map(|f| json!({
            "id": f.id,
            "moduleId": f.module_id,
            "errorCode": f.code,
            "errorStatus": f.message,
        })).collect::<Vec<_>>(),
    });
    cx.printer.print(summary)?;
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::BulkIncomplete {
            failed: failures.len(),
            total,
        })
    }
}

/// Reads and checks every line: a JSON object with a valid `id` (and `moduleId`), no
/// identity twice; entries without `importMode` get `mode`.
fn read_entries(file: &Path, mode: BulkMode) -> Result<Vec<ExportImportDevice>> {
    let name = file.display().to_string();
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|source| CliError::File {
        path: name.clone(),
        source,
    })?;
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = |what: String| CliError::usage(format!("{name}:{}: {what}", n + 1));
        if line.trim().is_empty() {
            continue;
        }
        let mut entry: ExportImportDevice = serde_json::from_str(line).map_err(|e| {
            at(format!(
                "not an identity ({e}); each line is one JSON object like {{\"id\": \"sensor-1\"}}"
            ))
        })?;
        let id = entry.id.clone().ok_or_else(|| at("no \"id\"".into()))?;
        iothub_auth::ids::check_device_id(&id).map_err(|e| at(format!("id {id:?}: {e}")))?;
        if let Some(m) = &entry.module_id {
            iothub_auth::ids::check_module_id(m).map_err(|e| at(format!("moduleId {m:?}: {e}")))?;
        }
        if !seen.insert((id.clone(), entry.module_id.clone())) {
            return Err(at(format!("{id:?} appears twice; give each identity once")));
        }
        entry.import_mode.get_or_insert(match mode {
            BulkMode::Create => ImportMode::Create,
            BulkMode::Update => ImportMode::Update,
        });
        entries.push(entry);
    }
    if entries.is_empty() {
        return Err(CliError::usage(format!(
            "{name}: no identities in the file"
        )));
    }
    Ok(entries)
}

/// One call, and the read-back of identities it found already there.
async fn apply(registry: &RegistryManager, chunk: &[ExportImportDevice]) -> ChunkOutcome {
    let mut outcome = ChunkOutcome::default();
    let result = match registry.bulk_create_or_update_devices(chunk.to_vec()).await {
        Ok(result) => result,
        Err(e) => {
            let code = e.code().map(|c| c.as_str().to_owned()).unwrap_or_default();
            let mut message = e.to_string();
            if e.may_have_been_applied() {
                message.push_str(" (the call may have been applied: re-run to check)");
            }
            outcome.failures = chunk
                .iter()
                .map(|entry| Failure {
                    id: entry.id.clone().unwrap_or_default(),
                    module_id: entry.module_id.clone(),
                    code: code.clone(),
                    message: message.clone(),
                })
                .collect();
            return outcome;
        }
    };
    let mut failed = 0;
    for error in &result.errors {
        let id = error.device_id.clone().unwrap_or_default();
        let code = error
            .error_code
            .as_ref()
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default();
        let entry = chunk
            .iter()
            .find(|e| e.id.as_deref() == Some(&id) && e.module_id == error.module_id);
        let mut message = error.error_status.clone().unwrap_or_default();
        if code.contains("AlreadyExists")
            && let Some(entry) = entry
        {
            if same_content(registry, entry).await {
                outcome.already += 1;
                continue;
            }
            message = format!(
                "{message} It differs from this entry (status, keys, thumbprints or \
                 capabilities); import with --mode update to replace it."
            );
        }
        failed += 1;
        outcome.failures.push(Failure {
            id,
            module_id: error.module_id.clone(),
            code,
            message,
        });
    }
    outcome.applied = chunk.len().saturating_sub(failed + outcome.already);
    outcome
}

/// Whether the identity in the hub already has what `entry` asks for (the fields it gives;
/// keys it leaves to the hub may be any).
async fn same_content(registry: &RegistryManager, entry: &ExportImportDevice) -> bool {
    let id = entry.id.clone().unwrap_or_default();
    let current: Value = match &entry.module_id {
        Some(m) => match registry.get_module(&id, m).await {
            Ok(module) => serde_json::to_value(module).unwrap_or_default(),
            Err(_) => return false,
        },
        None => match registry.get_device(&id).await {
            Ok(device) => serde_json::to_value(device).unwrap_or_default(),
            Err(_) => return false,
        },
    };
    let status = entry.status.clone().unwrap_or(DeviceStatus::Enabled);
    if entry.module_id.is_none() && current["status"] != status.as_str() {
        return false;
    }
    if let Some(reason) = &entry.status_reason
        && current["statusReason"] != reason.as_str()
    {
        return false;
    }
    if let Some(edge) = entry.capabilities.as_ref().and_then(|c| c.iot_edge)
        && current["capabilities"]["iotEdge"] != edge
    {
        return false;
    }
    if let Some(auth) = &entry.authentication {
        let wanted = serde_json::to_value(auth).unwrap_or_default();
        let have = &current["authentication"];
        let kind = auth.type_.clone().unwrap_or(AuthenticationType::Sas);
        if have["type"] != kind.as_str() {
            return false;
        }
        // Only the keys and thumbprints the entry gives are compared.
        for section in ["symmetricKey", "x509Thumbprint"] {
            if let Value::Object(given) = &wanted[section] {
                for (k, v) in given {
                    let empty = v.is_null() || v.as_str().is_some_and(str::is_empty);
                    if !empty && &have[section][k] != v {
                        return false;
                    }
                }
            }
        }
    }
    true
}
