//! Maintainer tasks for iothub-rs.
//!
//! - `cargo xtask import --spec PATH [--check]`: verify the upstream Swagger 2.0 file against
//!   `openapi/upstream.toml`, convert it to OpenAPI 3.0, apply our fixes, drop upstream prose,
//!   and write `openapi/iothub-service.json`.
//! - `cargo xtask codegen [--check]`: run progenitor on `openapi/iothub-service.json` and write
//!   `crates/iothub-rest-gen/src/generated.rs`.
//!
//! - `cargo xtask boundaries`: check the invariants of `ARCHITECTURE.md` that `cargo tree` and
//!   the sources can prove (which crate may depend on which, what the emulator links, where
//!   progenitor and fe2o3 types may appear).
//!
//! With `--check` nothing is written: the output is regenerated in memory and compared with
//! the committed file, and a difference fails with a unified diff.

mod boundaries;
mod codegen;
mod convert;
mod fixes;
mod import;
mod output;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Maintainer tasks for iothub-rs")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Convert the upstream Swagger 2.0 spec into openapi/iothub-service.json.
    Import {
        /// Path to the upstream spec (its origin is in openapi/upstream.toml). Required: no
        /// package ships the file, so it is never fetched; without it the task says where to
        /// get it.
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Do not write: fail if the committed file differs from what would be written.
        #[arg(long)]
        check: bool,
    },
    /// Regenerate crates/iothub-rest-gen/src/generated.rs from openapi/iothub-service.json.
    Codegen {
        /// Do not write: fail if the committed file differs from what would be written.
        #[arg(long)]
        check: bool,
    },
    /// Check the dependency and source boundaries that ARCHITECTURE.md states.
    Boundaries,
}

/// Where the inputs and outputs of both tasks live; tests point it at a scratch copy.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) upstream_toml: PathBuf,
    pub(crate) openapi_json: PathBuf,
    pub(crate) generated_rs: PathBuf,
}

impl Layout {
    pub(crate) fn at(root: &Path) -> Self {
        Self {
            upstream_toml: root.join("openapi/upstream.toml"),
            openapi_json: root.join("openapi/iothub-service.json"),
            generated_rs: root.join("crates/iothub-rest-gen/src/generated.rs"),
        }
    }

    fn workspace() -> Self {
        Self::at(workspace_root())
    }
}

/// The workspace root: xtask/ sits directly below it.
fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent directory")
}

/// What a task did, for the one line it prints.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Written,
    Unchanged,
    UpToDate,
    /// Every checked invariant holds.
    Holds,
}

pub(crate) type Result<T> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let layout = Layout::workspace();
    let (name, result) = match cli.command {
        Command::Import { spec, check } => (
            "import",
            match spec {
                Some(spec) => import::run(&layout, &spec, check),
                None => import::spec_required(&layout),
            },
        ),
        Command::Codegen { check } => ("codegen", codegen::run(&layout, check)),
        Command::Boundaries => (
            "boundaries",
            boundaries::run(workspace_root()).map(|()| Outcome::Holds),
        ),
    };
    match result {
        Ok(outcome) => {
            let what = match outcome {
                Outcome::Written => "wrote new output",
                Outcome::Unchanged => "output unchanged",
                Outcome::UpToDate => "committed output is up to date",
                Outcome::Holds => "every boundary holds",
            };
            println!("xtask {name}: {what}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("xtask {name}: error: {message}");
            ExitCode::FAILURE
        }
    }
}
