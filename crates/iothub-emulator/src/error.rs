//! The crate's [`Error`]: why the emulator could not start, or why a control call was
//! refused.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::rest::errors;

/// Why the emulator could not start, or why a control call was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The durable store failed.
    #[error("registry store {}: {message}", path.display())]
    Store {
        /// The database file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Certificates could not be generated or loaded.
    #[error("TLS: {0}")]
    Tls(String),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A control call was refused as the service would refuse it (unknown device, …).
    #[error("{status} {code}: {message}")]
    Rejected {
        /// HTTP status the control API would answer.
        status: u16,
        /// The service's error code name.
        code: &'static str,
        /// The reason.
        message: String,
    },
}

impl From<errors::ServiceError> for Error {
    fn from(e: errors::ServiceError) -> Self {
        Self::Rejected {
            status: e.status,
            code: e.name,
            message: e.message,
        }
    }
}
