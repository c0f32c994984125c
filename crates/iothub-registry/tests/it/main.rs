//! Integration tests of `iothub-registry`, one module per area, in one test binary.

mod behaviour;
mod bounded;
mod configurations;
mod construction;
mod jobs;
mod outcomes;
mod tracing;
mod wire;
