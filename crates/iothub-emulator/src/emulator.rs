//! [`Emulator`]: the handle of a running emulator, with what tests do through it (connection
//! strings, the request log, emulated devices, fault injection, cloud-to-device messages)
//! and shutting it down. Starting it is in `startup.rs`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::hub::Shared;
#[cfg(doc)]
use crate::{ACCEPTED_RECORD, DEFAULT_METHOD};
use crate::{
    C2dMessage, EmulatorBuilder, Error, FaultConfig, FaultStats, MethodResponse, ReceivedC2d,
    RequestLogEntry, SharedAccessPolicy,
};

/// A running emulator. Dropping it stops serving; [`Emulator::shutdown`] also waits.
pub struct Emulator {
    pub(crate) shared: Arc<Shared>,
    pub(crate) addr: SocketAddr,
    pub(crate) amqp_addr: SocketAddr,
    pub(crate) mqtt_addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) https: bool,
    pub(crate) ca_pem: Option<String>,
    pub(crate) ca_path: Option<PathBuf>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) task: Option<JoinHandle<()>>,
    pub(crate) amqp_task: Option<JoinHandle<()>>,
    pub(crate) mqtt_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.addr)
            .field("amqp_addr", &self.amqp_addr)
            .field("mqtt_addr", &self.mqtt_addr)
            .field("host", &self.host)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// A builder with the defaults.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// The `iothubowner` connection string (or the first policy's, if there is none).
    pub fn connection_string(&self) -> String {
        let policy = self
            .policies()
            .iter()
            .find(|p| p.name == "iothubowner")
            .or_else(|| self.policies().first());
        policy.map_or_else(String::new, |p| self.connection_string_with(p))
    }

    /// The connection string of the named policy.
    pub fn connection_string_for(&self, policy: &str) -> Option<String> {
        self.policies()
            .iter()
            .find(|p| p.name == policy)
            .map(|p| self.connection_string_with(p))
    }

    fn connection_string_with(&self, p: &SharedAccessPolicy) -> String {
        format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host, p.name, p.primary_key
        )
    }

    /// The host as connection strings name it: `name:port` (the port left out on 443).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The socket address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The socket address of the AMQP endpoint (`amqps`, or plain `amqp` when serving plain
    /// HTTP). Always present today; `None` is kept for an emulator without AMQP.
    pub fn amqp_addr(&self) -> Option<SocketAddr> {
        Some(self.amqp_addr)
    }

    /// The socket address of the device-facing MQTT endpoint (MQTT 3.1.1 over TLS with the
    /// HTTPS certificate, or plain MQTT when serving plain HTTP). Devices also reach it over
    /// WebSockets on the HTTPS port at `/$iothub/websocket` (subprotocol `mqtt`).
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.mqtt_addr
    }

    /// The telemetry devices sent over MQTT that the hub still keeps (see
    /// [`EmulatorBuilder::telemetry_buffer`](crate::EmulatorBuilder::telemetry_buffer)),
    /// oldest first: of one device (and module), or of all when `device_id` is `None`.
    pub fn device_messages(
        &self,
        device_id: Option<&str>,
        module_id: Option<&str>,
    ) -> Vec<crate::DeviceMessage> {
        self.shared.mqtt.telemetry.list(device_id, module_id)
    }

    /// How many telemetry messages devices sent since start, kept or not (for ingest rates).
    pub fn device_messages_received(&self) -> u64 {
        self.shared.mqtt.telemetry.received()
    }

    /// Forgets the telemetry kept so far.
    pub fn clear_device_messages(&self) {
        self.shared.mqtt.telemetry.clear();
    }

    /// MQTT connections open now (TLS and WebSockets, authenticated or not).
    pub fn mqtt_open_connections(&self) -> usize {
        self.shared.mqtt.open_connections()
    }

    /// `https://host[:port]` (or `http://` when serving plain HTTP).
    pub fn base_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    /// The CA certificate (PEM) clients must trust, when serving HTTPS.
    pub fn ca_certificate_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Where the CA certificate was written (with a data or certificate directory).
    pub fn ca_certificate_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// The tenant id of the emulator's Microsoft Entra ID look-alike.
    pub fn entra_tenant_id(&self) -> &str {
        self.shared
            .auth
            .entra()
            .map_or(crate::DEFAULT_TENANT_ID, |d| d.tenant_id())
    }

    /// The authority host to give Entra clients (`azure_identity`'s
    /// `CloudConfiguration::Custom { authority_host }` or `AZURE_AUTHORITY_HOST`, Python
    /// `azure-identity`'s `authority=`): the emulator's own [`Emulator::base_url`], which
    /// serves `/{tenant}/v2.0/.well-known/openid-configuration` and
    /// `/{tenant}/oauth2/v2.0/token`.
    pub fn entra_authority_host(&self) -> String {
        self.base_url()
    }

    /// The shared access policies (with their keys).
    pub fn policies(&self) -> &[SharedAccessPolicy] {
        self.shared.auth.policies()
    }

    /// Every service request so far (up to the log's capacity), oldest first.
    pub fn request_log(&self) -> Vec<RequestLogEntry> {
        self.shared.log.snapshot()
    }

    /// The token the control API requires (`x-emulator-control-token`): the configured one,
    /// or the one generated for a bind beyond loopback; `None` when the control API is open.
    pub fn control_token(&self) -> Option<&str> {
        self.shared
            .control_token
            .as_ref()
            .map(iothub_rest_gen::SecretString::expose_secret)
    }

    /// Empties the request log.
    pub fn clear_request_log(&self) {
        self.shared.log.clear();
    }

    /// Marks a device as connected, so direct methods reach it.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device does not exist.
    pub fn connect_device(&self, device_id: &str) -> Result<(), Error> {
        Ok(self.shared.set_connected(device_id, None, true)?)
    }

    /// Marks a device as disconnected.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device does not exist.
    pub fn disconnect_device(&self, device_id: &str) -> Result<(), Error> {
        Ok(self.shared.set_connected(device_id, None, false)?)
    }

    /// Marks a module as connected or disconnected.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device or module does not exist.
    pub fn set_module_connected(
        &self,
        device_id: &str,
        module_id: &str,
        connected: bool,
    ) -> Result<(), Error> {
        Ok(self
            .shared
            .set_connected(device_id, Some(module_id), connected)?)
    }

    /// A device (or module) reporting properties; returns the twin afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] for an unknown device or module, or a patch the service refuses.
    pub fn report_properties(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        patch: &Value,
    ) -> Result<Value, Error> {
        Ok(self.shared.report(device_id, module_id, patch)?)
    }

    /// How a device (or module) answers direct method `name` ([`DEFAULT_METHOD`] for any).
    /// Unlike the control API, this neither checks that the device exists nor counts against
    /// the limits on registrations: the caller is the test itself.
    pub fn set_method_response(
        &self,
        device_id: &str,
        module_id: Option<&str>,
        name: &str,
        response: MethodResponse,
    ) {
        self.shared
            .methods
            .set(device_id, module_id, name, response);
    }

    /// Replaces the fault-injection settings.
    pub fn set_faults(&self, faults: FaultConfig) {
        self.shared.faults.set(faults);
    }

    /// Faults injected so far.
    pub fn fault_stats(&self) -> FaultStats {
        self.shared.faults.stats()
    }

    /// The cloud-to-device messages the hub accepted, oldest first, as it received them: the
    /// most recent [`ACCEPTED_RECORD`] of them.
    pub fn c2d_messages(&self) -> Vec<C2dMessage> {
        self.shared.c2d.accepted()
    }

    /// Empties the record returned by [`Emulator::c2d_messages`] (queues are unaffected).
    pub fn clear_c2d_messages(&self) {
        self.shared.c2d.clear_accepted();
    }

    /// Feedback records waiting for a receiver on `/messages/servicebound/feedback` (expired
    /// ones are not counted: they are gone).
    pub fn feedback_pending(&self) -> usize {
        self.shared.c2d.feedback_pending()
    }

    /// AMQP connections open now (TCP and WebSocket).
    pub fn amqp_open_connections(&self) -> usize {
        self.shared.amqp.connections.get()
    }

    /// AMQP sessions open now, over all connections.
    pub fn amqp_open_sessions(&self) -> usize {
        self.shared.amqp.sessions.get()
    }

    /// AMQP links attached now, over all connections.
    pub fn amqp_open_links(&self) -> usize {
        self.shared.amqp.links.get()
    }

    /// Messages waiting for a device (or module), locked ones included.
    pub fn c2d_pending(&self, device_id: &str, module_id: Option<&str>) -> usize {
        self.shared.c2d.pending(device_id, module_id)
    }

    /// The device (or module) takes its next message; settle it with
    /// [`Emulator::complete_c2d`], [`Emulator::reject_c2d`] or [`Emulator::abandon_c2d`].
    pub fn receive_c2d(&self, device_id: &str, module_id: Option<&str>) -> Option<ReceivedC2d> {
        self.shared.c2d.receive(device_id, module_id)
    }

    /// Completes a received message; false if the lock is unknown or expired.
    pub fn complete_c2d(&self, lock_token: &str) -> bool {
        self.shared.c2d.complete(lock_token)
    }

    /// Rejects a received message (dead-letters it).
    pub fn reject_c2d(&self, lock_token: &str) -> bool {
        self.shared.c2d.reject(lock_token)
    }

    /// Abandons a received message: it is delivered again, up to the delivery count.
    pub fn abandon_c2d(&self, lock_token: &str) -> bool {
        self.shared.c2d.abandon(lock_token)
    }

    /// A device finished uploading `blob_name`: the hub queues a file-upload notification.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] when the device does not exist.
    pub fn notify_file_upload(
        &self,
        device_id: &str,
        blob_name: &str,
        size: u64,
    ) -> Result<(), Error> {
        Ok(self.shared.file_uploaded(device_id, blob_name, size)?)
    }

    /// Stops serving, closes every connection and waits for the server task.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.amqp_task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.mqtt_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
