//! A local Azure IoT Hub: the service REST API (api-version 2021-04-12) over HTTPS, with
//! shared-access-signature authentication, a durable registry, twins, the query language,
//! bulk operations and direct methods, faithful enough that the official SDKs cannot tell
//! it from the service for what it covers.
//!
//! Use it for offline development and in tests. Beside the service's paths it serves a
//! control API under `/_emulator/` for what devices would do (connect, report properties,
//! answer methods), the request log and fault injection; the same is available on
//! [`Emulator`] for Rust tests.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iothub_emulator::Error> {
//! use iothub_emulator::{Emulator, MethodResponse};
//!
//! let hub = Emulator::builder().start().await?;
//! println!("{}", hub.connection_string());
//! // Trust hub.ca_certificate_pem() in your HTTP client, then use the hub.
//! hub.connect_device("dev1")?; // once dev1 exists
//! hub.set_method_response("dev1", None, "reboot", MethodResponse::echo());
//! hub.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Cloud-to-device messages go in over AMQP 1.0 as the SDKs send them (see
//! [`Emulator::amqp_addr`]): implicit TLS with the HTTPS certificate (or plain TCP when
//! serving plain HTTP), and WebSockets on the HTTPS port. Feedback and file-upload
//! notifications come back on the service's links.
//!
//! Real devices connect over MQTT 3.1.1 (see [`Emulator::mqtt_addr`]): TLS with the HTTPS
//! certificate, and WebSockets on the HTTPS port (`/$iothub/websocket`, subprotocol `mqtt`),
//! authenticated by their own SAS keys or self-signed X.509 certificates, for telemetry
//! ([`Emulator::device_messages`]), cloud-to-device messages, the twin and direct methods, as
//! the official device SDKs speak them.
//!
//! Azure AD clients get their tokens from the emulator itself: it is a Microsoft Entra ID
//! look-alike for its own hub (one tenant, the app registrations and role assignments of
//! [`EntraConfig`]), whose discovery document and token endpoint `azure_identity`'s
//! `ClientSecretCredential` and Python's `azure-identity` use unmodified (see
//! [`EmulatorBuilder::entra_client`]).
//!
//! The binary `iothub-emulator` runs the same thing from the command line (`--help`).

mod amqp;
mod auth;
mod builder;
mod config;
mod emulator;
mod entra;
mod error;
mod faults;
mod hub;
mod jobs;
mod mqtt;
mod query;
mod rest;
pub mod serve;
mod startup;
mod state;
mod tls;

pub use auth::{Permission, SharedAccessPolicy};
pub use builder::EmulatorBuilder;
pub use config::{Config, TlsConfig};
pub use emulator::Emulator;
pub use entra::{
    DEFAULT_TENANT_ID, DEFAULT_TOKEN_LIFETIME_SECS, EntraClient, EntraConfig, IOT_HUB_RESOURCE,
    IotHubRole, UnknownRole,
};
pub use error::Error;
pub use faults::{FaultConfig, FaultStats, Tier, WriteFaults};
pub use mqtt::telemetry::DeviceMessage;
pub use rest::log::RequestLogEntry;
pub use state::c2d::{
    ACCEPTED_RECORD, C2dMessage, DEFAULT_TTL, LOCK_TIMEOUT, MAX_DELIVERY_COUNT, MAX_MESSAGE_BYTES,
    MAX_QUEUE_DEPTH, ReceivedC2d,
};
pub use state::methods::{DEFAULT_METHOD, MethodResponse};
