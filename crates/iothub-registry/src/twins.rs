//! Device and module twins (`/twins/{id}`, `/twins/{id}/modules/{mid}`).

use iothub_rest_gen::ResponseValue;
use iothub_rest_gen::types::Twin;

use crate::error::Result;
use crate::etag::IfMatch;
use crate::ids::{validate_device_id, validate_module_id};
use crate::manager::{Call, RegistryManager};
use crate::retry::OperationKind;

/// Which half of a twin write: PATCH merges tags and desired properties, PUT replaces them.
#[derive(Clone, Copy)]
enum Write {
    Merge,
    Replace,
}

impl RegistryManager {
    /// Reads a device twin.
    pub async fn get_twin(&self, device_id: impl Into<String>) -> Result<Twin> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        let call = Call::new("get_twin", OperationKind::Read).device(&device_id);
        self.execute(call, || {
            let request = self.rest.devices_get_twin().id(device_id.as_str());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Merges `patch` (its `tags` and `properties.desired`) into a device twin (HTTP PATCH).
    /// A key set to JSON `null` removes it. `patch` is a [`TwinPatch`](crate::TwinPatch) or a
    /// [`Twin`].
    ///
    /// ```no_run
    /// use iothub_registry::{IfMatch, RegistryManager, TwinPatch, models::Twin};
    /// use serde_json::json;
    ///
    /// # async fn run(registry: RegistryManager) -> Result<(), Box<dyn std::error::Error>> {
    /// let twin = registry.get_twin("thermostat-1").await?;
    /// let patch = TwinPatch::new()
    ///     .tag("floor", 3)
    ///     .desired("targetTemperature", 21.5);
    /// // Applied only if nobody wrote the twin since it was read.
    /// registry
    ///     .update_twin("thermostat-1", patch, IfMatch::from_current(twin.etag.as_deref())?)
    ///     .await?;
    ///
    /// // Or as JSON.
    /// let patch: Twin = serde_json::from_value(json!({
    ///     "properties": { "desired": { "targetTemperature": 22.0 } }
    /// }))?;
    /// registry.update_twin("thermostat-1", patch, IfMatch::Any).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_twin(
        &self,
        device_id: impl Into<String>,
        patch: impl Into<Twin>,
        if_match: IfMatch,
    ) -> Result<Twin> {
        self.write_twin(device_id.into(), None, patch.into(), if_match, Write::Merge)
            .await
    }

    /// Replaces the tags and desired properties of a device twin (HTTP PUT).
    pub async fn replace_twin(
        &self,
        device_id: impl Into<String>,
        twin: Twin,
        if_match: IfMatch,
    ) -> Result<Twin> {
        self.write_twin(device_id.into(), None, twin, if_match, Write::Replace)
            .await
    }

    /// Reads a module twin.
    pub async fn get_module_twin(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
    ) -> Result<Twin> {
        let (device_id, module_id) = (device_id.into(), module_id.into());
        validate_device_id(&device_id)?;
        validate_module_id(&module_id)?;
        let call = Call::new("get_module_twin", OperationKind::Read)
            .device(&device_id)
            .module(&module_id);
        self.execute(call, || {
            let request = self
                .rest
                .modules_get_twin()
                .id(device_id.as_str())
                .mid(module_id.as_str());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Merges `patch` (a [`TwinPatch`](crate::TwinPatch) or a [`Twin`]) into a module twin
    /// (HTTP PATCH).
    pub async fn update_module_twin(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        patch: impl Into<Twin>,
        if_match: IfMatch,
    ) -> Result<Twin> {
        let module_id = Some(module_id.into());
        self.write_twin(
            device_id.into(),
            module_id,
            patch.into(),
            if_match,
            Write::Merge,
        )
        .await
    }

    /// Replaces the tags and desired properties of a module twin (HTTP PUT).
    pub async fn replace_module_twin(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        twin: Twin,
        if_match: IfMatch,
    ) -> Result<Twin> {
        let module_id = Some(module_id.into());
        self.write_twin(device_id.into(), module_id, twin, if_match, Write::Replace)
            .await
    }

    async fn write_twin(
        &self,
        device_id: String,
        module_id: Option<String>,
        twin: Twin,
        if_match: IfMatch,
        write: Write,
    ) -> Result<Twin> {
        validate_device_id(&device_id)?;
        if let Some(module_id) = &module_id {
            validate_module_id(module_id)?;
        }
        let operation = match (write, module_id.is_some()) {
            (Write::Merge, false) => "update_twin",
            (Write::Replace, false) => "replace_twin",
            (Write::Merge, true) => "update_module_twin",
            (Write::Replace, true) => "replace_module_twin",
        };
        // Applied twice, even the same patch bumps the twin's versions and notifies the device
        // twice, and undoes any change made in between: only a conditional one is repeated.
        let kind = if_match.write_kind();
        let header = if_match.header_value();
        let mut call = Call::new(operation, kind).device(&device_id);
        if let Some(module_id) = &module_id {
            call = call.module(module_id);
        }
        self.execute(call, || {
            let (id, body, header) = (device_id.as_str(), twin.clone(), header.as_str());
            let rest = &self.rest;
            let module_id = module_id.as_deref();
            async move {
                let result = match (write, module_id) {
                    (Write::Merge, None) => {
                        rest.devices_update_twin()
                            .id(id)
                            .if_match(header)
                            .body(body)
                            .send()
                            .await
                    }
                    (Write::Replace, None) => {
                        rest.devices_replace_twin()
                            .id(id)
                            .if_match(header)
                            .body(body)
                            .send()
                            .await
                    }
                    (Write::Merge, Some(mid)) => {
                        let request = rest.modules_update_twin().id(id).mid(mid);
                        request.if_match(header).body(body).send().await
                    }
                    (Write::Replace, Some(mid)) => {
                        let request = rest.modules_replace_twin().id(id).mid(mid);
                        request.if_match(header).body(body).send().await
                    }
                };
                result.map(ResponseValue::into_inner)
            }
        })
        .await
    }
}
