//! The service's REST API (api-version 2021-04-12) over HTTP(S), and the control API beside
//! it.
//!
//! - `server.rs`: accept loop, connections and TLS, and the pipeline every request goes
//!   through (authentication, routing, body, api-version, fault injection, request log), with
//!   the one list of requests exempt from authentication before routing.
//! - `connections.rs`: the listener's connection cap and the deadlines of slow and idle
//!   connections.
//! - `request.rs` and `answer.rs`: a request read in full, and the answer before it is written.
//! - `routes.rs`: the [`routes::Route`] of each operation, its permissions and throttling
//!   class, the accepted api-versions, and the dispatch to the handlers.
//! - One handler module per resource: `devices.rs` (`/devices`, list and bulk included),
//!   `modules.rs` (`/devices/{id}/modules`), `commands.rs` (`/devices/{id}/commands`),
//!   `twins.rs` (`/twins`), `query.rs` (`/devices/query`), `methods.rs` (direct methods,
//!   `/twins/{id}/methods`), `statistics.rs` (`/statistics`), `configurations.rs`
//!   (`/configurations`, and `/devices/{id}/applyConfigurationContent`), `jobs.rs` (`/jobs`:
//!   import/export and scheduled jobs) and `feedback.rs` (`/messages/serviceBound/feedback`,
//!   delivery feedback over HTTP), and `digital_twins.rs` (`/digitaltwins`: Plug and Play
//!   digital twins and their commands).
//! - `control.rs`: the emulator's own API under `/_emulator/`.
//! - `errors.rs`: the service's error answers; `log.rs`: the request log.

mod answer;
mod commands;
mod configurations;
pub(crate) mod connections;
pub(crate) mod control;
pub(crate) mod devices;
mod digital_twins;
pub(crate) mod errors;
mod feedback;
mod jobs;
pub(crate) mod log;
pub(crate) mod methods;
mod modules;
mod query;
mod request;
mod routes;
pub(crate) mod server;
mod statistics;
pub(crate) mod twins;
