//! Durable storage in an embedded redb database, `registry.redb` in the data directory: one
//! row per device (identity, twin and modules as JSON), one per configuration (written in the
//! same transaction as the twins it changes), and the cloud-to-device queues (one
//! row per queued message, one per pending feedback record), each change written in one
//! fsynced transaction before it is acknowledged.
//!
//! The file is created readable by its owner only. A file that cannot be a database (empty,
//! cut short, not redb) is refused with a message saying how to recover, before redb sees it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::Error;
use crate::state::configurations::StoredConfiguration;
use crate::state::store::DeviceEntry;

const DEVICES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("devices");
/// Configurations (automatic device management, IoT Edge deployments), by id.
const CONFIGURATIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("configurations");
/// Queued cloud-to-device messages, by sequence number.
const C2D_MESSAGES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("c2d_messages");
/// Pending feedback records, by sequence number.
const C2D_FEEDBACK: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("c2d_feedback");

/// The database file's name in the data directory.
pub(crate) const FILE_NAME: &str = "registry.redb";

/// What a corrupt or damaged store needs, said once for every such error.
const RECOVER: &str = "the emulator does not start on it, so nothing in it is lost: restore \
                       the file from a backup, or move it away to start with an empty registry \
                       (the keys in policies.json and the certificates are kept)";

/// A change to the cloud-to-device rows: `Some` writes the row, `None` removes it.
#[derive(Debug, Default)]
pub(crate) struct C2dChanges {
    pub(crate) messages: Vec<(u64, Option<Vec<u8>>)>,
    pub(crate) feedback: Vec<(u64, Option<Vec<u8>>)>,
}

impl C2dChanges {
    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.feedback.is_empty()
    }
}

/// The stored cloud-to-device rows, in sequence order.
#[derive(Debug, Default)]
pub(crate) struct C2dRows {
    pub(crate) messages: Vec<(u64, Vec<u8>)>,
    pub(crate) feedback: Vec<(u64, Vec<u8>)>,
}

/// Import/export and scheduled jobs, by kind and id (`v1/{id}`, `v2/{id}`), each a JSON
/// document.
const JOBS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("jobs");

/// The database file under a data directory.
pub(crate) struct Persist {
    db: Database,
    path: PathBuf,
}

impl Persist {
    /// Opens (or creates, owner-only) `registry.redb` in `dir`, which must exist.
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        let path = dir.join(FILE_NAME);
        let store_error = |message: String| Error::Store {
            path: path.clone(),
            message,
        };
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_empty(dir, &path).map_err(|e| store_error(e.to_string()))?;
                std::fs::metadata(&path).map_err(io)?
            }
            Err(e) => return Err(io(e)),
        };
        if meta.len() == 0 {
            return Err(store_error(format!(
                "the file is empty (0 bytes): it holds no registry, not even an empty one; {RECOVER}"
            )));
        }
        check_layout(&path, meta.len())
            .map_err(|problem| store_error(format!("the file is damaged: {problem}; {RECOVER}")))?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        owner_only(&file).map_err(io)?;
        // check_layout rules out what redb is known to panic on; should it panic on some
        // other damage all the same, that is an error here too, not a crash.
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Database::builder().create_file(file)
        }));
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                return Err(store_error(format!(
                    "it is not a usable database ({e}); {RECOVER}"
                )));
            }
            Err(_) => {
                return Err(store_error(format!(
                    "the file is damaged (the database could not be read); {RECOVER}"
                )));
            }
        };
        let persist = Self { db, path };
        // Make sure the tables exist so that reads of an empty store succeed.
        persist.write(&BTreeMap::new(), &BTreeMap::new())?;
        persist.write_c2d(&C2dChanges::default())?;
        persist.write_jobs(&[])?;
        Ok(persist)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Store {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Every stored device.
    pub(crate) fn load(&self) -> Result<BTreeMap<String, DeviceEntry>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(DEVICES).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (key, value) =
                row.map_err(|e| self.err(format!("the file is damaged: {e}; {RECOVER}")))?;
            // The error's position only: its text could quote the row, keys included.
            let entry: DeviceEntry = serde_json::from_slice(value.value()).map_err(|e| {
                self.err(format!(
                    "device {:?} cannot be read (invalid at line {}, column {}); {RECOVER}",
                    key.value(),
                    e.line(),
                    e.column()
                ))
            })?;
            out.insert(key.value().to_owned(), entry);
        }
        Ok(out)
    }

    /// Every stored configuration.
    pub(crate) fn load_configurations(
        &self,
    ) -> Result<BTreeMap<String, StoredConfiguration>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CONFIGURATIONS).map_err(|e| self.err(e))?;
        let mut out = BTreeMap::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (key, value) =
                row.map_err(|e| self.err(format!("the file is damaged: {e}; {RECOVER}")))?;
            let config: StoredConfiguration =
                serde_json::from_slice(value.value()).map_err(|e| {
                    self.err(format!(
                        "configuration {:?} cannot be read (invalid at line {}, column {}); {RECOVER}",
                        key.value(),
                        e.line(),
                        e.column()
                    ))
                })?;
            out.insert(key.value().to_owned(), config);
        }
        Ok(out)
    }

    /// Writes (Some) or removes (None) devices and configurations in one durable
    /// transaction.
    pub(crate) fn write(
        &self,
        changes: &BTreeMap<String, Option<DeviceEntry>>,
        configs: &BTreeMap<String, Option<StoredConfiguration>>,
    ) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(CONFIGURATIONS).map_err(|e| self.err(e))?;
            for (id, config) in configs {
                match config {
                    Some(config) => {
                        let bytes = serde_json::to_vec(config).map_err(|e| self.err(e))?;
                        table
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        table.remove(id.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        {
            let mut table = tx.open_table(DEVICES).map_err(|e| self.err(e))?;
            for (id, entry) in changes {
                match entry {
                    Some(entry) => {
                        let bytes = serde_json::to_vec(entry).map_err(|e| self.err(e))?;
                        table
                            .insert(id.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        table.remove(id.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        // redb's default durability fsyncs on commit: once this returns, the write
        // survives a crash.
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every stored job, as (key, JSON document).
    pub(crate) fn load_jobs(&self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(JOBS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| self.err(e))? {
            let (key, value) =
                row.map_err(|e| self.err(format!("the file is damaged: {e}; {RECOVER}")))?;
            out.push((key.value().to_owned(), value.value().to_vec()));
        }
        Ok(out)
    }

    /// Writes (Some) or removes (None) jobs in one durable transaction.
    pub(crate) fn write_jobs(&self, rows: &[(String, Option<Vec<u8>>)]) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = tx.open_table(JOBS).map_err(|e| self.err(e))?;
            for (key, value) in rows {
                match value {
                    Some(bytes) => {
                        table
                            .insert(key.as_str(), bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        table.remove(key.as_str()).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// The stored cloud-to-device messages and feedback records.
    pub(crate) fn load_c2d(&self) -> Result<C2dRows, Error> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let mut rows = C2dRows::default();
        for (definition, out) in [
            (C2D_MESSAGES, &mut rows.messages),
            (C2D_FEEDBACK, &mut rows.feedback),
        ] {
            let table = tx.open_table(definition).map_err(|e| self.err(e))?;
            for row in table.iter().map_err(|e| self.err(e))? {
                let (key, value) =
                    row.map_err(|e| self.err(format!("the file is damaged: {e}; {RECOVER}")))?;
                out.push((key.value(), value.value().to_vec()));
            }
        }
        Ok(rows)
    }

    /// Applies cloud-to-device changes in one durable transaction.
    pub(crate) fn write_c2d(&self, changes: &C2dChanges) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        for (definition, rows) in [
            (C2D_MESSAGES, &changes.messages),
            (C2D_FEEDBACK, &changes.feedback),
        ] {
            let mut table = tx.open_table(definition).map_err(|e| self.err(e))?;
            for (key, value) in rows {
                match value {
                    Some(bytes) => {
                        table
                            .insert(*key, bytes.as_slice())
                            .map_err(|e| self.err(e))?;
                    }
                    None => {
                        table.remove(*key).map_err(|e| self.err(e))?;
                    }
                }
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }
}

/// Creates an empty database at `path`, owner-only: initialised under another name and
/// renamed into place, so that `registry.redb` is never seen half made (an empty file there
/// is refused).
fn create_empty(dir: &Path, path: &Path) -> Result<(), String> {
    let staging = dir.join(format!("{FILE_NAME}.new"));
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options
        .open(&staging)
        .map_err(|e| format!("{}: {e}", staging.display()))?;
    owner_only(&file).map_err(|e| format!("{}: {e}", staging.display()))?;
    let db = Database::builder()
        .create_file(file)
        .map_err(|e| format!("{}: {e}", staging.display()))?;
    drop(db);
    std::fs::rename(&staging, path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(dir) = File::open(dir) {
        // The rename itself is durable once the directory is synced.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Makes a file readable and writable by its owner only (it holds keys).
pub(crate) fn owner_only(file: &File) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode != 0o600 {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// The redb (file format 3) header: a magic number, then the page size and the region
/// layout, from which the file's length follows. redb asserts (panics) when a file is
/// shorter than its header says, so a file cut short is recognised here first. A test below
/// keeps this in step with the redb in use.
const REDB_MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
const PAGE_SIZE_OFFSET: usize = 12;
const LAYOUT_END: usize = PAGE_SIZE_OFFSET + 5 * 4;

fn check_layout(path: &Path, len: u64) -> Result<(), String> {
    use std::io::Read as _;
    let mut header = [0u8; LAYOUT_END];
    let mut file = File::open(path).map_err(|e| e.to_string())?;
    let read = file.read(&mut header).map_err(|e| e.to_string())?;
    if read < LAYOUT_END || header[..REDB_MAGIC.len()] != REDB_MAGIC {
        return Err(format!(
            "it is not a redb database (it does not start with redb's header; {len} bytes)"
        ));
    }
    let field = |i: usize| {
        let at = PAGE_SIZE_OFFSET + 4 * i;
        u64::from(u32::from_le_bytes([
            header[at],
            header[at + 1],
            header[at + 2],
            header[at + 3],
        ]))
    };
    let (page, region_header, region_data, full_regions, trailing) =
        (field(0), field(1), field(2), field(3), field(4));
    if page == 0 || !page.is_power_of_two() || full_regions == 0 && trailing == 0 {
        return Err("its header is not valid".to_owned());
    }
    // One page of super-header, the full regions, then a partial region if any.
    let expected = page
        + full_regions * (region_header + region_data) * page
        + if trailing > 0 {
            (region_header + trailing) * page
        } else {
            0
        };
    if len < expected {
        return Err(format!(
            "it is cut short ({len} bytes where its header says {expected}: was it copied \
             while the emulator was writing it, or the disk full?)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(dir: &Path) -> u64 {
        let p = Persist::open(dir).unwrap();
        let mut changes = BTreeMap::new();
        let store = crate::state::store::Store::open(None).unwrap();
        let mut tx = store.begin();
        for i in 0..200 {
            tx.put_device(
                &format!("d{i}"),
                &serde_json::json!({}),
                &crate::state::etag::IfMatch::Absent,
            )
            .unwrap();
        }
        tx.commit().unwrap();
        for (id, entry) in store.read().iter() {
            changes.insert(id.to_owned(), Some(entry.clone()));
        }
        p.write(&changes, &BTreeMap::new()).unwrap();
        drop(p);
        std::fs::metadata(dir.join(FILE_NAME)).unwrap().len()
    }

    #[test]
    fn a_store_cut_short_anywhere_is_refused_without_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let len = filled(dir.path());
        let path = dir.path().join(FILE_NAME);
        let full = std::fs::read(&path).unwrap();
        assert_eq!(
            Persist::open(dir.path()).unwrap().load().unwrap().len(),
            200
        );
        for cut in [0, 1, 9, 31, 100, 512, 4096, len / 4, len / 2, len - 1] {
            std::fs::write(&path, &full[..usize::try_from(cut).unwrap()]).unwrap();
            let e = Persist::open(dir.path())
                .err()
                .expect("a damaged store is refused")
                .to_string();
            assert!(e.contains(FILE_NAME), "{e}");
            assert!(e.contains("move it away"), "{e}");
            // Recognised before redb reads it (redb panics on a file cut short).
            assert!(
                ["empty (0 bytes)", "not a redb database", "cut short"]
                    .iter()
                    .any(|why| e.contains(why)),
                "cut at {cut}: {e}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn the_store_is_created_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        drop(Persist::open(dir.path()).unwrap());
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
