//! The hub's state, apart from the REST and AMQP fronts.
//!
//! - `store.rs`: the registry of devices, modules and twins, written through transactions
//!   ([`store::Tx`]); `persist.rs`: its durable copy on disk.
//! - `identity.rs`: the rules for ids and for the writable fields of devices and modules
//!   (status, authentication mechanism, keys and thumbprints).
//! - `twin.rs`: twin state, merge-patch and replace, and limits; `render.rs`: the twin
//!   document as the service shows it.
//! - `digital_twin.rs`: the digital twin (Plug and Play) derived from a device twin, and JSON
//!   Patch applied to desired properties.
//! - `etag.rs`: `If-Match` and the etag formats.
//! - `configurations.rs`: configurations (automatic device management, IoT Edge
//!   deployments): their rules and limits, targeting, which one wins a twin, and metrics;
//!   stored and applied through [`store::Tx`].
//! - `c2d.rs`: cloud-to-device queues, feedback (over AMQP and HTTP) and file-upload
//!   notifications.
//! - `methods.rs`: what emulated devices answer to direct methods, and the signal a call
//!   waiting for a device to connect waits on.
//! - `blocking.rs`: running disk syncs and scans off the async worker threads.

pub(crate) mod blocking;
pub(crate) mod c2d;
pub(crate) mod configurations;
pub(crate) mod digital_twin;
pub(crate) mod etag;
pub(crate) mod identity;
pub(crate) mod methods;
pub(crate) mod persist;
pub(crate) mod render;
pub(crate) mod store;
pub(crate) mod twin;
