//! Durable registry storage in an embedded redb database: one row per device (identity,
//! twin and modules as JSON), written in one fsynced transaction per acknowledged write.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use crate::Error;
use crate::state::store::DeviceEntry;

const DEVICES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("devices");

/// The database file under a data directory.
pub(crate) struct Persist {
    db: Database,
    path: PathBuf,
}

impl Persist {
    /// Opens (or creates) `registry.redb` in `dir`.
    pub(crate) fn open(dir: &Path) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join("registry.redb");
        let db = Database::create(&path).map_err(|e| Error::Store {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let persist = Self { db, path };
        // Make sure the table exists so that reads of an empty store succeed.
        persist.write(&BTreeMap::new())?;
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
            let (key, value) = row.map_err(|e| self.err(e))?;
            let entry: DeviceEntry = serde_json::from_slice(value.value())
                .map_err(|e| self.err(format!("device {:?}: {e}", key.value())))?;
            out.insert(key.value().to_owned(), entry);
        }
        Ok(out)
    }

    /// Writes (Some) or removes (None) devices in one durable transaction.
    pub(crate) fn write(
        &self,
        changes: &BTreeMap<String, Option<DeviceEntry>>,
    ) -> Result<(), Error> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
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
}
