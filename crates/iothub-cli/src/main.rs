//! `iothub`: a single-binary command line for the Azure IoT Hub service API, built on
//! `iothub-registry`, with the local emulator behind `iothub emulator`.

mod aad;
mod cli;
mod commands;
mod connect;
mod error;
mod output;
mod profiles;
mod values;

use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints help and version on stdout (exit 0) and usage errors on stderr (exit 2).
    let cli = cli::Cli::parse_noting_env();
    if cli.global.verbose {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                    "iothub_registry=debug,iothub_amqp=debug,iothub_cli=debug,azure_identity=info"
                        .into()
                }),
            )
            // The SDK logs retries and failures as events; an operation's span, closed with
            // its timing, shows every request that went well too.
            .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
    // One thread is enough for a command and starts fastest; the emulator serves many
    // connections and gets a thread per core.
    #[cfg(feature = "emulator")]
    let many = matches!(cli.command, cli::Command::Emulator(_));
    #[cfg(not(feature = "emulator"))]
    let many = false;
    let runtime = if many {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => return error::CliError::Other(format!("cannot start: {e}")).report(),
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
