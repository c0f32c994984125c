//! [`Shared`]: the hub's state shared by every connection (registry, policies, request
//! log, faults, direct methods, cloud-to-device queues), and what emulated devices do to it
//! (connect, report properties, finish a file upload) for the control API and [`Emulator`].
//!
//! [`Emulator`]: crate::Emulator

use iothub_rest_gen::SecretString;
use serde_json::{Value, json};

use crate::rest::connections::HttpLimits;
use crate::rest::control::ControlAccess;
use crate::rest::errors::ServiceError;
use crate::rest::log;
use crate::state::twin::TwinChange;
use crate::state::{c2d, methods, store};
use crate::{amqp, auth, faults, mqtt};

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) store: store::Store,
    pub(crate) auth: auth::Authenticator,
    pub(crate) log: log::RequestLog,
    pub(crate) faults: faults::Faults,
    pub(crate) methods: methods::Methods,
    pub(crate) c2d: c2d::C2d,
    /// Import/export and scheduled jobs.
    pub(crate) jobs: crate::jobs::Jobs,
    pub(crate) hub_name: String,
    pub(crate) host_name: String,
    pub(crate) amqp: amqp::Endpoint,
    /// The device-facing MQTT endpoint: its sessions and the telemetry devices sent.
    pub(crate) mqtt: mqtt::Endpoint,
    /// How slow or idle an HTTP(S) connection may be, and how many may be open.
    pub(crate) http_limits: HttpLimits,
    /// Request bodies being read now (at most
    /// [`MAX_BODIES_READ_AT_ONCE`](crate::rest::server::MAX_BODIES_READ_AT_ONCE)).
    pub(crate) body_readers: tokio::sync::Semaphore,
    /// Who may use the control API.
    pub(crate) control: ControlAccess,
    /// The control API's token, configured or generated (a bind beyond loopback).
    pub(crate) control_token: Option<SecretString>,
    /// Test hook: query scans wait here while it is closed.
    #[cfg(test)]
    pub(crate) scan_gate: crate::state::blocking::Gate,
}

impl Shared {
    /// Queues the file-upload notification the service sends when a device finishes an
    /// upload.
    pub(crate) fn file_uploaded(
        &self,
        id: &str,
        blob_name: &str,
        size: u64,
    ) -> Result<(), ServiceError> {
        if !self.store.read().contains_key(id) {
            return Err(ServiceError::device_not_found(id));
        }
        let now = crate::rest::errors::service_time(chrono::Utc::now());
        let blob = format!("{id}/{blob_name}");
        self.c2d.notify_file_upload(json!({
            "deviceId": id,
            "blobUri": format!("https://{}.blob.core.windows.net/fileupload/{blob}", self.hub_name),
            "blobName": blob,
            "lastUpdatedTime": now,
            "blobSizeInBytes": size,
            "enqueuedTimeUtc": now,
        }));
        Ok(())
    }

    /// A device or module connecting (`true`) or disconnecting.
    pub(crate) fn set_connected(
        &self,
        id: &str,
        mid: Option<&str>,
        connected: bool,
    ) -> Result<(), ServiceError> {
        let mut tx = self.store.begin();
        tx.set_connected(id, mid, connected)?;
        // Not written to the data directory: a restarted hub has nothing connected (the
        // store resets the state on load), so an fsync per connect and disconnect would
        // only serialise a crowd of connecting devices on the disk.
        tx.commit_volatile()?;
        if connected {
            // Wake method calls waiting for their connect timeout.
            self.methods.connected.notify_waiters();
        }
        Ok(())
    }

    /// Records the model id a device announced when it connected (best effort: a device
    /// deleted meanwhile has no twin to hold it).
    pub(crate) fn set_model_id(&self, id: &str, mid: Option<&str>, model_id: &str) {
        let mut tx = self.store.begin();
        if tx.set_model_id(id, mid, model_id).is_ok() {
            let _ = tx.commit();
        }
    }

    /// A device or module reporting properties; answers the new twin.
    pub(crate) fn report(
        &self,
        id: &str,
        mid: Option<&str>,
        patch: &Value,
    ) -> Result<Value, ServiceError> {
        let patch = TwinChange::reported_patch(patch)?;
        let mut tx = self.store.begin();
        let twin = tx.report(id, mid, &patch)?;
        tx.commit()?;
        Ok(twin)
    }
}
