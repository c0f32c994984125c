//! `POST /devices` (bulk registry operations), written by hand beside the generated
//! [`Client::bulk_registry_update_registry`], for its one response the spec cannot describe.
//!
//! The spec says a 400 carries a `BulkRegistryOperationResult`, and it does when some entries
//! failed. The service also answers 400 with its ordinary error body
//! (`{"Message":"ErrorCode:ArgumentInvalid;…","ExceptionMessage":"Tracking ID:…"}`) when it
//! applied nothing, and every field of the result being optional, the generated call decodes
//! that as an empty result and drops the error code and tracking id. This call leaves every
//! status but 200 unread, for the caller to tell the two apart.

use progenitor_client::{ClientHooks, ClientInfo, OperationInfo};
use reqwest::header::{ACCEPT, HeaderValue};

use crate::types::{BulkRegistryOperationResult, ExportImportDevice};
use crate::{Client, Error, ResponseValue};

impl Client {
    /// Sends `POST /devices` with `devices` like
    /// [`bulk_registry_update_registry`](Self::bulk_registry_update_registry), through the same
    /// hooks (authorization, api-version, user agent, body caps), and decodes a 200. Any other
    /// status, 400 included, is [`Error::UnexpectedResponse`] with its body not yet read.
    pub async fn bulk_registry_update_registry_keeping_errors(
        &self,
        devices: &[ExportImportDevice],
    ) -> Result<ResponseValue<BulkRegistryOperationResult>, Error<()>> {
        let url = format!("{}/devices", self.baseurl());
        let mut request = self
            .client()
            .post(url)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .json(devices)
            .build()?;
        let info = OperationInfo {
            operation_id: "bulk_registry_update_registry",
        };
        self.pre(&mut request, &info).await?;
        let result = self.exec(request, &info).await;
        self.post(&result, &info).await?;
        let response = result?;
        match response.status().as_u16() {
            200 => ResponseValue::from_response(response).await,
            _ => Err(Error::UnexpectedResponse(response)),
        }
    }
}
