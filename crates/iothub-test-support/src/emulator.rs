//! Clients of a local [`Emulator`]: a raw HTTPS client, and `RegistryManager`s built the way
//! the `iothub-registry` docs tell emulator users to (its CA trusted for HTTPS and AMQP, its
//! AMQP port).

use iothub_auth::{ConnectionString, Credential};
use iothub_emulator::Emulator;
use iothub_registry::{RegistryManager, RegistryManagerBuilder};

/// An HTTPS client that trusts only the emulator's CA.
pub fn https_client(emulator: &Emulator) -> reqwest::Client {
    let pem = emulator
        .ca_certificate_pem()
        .expect("the emulator serves HTTPS");
    let ca = reqwest::Certificate::from_pem(pem.as_bytes()).expect("a PEM certificate");
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .expect("a client")
}

/// A builder for a manager of `emulator` signing with `credential`: the emulator's CA
/// trusted for HTTPS and AMQP, its AMQP port dialled, proxy variables ignored. Add a retry
/// policy or other settings, then build.
pub fn registry_builder_with(
    emulator: &Emulator,
    credential: Credential,
) -> RegistryManagerBuilder {
    let ca = emulator
        .ca_certificate_pem()
        .expect("the emulator serves HTTPS");
    let amqp = emulator.amqp_addr().expect("the emulator serves AMQP");
    RegistryManager::builder(credential)
        .add_root_certificate_pem(ca)
        .amqp_port(amqp.port())
        .no_proxy()
}

/// [`registry_builder_with`] for one of the emulator's connection strings (another policy's,
/// or one with a wrong key).
pub fn registry_builder(emulator: &Emulator, connection_string: &str) -> RegistryManagerBuilder {
    let cs: ConnectionString = connection_string
        .parse()
        .expect("a valid connection string");
    registry_builder_with(emulator, Credential::from_connection_string(&cs))
}

/// A manager of `emulator` as its owner (`iothubowner`), with the default retry policy.
pub fn registry(emulator: &Emulator) -> RegistryManager {
    registry_builder(emulator, &emulator.connection_string())
        .build()
        .expect("valid settings")
}
