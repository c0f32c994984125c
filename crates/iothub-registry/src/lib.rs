#![doc = include_str!("../README.md")]

mod bulk;
pub mod bulk_entry;
#[cfg(feature = "amqp")]
pub mod c2d;
mod configuration_builder;
mod configurations;
mod devices;
mod digital_twins;
mod error;
mod etag;
pub mod feedback;
mod identity;
mod ids;
pub mod import_export_file;
mod job_requests;
mod jobs;
mod json_patch;
mod manager;
mod methods;
mod modules;
mod pager;
mod query;
mod retry;
mod twin_patch;
mod twins;

pub use iothub_rest_gen::IotDateTime;
/// A container SAS URI whose signature is never shown (re-exported from `iothub-rest-gen`).
pub use iothub_rest_gen::SasUri;
/// The service's models, generated from its spec (re-exported from `iothub-rest-gen`).
pub use iothub_rest_gen::types as models;

pub use bulk::{Bulk, BulkProgress, BulkReport, FailedChunk, MAX_BULK_DEVICES};
pub use configuration_builder::{ConfigurationBuilder, EDGE_AGENT, EDGE_HUB};
pub use configurations::ConfigurationManager;
pub use devices::MAX_DEVICES_PER_LIST;
pub use digital_twins::{
    COMMAND_TIMEOUT_RANGE_SECS, DigitalTwin, DigitalTwinClient, DigitalTwinCommandResult,
    DigitalTwinUpdate,
};
pub use error::{Error, Result, ServiceError};
pub use etag::{ETag, IfMatch};
pub use feedback::HttpRuntimeManager;
pub use identity::{DeviceOptions, SasKeys, X509Thumbprints};
pub use job_requests::{
    DeviceMethod, ImportExportJob, MAX_QUERY_CONDITION_BYTES, METHOD_CONNECT_TIMEOUT_SECS,
    METHOD_RESPONSE_TIMEOUT_SECS, ScheduledJob,
};
pub use jobs::{JobManager, JobQuery, JobQueryPage, JobSnapshot, JobWait, is_terminal};
pub use json_patch::{JsonPatch, PatchOperation};
// Declared where the HTTP client is built; `RegistryManagerBuilder::connect_timeout` defaults
// to it.
pub use iothub_rest_gen::DEFAULT_CONNECT_TIMEOUT;
// Declared where responses are read; `RegistryManagerBuilder::max_response_body` and
// `max_error_body` default to them.
pub use iothub_rest_gen::{DEFAULT_MAX_ERROR_BODY, DEFAULT_MAX_RESPONSE_BODY};
pub use manager::{DEFAULT_TIMEOUT, RegistryManager, RegistryManagerBuilder};
pub use query::{Query, QueryPage};
pub use retry::{ExponentialRetry, NoRetry, OperationKind, RetryClass, RetryContext, RetryPolicy};
pub use twin_patch::TwinPatch;

/// Credentials and connection strings (re-exported from `iothub-auth`).
pub use iothub_auth::{ConnectionString, Credential, HostName};
