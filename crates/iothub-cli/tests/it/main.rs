//! The built `iothub` binary against the embedded emulator: one test per command, with
//! snapshots of its JSON and table output, exit codes and error messages.

mod aad;
mod bulk;
mod c2d;
mod configurations;
mod devices;
mod misc;
mod modules;
mod output;
mod profiles;
mod query;
mod support;
mod twins;
