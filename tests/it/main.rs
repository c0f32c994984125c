//! Workspace-level end-to-end tests of iothub-rs, one module per area, in one test binary.

mod azure_ad;
mod configurations;
mod device_interop;
mod digital_twins;
mod jobs;
mod parity;
mod registry_auth;
mod registry_c2d;
mod registry_e2e;
mod registry_emulator;
mod reliability;
mod rest_auth;
mod secrets;
