//! Module identities on a device (`/devices/{id}/modules/{mid}`).

use iothub_rest_gen::ResponseValue;
use iothub_rest_gen::types::Module;

use crate::error::Result;
use crate::etag::IfMatch;
use crate::identity::{Auth, SasKeys, X509Thumbprints};
use crate::ids::{validate_device_id, validate_module_id};
use crate::manager::{Call, RegistryManager, deleted};
use crate::retry::OperationKind;

impl RegistryManager {
    /// Creates a module that authenticates with symmetric keys ([`SasKeys::generated`] lets
    /// the service generate them). `managed_by` names what manages it (`"IotEdge"`, say).
    pub async fn create_module_with_sas(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        keys: SasKeys,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        let ids = (device_id.into(), module_id.into());
        self.put_module(
            "create_module_with_sas",
            ids,
            None,
            Auth::Sas(&keys),
            managed_by,
        )
        .await
    }

    /// Creates a module that authenticates with a self-signed X.509 certificate.
    pub async fn create_module_with_x509(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        thumbprints: X509Thumbprints,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        let ids = (device_id.into(), module_id.into());
        let auth = Auth::X509(&thumbprints);
        self.put_module("create_module_with_x509", ids, None, auth, managed_by)
            .await
    }

    /// Creates a module that authenticates with a CA-signed certificate.
    pub async fn create_module_with_certificate_authority(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        let ids = (device_id.into(), module_id.into());
        let op = "create_module_with_certificate_authority";
        self.put_module(op, ids, None, Auth::CertificateAuthority, managed_by)
            .await
    }

    /// Replaces a module with one that authenticates with symmetric keys, given with
    /// [`SasKeys::new`]: [`SasKeys::generated`] is refused before anything is sent, since the
    /// service would replace the module's keys.
    pub async fn update_module_with_sas(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        if_match: IfMatch,
        keys: SasKeys,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        let ids = (device_id.into(), module_id.into());
        let op = "update_module_with_sas";
        self.put_module(op, ids, Some(if_match), Auth::Sas(&keys), managed_by)
            .await
    }

    /// Replaces a module with one that authenticates with a self-signed X.509 certificate.
    pub async fn update_module_with_x509(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        if_match: IfMatch,
        thumbprints: X509Thumbprints,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        let ids = (device_id.into(), module_id.into());
        let auth = Auth::X509(&thumbprints);
        self.put_module(
            "update_module_with_x509",
            ids,
            Some(if_match),
            auth,
            managed_by,
        )
        .await
    }

    /// Replaces a module with one that authenticates with a CA-signed certificate.
    ///
    /// Like the reference, this one also puts a given etag in the body (the reference's
    /// other update methods do not); the `If-Match` header is what the service checks.
    pub async fn update_module_with_certificate_authority(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        if_match: IfMatch,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        let ids = (device_id.into(), module_id.into());
        let op = "update_module_with_certificate_authority";
        self.put_module(
            op,
            ids,
            Some(if_match),
            Auth::CertificateAuthority,
            managed_by,
        )
        .await
    }

    /// Reads a module identity.
    pub async fn get_module(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
    ) -> Result<Module> {
        let (device_id, module_id) = (device_id.into(), module_id.into());
        validate_device_id(&device_id)?;
        validate_module_id(&module_id)?;
        let call = Call::new("get_module", OperationKind::Read)
            .device(&device_id)
            .module(&module_id);
        self.execute(call, || {
            let request = self
                .rest
                .modules_get_identity()
                .id(device_id.as_str())
                .mid(module_id.as_str());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Lists the modules of a device.
    pub async fn get_modules(&self, device_id: impl Into<String>) -> Result<Vec<Module>> {
        let device_id = device_id.into();
        validate_device_id(&device_id)?;
        let call = Call::new("get_modules", OperationKind::Read).device(&device_id);
        self.execute(call, || {
            let request = self
                .rest
                .modules_get_modules_on_device()
                .id(device_id.as_str());
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }

    /// Deletes a module: unconditionally with [`IfMatch::Any`], or only if its etag matches.
    /// Like [`delete_device`](Self::delete_device), a retry that finds it gone after an
    /// attempt whose outcome was unknown succeeds.
    pub async fn delete_module(
        &self,
        device_id: impl Into<String>,
        module_id: impl Into<String>,
        if_match: IfMatch,
    ) -> Result<()> {
        let (device_id, module_id) = (device_id.into(), module_id.into());
        validate_device_id(&device_id)?;
        validate_module_id(&module_id)?;
        let header = if_match.header_value();
        let call = Call::new("delete_module", OperationKind::Delete)
            .device(&device_id)
            .module(&module_id);
        let outcome = self
            .execute(call, || {
                let request = self
                    .rest
                    .modules_delete_identity()
                    .id(device_id.as_str())
                    .mid(module_id.as_str())
                    .if_match(header.as_str());
                async move { request.send().await.map(ResponseValue::into_inner) }
            })
            .await;
        deleted(call, outcome)
    }

    async fn put_module(
        &self,
        operation: &'static str,
        (device_id, module_id): (String, String),
        if_match: Option<IfMatch>,
        auth: Auth<'_>,
        managed_by: Option<&str>,
    ) -> Result<Module> {
        validate_device_id(&device_id)?;
        validate_module_id(&module_id)?;
        match if_match {
            Some(_) => auth.check_update()?,
            None => auth.check()?,
        }
        // The reference's quirk, kept for wire parity: only the CA update carries the etag in
        // the body too.
        let body_etag = match (&auth, &if_match) {
            (Auth::CertificateAuthority, Some(IfMatch::ETag(etag))) => {
                Some(etag.as_str().to_owned())
            }
            _ => None,
        };
        let body = Module {
            module_id: Some(module_id.clone()),
            device_id: Some(device_id.clone()),
            managed_by: managed_by.map(str::to_owned),
            authentication: Some(auth.mechanism()),
            etag: body_etag,
            ..Module::default()
        };
        let kind = if_match
            .as_ref()
            .map_or(OperationKind::Create, IfMatch::write_kind);
        let header = if_match.map(|m| m.header_value());
        let call = Call::new(operation, kind)
            .device(&device_id)
            .module(&module_id);
        self.execute(call, || {
            let mut request = self
                .rest
                .modules_create_or_update_identity()
                .id(device_id.as_str())
                .mid(module_id.as_str())
                .body(body.clone());
            if let Some(header) = &header {
                request = request.if_match(header.as_str());
            }
            async move { request.send().await.map(ResponseValue::into_inner) }
        })
        .await
    }
}
