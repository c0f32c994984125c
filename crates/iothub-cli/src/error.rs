//! The CLI's one error type, what it prints on standard error, and its exit code.

use std::io::IsTerminal as _;
use std::process::ExitCode;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// The command line or a value in it is wrong; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// What the SDK reported (the service's answer, a transport failure, a bad argument).
    #[error("{0}")]
    Registry(#[from] iothub_registry::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A setting (profile, credential) cannot be used.
    #[error("{0}")]
    Config(String),
    /// The bulk run finished, with identities it could not apply (already printed).
    #[error("{failed} of {total} identities were not applied")]
    BulkIncomplete {
        /// Identities not applied.
        failed: usize,
        /// Identities in the file.
        total: usize,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// `Result` with [`CliError`].
pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// A usage error, the message saying what is wrong and how to fix it.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }

    /// The exit code: 2 usage, 3 not found, 4 precondition failed or conflict, 5 throttled,
    /// 1 anything else. Scripts branch on these, so they never change.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Registry(e) => {
                if matches!(e, iothub_registry::Error::InvalidArgument { .. }) {
                    2
                } else if e.is_not_found() {
                    3
                } else if e.is_precondition_failed() || e.is_conflict() {
                    4
                } else if e.is_throttled() {
                    5
                } else {
                    1
                }
            }
            _ => 1,
        }
    }

    /// Prints the error on standard error: one line saying what failed, then the service's
    /// status, error code and tracking id when the hub answered (what support asks for).
    pub(crate) fn report(&self) -> ExitCode {
        let prefix = if std::io::stderr().is_terminal() {
            "\x1b[1;31merror\x1b[0m"
        } else {
            "error"
        };
        eprintln!("{prefix}: {self}");
        if let CliError::Registry(e) = self {
            if let Some(status) = e.status() {
                eprintln!("  status: {status}");
            }
            if let Some(service) = e.service() {
                if let Some(code) = service.code() {
                    match service.code_number() {
                        Some(n) => eprintln!("  code: {} ({n})", code.as_str()),
                        None => eprintln!("  code: {}", code.as_str()),
                    }
                }
                if let Some(id) = service.tracking_id() {
                    eprintln!("  tracking id: {id}");
                }
            }
        }
        ExitCode::from(self.exit_code())
    }
}
