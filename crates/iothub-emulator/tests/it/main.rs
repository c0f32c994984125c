//! Integration tests of `iothub-emulator`, in one test binary: end to end over HTTPS and
//! AMQP as a client of the service sees it, and the official SDKs against it (`interop`).

mod amqp;
mod auth;
mod durability;
mod entra;
mod faults;
mod hub;
mod interop;
mod methods;
mod query;
mod registry;
mod tls;
mod twins;
