//! The command line: every command, flag and value parser. Values are checked here, while
//! parsing, so nothing is sent when one is wrong.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::values;

/// iothub: the Azure IoT Hub service API on the command line (devices, modules, twins,
/// queries, direct methods, cloud-to-device messages, bulk import) and a local emulator.
#[derive(Debug, Parser)]
#[command(name = "iothub", version, about, max_term_width = 100)]
pub(crate) struct Cli {
    /// Connection, output and logging options.
    #[command(flatten)]
    pub(crate) global: Global,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

impl Cli {
    /// Parses the command line (exiting on a usage error, as clap does: code 2), and notes
    /// which connection settings came from the environment rather than from flags.
    pub(crate) fn parse_noting_env() -> Self {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        for id in ["connection_string", "hub", "auth", "ca_cert", "amqp_port"] {
            if matches.value_source(id) == Some(clap::parser::ValueSource::EnvVariable) {
                cli.global.from_env.push(id);
            }
        }
        cli
    }
}

/// Options every command takes.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// The connection settings that came from environment variables, not flags: a profile
    /// named with `--profile` wins over them (it was asked for explicitly).
    #[arg(skip)]
    pub(crate) from_env: Vec<&'static str>,
    /// A service connection string (HostName=…;SharedAccessKeyName=…;SharedAccessKey=…).
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "IOTHUB_CONNECTION_STRING",
        hide_env_values = true
    )]
    pub(crate) connection_string: Option<String>,
    /// The hub's host name (contoso.azure-devices.net), with --auth aad.
    #[arg(long, global = true, env = "IOTHUB_HOST", hide_env_values = true)]
    pub(crate) hub: Option<String>,
    /// How to authenticate: the connection string's key, or Azure AD (client secret from
    /// AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET, then `az`/`azd` sign-in, then
    /// managed identity).
    #[arg(long, global = true, value_enum)]
    pub(crate) auth: Option<AuthMode>,
    /// A named profile from the configuration file (see `iothub profile`).
    #[arg(
        long,
        short = 'p',
        global = true,
        env = "IOTHUB_PROFILE",
        hide_env_values = true
    )]
    pub(crate) profile: Option<String>,
    /// A PEM file of extra root certificates to trust (the emulator's CA).
    #[arg(long, global = true, env = "IOTHUB_CA_CERT", hide_env_values = true)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// The AMQP port for cloud-to-device messages, feedback and file notifications
    /// [default: 5671].
    #[arg(long, global = true, env = "IOTHUB_AMQP_PORT", hide_env_values = true)]
    pub(crate) amqp_port: Option<u16>,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Json)]
    pub(crate) output: OutputFormat,
    /// A JMESPath expression applied to the output (as `az --query`).
    #[arg(long, global = true, value_parser = values::jmespath)]
    pub(crate) query: Option<values::JmesPath>,
    /// Per-request timeout in seconds.
    #[arg(long, global = true, value_parser = values::seconds)]
    pub(crate) timeout: Option<std::time::Duration>,
    /// Attempts per operation, retries included, for what is safe to repeat (1: no retry)
    /// [default: 5, with exponential backoff].
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub(crate) attempts: Option<u32>,
    /// Log the SDK's requests and retries on standard error (RUST_LOG refines it).
    #[arg(long, short = 'v', global = true)]
    pub(crate) verbose: bool,
}

/// How requests are signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AuthMode {
    /// The shared access key of the connection string.
    Key,
    /// Azure AD (Microsoft Entra ID) tokens.
    Aad,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// The service's JSON, indented; lists as one array.
    Json,
    /// One compact JSON value per line (lists and queries stream).
    Jsonl,
    /// A table of the top-level fields.
    Table,
    /// Tab-separated top-level fields, no header.
    Tsv,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Device identities.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Module identities.
    #[command(subcommand)]
    Module(ModuleCommand),
    /// Device and module twins.
    #[command(subcommand)]
    Twin(TwinCommand),
    /// Runs an IoT Hub query, streaming every page.
    Query(QueryArgs),
    /// Automatic device management configurations.
    #[command(subcommand)]
    Configuration(ConfigurationCommand),
    /// Direct methods.
    #[command(subcommand)]
    Method(MethodCommand),
    /// Cloud-to-device messages.
    #[command(subcommand)]
    C2d(C2dCommand),
    /// Delivery feedback of cloud-to-device messages.
    #[command(subcommand)]
    Feedback(WatchCommand),
    /// File-upload notifications.
    #[command(subcommand, name = "file-notifications")]
    FileNotifications(WatchCommand),
    /// Bulk registry operations.
    #[command(subcommand)]
    Bulk(BulkCommand),
    /// Device counts (total, enabled, disabled) and connected devices.
    Stats,
    /// Generates a SAS token for the hub (a policy), a device or a module.
    SasToken(SasArgs),
    /// Named profiles in the configuration file.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Runs the local IoT Hub emulator in the foreground (Ctrl-C stops it).
    #[cfg(feature = "emulator")]
    // `-c` is the global --connection-string here; the emulator's file is --config alone.
    #[command(mut_arg("config", |arg| arg.short(None)))]
    Emulator(Box<iothub_emulator::serve::ServeArgs>),
    /// Prints a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Device status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Status {
    /// Enabled.
    Enabled,
    /// Disabled: the device cannot connect.
    Disabled,
}

/// How an identity authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AuthMethod {
    /// Symmetric keys (generated unless given).
    Sas,
    /// A self-signed X.509 certificate (thumbprints).
    #[value(name = "x509")]
    X509,
    /// A certificate signed by a CA the hub trusts.
    Ca,
}

/// An identity's credentials, as given on the command line.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct Credentials {
    /// How it authenticates [default: sas].
    #[arg(long, value_enum)]
    pub(crate) auth_method: Option<AuthMethod>,
    /// Primary symmetric key (base64 of 16 to 64 bytes); with --secondary-key.
    #[arg(long, requires = "secondary_key", value_parser = values::key)]
    pub(crate) primary_key: Option<String>,
    /// Secondary symmetric key; with --primary-key.
    #[arg(long, requires = "primary_key", value_parser = values::key)]
    pub(crate) secondary_key: Option<String>,
    /// Primary certificate thumbprint (hex), for x509.
    #[arg(long, value_parser = values::thumbprint)]
    pub(crate) primary_thumbprint: Option<String>,
    /// Secondary certificate thumbprint (hex), for x509 [default: the primary].
    #[arg(long, value_parser = values::thumbprint)]
    pub(crate) secondary_thumbprint: Option<String>,
}

/// Which key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyChoice {
    /// The primary key.
    Primary,
    /// The secondary key.
    Secondary,
}

/// Which key `renew-key` replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum RenewChoice {
    /// A new primary key.
    Primary,
    /// A new secondary key.
    Secondary,
    /// Both keys new.
    Both,
    /// Exchange primary and secondary.
    Swap,
}

/// `device …`.
#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Creates a device.
    Create {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// Initial status.
        #[arg(long, value_enum, default_value_t = Status::Enabled)]
        status: Status,
        /// Why it has that status.
        #[arg(long)]
        status_reason: Option<String>,
        /// An IoT Edge device.
        #[arg(long)]
        edge: bool,
        /// Its credentials.
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Shows a device identity.
    Show {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
    },
    /// Lists device identities (at most 1000; use `query` for more).
    List {
        /// How many (1 to 1000).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
        top: Option<u32>,
    },
    /// Changes a device's status, status reason or edge capability; the rest is kept.
    Update {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// New status.
        #[arg(long, value_enum)]
        status: Option<Status>,
        /// New status reason.
        #[arg(long)]
        status_reason: Option<String>,
        /// IoT Edge on or off.
        #[arg(long)]
        edge: Option<bool>,
        /// Only if the device's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
    /// Deletes a device.
    Delete {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// Only if the device's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
    /// The device's connection string.
    #[command(subcommand, name = "connection-string")]
    ConnectionString(ConnectionStringCommand),
    /// Generates a new key (or swaps them) for a SAS device.
    RenewKey {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// Which key.
        #[arg(long, value_enum)]
        key: RenewChoice,
        /// Only if the device's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
}

/// `device connection-string …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConnectionStringCommand {
    /// Prints {"connectionString": "…"}.
    Show {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// Which key.
        #[arg(long, value_enum, default_value_t = KeyChoice::Primary)]
        key: KeyChoice,
    },
}

/// `module connection-string …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModuleConnectionStringCommand {
    /// Prints {"connectionString": "…"}.
    Show {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The module id.
        #[arg(value_parser = values::module_id)]
        module_id: String,
        /// Which key.
        #[arg(long, value_enum, default_value_t = KeyChoice::Primary)]
        key: KeyChoice,
    },
}

/// `module …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ModuleCommand {
    /// Creates a module.
    Create {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The module id.
        #[arg(value_parser = values::module_id)]
        module_id: String,
        /// Who manages it.
        #[arg(long)]
        managed_by: Option<String>,
        /// Its credentials.
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Shows a module identity.
    Show {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The module id.
        #[arg(value_parser = values::module_id)]
        module_id: String,
    },
    /// Lists the modules of a device.
    List {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
    },
    /// Changes who manages a module; its credentials are kept.
    Update {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The module id.
        #[arg(value_parser = values::module_id)]
        module_id: String,
        /// Who manages it.
        #[arg(long)]
        managed_by: Option<String>,
        /// Only if the module's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
    /// Deletes a module.
    Delete {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The module id.
        #[arg(value_parser = values::module_id)]
        module_id: String,
        /// Only if the module's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
    /// The module's connection string.
    #[command(subcommand, name = "connection-string")]
    ConnectionString(ModuleConnectionStringCommand),
    /// Generates a new key (or swaps them) for a SAS module.
    RenewKey {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The module id.
        #[arg(value_parser = values::module_id)]
        module_id: String,
        /// Which key.
        #[arg(long, value_enum)]
        key: RenewChoice,
        /// Only if the module's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
}

/// Which twin.
#[derive(Debug, Args)]
pub(crate) struct TwinTarget {
    /// The device id.
    #[arg(value_parser = values::device_id)]
    pub(crate) device_id: String,
    /// The module id, for a module twin.
    #[arg(long, short = 'm', value_parser = values::module_id)]
    pub(crate) module: Option<String>,
}

/// `twin …`.
#[derive(Debug, Subcommand)]
pub(crate) enum TwinCommand {
    /// Shows a device or module twin.
    Show {
        /// Which twin.
        #[command(flatten)]
        target: TwinTarget,
    },
    /// Merges only what is given into the twin's tags and desired properties (HTTP PATCH).
    Update {
        /// Which twin.
        #[command(flatten)]
        target: TwinTarget,
        /// Tags to merge, a JSON object (null removes a tag).
        #[arg(long, value_parser = values::json_object)]
        tags: Option<serde_json::Map<String, serde_json::Value>>,
        /// Desired properties to merge, a JSON object (null removes one).
        #[arg(long, value_parser = values::json_object)]
        desired: Option<serde_json::Map<String, serde_json::Value>>,
        /// One value: `tags.site=oslo` or `properties.desired.interval=30` (a JSON value, or
        /// else a string). Repeatable.
        #[arg(long = "set", value_parser = values::twin_set)]
        set: Vec<values::TwinSet>,
        /// Only if the twin's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
    /// Replaces the twin's tags and desired properties (HTTP PUT).
    Replace {
        /// Which twin.
        #[command(flatten)]
        target: TwinTarget,
        /// The twin, as JSON or @FILE.
        #[arg(long, value_parser = values::json_object_or_file)]
        json: serde_json::Map<String, serde_json::Value>,
        /// Only if the twin's etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
}

/// `query`.
#[derive(Debug, Args)]
pub(crate) struct QueryArgs {
    /// The query, `SELECT * FROM devices WHERE …`.
    #[arg(value_parser = values::sql)]
    pub(crate) sql: String,
    /// Stop after this many results.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) top: Option<u64>,
    /// Results per page (1 to 1000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) page_size: Option<u32>,
}

/// `configuration …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigurationCommand {
    /// Creates a configuration from its JSON (as the service takes it: `id`, `content`,
    /// `targetCondition`, `priority`, `labels`, `metrics`), checked before it is sent.
    Create {
        /// The configuration, as JSON or @FILE.
        #[arg(long, value_parser = values::json_object_or_file)]
        json: serde_json::Map<String, serde_json::Value>,
        /// Its id [default: the JSON's `id`].
        #[arg(long, value_parser = values::non_empty)]
        id: Option<String>,
        /// Which twins it targets (`tags.site = 'oslo'`) [default: the JSON's].
        #[arg(long)]
        target_condition: Option<String>,
        /// Its priority [default: the JSON's].
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
        priority: Option<i32>,
    },
    /// Shows a configuration.
    Show {
        /// The configuration id.
        #[arg(value_parser = values::non_empty)]
        id: String,
    },
    /// Lists configurations.
    List {
        /// How many (1 to 100).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
        top: Option<u32>,
    },
    /// Deletes a configuration.
    Delete {
        /// The configuration id.
        #[arg(value_parser = values::non_empty)]
        id: String,
        /// Only if its etag is still this one.
        #[arg(long, value_parser = values::etag)]
        etag: Option<iothub_registry::ETag>,
    },
}

/// `method …`.
#[derive(Debug, Subcommand)]
pub(crate) enum MethodCommand {
    /// Invokes a direct method and prints the device's answer ({"status", "payload"}).
    Invoke {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The method name.
        #[arg(value_parser = values::non_empty)]
        method: String,
        /// The module id, for a module's method.
        #[arg(long, short = 'm', value_parser = values::module_id)]
        module: Option<String>,
        /// The payload, JSON.
        #[arg(long, value_parser = values::json)]
        payload: Option<serde_json::Value>,
        /// Seconds to wait for the device's answer (5 to 300).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(i32).range(5..=300))]
        response_timeout: i32,
        /// Seconds to wait for the device to connect (0 to 300).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=300))]
        connect_timeout: i32,
    },
}

/// Feedback requested for a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum AckMode {
    /// None.
    None,
    /// Delivered.
    Positive,
    /// Not delivered.
    Negative,
    /// Both.
    Full,
}

/// `c2d …`.
#[derive(Debug, Subcommand)]
pub(crate) enum C2dCommand {
    /// Sends a message to a device (or a module) and waits until the hub has queued it.
    Send {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
        /// The body.
        body: String,
        /// The module id.
        #[arg(long, short = 'm', value_parser = values::module_id)]
        module: Option<String>,
        /// Delivery feedback to request.
        #[arg(long, value_enum)]
        ack: Option<AckMode>,
        /// The message id [default: a new UUID].
        #[arg(long)]
        message_id: Option<String>,
        /// The correlation id.
        #[arg(long)]
        correlation_id: Option<String>,
        /// The content type.
        #[arg(long)]
        content_type: Option<String>,
        /// The content encoding.
        #[arg(long)]
        content_encoding: Option<String>,
        /// An application property, KEY=VALUE. Repeatable.
        #[arg(long = "property", value_parser = values::key_value)]
        properties: Vec<(String, String)>,
    },
    /// Deletes every message waiting for a device.
    Purge {
        /// The device id.
        #[arg(value_parser = values::device_id)]
        device_id: String,
    },
}

/// `feedback watch`, `file-notifications watch`.
#[derive(Debug, Subcommand)]
pub(crate) enum WatchCommand {
    /// Prints each record as it arrives (JSON lines), completing it.
    Watch {
        /// Stop after this many records.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max: Option<u64>,
        /// Stop after this many seconds without a record.
        #[arg(long, value_parser = values::seconds)]
        timeout: Option<std::time::Duration>,
    },
}

/// How bulk entries are applied when the file does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum BulkMode {
    /// Create; an identity that exists with the same content counts as done.
    Create,
    /// Create, or replace an identity that exists (the service's `update` mode).
    Update,
}

/// `bulk …`.
#[derive(Debug, Subcommand)]
pub(crate) enum BulkCommand {
    /// Applies a file of identities, one JSON object per line ({"id": …, "moduleId": …,
    /// "status": …, "authentication": …, "importMode": …}), in paced calls of 100. Safe to
    /// re-run: identities that already exist with the same content count as done.
    Import {
        /// The file (JSON lines); `-` for standard input.
        file: PathBuf,
        /// Entries without importMode are applied this way.
        #[arg(long, value_enum, default_value_t = BulkMode::Create)]
        mode: BulkMode,
        /// Identities per minute (the hub's bulk throttle); unlimited by default.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        per_minute: Option<u32>,
        /// Calls in flight at once (1 to 16).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=16))]
        concurrency: u8,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
}

/// `sas-token`.
#[derive(Debug, Args)]
pub(crate) struct SasArgs {
    /// A device token, signed with the device's key (read from the hub).
    #[arg(long, short = 'd', value_parser = values::device_id)]
    pub(crate) device: Option<String>,
    /// A module token (with --device).
    #[arg(long, short = 'm', requires = "device", value_parser = values::module_id)]
    pub(crate) module: Option<String>,
    /// Which key of the device or module.
    #[arg(long, value_enum, default_value_t = KeyChoice::Primary)]
    pub(crate) key: KeyChoice,
    /// Seconds until it expires.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub(crate) duration: u64,
}

/// `profile …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ProfileCommand {
    /// Saves a profile from the connection options given (--connection-string, or --hub with
    /// --auth aad; --ca-cert, --amqp-port).
    Set {
        /// The profile name.
        #[arg(value_parser = values::profile_name)]
        name: String,
    },
    /// Lists the profiles (secrets are never printed).
    List,
    /// Shows a profile (secrets are never printed).
    Show {
        /// The profile name.
        #[arg(value_parser = values::profile_name)]
        name: String,
    },
    /// Deletes a profile.
    Delete {
        /// The profile name.
        #[arg(value_parser = values::profile_name)]
        name: String,
    },
}
