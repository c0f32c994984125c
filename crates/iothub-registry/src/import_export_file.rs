//! The files of import and export jobs: `devices.txt`, one `ExportImportDevice` JSON object
//! per line, written for an import and read back from an export, streaming.
//!
//! The helpers take and give bytes, not blobs: upload and download with whatever blob client
//! you use (`azure_storage_blob`, a CLI, a pre-signed URL and reqwest). The writers take any
//! iterator of devices (every import mode: `create`, `update`, `updateIfMatchETag`, `delete`,
//! `deleteIfMatchETag`, `updateTwin`, `updateTwinIfMatchETag`) and write into any tokio
//! `AsyncWrite`, or produce a stream of `Bytes`; the readers take any `AsyncRead` or stream of
//! `Bytes` and yield devices one at a time, holding at most one line (bounded) in memory.
//!
//! ```no_run
//! use futures::TryStreamExt;
//! use iothub_registry::import_export_file::{read_export, write_import_file};
//! use iothub_registry::models::ImportMode;
//! use iothub_registry::{SasKeys, bulk_entry};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // An import file of a million devices, written straight to disk (or a blob upload).
//! let devices = (0..1_000_000).map(|i| bulk_entry::create(format!("sensor-{i}"), SasKeys::generated()));
//! let mut file = tokio::fs::File::create("devices.txt").await?;
//! let lines = write_import_file(&mut file, devices).await?;
//! println!("{lines} devices to import");
//!
//! // An export read back, one device at a time.
//! let export = tokio::fs::File::open("exported.txt").await?;
//! let mut devices = std::pin::pin!(read_export(export));
//! while let Some(device) = devices.try_next().await? {
//!     println!("{:?} {:?}", device.id, device.status);
//! }
//! # Ok(()) }
//! ```

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, stream};
use iothub_rest_gen::types::ExportImportDevice;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::ids::{validate_device_id, validate_module_id};

/// The longest line the readers accept by default: 1 MiB. A device's line holds its identity
/// and twin (tags and desired and reported properties, each at most 32 KiB on the service), so
/// a longer line is not an export.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// The size of the chunks the writers hand on: 64 KiB.
const CHUNK_BYTES: usize = 64 * 1024;

/// Writes `devices` as an import file into `writer`, one JSON object per line, and flushes it.
/// Returns the number of lines written.
///
/// # Errors
///
/// [`Error::InvalidArgument`] (argument `devices`) for an entry without an id, or with an
/// invalid device or module id, naming the entry; what was written before it stays written.
/// [`Error::FileIo`] when the writer fails.
pub async fn write_import_file<W, I>(writer: &mut W, devices: I) -> Result<u64>
where
    W: AsyncWrite + Unpin + ?Sized,
    I: IntoIterator<Item = ExportImportDevice>,
{
    let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4096);
    let mut lines = 0u64;
    for device in devices {
        append_line(&mut buffer, &device, lines)?;
        lines += 1;
        if buffer.len() >= CHUNK_BYTES {
            writer.write_all(&buffer).await.map_err(Error::FileIo)?;
            buffer.clear();
        }
    }
    writer.write_all(&buffer).await.map_err(Error::FileIo)?;
    writer.flush().await.map_err(Error::FileIo)?;
    Ok(lines)
}

/// The import file of `devices` as a stream of chunks of about 64 KiB, each made when the
/// stream is polled: for blob clients that upload a stream. An invalid entry ends the stream
/// with [`Error::InvalidArgument`], as [`write_import_file`] reports it.
pub fn import_file_stream<I>(devices: I) -> impl Stream<Item = Result<Bytes>> + Send
where
    I: IntoIterator<Item = ExportImportDevice>,
    I::IntoIter: Send,
{
    let devices = devices.into_iter();
    stream::try_unfold(
        (devices, 0u64, false),
        |(mut devices, mut lines, done)| async move {
            if done {
                return Ok(None);
            }
            let mut buffer = Vec::with_capacity(CHUNK_BYTES + 4096);
            while buffer.len() < CHUNK_BYTES {
                match devices.next() {
                    Some(device) => {
                        append_line(&mut buffer, &device, lines)?;
                        lines += 1;
                    }
                    None => {
                        return Ok((!buffer.is_empty())
                            .then(|| (Bytes::from(buffer), (devices, lines, true))));
                    }
                }
            }
            Ok(Some((Bytes::from(buffer), (devices, lines, false))))
        },
    )
}

/// The whole import file of `devices` in memory, for blob clients that upload one body.
pub fn import_file_bytes<I>(devices: I) -> Result<Bytes>
where
    I: IntoIterator<Item = ExportImportDevice>,
{
    let mut buffer = Vec::new();
    for (entry, device) in devices.into_iter().enumerate() {
        append_line(&mut buffer, &device, entry as u64)?;
    }
    Ok(buffer.into())
}

/// Appends `device` and a newline, after checking it names a valid identity.
fn append_line(buffer: &mut Vec<u8>, device: &ExportImportDevice, entry: u64) -> Result<()> {
    let invalid = |reason: String| Error::InvalidArgument {
        argument: "devices",
        reason: format!("entry {entry}: {reason}"),
    };
    let id = device
        .id
        .as_deref()
        .ok_or_else(|| invalid("has no id".into()))?;
    validate_device_id(id).map_err(|e| invalid(e.to_string()))?;
    if let Some(module_id) = &device.module_id {
        validate_module_id(module_id).map_err(|e| invalid(e.to_string()))?;
    }
    // JSON escapes newlines inside strings, so one object is one line.
    serde_json::to_writer(&mut *buffer, device)
        .map_err(|e| invalid(format!("cannot be serialized: {e}")))?;
    buffer.push(b'\n');
    Ok(())
}

/// Reads an export file from `reader`, one device per line, with lines of at most
/// [`DEFAULT_MAX_LINE_BYTES`]; see [`read_export_stream_with_limit`].
pub fn read_export<R>(reader: R) -> impl Stream<Item = Result<ExportImportDevice>> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
{
    read_export_with_limit(reader, DEFAULT_MAX_LINE_BYTES)
}

/// [`read_export`] with another line limit.
pub fn read_export_with_limit<R>(
    reader: R,
    max_line_bytes: usize,
) -> impl Stream<Item = Result<ExportImportDevice>> + Send
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let chunks = stream::try_unfold(reader, |mut reader| async move {
        let mut chunk = BytesMut::with_capacity(CHUNK_BYTES);
        let read = reader.read_buf(&mut chunk).await?;
        Ok::<_, std::io::Error>((read > 0).then(|| (chunk.freeze(), reader)))
    });
    read_export_stream_with_limit(chunks, max_line_bytes)
}

/// Reads an export file from a stream of byte chunks (a blob download's body), one device per
/// line, with lines of at most [`DEFAULT_MAX_LINE_BYTES`].
pub fn read_export_stream<S, E>(chunks: S) -> impl Stream<Item = Result<ExportImportDevice>> + Send
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    read_export_stream_with_limit(chunks, DEFAULT_MAX_LINE_BYTES)
}

/// Reads an export file from a stream of byte chunks, one device per line, holding at most one
/// line of at most `max_line_bytes` (and one chunk) in memory.
///
/// A leading UTF-8 byte-order mark, `\r\n` line ends and blank lines are accepted. A line that
/// is not an `ExportImportDevice` yields [`Error::ExportLine`] naming it, and reading goes on
/// with the next line; a line longer than the limit yields [`Error::ExportLine`] and ends the
/// stream (where the next line starts is unknown without reading on without bound), as does a
/// failure of the source ([`Error::FileIo`]).
pub fn read_export_stream_with_limit<S, E>(
    chunks: S,
    max_line_bytes: usize,
) -> impl Stream<Item = Result<ExportImportDevice>> + Send
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let chunks = chunks.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.into())));
    let lines = Lines {
        chunks: Box::pin(chunks),
        buffer: Vec::new(),
        ready: VecDeque::new(),
        line: 0,
        max: max_line_bytes,
        finished: false,
        started: false,
    };
    stream::unfold(lines, |mut lines| async move {
        lines.next_device().await.map(|item| (item, lines))
    })
}

type Chunks = std::pin::Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Splits chunks into lines and decodes them.
struct Lines {
    chunks: Chunks,
    /// The start of a line whose end has not come yet.
    buffer: Vec<u8>,
    /// Decoded lines of the last chunk not yet handed out.
    ready: VecDeque<Result<ExportImportDevice>>,
    /// Lines seen so far.
    line: u64,
    max: usize,
    /// The source ended or failed, or a line was too long.
    finished: bool,
    /// Whether the first bytes (and a byte-order mark among them) have been seen.
    started: bool,
}

impl Lines {
    async fn next_device(&mut self) -> Option<Result<ExportImportDevice>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            match self.chunks.next().await {
                Some(Ok(chunk)) => self.split(&chunk),
                Some(Err(error)) => {
                    self.finished = true;
                    return Some(Err(Error::FileIo(error)));
                }
                None => {
                    self.finished = true;
                    if !self.buffer.is_empty() {
                        let line = std::mem::take(&mut self.buffer);
                        self.line += 1;
                        if let Some(item) = decode(&line, self.line) {
                            return Some(item);
                        }
                    }
                }
            }
        }
    }

    /// Queues the devices of the lines `chunk` completes, and keeps its unfinished end.
    fn split(&mut self, mut chunk: &[u8]) {
        if !self.started {
            // The byte-order mark may arrive split across chunks; wait for three bytes.
            self.buffer.extend_from_slice(chunk);
            if self.buffer.len() < 3 {
                return;
            }
            self.started = true;
            let start = if self.buffer.starts_with(b"\xEF\xBB\xBF") {
                3
            } else {
                0
            };
            let first = std::mem::take(&mut self.buffer);
            self.split(&first[start..]);
            return;
        }
        while let Some(end) = chunk.iter().position(|&b| b == b'\n') {
            self.line += 1;
            let item = if self.buffer.len() + end > self.max {
                Some(Err(self.too_long()))
            } else if self.buffer.is_empty() {
                decode(&chunk[..end], self.line)
            } else {
                self.buffer.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.buffer);
                decode(&line, self.line)
            };
            self.buffer.clear();
            chunk = &chunk[end + 1..];
            if let Some(item) = item {
                let fatal = item.is_err() && self.finished;
                self.ready.push_back(item);
                if fatal {
                    return;
                }
            }
        }
        if self.buffer.len() + chunk.len() > self.max {
            self.line += 1;
            let error = self.too_long();
            self.ready.push_back(Err(error));
            return;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The error for the current line, which ends the stream.
    fn too_long(&mut self) -> Error {
        self.finished = true;
        self.buffer = Vec::new();
        Error::ExportLine {
            line: self.line,
            reason: format!("is longer than {} bytes", self.max),
        }
    }
}

/// A line as a device; `None` for a blank line. The error says where the line is wrong, never
/// what it holds.
fn decode(line: &[u8], number: u64) -> Option<Result<ExportImportDevice>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(
        serde_json::from_slice(line).map_err(|error| Error::ExportLine {
            line: number,
            reason: format!(
                "is not an ExportImportDevice JSON object ({} error at column {})",
                match error.classify() {
                    serde_json::error::Category::Io => "read",
                    serde_json::error::Category::Syntax => "syntax",
                    serde_json::error::Category::Data => "data",
                    serde_json::error::Category::Eof => "truncated JSON",
                },
                error.column()
            ),
        }),
    )
}

#[cfg(test)]
mod tests {
    use futures::TryStreamExt;
    use iothub_rest_gen::types::{DeviceStatus, ImportMode, PropertyContainer};
    use serde_json::json;

    use super::*;
    use crate::{SasKeys, bulk_entry};

    const PRIMARY: &str = "AAECAwQFBgcICQoLDA0ODw==";
    const SECONDARY: &str = "EBESExQVFhcYGRobHB0eHw==";

    /// One device for every import mode.
    fn every_mode() -> Vec<ExportImportDevice> {
        let modes = [
            ImportMode::Create,
            ImportMode::Update,
            ImportMode::UpdateIfMatchETag,
            ImportMode::Delete,
            ImportMode::DeleteIfMatchETag,
            ImportMode::UpdateTwin,
            ImportMode::UpdateTwinIfMatchETag,
        ];
        modes
            .into_iter()
            .enumerate()
            .map(|(i, mode)| {
                let mut device =
                    bulk_entry::create(format!("d-{i}"), SasKeys::new(PRIMARY, SECONDARY));
                device.import_mode = Some(mode);
                device.status = Some(DeviceStatus::Enabled);
                device.e_tag = Some("MQ==".into());
                device.twin_e_tag = Some("AAAAAAAAAAE=".into());
                device.tags = json!({ "note": "line\nbreak" })
                    .as_object()
                    .unwrap()
                    .clone();
                device.properties = Some(PropertyContainer {
                    desired: json!({ "interval": i }).as_object().unwrap().clone(),
                    reported: Default::default(),
                });
                device
            })
            .collect()
    }

    async fn read_all(bytes: &[u8], chunk: usize, max: usize) -> Vec<Result<ExportImportDevice>> {
        let chunks: Vec<std::io::Result<Bytes>> = bytes
            .chunks(chunk.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        read_export_stream_with_limit(stream::iter(chunks), max)
            .collect()
            .await
    }

    #[tokio::test]
    async fn every_import_mode_round_trips_through_every_writer_and_reader() {
        let devices = every_mode();
        let mut written = Vec::new();
        let lines = write_import_file(&mut written, devices.clone())
            .await
            .unwrap();
        assert_eq!(lines, 7);
        assert_eq!(written.iter().filter(|&&b| b == b'\n').count(), 7);
        let first: serde_json::Value =
            serde_json::from_slice(written.split(|&b| b == b'\n').next().unwrap()).unwrap();
        assert_eq!(first["importMode"], "create");
        assert_eq!(
            first["authentication"]["symmetricKey"]["primaryKey"],
            PRIMARY
        );
        assert_eq!(written, import_file_bytes(devices.clone()).unwrap());
        let streamed: Vec<Bytes> = import_file_stream(devices.clone())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(streamed.concat(), written);
        // Every chunking of the file reads back the same devices.
        for chunk in [1, 2, 3, 7, 100, written.len()] {
            let read: Vec<_> = read_all(&written, chunk, DEFAULT_MAX_LINE_BYTES)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(read, devices, "chunks of {chunk}");
        }
        let read: Vec<_> = read_export(std::io::Cursor::new(written))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(read, devices);
    }

    #[tokio::test]
    async fn large_files_are_chunked() {
        let devices = (0..2_000).map(|i| bulk_entry::delete(format!("device-{i:05}")));
        let chunks: Vec<Bytes> = import_file_stream(devices).try_collect().await.unwrap();
        assert!(chunks.len() > 1);
        assert!(
            chunks
                .iter()
                .all(|c| c.len() < CHUNK_BYTES + 4096 && c.ends_with(b"\n"))
        );
    }

    #[tokio::test]
    async fn invalid_entries_are_named_and_nothing_after_them_is_written() {
        let devices = vec![bulk_entry::delete("ok"), ExportImportDevice::default()];
        let mut written = Vec::new();
        let error = write_import_file(&mut written, devices.clone())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("entry 1: has no id"), "{error}");
        assert!(import_file_bytes(devices).is_err());
        let bad_id = vec![bulk_entry::delete("a b")];
        let error: Vec<_> = import_file_stream(bad_id).collect().await;
        assert!(matches!(
            &error[0],
            Err(Error::InvalidArgument {
                argument: "devices",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn bom_crlf_blank_lines_and_a_last_line_without_newline() {
        let text = "\u{FEFF}{\"id\":\"a\"}\r\n\r\n   \n{\"id\":\"b\",\"status\":\"disabled\"}";
        for chunk in [1, 2, 4, 64] {
            let read: Vec<_> = read_all(text.as_bytes(), chunk, 64)
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            let ids: Vec<_> = read.iter().map(|d| d.id.clone().unwrap()).collect();
            assert_eq!(ids, ["a", "b"], "chunks of {chunk}");
            assert_eq!(read[1].status, Some(DeviceStatus::Disabled));
        }
        assert!(read_all(b"", 4, 64).await.is_empty());
        assert!(read_all(b"\n\n", 4, 64).await.is_empty());
    }

    #[tokio::test]
    async fn a_malformed_line_is_named_without_its_content_and_reading_goes_on() {
        let text = format!(
            "{{\"id\":\"a\"}}\n{{\"id\":\"b\",\"authentication\":{{\"symmetricKey\":{{\"primaryKey\":\"{PRIMARY}\"\n[1,2]\n{{\"id\":\"c\"}}\n"
        );
        let read = read_all(text.as_bytes(), 5, 1024).await;
        assert_eq!(read.len(), 4);
        assert_eq!(read[0].as_ref().unwrap().id.as_deref(), Some("a"));
        for (item, line) in [(&read[1], 2), (&read[2], 3)] {
            match item {
                Err(Error::ExportLine { line: l, reason }) => {
                    assert_eq!(*l, line);
                    assert!(!reason.contains(PRIMARY), "{reason}");
                    let shown = item.as_ref().unwrap_err().to_string();
                    assert!(
                        shown.starts_with(&format!("line {line} of the export")),
                        "{shown}"
                    );
                    assert!(!shown.contains(PRIMARY), "{shown}");
                }
                other => panic!("line {line}: {other:?}"),
            }
        }
        assert_eq!(read[3].as_ref().unwrap().id.as_deref(), Some("c"));
    }

    #[tokio::test]
    async fn a_line_over_the_limit_ends_the_stream_without_reading_it_whole() {
        let long = format!(
            "{{\"id\":\"a\"}}\n{{\"id\":\"{}\"}}\n{{\"id\":\"c\"}}\n",
            "x".repeat(500)
        );
        for chunk in [1, 16, 64, 4096] {
            let read = read_all(long.as_bytes(), chunk, 100).await;
            assert_eq!(read.len(), 2, "chunks of {chunk}");
            assert!(read[0].is_ok());
            match &read[1] {
                Err(Error::ExportLine { line: 2, reason }) => {
                    assert!(reason.contains("longer than 100 bytes"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        // Without any newline at all, too.
        let endless = "x".repeat(1_000);
        let read = read_all(endless.as_bytes(), 64, 100).await;
        assert!(matches!(
            &read[..],
            [Err(Error::ExportLine { line: 1, .. })]
        ));
        // A line exactly at the limit passes.
        let exact = format!("{{\"id\":\"{}\"}}", "y".repeat(91));
        assert_eq!(exact.len(), 100);
        let read = read_all(format!("{exact}\n").as_bytes(), 7, 100).await;
        assert!(read[0].is_ok(), "{:?}", read[0]);
    }

    #[tokio::test]
    async fn a_failing_source_ends_the_stream_with_file_io() {
        let chunks = stream::iter(vec![
            Ok(Bytes::from_static(b"{\"id\":\"a\"}\n{\"id\"")),
            Err(std::io::Error::other("connection reset")),
        ]);
        let read: Vec<_> = read_export_stream(chunks).collect().await;
        assert_eq!(read.len(), 2);
        assert!(matches!(read[1], Err(Error::FileIo(_))));
    }
}
