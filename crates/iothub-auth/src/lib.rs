#![doc = include_str!("../README.md")]

mod clock;
mod connection_string;
mod credential;
mod error;
mod host;
pub mod ids;
mod key;
pub mod network;
mod sas;
mod secret;

pub use clock::{Clock, ManualClock, SystemClock};
pub use connection_string::ConnectionString;
pub use credential::{CbsToken, CbsTokenType, Credential, DEFAULT_SAS_TTL, DEFAULT_SCOPE};
pub use error::{ConnectionStringError, Error, HostNameError, KeyError, Result, SasTokenError};
pub use host::HostName;
pub use key::SharedAccessKey;
pub use sas::SasToken;
pub use secret::Secret;
