//! What the tests of iothub-rs share, so that no test file carries its own copy.
//!
//! Not published: it exists for the workspace's own integration tests (`tests/it/` of each
//! crate and the workspace's `tests/` package). It depends on `iothub-auth`,
//! `iothub-rest-gen`, `iothub-registry` and `iothub-emulator`, so a `#[cfg(test)]` module
//! inside one of those crates' `src/` cannot use it (it would see a second copy of the crate's
//! types); integration tests can.
//!
//! - [`azurite`]: find a running Azurite (the Azure Storage emulator), create containers
//!   and sign their URLs, for the import/export job tests.
//! - [`skip`]: skip a test that needs something a fresh clone lacks, and fail under `CI=true`.
//! - [`sdk`]: where the official SDKs the interop and parity tests drive are found.
//! - [`loopback`]: which test owns which loopback address for fixed ports.
//! - [`sas`]: a service SAS token verifier written independently of `iothub-auth`.
//! - [`credentials`]: test keys, SAS credentials and a fixed Azure AD token.
//! - [`emulator`]: HTTPS clients and `RegistryManager`s for a local [`Emulator`].
//! - [`wire`]: wiremock servers, clients pointed at them, and the request recorder behind
//!   the wire snapshots.
//!
//! [`Emulator`]: iothub_emulator::Emulator

pub mod azurite;
pub mod credentials;
pub mod emulator;
pub mod loopback;
pub mod sas;
pub mod sdk;
pub mod skip;
pub mod wire;
