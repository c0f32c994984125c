//! The command-line scenario: what a script pays per command. The `iothub` binary's size
//! (the `dist` profile: LTO, `opt-level = "s"`, stripped), and the wall time and peak memory
//! of one `device show` and one query of 100 twins, process start included, beside the same
//! operation as a Python `azure-iot-hub` one-liner and a Node `azure-iothub` one-liner.
//!
//! Peak memory is GNU time's `%M` (the child's `ru_maxrss`; time is a small C program, so
//! the pages it shares at fork add about a megabyte at most). Without `/usr/bin/time` only
//! wall times are taken, with a note.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use crate::client::seeded_id;
use crate::driver::{Mode, Tools};
use crate::emulator::EmulatorChild;
use crate::report::Stat;

/// The query every client runs: one page of 100 twins.
const QUERY: &str = "SELECT * FROM devices";
const QUERY_TOP: u32 = 100;

/// One command, measured over the repetitions.
#[derive(Clone, Debug)]
pub(crate) struct CliRow {
    /// What ran (`iothub device show`).
    pub(crate) label: String,
    /// Wall seconds, process start to exit.
    pub(crate) wall_s: Stat,
    /// Peak resident memory, KiB (`None` without GNU time).
    pub(crate) peak_rss_kib: Option<Stat>,
}

/// What the scenario measured.
#[derive(Clone, Debug)]
pub(crate) struct CliNumbers {
    /// The binary measured, and how it was built.
    pub(crate) binary: String,
    /// Its size on disk.
    pub(crate) binary_bytes: u64,
    /// One row per command and client.
    pub(crate) rows: Vec<CliRow>,
    /// Repetitions of each command.
    pub(crate) reps: usize,
}

/// Builds (or finds) the binary and measures the commands. `IOTHUB_BENCH_CLI` names a
/// binary to measure instead of building one.
pub(crate) async fn run(
    root: &Path,
    tools: &Tools,
    emulator: &EmulatorChild,
    mode: Mode,
    notes: &mut Vec<String>,
) -> Result<CliNumbers, String> {
    let (binary, how) = binary(root, mode).await?;
    let binary_bytes = std::fs::metadata(&binary)
        .map_err(|e| format!("{}: {e}", binary.display()))?
        .len();
    let time = Path::new("/usr/bin/time");
    let time = (time.exists()
        && std::process::Command::new(time)
            .args(["-f", "%M", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()))
    .then_some(time);
    if time.is_none() {
        notes.push(
            "GNU time (/usr/bin/time) is missing: the CLI scenario's peak memory was not measured."
                .into(),
        );
    }
    let reps = if mode == Mode::Smoke { 1 } else { 10 };
    let device = seeded_id(0);
    let top = QUERY_TOP.to_string();
    let ca = emulator.ca_path.display().to_string();

    let mut commands: Vec<(String, Command)> = Vec::new();
    let iothub = |args: &[&str]| {
        let mut c = Command::new(&binary);
        c.args(args).env("IOTHUB_CA_CERT", &ca);
        c
    };
    commands.push(("iothub --help".into(), iothub(&["--help"])));
    commands.push((
        "iothub device show".into(),
        iothub(&["device", "show", &device]),
    ));
    commands.push((
        format!("iothub query (top {QUERY_TOP})"),
        iothub(&["query", QUERY, "--top", &top, "--page-size", &top]),
    ));
    if let Some(python) = &tools.python {
        let python_cmd = |code: String| {
            let mut c = Command::new(&python.path);
            c.args(&["-c", &code])
                .env("REQUESTS_CA_BUNDLE", &ca)
                .env_remove("CURL_CA_BUNDLE");
            c
        };
        let head = "import os, json; from azure.iot.hub import IoTHubRegistryManager as R; \
                    r = R.from_connection_string(os.environ['IOTHUB_CONNECTION_STRING'])";
        commands.push((
            "Python azure-iot-hub device show".into(),
            python_cmd(format!(
                "{head}; print(json.dumps(r.get_device('{device}').as_dict(), default=str))"
            )),
        ));
        commands.push((
            format!("Python azure-iot-hub query (top {QUERY_TOP})"),
            python_cmd(format!(
                "{head}; from azure.iot.hub.models import QuerySpecification as Q; \
                 print(json.dumps([t.as_dict() for t in r.query_iot_hub(Q(query='{QUERY}'), None, {QUERY_TOP}).items], default=str))"
            )),
        ));
    }
    if let Some(node) = &tools.node {
        let node_cmd = |code: String| {
            let mut c = Command::new(&node.path);
            c.args(&["-e", &code])
                .env(
                    "NODE_PATH",
                    root.join("crates/iothub-emulator/interop/node/node_modules"),
                )
                .env("NODE_EXTRA_CA_CERTS", &ca);
            c
        };
        // process.exit: the SDK's keep-alive sockets would hold the process open a while.
        let head = "const r = require('azure-iothub').Registry.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING)";
        commands.push((
            "Node azure-iothub device show".into(),
            node_cmd(format!(
                "{head}; r.get('{device}').then(d => {{ console.log(JSON.stringify(d.responseBody)); process.exit(0) }}, e => {{ console.error(e); process.exit(1) }})"
            )),
        ));
        commands.push((
            format!("Node azure-iothub query (top {QUERY_TOP})"),
            node_cmd(format!(
                "{head}; r.createQuery('{QUERY}', {QUERY_TOP}).nextAsTwin().then(t => {{ console.log(JSON.stringify(t.result)); process.exit(0) }}, e => {{ console.error(e); process.exit(1) }})"
            )),
        ));
    }

    let mut samples: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); commands.len()];
    // Interleaved, as the other scenarios: every command once per repetition, in turn.
    for rep in 0..reps {
        for (i, (label, command)) in commands.iter().enumerate() {
            let (wall, rss) = command
                .measure(time, &emulator.connection_string)
                .await
                .map_err(|e| format!("{label}: {e}"))?;
            eprintln!(
                "  cli rep {} {label:<40} {:>8.1} ms {}",
                rep + 1,
                wall * 1e3,
                rss.map(|k| format!("{:>7.1} MiB", k / 1024.0))
                    .unwrap_or_default()
            );
            samples[i].0.push(wall);
            samples[i].1.extend(rss);
        }
    }
    let rows = commands
        .iter()
        .zip(samples)
        .map(|((label, _), (walls, rss))| CliRow {
            label: label.clone(),
            wall_s: Stat::of(walls).unwrap_or(Stat {
                median: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            }),
            peak_rss_kib: Stat::of(rss),
        })
        .collect();
    Ok(CliNumbers {
        binary: how,
        binary_bytes,
        rows,
        reps,
    })
}

/// A command line to measure.
struct Command {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
}

impl Command {
    fn new(program: &Path) -> Self {
        Self {
            program: program.to_owned(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    fn args(&mut self, args: &[&str]) -> &mut Self {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    fn env(&mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> &mut Self {
        let value = value.as_ref().to_string_lossy().into_owned();
        self.env.push((key.to_owned(), Some(value)));
        self
    }

    fn env_remove(&mut self, key: &str) -> &mut Self {
        self.env.push((key.to_owned(), None));
        self
    }

    /// Runs it once (under GNU time when given) and returns its wall seconds and peak RSS.
    async fn measure(
        &self,
        time: Option<&Path>,
        connection_string: &str,
    ) -> Result<(f64, Option<f64>), String> {
        let mut command = match time {
            Some(time) => {
                let mut c = tokio::process::Command::new(time);
                // The figure goes to a file: the command's own stderr stays its own.
                c.arg("-f").arg("%M").arg("-o").arg(rss_file());
                c.arg(&self.program);
                c
            }
            None => tokio::process::Command::new(&self.program),
        };
        command
            .args(&self.args)
            .env("IOTHUB_CONNECTION_STRING", connection_string)
            .env("NO_PROXY", "*")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            match v {
                Some(v) => command.env(k, v),
                None => command.env_remove(k),
            };
        }
        let started = Instant::now();
        let out = command.output().await.map_err(|e| e.to_string())?;
        let wall = started.elapsed().as_secs_f64();
        if !out.status.success() {
            return Err(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let rss = match time {
            Some(_) => std::fs::read_to_string(rss_file())
                .ok()
                .and_then(|t| t.trim().lines().last()?.trim().parse::<f64>().ok()),
            None => None,
        };
        Ok((wall, rss))
    }
}

fn rss_file() -> PathBuf {
    std::env::temp_dir().join(format!("iothub-bench-cli-{}.rss", std::process::id()))
}

/// The binary to measure: `IOTHUB_BENCH_CLI`, else built here with the `dist` profile (the
/// dev profile for `--smoke`, where only the commands are exercised).
async fn binary(root: &Path, mode: Mode) -> Result<(PathBuf, String), String> {
    if let Some(path) = std::env::var_os("IOTHUB_BENCH_CLI").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return Ok((
            path.clone(),
            format!("`{}` (IOTHUB_BENCH_CLI)", path.display()),
        ));
    }
    let (profile, dir) = match mode {
        Mode::Smoke => ("dev", "debug"),
        _ => ("dist", "dist"),
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("building iothub-cli with the {profile} profile");
    let status = tokio::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--locked",
            "-p",
            "iothub-cli",
            "--profile",
            profile,
        ])
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("cargo build -p iothub-cli: {e}"))?;
    if !status.success() {
        return Err(format!("cargo build -p iothub-cli: {status}"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok((
        target.join(dir).join("iothub"),
        format!("`cargo build --profile {profile} -p iothub-cli`"),
    ))
}
