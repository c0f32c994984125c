//! What the tests of iothub-rs share, so that no test file carries its own copy.
//!
//! Not published: it exists for the workspace's own tests.

pub mod skip;
