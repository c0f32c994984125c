//! The identity registry and twins: every write goes through a [`Tx`], which is durable
//! (when a data directory is set) before it is visible and before the caller answers.
//!
//! Readers never wait for a scan or a disk sync: they take a [`Snapshot`], an immutable view
//! of the registry that stays consistent for as long as they hold it. The registry is split
//! into shards by a hash of the device id; a committed transaction publishes a new snapshot
//! in which only the shards it touched are new (copied first if a reader still holds them),
//! so a long scan costs writers at most a copy of a shard.

use std::collections::btree_map;
use std::collections::{BTreeMap, BinaryHeap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError};

use chrono::Utc;
use iothub_rest_gen::IotDateTime;
use iothub_rest_gen::types::{self as wire, ConnectionState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::blocking::off_worker;
use super::identity::{DeviceInput, ModuleInput, default_auth};
use super::render::render_twin;
use crate::rest::errors::ServiceError;
use crate::state::configurations::{StoredConfiguration, Targeting, apply_modules_content};
use crate::state::etag::{IfMatch, identity_etag};
use crate::state::persist::Persist;
use crate::state::twin::{TwinChange, TwinState};

/// System modules the service creates with every IoT Edge device.
const EDGE_MODULES: [&str; 2] = ["$edgeAgent", "$edgeHub"];

/// The prefix of the device scope the hub gives an IoT Edge device.
const EDGE_SCOPE_PREFIX: &str = "ms-azure-iot-edge://";

/// How many shards the registry is split into.
const SHARDS: usize = 64;

/// A device: its identity, its twin and its modules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DeviceEntry {
    pub(crate) device: wire::Device,
    pub(crate) twin: TwinState,
    pub(crate) modules: BTreeMap<String, ModuleEntry>,
}

/// A module identity and its twin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ModuleEntry {
    pub(crate) module: wire::Module,
    pub(crate) twin: TwinState,
}

type Shard = BTreeMap<Arc<str>, Arc<DeviceEntry>>;

fn shard_of(id: &str) -> usize {
    // FNV-1a: cheap and stable.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % SHARDS as u64).unwrap_or(0)
}

/// The hub's configurations, by id.
pub(crate) type Configurations = BTreeMap<String, Arc<StoredConfiguration>>;

/// An immutable, consistent view of the registry and the configurations; cheap to take and
/// to hold.
#[derive(Clone)]
pub(crate) struct Snapshot {
    shards: Arc<Vec<Arc<Shard>>>,
    configs: Arc<Configurations>,
}

impl Snapshot {
    fn from_map(devices: BTreeMap<String, DeviceEntry>, configs: Configurations) -> Self {
        let mut shards = vec![Shard::new(); SHARDS];
        for (id, entry) in devices {
            shards[shard_of(&id)].insert(Arc::from(id), Arc::new(entry));
        }
        Self {
            shards: Arc::new(shards.into_iter().map(Arc::new).collect()),
            configs: Arc::new(configs),
        }
    }

    /// The configurations, by id.
    pub(crate) fn configurations(&self) -> &Configurations {
        &self.configs
    }

    /// The device with this id.
    pub(crate) fn get(&self, id: &str) -> Option<&DeviceEntry> {
        self.shards[shard_of(id)].get(id).map(|e| &**e)
    }

    /// Whether a device has this id.
    pub(crate) fn contains_key(&self, id: &str) -> bool {
        self.shards[shard_of(id)].contains_key(id)
    }

    /// How many devices there are.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether there is no device.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// Every device, in id order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &DeviceEntry> {
        self.iter().map(|(_, e)| e)
    }

    /// Every (id, device), in id order.
    pub(crate) fn iter(&self) -> Iter<'_> {
        self.range_from(Bound::Unbounded)
    }

    /// The devices from `start` on, in id order.
    pub(crate) fn range_from(&self, start: Bound<&str>) -> Iter<'_> {
        let mut heads = BinaryHeap::with_capacity(SHARDS);
        for shard in self.shards.iter() {
            let mut rest = shard.range::<str, _>((start, Bound::Unbounded));
            if let Some((key, entry)) = rest.next() {
                heads.push(Head { key, entry, rest });
            }
        }
        Iter { heads }
    }
}

impl std::ops::Index<&str> for Snapshot {
    type Output = DeviceEntry;

    fn index(&self, id: &str) -> &DeviceEntry {
        self.get(id).unwrap_or_else(|| panic!("no device {id}"))
    }
}

/// The devices of a [`Snapshot`] in id order: a merge of the shards.
pub(crate) struct Iter<'a> {
    heads: BinaryHeap<Head<'a>>,
}

struct Head<'a> {
    key: &'a Arc<str>,
    entry: &'a Arc<DeviceEntry>,
    rest: btree_map::Range<'a, Arc<str>, Arc<DeviceEntry>>,
}

impl PartialEq for Head<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Head<'_> {}

impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head<'_> {
    /// Reversed: the heap yields the smallest key first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.key.cmp(self.key)
    }
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a DeviceEntry);

    fn next(&mut self) -> Option<Self::Item> {
        let mut head = self.heads.pop()?;
        let item = (&**head.key, &**head.entry);
        if let Some((key, entry)) = head.rest.next() {
            head.key = key;
            head.entry = entry;
            self.heads.push(head);
        }
        Some(item)
    }
}

/// The registry: in memory, optionally backed by a durable store.
pub(crate) struct Store {
    /// The latest published snapshot; locked only to take or to replace it.
    current: RwLock<Snapshot>,
    /// Serialises transactions.
    writer: Mutex<()>,
    persist: Option<Arc<Persist>>,
    /// The id of each device a commit changed (its twin, its modules, its connection), for
    /// connected devices that follow their twin (MQTT desired-property notifications).
    changes: tokio::sync::broadcast::Sender<Arc<str>>,
}

/// Changed device ids a slow follower may fall behind by before it is told it lagged.
const CHANGES_QUEUE: usize = 1024;

/// Timestamps as the service writes them in twin metadata.
pub(crate) fn now_string() -> String {
    crate::rest::errors::service_time(Utc::now())
}

fn generation_id() -> String {
    // The service's look: an 18-digit decimal number.
    fastrand::u64(100_000_000_000_000_000..1_000_000_000_000_000_000).to_string()
}

impl Store {
    /// A store in memory, or loaded from (and written through to) `persist`.
    pub(crate) fn open(persist: Option<Arc<Persist>>) -> Result<Self, crate::Error> {
        let (mut devices, configs) = match &persist {
            Some(p) => (p.load()?, p.load_configurations()?),
            None => (BTreeMap::new(), BTreeMap::new()),
        };
        let configs = configs
            .into_iter()
            .map(|(id, c)| (id, Arc::new(c)))
            .collect();
        // Nothing is connected to a freshly started hub.
        for entry in devices.values_mut() {
            disconnect_all(entry);
        }
        Ok(Self {
            current: RwLock::new(Snapshot::from_map(devices, configs)),
            writer: Mutex::new(()),
            persist,
            changes: tokio::sync::broadcast::Sender::new(CHANGES_QUEUE),
        })
    }

    /// The ids of devices changed by later commits. A receiver that lags behind is told so
    /// and must look at every device it follows.
    pub(crate) fn watch_changes(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.changes.subscribe()
    }

    /// A consistent view of the registry, unaffected by later writes.
    pub(crate) fn read(&self) -> Snapshot {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Starts a write transaction; writers are serialised (a writer waiting for another
    /// waits off the async workers).
    pub(crate) fn begin(&self) -> Tx<'_> {
        let writer = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => {
                off_worker(|| self.writer.lock().unwrap_or_else(|e| e.into_inner()))
            }
        };
        Tx {
            _writer: writer,
            store: self,
            base: self.read(),
            staged: BTreeMap::new(),
            staged_configs: BTreeMap::new(),
            retarget_all: false,
            now: now_string(),
        }
    }

    /// Publishes committed changes: only the touched shards change, copied first if a
    /// reader still holds them.
    fn publish(
        &self,
        staged: BTreeMap<String, Option<DeviceEntry>>,
        staged_configs: BTreeMap<String, Option<StoredConfiguration>>,
    ) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if !staged_configs.is_empty() {
            let configs = Arc::make_mut(&mut current.configs);
            for (id, config) in staged_configs {
                match config {
                    Some(config) => {
                        configs.insert(id, Arc::new(config));
                    }
                    None => {
                        configs.remove(&id);
                    }
                }
            }
        }
        let shards = Arc::make_mut(&mut current.shards);
        let watched = self.changes.receiver_count() > 0;
        for (id, entry) in staged {
            if watched {
                let _ = self.changes.send(Arc::from(id.as_str()));
            }
            let shard = Arc::make_mut(&mut shards[shard_of(&id)]);
            match entry {
                Some(entry) => {
                    shard.insert(Arc::from(id), Arc::new(entry));
                }
                None => {
                    shard.remove(id.as_str());
                }
            }
        }
    }
}

fn disconnect_all(entry: &mut DeviceEntry) {
    entry.device.connection_state = Some(ConnectionState::Disconnected);
    for m in entry.modules.values_mut() {
        m.module.connection_state = Some(ConnectionState::Disconnected);
    }
}

/// The staged state of one device at a point in a transaction.
pub(crate) struct Savepoint {
    id: String,
    staged: Option<Option<DeviceEntry>>,
}

/// A set of changes applied together: staged on copies, made durable, then published.
pub(crate) struct Tx<'a> {
    /// Held until the transaction ends: one writer at a time.
    _writer: MutexGuard<'a, ()>,
    store: &'a Store,
    /// The registry as it was when the transaction began (writers are serialised, so it is
    /// still the latest when it commits).
    base: Snapshot,
    staged: BTreeMap<String, Option<DeviceEntry>>,
    /// Configurations created, updated (`Some`) or deleted (`None`).
    staged_configs: BTreeMap<String, Option<StoredConfiguration>>,
    /// A configuration changed: every device is re-targeted at commit, not only the
    /// devices this transaction touched.
    retarget_all: bool,
    /// One timestamp for everything in the transaction.
    pub(crate) now: String,
}

impl Tx<'_> {
    /// The device as this transaction sees it.
    pub(crate) fn get(&self, id: &str) -> Option<&DeviceEntry> {
        match self.staged.get(id) {
            Some(staged) => staged.as_ref(),
            None => self.base.get(id),
        }
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut DeviceEntry> {
        if !self.staged.contains_key(id) {
            let current = self.base.get(id)?.clone();
            self.staged.insert(id.to_owned(), Some(current));
        }
        self.staged.get_mut(id).and_then(Option::as_mut)
    }

    fn device_mut(&mut self, id: &str) -> Result<&mut DeviceEntry, ServiceError> {
        self.get_mut(id)
            .ok_or_else(|| ServiceError::device_not_found(id))
    }

    /// Remembers the staged state of one device, to undo a failed bulk entry.
    pub(crate) fn savepoint(&self, id: &str) -> Savepoint {
        Savepoint {
            id: id.to_owned(),
            staged: self.staged.get(id).cloned(),
        }
    }

    /// Undoes what happened to the savepoint's device since it was taken.
    pub(crate) fn rollback_to(&mut self, savepoint: Savepoint) {
        match savepoint.staged {
            Some(prev) => self.staged.insert(savepoint.id, prev),
            None => self.staged.remove(&savepoint.id),
        };
    }

    /// Makes the staged changes durable (syncing the disk off the async workers), then
    /// visible. Nothing changes on failure.
    pub(crate) fn commit(self) -> Result<(), ServiceError> {
        self.commit_with(true)
    }

    /// Makes the staged changes visible without writing them to the durable store: for
    /// what a restart forgets anyway (a device's connection state, which `Store::open`
    /// resets, as the service's own is not durable across its restarts). The entry reaches
    /// the disk with the device's next durable change. Cannot fail for lack of the disk,
    /// and costs no fsync: a crowd of devices connecting is not serialised on the disk.
    pub(crate) fn commit_volatile(self) -> Result<(), ServiceError> {
        self.commit_with(false)
    }

    fn commit_with(mut self, durable: bool) -> Result<(), ServiceError> {
        self.retarget();
        let Self {
            _writer,
            store,
            base,
            staged,
            staged_configs,
            ..
        } = self;
        if staged.is_empty() && staged_configs.is_empty() {
            return Ok(());
        }
        if let Some(persist) = store.persist.as_ref().filter(|_| durable) {
            off_worker(|| persist.write(&staged, &staged_configs)).map_err(|e| {
                tracing::error!(error = %e, "durable write failed");
                ServiceError::server_error("The write could not be stored")
            })?;
        }
        // Let go of the base snapshot first, so that untouched readers do not force copies.
        drop(base);
        store.publish(staged, staged_configs);
        Ok(())
    }

    /// The configurations as this transaction sees them.
    pub(crate) fn configurations(&self) -> Vec<Arc<StoredConfiguration>> {
        let mut all: Configurations = self.base.configurations().clone();
        for (id, staged) in &self.staged_configs {
            match staged {
                Some(c) => {
                    all.insert(id.clone(), Arc::new(c.clone()));
                }
                None => {
                    all.remove(id);
                }
            }
        }
        all.into_values().collect()
    }

    /// The configuration with this id, as this transaction sees it.
    pub(crate) fn configuration(&self, id: &str) -> Option<StoredConfiguration> {
        match self.staged_configs.get(id) {
            Some(staged) => staged.clone(),
            None => self.base.configurations().get(id).map(|c| (**c).clone()),
        }
    }

    /// Stages a configuration write (`Some`) or delete; every twin is re-targeted at commit.
    pub(crate) fn stage_configuration(&mut self, id: &str, config: Option<StoredConfiguration>) {
        self.staged_configs.insert(id.to_owned(), config);
        self.retarget_all = true;
    }

    /// Creation numbers are handed out above every one in use.
    pub(crate) fn next_configuration_seq(&self) -> u64 {
        self.configurations()
            .iter()
            .map(|c| c.seq + 1)
            .max()
            .unwrap_or(0)
    }

    /// Applies what configurations now say: the content of each twin's winning
    /// configuration, where it was not applied yet. After a configuration change every
    /// device is looked at; otherwise only the devices this transaction touched (their tags
    /// or properties may have changed what targets them).
    fn retarget(&mut self) {
        let configs = self.configurations();
        let ids: Vec<String> = if self.retarget_all {
            self.base
                .iter()
                .map(|(id, _)| id.to_owned())
                .chain(self.staged.keys().cloned())
                .collect()
        } else {
            self.staged
                .iter()
                .filter(|(_, e)| e.is_some())
                .map(|(id, _)| id.clone())
                .collect()
        };
        // Nothing to do, unless twins still remember a configuration that is gone.
        if configs.is_empty() && !self.retarget_all {
            return;
        }
        let targeting = Targeting::new(configs.iter());
        let now = self.now.clone();
        for id in ids {
            let Some(current) = self.get(&id) else {
                continue;
            };
            let mut entry = current.clone();
            if targeting.retarget(&mut entry, &now)
                && let Some(slot) = self.get_mut(&id)
            {
                *slot = entry;
            }
        }
    }

    /// `POST /devices/{id}/applyConfigurationContent`: writes the modules' desired
    /// properties of an IoT Edge device from `modulesContent`.
    pub(crate) fn apply_configuration_content(
        &mut self,
        id: &str,
        modules: &BTreeMap<String, serde_json::Map<String, Value>>,
    ) -> Result<(), ServiceError> {
        let now = self.now.clone();
        let entry = self.device_mut(id)?;
        if !is_edge(&entry.device) {
            return Err(ServiceError::argument_invalid(format!(
                "The device '{id}' is not an IoT Edge device: configuration content applies \
                 only to IoT Edge devices"
            )));
        }
        if !apply_modules_content(entry, modules, &now) {
            return Err(ServiceError::argument_invalid(
                "The content would exceed a module twin's limits",
            ));
        }
        Ok(())
    }

    /// PUT /devices/{id}: create without a condition, else update.
    pub(crate) fn put_device(
        &mut self,
        id: &str,
        body: &Value,
        if_match: &IfMatch,
    ) -> Result<wire::Device, ServiceError> {
        let input = DeviceInput::from_body(id, body)?;
        match (self.get(id).is_some(), if_match) {
            (true, IfMatch::Absent) => Err(ServiceError::device_already_exists(id)),
            (false, IfMatch::Etag(_)) => Err(ServiceError::device_not_found(id)),
            (false, _) => self.create_device(id, input),
            (true, cond) => self.update_device(id, input, cond),
        }
    }

    fn create_device(
        &mut self,
        id: &str,
        input: DeviceInput,
    ) -> Result<wire::Device, ServiceError> {
        if self.get(id).is_some() {
            return Err(ServiceError::device_already_exists(id));
        }
        let never = Some(IotDateTime::never());
        let generation = generation_id();
        let edge = input.iot_edge;
        let device_scope = if edge {
            let own = format!("{EDGE_SCOPE_PREFIX}{id}-{generation}");
            match input.device_scope.as_deref() {
                None | Some("") => Some(own),
                // A device exported with its scope comes back with it.
                Some(given) if scope_owner(given) == Some(id) => Some(given.to_owned()),
                Some(given) => return Err(edge_scope_fixed(id, given)),
            }
        } else {
            match input.device_scope.as_deref() {
                None | Some("") => None,
                Some(given) => Some(self.edge_scope(given, id)?),
            }
        };
        let parent_scopes = self.parent_scopes(id, input.parent_scopes, &[])?;
        let device = wire::Device {
            authentication: Some(input.authentication),
            capabilities: Some(wire::DeviceCapabilities {
                iot_edge: Some(edge),
            }),
            cloud_to_device_message_count: Some(0),
            connection_state: Some(ConnectionState::Disconnected),
            connection_state_updated_time: never,
            device_id: Some(id.to_owned()),
            device_scope,
            etag: Some(identity_etag()),
            generation_id: Some(generation),
            last_activity_time: never,
            parent_scopes,
            status: Some(input.status),
            status_reason: input.status_reason,
            status_updated_time: never,
        };
        let mut modules = BTreeMap::new();
        if edge {
            for mid in EDGE_MODULES {
                let module = new_module(id, mid, default_auth()?, None);
                modules.insert(mid.to_owned(), module_entry(module, &self.now));
            }
        }
        let entry = DeviceEntry {
            device: device.clone(),
            twin: TwinState::new(&self.now),
            modules,
        };
        self.staged.insert(id.to_owned(), Some(entry));
        Ok(device)
    }

    /// `scope` when it is the device scope of an existing IoT Edge device other than `id`.
    fn edge_scope(&self, scope: &str, id: &str) -> Result<String, ServiceError> {
        let owner = scope_owner(scope).filter(|&owner| owner != id);
        let is_edge_scope = owner
            .and_then(|owner| self.get(owner))
            .is_some_and(|e| is_edge(&e.device) && e.device.device_scope.as_deref() == Some(scope));
        if is_edge_scope {
            Ok(scope.to_owned())
        } else {
            Err(ServiceError::argument_invalid(format!(
                "The scope '{scope}' is not the device scope of an existing IoT Edge device"
            )))
        }
    }

    /// The parent scopes a write leaves: none given keeps `current` (SDKs send the whole
    /// device back, or leave the field out); the current ones again are kept; new ones must
    /// each be an existing IoT Edge device's scope.
    fn parent_scopes(
        &self,
        id: &str,
        given: Vec<String>,
        current: &[String],
    ) -> Result<Vec<String>, ServiceError> {
        if given.is_empty() || given == current {
            return Ok(current.to_vec());
        }
        given
            .into_iter()
            .map(|scope| self.edge_scope(&scope, id))
            .collect()
    }

    fn update_device(
        &mut self,
        id: &str,
        input: DeviceInput,
        cond: &IfMatch,
    ) -> Result<wire::Device, ServiceError> {
        let current = self
            .get(id)
            .ok_or_else(|| ServiceError::device_not_found(id))?
            .device
            .clone();
        let etag = current.etag.clone().unwrap_or_default();
        if !cond.matches(&etag) {
            return Err(ServiceError::precondition_failed(format!(
                "Precondition failed: the etag does not match the device's current etag. Device: {id}"
            )));
        }
        let device_scope = self.next_scope(id, &current, &input)?;
        let parent_scopes = self.parent_scopes(id, input.parent_scopes, &current.parent_scopes)?;
        let entry = self.device_mut(id)?;
        let d = &mut entry.device;
        if d.status.as_ref() != Some(&input.status) {
            d.status_updated_time = Some(IotDateTime::from(Utc::now()));
        }
        d.status = Some(input.status);
        d.status_reason = input.status_reason;
        d.authentication = Some(input.authentication);
        d.capabilities = Some(wire::DeviceCapabilities {
            iot_edge: Some(input.iot_edge),
        });
        d.device_scope = device_scope;
        d.parent_scopes = parent_scopes;
        d.etag = Some(identity_etag());
        Ok(d.clone())
    }

    /// The device scope after an update. An IoT Edge device's scope is its own, set by the
    /// hub and never changed; a leaf device's is empty or an existing edge device's scope. A
    /// write that leaves the scope out, or repeats the current one, keeps it.
    fn next_scope(
        &self,
        id: &str,
        current: &wire::Device,
        input: &DeviceInput,
    ) -> Result<Option<String>, ServiceError> {
        let current_scope = current.device_scope.as_deref().filter(|s| !s.is_empty());
        let own_scope = current_scope.filter(|&s| scope_owner(s) == Some(id));
        let given = input.device_scope.as_deref();
        if input.iot_edge {
            let own = match own_scope {
                Some(own) => own.to_owned(),
                None => format!(
                    "{EDGE_SCOPE_PREFIX}{id}-{}",
                    current.generation_id.as_deref().unwrap_or_default()
                ),
            };
            return match given {
                None | Some("") => Ok(Some(own)),
                Some(g) if g == own || Some(g) == current_scope => Ok(Some(own)),
                Some(g) => Err(edge_scope_fixed(id, g)),
            };
        }
        // A leaf keeps a parent's scope, never its own (from when it was an edge device).
        let kept = current_scope.filter(|_| own_scope.is_none());
        match given {
            None => Ok(kept.map(str::to_owned)),
            Some("") => Ok(None),
            Some(g) if Some(g) == current_scope => Ok(kept.map(str::to_owned)),
            Some(g) => self.edge_scope(g, id).map(Some),
        }
    }

    /// DELETE /devices/{id}.
    pub(crate) fn delete_device(&mut self, id: &str, cond: &IfMatch) -> Result<(), ServiceError> {
        let entry = self
            .get(id)
            .ok_or_else(|| ServiceError::device_not_found(id))?;
        if !cond.matches(entry.device.etag.as_deref().unwrap_or_default()) {
            return Err(ServiceError::precondition_failed(format!(
                "Precondition failed: the etag does not match the device's current etag. Device: {id}"
            )));
        }
        self.staged.insert(id.to_owned(), None);
        Ok(())
    }

    /// PUT /devices/{id}/modules/{mid}.
    pub(crate) fn put_module(
        &mut self,
        id: &str,
        mid: &str,
        body: &Value,
        cond: &IfMatch,
    ) -> Result<wire::Module, ServiceError> {
        let input = ModuleInput::from_body(id, mid, body)?;
        let now = self.now.clone();
        let entry = self.device_mut(id)?;
        match (entry.modules.get_mut(mid), cond) {
            (Some(_), IfMatch::Absent) => Err(ServiceError::module_already_exists(id, mid)),
            (None, IfMatch::Etag(_)) => Err(ServiceError::module_not_found(id, mid)),
            (None, _) => {
                let module = new_module(id, mid, input.authentication, input.managed_by);
                entry
                    .modules
                    .insert(mid.to_owned(), module_entry(module.clone(), &now));
                Ok(module)
            }
            (Some(existing), cond) => {
                let m = &mut existing.module;
                if !cond.matches(m.etag.as_deref().unwrap_or_default()) {
                    return Err(ServiceError::precondition_failed(format!(
                        "Precondition failed: the etag does not match the module's current etag. Module: {id}/{mid}"
                    )));
                }
                m.authentication = Some(input.authentication);
                m.managed_by = input.managed_by;
                m.etag = Some(identity_etag());
                Ok(m.clone())
            }
        }
    }

    /// DELETE /devices/{id}/modules/{mid}.
    pub(crate) fn delete_module(
        &mut self,
        id: &str,
        mid: &str,
        cond: &IfMatch,
    ) -> Result<(), ServiceError> {
        let entry = self.device_mut(id)?;
        let module = entry
            .modules
            .get(mid)
            .ok_or_else(|| ServiceError::module_not_found(id, mid))?;
        if !cond.matches(module.module.etag.as_deref().unwrap_or_default()) {
            return Err(ServiceError::precondition_failed(format!(
                "Precondition failed: the etag does not match the module's current etag. Module: {id}/{mid}"
            )));
        }
        entry.modules.remove(mid);
        Ok(())
    }

    /// PATCH (`replace == false`) or PUT a device or module twin; answers the new twin.
    pub(crate) fn update_twin(
        &mut self,
        id: &str,
        mid: Option<&str>,
        change: &TwinChange,
        replace: bool,
        cond: &IfMatch,
    ) -> Result<Value, ServiceError> {
        let now = self.now.clone();
        let entry = self.device_mut(id)?;
        let twin = twin_mut(entry, id, mid)?;
        if !cond.matches(&twin.etag()) {
            return Err(ServiceError::precondition_failed(format!(
                "ETag mismatch for device ID '{id}'"
            )));
        }
        let mut next = twin.clone();
        if replace {
            next.replace(change, &now);
        } else {
            next.patch(change, &now);
        }
        next.check_limits()?;
        *twin = next;
        Ok(render_twin(entry, mid))
    }

    /// A device reporting properties (control API).
    pub(crate) fn report(
        &mut self,
        id: &str,
        mid: Option<&str>,
        patch: &serde_json::Map<String, Value>,
    ) -> Result<Value, ServiceError> {
        let now = self.now.clone();
        let entry = self.device_mut(id)?;
        let twin = twin_mut(entry, id, mid)?;
        let mut next = twin.clone();
        next.report(patch, &now);
        next.check_limits()?;
        *twin = next;
        touch_activity(entry, mid);
        Ok(render_twin(entry, mid))
    }

    /// Records the model id a device or module announced when it connected.
    pub(crate) fn set_model_id(
        &mut self,
        id: &str,
        mid: Option<&str>,
        model_id: &str,
    ) -> Result<(), ServiceError> {
        let entry = self.device_mut(id)?;
        let twin = twin_mut(entry, id, mid)?;
        if twin.model_id.as_deref() != Some(model_id) {
            twin.model_id = Some(model_id.to_owned());
        }
        Ok(())
    }

    /// A device or module connecting or disconnecting (control API and MQTT).
    pub(crate) fn set_connected(
        &mut self,
        id: &str,
        mid: Option<&str>,
        connected: bool,
    ) -> Result<(), ServiceError> {
        let entry = self.device_mut(id)?;
        let state = Some(if connected {
            ConnectionState::Connected
        } else {
            ConnectionState::Disconnected
        });
        let now = Some(IotDateTime::from(Utc::now()));
        match mid {
            None => {
                entry.device.connection_state = state;
                entry.device.connection_state_updated_time = now;
                entry.device.last_activity_time = now;
            }
            Some(mid) => {
                let m = entry
                    .modules
                    .get_mut(mid)
                    .ok_or_else(|| ServiceError::module_not_found(id, mid))?;
                m.module.connection_state = state;
                m.module.connection_state_updated_time = now;
                m.module.last_activity_time = now;
            }
        }
        Ok(())
    }

    /// Bulk: creates a device from an import entry (importMode create).
    pub(crate) fn bulk_create(&mut self, e: &wire::ExportImportDevice) -> Result<(), ServiceError> {
        let id = e.id.as_deref().unwrap_or_default();
        match e.module_id.as_deref() {
            None => {
                let input = DeviceInput::from_import(e)?;
                self.create_device(id, input)?;
                self.bulk_twin(id, None, e, &IfMatch::Any)
            }
            Some(mid) => {
                let body = serde_json::json!({"authentication": e.authentication});
                self.put_module(id, mid, &body, &IfMatch::Absent)?;
                self.bulk_twin(id, Some(mid), e, &IfMatch::Any)
            }
        }
    }

    /// Bulk: updates (or, with `upsert`, creates) a device from an import entry.
    pub(crate) fn bulk_update(
        &mut self,
        e: &wire::ExportImportDevice,
        cond: &IfMatch,
        upsert: bool,
    ) -> Result<(), ServiceError> {
        let id = e.id.as_deref().unwrap_or_default();
        match e.module_id.as_deref() {
            None => {
                if self.get(id).is_none() {
                    if upsert {
                        return self.bulk_create(e);
                    }
                    return Err(ServiceError::device_not_found(id));
                }
                let input = DeviceInput::from_import(e)?;
                let cond = if *cond == IfMatch::Absent {
                    &IfMatch::Any
                } else {
                    cond
                };
                self.update_device(id, input, cond)?;
                if e.twin_e_tag.is_some() || !e.tags.is_empty() || e.properties.is_some() {
                    self.bulk_twin(id, None, e, &IfMatch::Any)?;
                }
                Ok(())
            }
            Some(mid) => {
                let exists = self.get(id).is_some_and(|d| d.modules.contains_key(mid));
                if !exists && !upsert {
                    return Err(ServiceError::module_not_found(id, mid));
                }
                let body = serde_json::json!({"authentication": e.authentication});
                let cond = if exists && *cond == IfMatch::Absent {
                    &IfMatch::Any
                } else {
                    cond
                };
                self.put_module(id, mid, &body, cond)?;
                Ok(())
            }
        }
    }

    /// Bulk: deletes the device or module an import entry names.
    pub(crate) fn bulk_delete(
        &mut self,
        e: &wire::ExportImportDevice,
        cond: &IfMatch,
    ) -> Result<(), ServiceError> {
        let id = e.id.as_deref().unwrap_or_default();
        match e.module_id.as_deref() {
            None => self.delete_device(id, cond),
            Some(mid) => self.delete_module(id, mid, cond),
        }
    }

    /// Bulk: replaces the twin's tags and desired properties from an import entry.
    pub(crate) fn bulk_twin(
        &mut self,
        id: &str,
        mid: Option<&str>,
        e: &wire::ExportImportDevice,
        cond: &IfMatch,
    ) -> Result<(), ServiceError> {
        let desired = e
            .properties
            .as_ref()
            .map(|p| &p.desired)
            .filter(|d| !d.is_empty());
        let mut body = serde_json::json!({ "tags": e.tags });
        if let Some(desired) = desired {
            body["properties"] = serde_json::json!({ "desired": desired });
        }
        let change = TwinChange::from_body(&body)?;
        if change.tags.as_ref().is_none_or(|t| t.is_empty()) && change.desired.is_none() {
            return Ok(());
        }
        self.update_twin(id, mid, &change, false, cond).map(drop)
    }
}

fn is_edge(device: &wire::Device) -> bool {
    device
        .capabilities
        .as_ref()
        .and_then(|c| c.iot_edge)
        .unwrap_or(false)
}

/// The device id in an edge device scope (`ms-azure-iot-edge://{id}-{number}`).
fn scope_owner(scope: &str) -> Option<&str> {
    let rest = scope.strip_prefix(EDGE_SCOPE_PREFIX)?;
    let (id, number) = rest.rsplit_once('-')?;
    (!id.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()))
        .then_some(id)
}

fn edge_scope_fixed(id: &str, given: &str) -> ServiceError {
    ServiceError::argument_invalid(format!(
        "The deviceScope of IoT Edge device '{id}' is set by the hub and cannot be changed to '{given}'"
    ))
}

fn twin_mut<'e>(
    entry: &'e mut DeviceEntry,
    id: &str,
    mid: Option<&str>,
) -> Result<&'e mut TwinState, ServiceError> {
    match mid {
        None => Ok(&mut entry.twin),
        Some(mid) => entry
            .modules
            .get_mut(mid)
            .map(|m| &mut m.twin)
            .ok_or_else(|| ServiceError::module_not_found(id, mid)),
    }
}

fn touch_activity(entry: &mut DeviceEntry, mid: Option<&str>) {
    let now = Some(IotDateTime::from(Utc::now()));
    match mid.and_then(|m| entry.modules.get_mut(m)) {
        Some(m) => m.module.last_activity_time = now,
        None => entry.device.last_activity_time = now,
    }
}

fn new_module(
    id: &str,
    mid: &str,
    authentication: wire::AuthenticationMechanism,
    managed_by: Option<String>,
) -> wire::Module {
    let never = Some(IotDateTime::never());
    wire::Module {
        authentication: Some(authentication),
        cloud_to_device_message_count: Some(0),
        connection_state: Some(ConnectionState::Disconnected),
        connection_state_updated_time: never,
        device_id: Some(id.to_owned()),
        etag: Some(identity_etag()),
        generation_id: Some(generation_id()),
        last_activity_time: never,
        managed_by,
        module_id: Some(mid.to_owned()),
    }
}

fn module_entry(module: wire::Module, now: &str) -> ModuleEntry {
    ModuleEntry {
        module,
        twin: TwinState::new(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use iothub_rest_gen::types::DeviceStatus;
    use serde_json::json;

    fn store() -> Store {
        Store::open(None).unwrap()
    }

    fn put(
        store: &Store,
        id: &str,
        body: Value,
        cond: IfMatch,
    ) -> Result<wire::Device, ServiceError> {
        let mut tx = store.begin();
        let d = tx.put_device(id, &body, &cond)?;
        tx.commit()?;
        Ok(d)
    }

    #[test]
    fn create_fills_in_what_the_service_does() {
        let s = store();
        let d = put(&s, "d1", json!({"deviceId": "d1"}), IfMatch::Absent).unwrap();
        assert_eq!(d.status, Some(DeviceStatus::Enabled));
        assert!(d.last_activity_time.as_ref().unwrap().is_never());
        let keys = d.authentication.unwrap().symmetric_key.unwrap();
        assert_eq!(
            STANDARD
                .decode(keys.primary_key.unwrap().expose_secret())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(d.generation_id.unwrap().len(), 18);
    }

    #[test]
    fn create_conflicts_and_conditions() {
        let s = store();
        let d = put(&s, "d1", json!({}), IfMatch::Absent).unwrap();
        let err = put(&s, "d1", json!({}), IfMatch::Absent).unwrap_err();
        assert_eq!((err.status, err.name), (409, "DeviceAlreadyExists"));
        let err = put(&s, "d1", json!({}), IfMatch::Etag("stale".into())).unwrap_err();
        assert_eq!((err.status, err.name), (412, "PreconditionFailed"));
        let updated = put(
            &s,
            "d1",
            json!({"status": "disabled"}),
            IfMatch::Etag(d.etag.clone().unwrap()),
        )
        .unwrap();
        assert_ne!(updated.etag, d.etag);
        assert_eq!(updated.status, Some(DeviceStatus::Disabled));
        assert!(!updated.status_updated_time.unwrap().is_never());
        // Mismatched ids and bad keys are rejected before anything changes.
        assert_eq!(
            put(&s, "d2", json!({"deviceId": "x"}), IfMatch::Absent)
                .unwrap_err()
                .status,
            400
        );
        let bad_key =
            json!({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "c2hvcnQ="}}});
        assert_eq!(
            put(&s, "d2", bad_key, IfMatch::Absent).unwrap_err().status,
            400
        );
        assert!(s.read().get("d2").is_none());
    }

    #[test]
    fn edge_devices_get_system_modules_and_a_scope() {
        let s = store();
        let d = put(
            &s,
            "edge",
            json!({"capabilities": {"iotEdge": true}}),
            IfMatch::Absent,
        )
        .unwrap();
        assert!(
            d.device_scope
                .unwrap()
                .starts_with("ms-azure-iot-edge://edge-")
        );
        let modules: Vec<String> = s.read()["edge"].modules.keys().cloned().collect();
        assert_eq!(modules, ["$edgeAgent", "$edgeHub"]);
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let s = store();
        let mut tx = s.begin();
        tx.put_device("a", &json!({}), &IfMatch::Absent).unwrap();
        drop(tx);
        assert!(s.read().is_empty());
    }

    #[test]
    fn twin_etag_conditions() {
        let s = store();
        put(&s, "d", json!({}), IfMatch::Absent).unwrap();
        let change = TwinChange::from_body(&json!({"tags": {"a": 1}})).unwrap();
        let mut tx = s.begin();
        let twin = tx
            .update_twin(
                "d",
                None,
                &change,
                false,
                &IfMatch::Etag("AAAAAAAAAAE=".into()),
            )
            .unwrap();
        tx.commit().unwrap();
        assert_eq!(twin["etag"], "AAAAAAAAAAI=");
        assert_eq!(twin["version"], 2);
        let mut tx = s.begin();
        let err = tx
            .update_twin(
                "d",
                None,
                &change,
                false,
                &IfMatch::Etag("AAAAAAAAAAE=".into()),
            )
            .unwrap_err();
        assert_eq!(err.status, 412);
    }
}
