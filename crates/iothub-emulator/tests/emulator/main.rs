//! End-to-end tests of the emulator over HTTPS, as a client of the service sees it.

mod amqp;
mod auth;
mod durability;
mod faults;
mod hub;
mod methods;
mod query;
mod registry;
mod tls;
mod twins;
