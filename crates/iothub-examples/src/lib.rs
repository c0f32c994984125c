//! Runnable examples of iothub-rs, never published: `cargo run --example quickstart`.
//!
//! The library is empty; the examples are in `examples/`. They live in a crate of their own
//! because they need what no library crate may link (see the quickstart's header).
