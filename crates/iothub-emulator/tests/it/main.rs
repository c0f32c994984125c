//! Integration tests of `iothub-emulator`, in one test binary: end to end over HTTPS and
//! AMQP as a client of the service sees it, and the official SDKs against it (`interop`).

mod amqp;
mod auth;
mod auth_first;
mod binary;
mod configurations;
mod connections;
mod control_access;
mod data_dir;
mod digital_twins;
mod durability;
mod entra;
mod faults;
mod feedback;
mod hub;
mod interop;
mod jobs;
mod limits;
mod methods;
mod mqtt;
mod query;
mod registry;
mod request_log;
mod soak;
mod tls;
mod twins;
mod unemulated;
