//! Import and export jobs against Azure Blob Storage (or Azurite), through the Azure SDK's
//! `azure_storage_blob`: a `BlobContainerClient` from each container SAS URI the job names.
//!
//! Memory stays bounded whatever the registry's or the blob's size: an export is written as
//! blocks of at most [`BLOCK_BYTES`] (staged, then committed as one blob), an import is read
//! as a stream and applied [`CHUNK`] lines at a time, a line being at most [`MAX_LINE_BYTES`].
//! Failed import lines go to `importErrors.log` in the output container, one JSON object per
//! line (`{"errorCode", "errorStatus", "deviceId", "moduleId"}`), the shape of the C# v2
//! SDK's `ImportJobError`.

use std::pin::Pin;
use std::sync::Arc;

use azure_core::http::{ExponentialRetryOptions, RequestContent, RetryOptions, Url};
use azure_storage_blob::models::BlockLookupList;
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions, BlockBlobClient};
use bytes::Bytes;
use chrono::Utc;
use futures_core::Stream;
use iothub_rest_gen::types::{self as wire, JobStatus, JobType};
use iothub_rest_gen::{IotDateTime, SasUri, redact_secrets};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::hub::Shared;
use crate::rest::devices::apply_bulk_entry;
use crate::state::configurations::render as render_configuration;
use crate::state::identity::{check_device_id, check_module_id, parse_model};
use crate::state::render::render_twin;
use crate::state::store::DeviceEntry;

/// Bytes of an export block (and of `importErrors.log` blocks) before it is staged.
const BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// Import lines applied in one transaction (the bulk API's limit).
const CHUNK: usize = 100;
/// The longest import line taken; a longer one is an error line.
const MAX_LINE_BYTES: usize = 1024 * 1024;
/// The most error lines `importErrors.log` gets (the rest are counted in the job's
/// failure reason).
const MAX_ERROR_LINES: usize = 100_000;

/// Why a job stopped: a message for `failureReason` (secrets already redacted), or
/// cancellation.
enum Stop {
    Failed(String),
    Cancelled,
}

fn storage_error(what: &str, e: impl std::fmt::Display) -> Stop {
    Stop::Failed(redact_secrets(&format!("{what}: {e}")))
}

/// Runs an `enqueued` import or export job to its end.
pub(super) async fn run(shared: &Arc<Shared>, id: &str, mut shutdown: watch::Receiver<bool>) {
    let jobs = &shared.jobs;
    let Some(props) = jobs.import_export(id) else {
        return;
    };
    if props.status != Some(JobStatus::Enqueued) {
        return;
    }
    let started = jobs.update_import_export(id, |p| {
        if p.status == Some(JobStatus::Enqueued) {
            p.status = Some(JobStatus::Running);
            p.start_time_utc = Some(IotDateTime::from(Utc::now()));
        }
    });
    if started.map_or(true, |p| p.status != Some(JobStatus::Running)) {
        return;
    }
    tracing::info!(
        job = id,
        kind = props.type_.as_ref().map(JobType::as_str),
        output = props
            .output_blob_container_uri
            .as_ref()
            .map(SasUri::redacted),
        "import/export job running"
    );
    let work = async {
        match props.type_ {
            Some(JobType::Import) => import(shared, id, &props).await,
            _ => export(shared, id, &props).await,
        }
    };
    let stopped = tokio::select! {
        result = work => result,
        _ = shutdown.changed() => return,
    };
    let _ = jobs.update_import_export(id, |p| {
        if p.status != Some(JobStatus::Running) {
            return;
        }
        p.end_time_utc = Some(IotDateTime::from(Utc::now()));
        match stopped {
            Ok(()) => {
                p.status = Some(JobStatus::Completed);
                p.progress = Some(100);
            }
            Err(Stop::Failed(reason)) => {
                tracing::warn!(job = id, %reason, "import/export job failed");
                p.status = Some(JobStatus::Failed);
                p.failure_reason = Some(reason);
            }
            Err(Stop::Cancelled) => p.status = Some(JobStatus::Cancelled),
        }
    });
}

/// A container client from a SAS URI (the URI is used as given; errors are redacted).
fn container(uri: Option<&SasUri>, which: &str) -> Result<BlobContainerClient, Stop> {
    let uri = uri.ok_or_else(|| Stop::Failed(format!("The job has no {which}")))?;
    let url = Url::parse(uri.expose_secret()).map_err(|e| {
        Stop::Failed(format!(
            "The {which} {} is not a valid URL: {e}",
            uri.redacted()
        ))
    })?;
    // Retries as the SDK does, but give up on unreachable storage within seconds (the
    // default keeps trying for a minute): the job then fails, saying why.
    let mut options = BlobContainerClientOptions::default();
    options.client_options.retry = RetryOptions::exponential(ExponentialRetryOptions {
        initial_delay: azure_core::time::Duration::milliseconds(200),
        max_retries: 3,
        max_total_elapsed: azure_core::time::Duration::seconds(15),
        max_delay: azure_core::time::Duration::seconds(5),
    });
    BlobContainerClient::new(url, None, Some(options)).map_err(|e| storage_error(which, e))
}

/// A block blob written a block at a time.
struct BlockWriter {
    blob: BlockBlobClient,
    name: String,
    buffer: Vec<u8>,
    blocks: Vec<Vec<u8>>,
}

impl BlockWriter {
    fn new(container: &BlobContainerClient, name: &str) -> Self {
        Self {
            blob: container.blob_client(name).block_blob_client(),
            name: name.to_owned(),
            buffer: Vec::new(),
            blocks: Vec::new(),
        }
    }

    /// Appends one line (a newline is added).
    async fn line(&mut self, line: &[u8]) -> Result<(), Stop> {
        self.buffer.extend_from_slice(line);
        self.buffer.push(b'\n');
        if self.buffer.len() >= BLOCK_BYTES {
            self.stage().await?;
        }
        Ok(())
    }

    async fn stage(&mut self) -> Result<(), Stop> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        // Block ids of one blob must all have the same length.
        let block_id = format!("block-{:010}", self.blocks.len()).into_bytes();
        let body = Bytes::from(std::mem::take(&mut self.buffer));
        let len = body.len() as u64;
        self.blob
            .stage_block(&block_id, len, body.into(), None)
            .await
            .map_err(|e| storage_error(&format!("Writing {}", self.name), e))?;
        self.blocks.push(block_id);
        Ok(())
    }

    /// Stages what is left and commits every block as the blob.
    async fn finish(mut self) -> Result<(), Stop> {
        self.stage().await?;
        let list = BlockLookupList {
            latest: Some(self.blocks),
            ..Default::default()
        };
        let content: RequestContent<BlockLookupList, _> = list
            .try_into()
            .map_err(|e| storage_error(&format!("Writing {}", self.name), e))?;
        self.blob
            .commit_block_list(content, None)
            .await
            .map_err(|e| storage_error(&format!("Writing {}", self.name), e))?;
        Ok(())
    }
}

/// The export line of a device (`mid == None`) or one of its modules, as the service's
/// export writes it: identity, keys unless excluded, twin tags and properties.
fn export_line(
    entry: &DeviceEntry,
    mid: Option<&str>,
    exclude_keys: bool,
) -> wire::ExportImportDevice {
    let twin = render_twin(entry, mid);
    let tags = twin
        .get("tags")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let properties = twin.get("properties").map(|p| wire::PropertyContainer {
        desired: p
            .get("desired")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
        reported: p
            .get("reported")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default(),
    });
    let twin_etag = twin.get("etag").and_then(Value::as_str).map(str::to_owned);
    let strip = |auth: Option<wire::AuthenticationMechanism>| {
        auth.map(|mut a| {
            if exclude_keys && let Some(keys) = &mut a.symmetric_key {
                keys.primary_key = None;
                keys.secondary_key = None;
            }
            a
        })
    };
    let d = &entry.device;
    match mid.and_then(|m| entry.modules.get(m)) {
        None => wire::ExportImportDevice {
            id: d.device_id.clone(),
            e_tag: d.etag.clone(),
            status: d.status.clone(),
            status_reason: d.status_reason.clone(),
            authentication: strip(d.authentication.clone()),
            capabilities: d.capabilities.clone(),
            device_scope: d.device_scope.clone(),
            parent_scopes: d.parent_scopes.clone(),
            twin_e_tag: twin_etag,
            tags,
            properties,
            ..Default::default()
        },
        Some(m) => wire::ExportImportDevice {
            id: d.device_id.clone(),
            module_id: m.module.module_id.clone(),
            e_tag: m.module.etag.clone(),
            authentication: strip(m.module.authentication.clone()),
            twin_e_tag: twin_etag,
            tags,
            properties,
            ..Default::default()
        },
    }
}

fn progress(done: usize, total: usize) -> i32 {
    let percent = done.saturating_mul(100) / total.max(1);
    i32::try_from(percent.min(99)).unwrap_or(99)
}

/// Writes `devices.txt` (or `outputBlobName`) and, when asked, the configurations.
async fn export(shared: &Shared, id: &str, props: &wire::JobProperties) -> Result<(), Stop> {
    let container = container(
        props.output_blob_container_uri.as_ref(),
        "outputBlobContainerUri",
    )?;
    let exclude_keys = props.exclude_keys_in_export.unwrap_or(false);
    let name = props.output_blob_name.as_deref().unwrap_or("devices.txt");
    let snapshot = shared.store.read();
    let total = snapshot.len();
    let mut writer = BlockWriter::new(&container, name);
    for (index, (_, entry)) in snapshot.iter().enumerate() {
        if shared.jobs.import_export_cancelled(id) {
            return Err(Stop::Cancelled);
        }
        let mids = std::iter::once(None).chain(entry.modules.keys().map(|m| Some(m.as_str())));
        for mid in mids {
            let line = serde_json::to_vec(&export_line(entry, mid, exclude_keys))
                .map_err(|e| Stop::Failed(format!("A device could not be written: {e}")))?;
            writer.line(&line).await?;
        }
        if index % 1000 == 999 {
            let _ = shared.jobs.update_import_export(id, |p| {
                p.progress = Some(progress(index + 1, total));
            });
        }
    }
    writer.finish().await?;
    if props.include_configurations == Some(true) {
        let name = props
            .configurations_blob_name
            .as_deref()
            .unwrap_or("configurations.txt");
        let mut writer = BlockWriter::new(&container, name);
        for config in snapshot.configurations().values() {
            let line = serde_json::to_vec(&render_configuration(
                config,
                (0, 0),
                std::collections::BTreeMap::new(),
            ))
            .map_err(|e| Stop::Failed(format!("A configuration could not be written: {e}")))?;
            writer.line(&line).await?;
        }
        writer.finish().await?;
    }
    Ok(())
}

/// One import line, parsed and checked, or the error line it gets.
fn parse_line(number: usize, line: &[u8]) -> Result<wire::ExportImportDevice, Value> {
    let bad = |message: String| {
        json!({
            "errorCode": "ArgumentInvalid",
            "errorStatus": format!("Line {number}: {message}"),
        })
    };
    let mut value: Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("not a JSON object: {e}")))?;
    // A device read back from GET (or written by Node) may spell the etag `etag`.
    if let Value::Object(map) = &mut value
        && !map.contains_key("eTag")
        && let Some(etag) = map.remove("etag")
    {
        map.insert("eTag".into(), etag);
    }
    let entry: wire::ExportImportDevice =
        parse_model(&value, "import device").map_err(|e| bad(e.message))?;
    let id = entry
        .id
        .as_deref()
        .ok_or_else(|| bad("the id is missing".into()))?;
    check_device_id(id).map_err(|e| bad(e.message))?;
    if let Some(mid) = &entry.module_id {
        check_module_id(mid).map_err(|e| bad(e.message))?;
    }
    Ok(entry)
}

/// A line of the chunk being read: an entry to apply, or the error line it already is.
type Line = Result<wire::ExportImportDevice, Value>;

/// Applies a chunk of import lines in one transaction, each line on its own (a failed line
/// is undone and reported); returns the error lines, in line order.
fn apply_chunk(shared: &Shared, chunk: &[Line]) -> Result<Vec<Value>, Stop> {
    let mut tx = shared.store.begin();
    let mut errors = Vec::new();
    for line in chunk {
        let entry = match line {
            Ok(entry) => entry,
            Err(error) => {
                errors.push(error.clone());
                continue;
            }
        };
        let savepoint = tx.savepoint(entry.id.as_deref().unwrap_or_default());
        if let Err(e) = apply_bulk_entry(&mut tx, entry) {
            tx.rollback_to(savepoint);
            let mut error = json!({
                "errorCode": e.name,
                "errorStatus": e.message,
                "deviceId": entry.id,
            });
            if let Some(mid) = &entry.module_id {
                error["moduleId"] = json!(mid);
            }
            errors.push(error);
        }
    }
    tx.commit()
        .map_err(|e| Stop::Failed(format!("The registry could not be written: {}", e.message)))?;
    for entry in chunk.iter().filter_map(|l| l.as_ref().ok()) {
        let deleted = entry
            .import_mode
            .as_ref()
            .is_some_and(|m| m.as_str().to_ascii_lowercase().starts_with("delete"));
        if deleted && entry.module_id.is_none() {
            shared
                .methods
                .forget(entry.id.as_deref().unwrap_or_default());
        }
    }
    Ok(errors)
}

/// The error lines of an import, written to `importErrors.log` as they come (bounded).
struct ErrorLog {
    writer: Option<BlockWriter>,
    container: BlobContainerClient,
    written: usize,
    dropped: usize,
}

impl ErrorLog {
    async fn push(&mut self, error: &Value) -> Result<(), Stop> {
        if self.written >= MAX_ERROR_LINES {
            self.dropped += 1;
            return Ok(());
        }
        let writer = self
            .writer
            .get_or_insert_with(|| BlockWriter::new(&self.container, "importErrors.log"));
        writer.line(error.to_string().as_bytes()).await?;
        self.written += 1;
        Ok(())
    }
}

/// Reads `devices.txt` (or `inputBlobName`) as a stream and applies it a chunk at a time.
async fn import(shared: &Shared, id: &str, props: &wire::JobProperties) -> Result<(), Stop> {
    let input = container(
        props.input_blob_container_uri.as_ref(),
        "inputBlobContainerUri",
    )?;
    let output = container(
        props.output_blob_container_uri.as_ref(),
        "outputBlobContainerUri",
    )?;
    let name = props.input_blob_name.as_deref().unwrap_or("devices.txt");
    let download = input
        .blob_client(name)
        .download(None)
        .await
        .map_err(|e| storage_error(&format!("Reading {name}"), e))?;
    let total = download.properties.content_length.unwrap_or(0);
    let mut body = download.body;
    let mut log = ErrorLog {
        writer: None,
        container: output,
        written: 0,
        dropped: 0,
    };
    let mut line: Vec<u8> = Vec::new();
    let mut too_long = false;
    let mut number = 0usize;
    let mut read = 0u64;
    let mut chunk: Vec<Line> = Vec::with_capacity(CHUNK);
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut body).poll_next(cx)).await;
        let bytes = match next {
            None => None,
            Some(Ok(bytes)) => Some(bytes),
            Some(Err(e)) => return Err(storage_error(&format!("Reading {name}"), e)),
        };
        let end = bytes.is_none();
        let data = bytes.unwrap_or_default();
        read += data.len() as u64;
        let mut rest: &[u8] = &data;
        loop {
            let (piece, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], true),
                None => (rest, false),
            };
            if !too_long {
                if line.len() + piece.len() > MAX_LINE_BYTES {
                    too_long = true;
                    line.clear();
                } else {
                    line.extend_from_slice(piece);
                }
            }
            if !complete {
                break;
            }
            rest = &rest[piece.len() + 1..];
            number += 1;
            handle_line(number, &line, too_long, &mut chunk);
            line.clear();
            too_long = false;
            if chunk.len() >= CHUNK {
                apply_and_log(shared, id, &mut chunk, &mut log).await?;
                let _ = shared.jobs.update_import_export(id, |p| {
                    p.progress = Some(progress(
                        usize::try_from(read).unwrap_or(usize::MAX),
                        usize::try_from(total).unwrap_or(usize::MAX),
                    ));
                });
            }
        }
        if end {
            break;
        }
    }
    if !line.is_empty() || too_long {
        number += 1;
        handle_line(number, &line, too_long, &mut chunk);
    }
    apply_and_log(shared, id, &mut chunk, &mut log).await?;
    let (written, dropped) = (log.written, log.dropped);
    if let Some(writer) = log.writer {
        writer.finish().await?;
    }
    if dropped > 0 {
        return Err(Stop::Failed(format!(
            "{} lines failed; importErrors.log holds the first {written}",
            written + dropped
        )));
    }
    Ok(())
}

/// Adds a line to the chunk: its entry, or its error line (blank lines are skipped).
fn handle_line(number: usize, line: &[u8], too_long: bool, chunk: &mut Vec<Line>) {
    let text = line.strip_suffix(b"\r").unwrap_or(line);
    if too_long {
        chunk.push(Err(json!({
            "errorCode": "ArgumentInvalid",
            "errorStatus": format!("Line {number}: longer than {MAX_LINE_BYTES} bytes"),
        })));
        return;
    }
    if text.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    chunk.push(parse_line(number, text));
}

async fn apply_and_log(
    shared: &Shared,
    id: &str,
    chunk: &mut Vec<Line>,
    log: &mut ErrorLog,
) -> Result<(), Stop> {
    if shared.jobs.import_export_cancelled(id) {
        return Err(Stop::Cancelled);
    }
    if chunk.is_empty() {
        return Ok(());
    }
    let errors = apply_chunk(shared, chunk)?;
    chunk.clear();
    for error in &errors {
        log.push(error).await?;
    }
    Ok(())
}
