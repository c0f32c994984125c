//! Device identities: create, update, read, list and delete (`/devices/{id}`).

use iothub_rest_gen::ResponseValue;
use iothub_rest_gen::types::{Device, DeviceCapabilities, DeviceStatus};

use crate::error::{Error, Result};
use crate::etag::IfMatch;
use crate::identity::{Auth, DeviceOptions, SasKeys, X509Thumbprints};
use crate::ids::validate_device_id;
use crate::manager::{Call, RegistryManager, deleted};
use crate::retry::OperationKind;

/// The service returns at most this many devices from one list call, and offers no paging;
/// use [`RegistryManager::query`] for fleets larger than that.
pub const MAX_DEVICES_PER_LIST: u32 = 1000;

impl RegistryManager {
    /// Creates a device that authenticates with symmetric keys (SAS). Pass
    /// [`SasKeys::generated`] to let the service generate the keys.
    ///
    /// Fails with a 409 ([`Error::is_conflict`]) if the device exists.
    ///
    /// The status (here and in every method taking one) is a `DeviceStatus` or a reference to
    /// one, so a status chosen once can be passed as often as needed:
    ///
    /// ```no_run
    /// use iothub_registry::models::DeviceStatus;
    /// use iothub_registry::{DeviceOptions, RegistryManager, SasKeys};
    ///
    /// # async fn run(registry: RegistryManager, staging: bool) -> iothub_registry::Result<()> {
    /// let status = if staging { DeviceStatus::Disabled } else { DeviceStatus::Enabled };
    /// for id in ["sensor-1", "sensor-2"] {
    ///     registry
    ///         .create_device_with_sas(id, SasKeys::generated(), &status, DeviceOptions::new())
    ///         .await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn create_device_with_sas(
        &self,
        device_id: impl Into<String>,
        keys: SasKeys,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        let op = "create_device_with_sas";
        self.put_device(
            op,
            device_id.into(),
            None,
            Auth::Sas(&keys),
            status,
            options,
        )
        .await
    }

    /// Creates a device that authenticates with a self-signed X.509 certificate.
    pub async fn create_device_with_x509(
        &self,
        device_id: impl Into<String>,
        thumbprints: X509Thumbprints,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        let op = "create_device_with_x509";
        let auth = Auth::X509(&thumbprints);
        self.put_device(op, device_id.into(), None, auth, status, options)
            .await
    }

    /// Creates a device that authenticates with a certificate signed by a certificate
    /// authority the hub trusts.
    pub async fn create_device_with_certificate_authority(
        &self,
        device_id: impl Into<String>,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        let op = "create_device_with_certificate_authority";
        let auth = Auth::CertificateAuthority;
        self.put_device(op, device_id.into(), None, auth, status, options)
            .await
    }

    /// Replaces a device with one that authenticates with symmetric keys. Like the reference,
    /// this is a full replacement: options not given are cleared.
    ///
    /// `if_match` is [`IfMatch::Any`] for an unconditional update, or the etag read before
    /// (a mismatch fails with 412, [`Error::is_precondition_failed`]).
    ///
    /// `keys` must be given with [`SasKeys::new`]: [`SasKeys::generated`] is refused
    /// ([`Error::InvalidArgument`] for `keys`) before anything is sent, since the service would
    /// replace the device's keys and lock it out.
    pub async fn update_device_with_sas(
        &self,
        device_id: impl Into<String>,
        if_match: IfMatch,
        keys: SasKeys,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        let op = "update_device_with_sas";
        let auth = Auth::Sas(&keys);
        self.put_device(op, device_id.into(), Some(if_match), auth, status, options)
            .await
    }

    /// Replaces a device with one that authenticates with a self-signed X.509 certificate.
    pub async fn update_device_with_x509(
        &self,
        device_id: impl Into<String>,
        if_match: IfMatch,
        thumbprints: X509Thumbprints,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        let op = "update_device_with_x509";
        let auth = Auth::X509(&thumbprints);
        self.put_device(op, device_id.into(), Some(if_match), auth, status, options)
            .await
    }

    /// Replaces a device with one that authenticates with a CA-signed certificate (its keys
    /// and thumbprints are dropped).
    pub async fn update_device_with_certificate_authority(
        &self,
        device_id: impl Into<String>,
        if_match: IfMatch,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        let op = "update_device_with_certificate_authority";
        let auth = Auth::CertificateAuthority;
        self.put_device(op, device_id.into(), Some(if_match), auth, status, options)
            .await
    }

    /// Reads a device identity. Its year-1 timestamps mean "never"
    /// ([`IotDateTime::get`](iothub_rest_gen::IotDateTime::get) returns `None`).
    pub async fn get_device(&self, device_id: impl Into<String>) -> Result<Device> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        let call = Call::new("get_device", OperationKind::Read).device(&device_id);
        self.execute(call, || {
            let request = self.rest.devices_get_identity().id(device_id.as_str());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Lists up to `max` devices (1 to [`MAX_DEVICES_PER_LIST`]; `None` lets the service
    /// choose, which is also at most 1000). There is no paging: for more, use
    /// [`RegistryManager::query`] with `SELECT * FROM devices`.
    pub async fn get_devices(&self, max: Option<u32>) -> Result<Vec<Device>> {
        if let Some(max) = max.filter(|max| !(1..=MAX_DEVICES_PER_LIST).contains(max)) {
            return Err(Error::InvalidArgument {
                argument: "max",
                reason: format!("{max} is outside 1..={MAX_DEVICES_PER_LIST}"),
            });
        }
        self.execute(Call::new("get_devices", OperationKind::Read), || {
            let mut request = self.rest.devices_get_devices();
            if let Some(max) = max {
                // Checked above: fits in i32.
                request = request.top(max as i32);
            }
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Deletes a device: unconditionally with [`IfMatch::Any`], or only if its etag still
    /// matches.
    ///
    /// A device that does not exist fails with 404 ([`Error::is_not_found`]), except when an
    /// earlier attempt of this call failed in a way that leaves its outcome unknown: that
    /// attempt may be what deleted it, and the call succeeds (a `tracing` event says so).
    pub async fn delete_device(
        &self,
        device_id: impl Into<String>,
        if_match: IfMatch,
    ) -> Result<()> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        let header = if_match.header_value();
        let call = Call::new("delete_device", OperationKind::Delete).device(&device_id);
        let outcome = self
            .execute(call, || {
                let request = self
                    .rest
                    .devices_delete_identity()
                    .id(device_id.as_str())
                    .if_match(header.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await;
        deleted(call, outcome)
    }

    async fn put_device(
        &self,
        operation: &'static str,
        device_id: String,
        if_match: Option<IfMatch>,
        auth: Auth<'_>,
        status: impl Into<DeviceStatus>,
        options: DeviceOptions,
    ) -> Result<Device> {
        validate_device_id(&device_id)?;
        match if_match {
            Some(_) => auth.check_update()?,
            None => auth.check()?,
        }
        let body = Device {
            device_id: Some(device_id.clone()),
            status: Some(status.into()),
            authentication: Some(auth.mechanism()),
            capabilities: Some(DeviceCapabilities {
                iot_edge: Some(options.iot_edge),
            }),
            status_reason: options.status_reason,
            device_scope: options.device_scope,
            parent_scopes: options.parent_scopes,
            ..Device::default()
        };
        // A create (no If-Match) repeated after its first attempt was applied answers 409 for
        // the device it created; a forced update applies again, undoing any change between.
        let kind = if_match
            .as_ref()
            .map_or(OperationKind::Create, IfMatch::write_kind);
        let header = if_match.map(|m| m.header_value());
        let call = Call::new(operation, kind).device(&device_id);
        self.execute(call, || {
            let mut request = self
                .rest
                .devices_create_or_update_identity()
                .id(device_id.as_str())
                .body(body.clone());
            if let Some(header) = &header {
                request = request.if_match(header.as_str());
            }
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }
}
