//! Integration tests of `iothub-registry`, one module per area, in one test binary.

mod behaviour;
mod construction;
mod tracing;
mod wire;
