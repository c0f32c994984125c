//! Integration tests of `iothub-rest-gen`, one module per area, in one test binary.

mod models;
mod operations;
