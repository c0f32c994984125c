//! One module per command group; each turns parsed arguments into registry calls and
//! printed results.

pub(crate) mod bulk;
pub(crate) mod c2d;
pub(crate) mod configurations;
pub(crate) mod devices;
#[cfg(feature = "emulator")]
pub(crate) mod emulator;
pub(crate) mod identity;
pub(crate) mod methods;
pub(crate) mod modules;
pub(crate) mod profile;
pub(crate) mod query;
pub(crate) mod sas;
pub(crate) mod twins;
pub(crate) mod watch;

use iothub_registry::RegistryManager;

use crate::cli::{Cli, Command, Global};
use crate::connect::Settings;
use crate::error::Result;
use crate::output::Printer;

/// What every command needs: the connection settings and where output goes.
pub(crate) struct Context {
    /// The connection settings in force.
    pub(crate) settings: Settings,
    /// `--output`, `--query`.
    pub(crate) printer: Printer,
    /// `--timeout`.
    pub(crate) timeout: Option<std::time::Duration>,
    /// `--attempts`.
    pub(crate) attempts: Option<u32>,
}

impl Context {
    fn new(global: &Global) -> Result<Self> {
        Ok(Self {
            settings: Settings::resolve(global)?,
            printer: Printer::new(global.output, global.query.clone()),
            timeout: global.timeout,
            attempts: global.attempts,
        })
    }

    /// The manager for the hub. Makes no request.
    pub(crate) fn registry(&self) -> Result<RegistryManager> {
        self.settings.registry(self.timeout, self.attempts)
    }
}

/// Runs a parsed command line.
pub(crate) async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match cli.command {
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "iothub", &mut std::io::stdout());
            Ok(())
        }
        Command::Profile(command) => profile::run(global, command),
        #[cfg(feature = "emulator")]
        Command::Emulator(args) => emulator::run(*args).await,
        command => {
            let context = Context::new(global)?;
            // Everything is checked before the first request: the settings too.
            context.settings.check()?;
            match command {
                Command::Device(c) => devices::run(&context, c).await,
                Command::Module(c) => modules::run(&context, c).await,
                Command::Twin(c) => twins::run(&context, c).await,
                Command::Query(args) => query::run(&context, args).await,
                Command::Configuration(c) => configurations::run(&context, c).await,
                Command::Method(c) => methods::run(&context, c).await,
                Command::C2d(c) => c2d::run(&context, c).await,
                Command::Feedback(c) => watch::feedback(&context, c).await,
                Command::FileNotifications(c) => watch::file_notifications(&context, c).await,
                Command::Bulk(c) => bulk::run(&context, c).await,
                Command::Stats => methods::stats(&context).await,
                Command::SasToken(args) => sas::run(&context, args).await,
                Command::Completions { .. } | Command::Profile(_) => unreachable!("handled above"),
                #[cfg(feature = "emulator")]
                Command::Emulator(_) => unreachable!("handled above"),
            }
        }
    }
}
