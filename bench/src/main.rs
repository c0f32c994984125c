//! `iothub-bench`: iothub-rs against the limit of its REST path (a bare `reqwest` loop) and
//! against the official Python and Node SDKs, side by side on the emulator. Writes
//! `BENCHMARKS.md` and `BENCHMARKS.svg` at the workspace root.
//!
//! ```text
//! cargo run --release -p iothub-bench            # about 10 minutes on 2 cores
//! cargo run --release -p iothub-bench -- --full  # the issue's full sizes
//! cargo run -p iothub-bench -- --smoke           # seconds; CI
//! ```
//!
//! The same binary is also each Rust client (`client`) and the emulator (`emulator`), run as
//! child processes so that every process's CPU time and memory are its own.

mod chart;
mod cli;
mod client;
mod devices;
mod driver;
mod emulator;
mod jobs;
mod measure;
mod report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks iothub-rs against a bare reqwest loop and the official Python and Node SDKs on
/// the emulator, and writes BENCHMARKS.md and its chart.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: driver::RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one Rust client and prints its measurements (used by the driver).
    #[command(hide = true)]
    Client(client::ClientArgs),
    /// Runs the emulator until standard input closes (used by the driver).
    #[command(hide = true)]
    Emulator(emulator::EmulatorArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Client(args)) => client::run(args),
        Some(Command::Emulator(args)) => emulator::serve(args),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|runtime| runtime.block_on(driver::run(cli.run))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iothub-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
