//! The benchmark run: tools, emulator, seeding, sizing each case to its time budget, the
//! interleaved repetitions, the emulator's own numbers, and the report.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Instant;

use futures::{StreamExt as _, TryStreamExt as _, stream};
use iothub_auth::{ConnectionString, Credential};
use iothub_registry::RegistryManager;
use iothub_registry::models::{DeviceStatus, ExportImportDevice, ImportMode, PropertyContainer};
use serde_json::json;

use crate::client::{ClientReport, Scenario, seeded_id};
use crate::measure;
use crate::report::{self, Environment, Report};

/// Arguments of a benchmark run (the default command).
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Tiny sizes and one repetition, for CI (seconds); writes to a temporary directory
    /// unless --out is given. Installs nothing.
    #[arg(long, conflicts_with = "full")]
    smoke: bool,
    /// The full sizes instead of sizes fitted to the time budget.
    #[arg(long)]
    full: bool,
    /// Repetitions of each case, clients interleaved (A B C D, B C D A, ...)
    /// [default: 3, smoke: 1].
    #[arg(long)]
    reps: Option<usize>,
    /// Clients to compare.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rust,rust-mt,bare,python,node"
    )]
    clients: Vec<ClientKind>,
    /// The report to write; the chart goes beside it as `.svg`
    /// [default: BENCHMARKS.md at the workspace root, smoke: a temporary directory].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seconds of measured runs to aim for, shared among the cases (the whole default run,
    /// with seeding, calibration and the emulator's numbers, takes about 1.5 times this).
    #[arg(long, default_value_t = 340)]
    budget: u64,
    /// Never install the Python or Node SDK or wrk when missing; skip them instead.
    #[arg(long)]
    no_install: bool,
    /// MQTT devices to hold connected at once [default: 10,000, smoke: 20]; 0 leaves the
    /// devices scenario out.
    #[arg(long)]
    mqtt_devices: Option<u64>,
}

/// A client under comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum ClientKind {
    /// iothub-rs (`iothub-registry`) on tokio's current-thread runtime.
    Rust,
    /// iothub-rs on the multi-thread runtime `#[tokio::main]` gives.
    RustMt,
    /// The bare `reqwest` loop: the limit of the REST path.
    Bare,
    /// Python `azure-iot-hub` 2.7.0.
    Python,
    /// Node `azure-iothub` 1.16.x.
    Node,
}

impl ClientKind {
    /// Whether this is a Rust client of this workspace (cheap to run at full size).
    pub(crate) fn is_rust(self) -> bool {
        matches!(self, Self::Rust | Self::RustMt | Self::Bare)
    }

    /// As the report names it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Rust => "iothub-rs",
            Self::RustMt => "iothub-rs, multi-thread",
            Self::Bare => "bare reqwest",
            Self::Python => "Python azure-iot-hub",
            Self::Node => "Node azure-iothub",
        }
    }
}

/// One scenario at one size and concurrency: a table in the report.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    /// Stable key (`get_device_c32`).
    pub(crate) key: String,
    /// Heading in the report.
    pub(crate) title: String,
    pub(crate) scenario: Scenario,
    pub(crate) concurrency: usize,
    pub(crate) size: u64,
    /// Clients in this case.
    pub(crate) clients: Vec<ClientKind>,
    /// How `size` was chosen.
    pub(crate) sizing: String,
    /// An extra case at full size for the Rust clients only, where the budget fitted a
    /// smaller size: the targets against the bare loop and for memory are checked on it.
    pub(crate) rust_only: bool,
    /// The query at a tenth of its size, there to show memory stays flat; its CPU per item
    /// carries the one-off cost of growing the heap, so CPU targets are not read from it.
    pub(crate) memory_probe: bool,
    /// Repetitions: Rust-only cases take seconds and get at least 5, as their CPU ratios
    /// are targets of 1.2x on a machine that drifts by more than that between runs.
    pub(crate) reps: usize,
}

/// One client process's run of one case.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    pub(crate) case: String,
    pub(crate) client: ClientKind,
    pub(crate) report: ClientReport,
    /// CPU seconds the emulator spent while this client ran.
    pub(crate) emulator_cpu_s: f64,
}

/// A scenario as sized: the full size, a smoke size, and what calibration uses.
struct Plan {
    key: &'static str,
    title: &'static str,
    scenario: Scenario,
    concurrency: usize,
    full: u64,
    smoke: u64,
    calibration: u64,
    /// Smallest size worth reporting, and the step sizes are rounded down to.
    min: u64,
    step: u64,
    /// Share of the budget.
    share: f64,
    /// Clients that have no such operation (the bare loop is the limit of the REST path only;
    /// Python's C2D send blocks, so it cannot have 32 in flight on one connection).
    exclude: &'static [ClientKind],
}

const PLANS: &[Plan] = &[
    Plan {
        key: "get_device_seq",
        title: "get_device, sequential",
        scenario: Scenario::GetDevice,
        concurrency: 1,
        full: 10_000,
        smoke: 60,
        calibration: 200,
        min: 500,
        step: 100,
        share: 0.2,
        exclude: &[],
    },
    Plan {
        key: "get_device_c32",
        title: "get_device, 32 in flight",
        scenario: Scenario::GetDevice,
        concurrency: 32,
        full: 10_000,
        smoke: 64,
        calibration: 320,
        min: 500,
        step: 100,
        share: 0.2,
        exclude: &[],
    },
    Plan {
        key: "twin_patch",
        title: "twin PATCH with etags, sequential",
        scenario: Scenario::TwinPatch,
        concurrency: 1,
        full: 5_000,
        smoke: 40,
        calibration: 100,
        min: 200,
        step: 100,
        share: 0.2,
        exclude: &[],
    },
    Plan {
        key: "query",
        title: "query streaming (page size 1,000)",
        scenario: Scenario::Query,
        concurrency: 1,
        full: 100_000,
        smoke: 2_000,
        calibration: 2_000,
        min: 10_000,
        step: 10_000,
        share: 0.2,
        exclude: &[],
    },
    Plan {
        key: "bulk_create",
        title: "bulk create (calls of 100)",
        scenario: Scenario::BulkCreate,
        concurrency: 1,
        full: 20_000,
        smoke: 200,
        calibration: 500,
        min: 1_000,
        step: 500,
        share: 0.2,
        exclude: &[],
    },
    Plan {
        key: "c2d_seq",
        title: "C2D send on one AMQP connection, sequential",
        scenario: Scenario::C2d,
        concurrency: 1,
        full: 10_000,
        smoke: 200,
        calibration: 200,
        min: 1_000,
        step: 500,
        share: 0.1,
        exclude: &[ClientKind::Bare],
    },
    Plan {
        key: "c2d_c32",
        title: "C2D send on one AMQP connection, 32 in flight",
        scenario: Scenario::C2d,
        concurrency: 32,
        full: 10_000,
        smoke: 200,
        calibration: 320,
        min: 1_000,
        step: 500,
        share: 0.1,
        exclude: &[ClientKind::Bare, ClientKind::Python],
    },
];

/// How the Rust-only full-size cases are described.
const FULL_RUST: &str = "full size, Rust clients only";

/// Seeded devices reads and twin writes are spread over.
const SPREAD: u64 = 1_000;
/// Where the emulator listens: port 443 because the Node SDK dials nothing else, on a
/// loopback address of its own so it does not collide with the interop tests' 127.0.0.2.
const BIND: &str = "127.0.0.3:443";
const BIND_HOST: &str = "127.0.0.3";
/// The AMQP endpoint, on the port every SDK dials (5671) of the same host.
const BIND_AMQP: &str = "127.0.0.3:5671";

pub(crate) fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The workspace root (the bench crate's parent), where the report and `.venv` live.
pub(crate) fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// How the run is sized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Smoke,
    Budget,
    Full,
}

/// Runs the benchmark and writes the report.
pub(crate) async fn run(args: RunArgs) -> Result<(), String> {
    let started = Instant::now();
    let mode = if args.smoke {
        Mode::Smoke
    } else if args.full {
        Mode::Full
    } else {
        Mode::Budget
    };
    let reps = args
        .reps
        .unwrap_or(if mode == Mode::Smoke { 1 } else { 3 })
        .max(1);
    let install = mode != Mode::Smoke && !args.no_install;
    let root = root();
    let mut notes = Vec::new();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let mut clients = args.clients.clone();
    clients.sort();
    clients.dedup();
    let tools = Tools::find(&root, &clients, install, &mut notes)?;
    clients.retain(|c| match c {
        ClientKind::Python => tools.python.is_some(),
        ClientKind::Node => tools.node.is_some(),
        ClientKind::Rust | ClientKind::RustMt | ClientKind::Bare => true,
    });

    // Before the emulator starts, so that it inherits the limit: every MQTT device of the
    // devices scenario is a socket in each process.
    let open_files = crate::devices::raise_open_file_limit();
    eprintln!("open-file limit {open_files}");

    let temp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let parse = |a: &str| a.parse::<SocketAddr>().map_err(|e| format!("{a}: {e}"));
    let (bind, amqp) = (parse(BIND)?, parse(BIND_AMQP)?);
    let mut sdk_c2d = true;
    let emulator =
        match crate::emulator::EmulatorChild::start(bind, amqp, BIND_HOST, temp.path()).await {
            Ok(emulator) => emulator,
            Err(e) if !ci() => {
                // Without ports 443 and 5671 the SDKs cannot reach the emulator (Node dials only
                // 443 for REST; both SDKs dial 5671 for AMQP); the Rust clients can.
                notes.push(format!(
                    "Could not listen on {BIND} and {BIND_AMQP} ({e}); the emulator ran on free \
                 ports of 127.0.0.1, the Node SDK was skipped, and Python sent no C2D."
                ));
                clients.retain(|c| *c != ClientKind::Node);
                sdk_c2d = false;
                let any = parse("127.0.0.1:0")?;
                crate::emulator::EmulatorChild::start(any, any, "localhost", temp.path()).await?
            }
            Err(e) => return Err(e),
        };
    eprintln!("emulator at {} (pid {})", emulator.host, emulator.pid);

    let registry = registry_for(&emulator)?;
    let rss = |what| measure::status_kib(&emulator.pid, what).map_err(|e| e.to_string());
    let rss_empty = rss("VmRSS")?;
    let seeded: u64 = if mode == Mode::Smoke { 2_000 } else { 100_000 };
    let seed_started = Instant::now();
    seed(&registry, seeded).await?;
    let seed_secs = seed_started.elapsed().as_secs_f64();
    let rss_seeded = rss("VmRSS")?;
    eprintln!("seeded {seeded} devices in {seed_secs:.1} s");

    let ctx = RunContext {
        root: &root,
        tools: &tools,
        emulator: &emulator,
        registry: &registry,
    };
    let mut cases = Vec::new();
    let mut samples = Vec::new();
    let total_share: f64 = PLANS.iter().map(|p| p.share).sum();
    for plan in PLANS {
        let clients: Vec<ClientKind> = clients
            .iter()
            .copied()
            .filter(|c| !plan.exclude.contains(c))
            .filter(|c| sdk_c2d || plan.scenario != Scenario::C2d || c.is_rust())
            .collect();
        let budget = args.budget as f64 * plan.share / total_share;
        let (size, sizing) = match mode {
            Mode::Smoke => (plan.smoke, "smoke size".to_owned()),
            Mode::Full => (plan.full, "full size (`--full`)".to_owned()),
            Mode::Budget => calibrate(&ctx, plan, &clients, budget, reps).await?,
        };
        eprintln!("{}: size {size} ({sizing})", plan.key);
        let ours: Vec<_> = clients.iter().copied().filter(|c| c.is_rust()).collect();
        // Where the budget cut the size, the Rust clients (seconds at most) also run the full
        // size: long enough for CPU ticks of 10 ms to be precise, and the size of the targets.
        let extra = size < plan.full && mode == Mode::Budget;
        let mut planned = Vec::new();
        if plan.scenario == Scenario::Query {
            // Memory must stay flat: the same stream at a tenth of the size, side by side.
            planned.push(case(
                plan,
                size / 10,
                &clients,
                format!("a tenth of {}", report::thousands(size)),
                false,
            ));
            planned.push(case(plan, size, &clients, sizing.clone(), false));
            if extra {
                let mut probe = case(plan, plan.full / 10, &ours, FULL_RUST.into(), true);
                probe.memory_probe = true;
                planned.push(probe);
                planned.push(case(plan, plan.full, &ours, FULL_RUST.into(), true));
            }
        } else {
            planned.push(case(plan, size, &clients, sizing, false));
            if extra {
                planned.push(case(plan, plan.full, &ours, FULL_RUST.into(), true));
            }
        }
        for case in &mut planned {
            case.reps = if case.rust_only { reps.max(5) } else { reps };
        }
        let most = planned.iter().map(|c| c.reps).max().unwrap_or(reps);
        for rep in 0..most {
            for case in planned.iter().filter(|c| rep < c.reps) {
                // The order rotates with each repetition, so no client always runs right
                // after the same other one (the emulator carries some state from run to run).
                let n = case.clients.len();
                let order = (0..n).map(|i| case.clients[(i + rep) % n]);
                for client in order {
                    let sample = ctx.run_case(case, client, rep).await?;
                    eprintln!(
                        "  {} rep {} {:<22} {:>8} ops {:>8.2} s wall {:>8.1} us cpu/op {:>7.1} MiB",
                        case.key,
                        rep + 1,
                        client.label(),
                        sample.report.ops,
                        sample.report.wall_s,
                        sample.report.cpu_s / sample.report.ops.max(1) as f64 * 1e6,
                        sample.report.peak_rss_kib as f64 / 1024.0
                    );
                    samples.push(sample);
                }
            }
        }
        cases.extend(planned);
    }

    let wrk = match &tools.wrk {
        Some(wrk) => Some(run_wrk(wrk, &emulator, mode).await?),
        None => {
            notes.push("wrk is not installed: the emulator's read rate was not measured.".into());
            None
        }
    };
    let cli = crate::cli::run(&root, &tools, &emulator, mode, &mut notes).await?;
    // Last, as it adds its devices to the registry the other scenarios read.
    let import_export = crate::jobs::import_export(&registry, mode, &mut notes).await?;
    // After it, as its devices join the registry too.
    let devices = match args.mqtt_devices {
        Some(0) => None,
        wanted => Some(
            crate::devices::connected_devices(&registry, &emulator, mode, wanted, &mut notes)
                .await?,
        ),
    };
    let emulator_numbers = report::EmulatorNumbers {
        seeded,
        seed_secs,
        rss_empty_kib: rss_empty,
        rss_seeded_kib: rss_seeded,
        wrk,
        import_export,
        devices,
    };
    emulator.stop().await;

    let environment = Environment::collect(&root, &tools, mode, reps, &load_before, started);
    let report = Report {
        environment,
        cases,
        samples,
        emulator: emulator_numbers,
        cli: Some(cli),
        notes,
        analysis: std::fs::read_to_string(root.join("bench/ANALYSIS.md")).ok(),
    };
    let out = match (&args.out, mode) {
        (Some(out), _) => out.clone(),
        (None, Mode::Smoke) => {
            let dir = std::env::temp_dir().join("iothub-bench-smoke");
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            dir.join("BENCHMARKS.md")
        }
        (None, _) => root.join("BENCHMARKS.md"),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let chart = out.with_extension("svg");
    let chart_name = chart
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
    };
    write(&out, report.markdown(&chart_name))?;
    write(&chart, crate::chart::svg(&report))?;
    println!("{}", report.summary());
    println!(
        "wrote {} and {} in {:.0} s",
        out.display(),
        chart.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn case(plan: &Plan, size: u64, clients: &[ClientKind], sizing: String, rust_only: bool) -> Case {
    let mut key = plan.key.to_owned();
    let mut title = plan.title.to_owned();
    if plan.scenario == Scenario::Query {
        key = format!("{key}_{size}");
        title = format!("{title}, {} twins", report::thousands(size));
    }
    if rust_only {
        key.push_str("_rust");
        title.push_str(&format!(
            ", full size ({}), Rust clients",
            report::thousands(size)
        ));
    }
    Case {
        key,
        title,
        scenario: plan.scenario,
        concurrency: plan.concurrency,
        size: size.max(1),
        clients: clients.to_vec(),
        sizing,
        rust_only,
        memory_probe: false,
        reps: 1,
    }
}

/// Runs each client once at the calibration size and picks the size whose repetitions fit
/// the budget: (budget / reps - startup of every client) / per-operation wall of every client.
async fn calibrate(
    ctx: &RunContext<'_>,
    plan: &Plan,
    clients: &[ClientKind],
    budget: f64,
    reps: usize,
) -> Result<(u64, String), String> {
    let probe = case(plan, plan.calibration, clients, String::new(), false);
    let (mut startup, mut per_op) = (0.0, 0.0);
    for &client in clients {
        let started = Instant::now();
        let sample = ctx.run_case(&probe, client, 0).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let wall = sample.report.wall_s;
        startup += (elapsed - wall).max(0.0);
        per_op += wall / sample.report.ops.max(1) as f64;
    }
    // A query repetition also streams a tenth of the size.
    let (startup, per_op) = if plan.scenario == Scenario::Query {
        (startup * 2.0, per_op * 1.1)
    } else {
        (startup, per_op)
    };
    let fit = ((budget / reps as f64 - startup).max(0.0) / per_op.max(1e-9)) as u64;
    let size = (fit / plan.step * plan.step).clamp(plan.min, plan.full);
    let note = if size == plan.full {
        "full size (fits the budget)".to_owned()
    } else {
        format!(
            "fitted to a {budget:.0} s budget (full size {})",
            report::thousands(plan.full)
        )
    };
    Ok((size, note))
}

/// What running a client needs.
struct RunContext<'a> {
    root: &'a Path,
    tools: &'a Tools,
    emulator: &'a crate::emulator::EmulatorChild,
    registry: &'a RegistryManager,
}

impl RunContext<'_> {
    /// Runs one client process for one case and returns what it measured. Bulk-created
    /// devices are deleted afterwards (untimed), so every run meets the same registry.
    async fn run_case(
        &self,
        case: &Case,
        client: ClientKind,
        rep: usize,
    ) -> Result<Sample, String> {
        let prefix = format!("bulk-{}-{rep}-", client_key(client));
        let mut flags: Vec<String> = vec![
            "--scenario".into(),
            case.scenario.as_str().into(),
            "--size".into(),
            case.size.to_string(),
            "--concurrency".into(),
            case.concurrency.to_string(),
            "--devices".into(),
            SPREAD.to_string(),
            "--prefix".into(),
            prefix.clone(),
            "--page-size".into(),
            "1000".into(),
        ];
        let ca = &self.emulator.ca_path;
        let mut command = match client {
            ClientKind::Rust | ClientKind::RustMt | ClientKind::Bare => {
                let exe = std::env::current_exe().map_err(|e| e.to_string())?;
                let mut command = tokio::process::Command::new(exe);
                let (mode, runtime) = match client {
                    ClientKind::Bare => ("bare", "current"),
                    ClientKind::RustMt => ("rust", "multi"),
                    _ => ("rust", "current"),
                };
                command
                    .arg("client")
                    .args(["--mode", mode, "--runtime", runtime]);
                flags.push("--ca".into());
                flags.push(ca.display().to_string());
                command
            }
            ClientKind::Python => {
                let python = self.tools.python.as_ref().ok_or("no Python")?;
                let mut command = tokio::process::Command::new(&python.path);
                command
                    .arg(self.root.join("bench/clients/python_client.py"))
                    .env("REQUESTS_CA_BUNDLE", ca)
                    // uamqp trusts only certifi's bundle; the client script points it here.
                    .env("AMQP_CA_BUNDLE", ca)
                    .env_remove("CURL_CA_BUNDLE");
                command
            }
            ClientKind::Node => {
                let node = self.tools.node.as_ref().ok_or("no Node")?;
                let mut command = tokio::process::Command::new(&node.path);
                command
                    .arg(self.root.join("bench/clients/node_client.js"))
                    .env("NODE_PATH", node_modules(self.root))
                    .env("NODE_EXTRA_CA_CERTS", ca);
                command
            }
        };
        command
            .args(&flags)
            .env("IOTHUB_CONNECTION_STRING", &self.emulator.connection_string)
            .env("NO_PROXY", "*")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let emulator_cpu = || measure::cpu_seconds(&self.emulator.pid).map_err(|e| e.to_string());
        let cpu_before = emulator_cpu()?;
        let output = command
            .output()
            .await
            .map_err(|e| format!("{}: cannot start: {e}", client.label()))?;
        let emulator_cpu_s = emulator_cpu()? - cpu_before;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let parsed = stdout
            .lines()
            .rev()
            .find_map(|line| serde_json::from_str::<ClientReport>(line).ok());
        let report = match (output.status.success(), parsed) {
            (true, Some(report)) if report.ops == case.size => report,
            (_, parsed) => {
                return Err(format!(
                    "{} failed on {} ({}; {parsed:?}):\n{stdout}\n{}",
                    client.label(),
                    case.key,
                    output.status,
                    tail(&String::from_utf8_lossy(&output.stderr), 4_000)
                ));
            }
        };
        match case.scenario {
            Scenario::BulkCreate => delete_bulk(self.registry, &prefix, case.size).await?,
            // Every run starts from empty queues: a device's queue holds at most 50 messages,
            // and the emulator's work per message grows with what is queued.
            Scenario::C2d => purge_c2d(self.registry).await?,
            _ => {}
        }
        Ok(Sample {
            case: case.key.clone(),
            client,
            report,
            emulator_cpu_s,
        })
    }
}

fn client_key(client: ClientKind) -> &'static str {
    match client {
        ClientKind::Rust => "rust",
        ClientKind::RustMt => "rust-mt",
        ClientKind::Bare => "bare",
        ClientKind::Python => "python",
        ClientKind::Node => "node",
    }
}

fn tail(text: &str, max: usize) -> &str {
    let start = text.len().saturating_sub(max);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    &text[start..]
}

fn registry_for(emulator: &crate::emulator::EmulatorChild) -> Result<RegistryManager, String> {
    let ca = std::fs::read(&emulator.ca_path).map_err(|e| e.to_string())?;
    let ca = reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .map_err(|e| e.to_string())?;
    let cs: ConnectionString = emulator
        .connection_string
        .parse()
        .map_err(|e| format!("{e}"))?;
    RegistryManager::builder(Credential::from_connection_string(&cs))
        .http_client(http)
        .build()
        .map_err(|e| e.to_string())
}

/// Empties the C2D queues of the devices C2D runs send to.
async fn purge_c2d(registry: &RegistryManager) -> Result<(), String> {
    stream::iter(0..SPREAD)
        .map(|d| registry.purge_c2d_queue(seeded_id(d)))
        .buffer_unordered(16)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
        .map_err(|e| format!("purging C2D queues: {e}"))
}

/// Seeds `bench-000000`... with a twin each: tags and a desired property, as a fleet has.
async fn seed(registry: &RegistryManager, count: u64) -> Result<(), String> {
    let devices = (0..count).map(|i| {
        let tags = json!({ "site": format!("site-{}", i % 50), "floor": i % 10, "kind": "sensor" });
        let desired = json!({ "telemetryInterval": 30, "firmware": "1.4.2" });
        ExportImportDevice {
            id: Some(seeded_id(i)),
            import_mode: Some(ImportMode::Create),
            status: Some(DeviceStatus::Enabled),
            tags: serde_json::from_value(tags).unwrap_or_default(),
            properties: Some(PropertyContainer {
                desired: serde_json::from_value(desired).unwrap_or_default(),
                ..PropertyContainer::default()
            }),
            ..ExportImportDevice::default()
        }
    });
    let report = registry
        .bulk(devices)
        .concurrency(2)
        .send()
        .await
        .map_err(|e| format!("seeding: {e}"))?;
    if !report.is_successful() {
        return Err(format!(
            "seeding: {} errors, {} failed calls",
            report.errors.len(),
            report.failed_chunks.len()
        ));
    }
    Ok(())
}

async fn delete_bulk(registry: &RegistryManager, prefix: &str, count: u64) -> Result<(), String> {
    let devices = (0..count).map(|i| ExportImportDevice {
        id: Some(format!("{prefix}{i:06}")),
        import_mode: Some(ImportMode::Delete),
        ..ExportImportDevice::default()
    });
    let report = registry
        .bulk(devices)
        .concurrency(2)
        .send()
        .await
        .map_err(|e| format!("cleanup: {e}"))?;
    if report.is_successful() {
        Ok(())
    } else {
        Err(format!(
            "cleanup of {prefix}*: {} errors",
            report.errors.len()
        ))
    }
}

/// The external programs a run uses, with their versions.
pub(crate) struct Tools {
    pub(crate) python: Option<Tool>,
    pub(crate) node: Option<Tool>,
    pub(crate) wrk: Option<Tool>,
}

/// A program and the version of what it runs.
pub(crate) struct Tool {
    pub(crate) path: PathBuf,
    /// E.g. `Python 3.11.2, azure-iot-hub 2.7.0`.
    pub(crate) version: String,
}

fn node_modules(root: &Path) -> PathBuf {
    root.join("crates/iothub-emulator/interop/node/node_modules")
}

/// Runs a program and returns its trimmed standard output, if it succeeds.
fn probe(program: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Runs an install step, its output shown; true on success.
fn install_step(program: &str, args: &[&str]) -> bool {
    eprintln!("installing: {program} {}", args.join(" "));
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Tools {
    /// Finds Python with `azure-iot-hub`, Node with `azure-iothub` and `wrk`, installing what
    /// is missing when allowed (the same pinned versions `.ci/run` installs). A requested SDK
    /// that cannot be had fails the run under `CI=true` and is skipped with a note otherwise.
    fn find(
        root: &Path,
        clients: &[ClientKind],
        install: bool,
        notes: &mut Vec<String>,
    ) -> Result<Self, String> {
        let mut missing = Vec::new();
        let python = if clients.contains(&ClientKind::Python) {
            let found = find_python(root, install);
            if found.is_none() {
                missing.push(
                    "Python with azure-iot-hub 2.7.0 (.venv at the workspace root, or \
                     IOTHUB_BENCH_PYTHON)",
                );
            }
            found
        } else {
            None
        };
        let node = if clients.contains(&ClientKind::Node) {
            let found = find_node(root, install);
            if found.is_none() {
                missing.push("Node with azure-iothub (crates/iothub-emulator/interop/node)");
            }
            found
        } else {
            None
        };
        if !missing.is_empty() {
            let what = missing.join("; ");
            if ci() {
                return Err(format!("CI=true and missing: {what}"));
            }
            eprintln!("skipping: {what}");
            notes.push(format!("Skipped, not installed: {what}."));
        }
        Ok(Self {
            python,
            node,
            wrk: find_wrk(install),
        })
    }
}

fn find_python(root: &Path, install: bool) -> Option<Tool> {
    let venv = root.join(".venv/bin/python");
    let candidate = std::env::var_os("IOTHUB_BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| venv.clone());
    let check = |python: &Path| {
        probe(
            python,
            &[
                "-c",
                "import sys, importlib.metadata as m, azure.iot.hub; \
                 print('Python %s, azure-iot-hub %s' % (sys.version.split()[0], m.version('azure-iot-hub')))",
            ],
        )
        .map(|version| Tool {
            path: python.to_owned(),
            version,
        })
    };
    if let Some(tool) = check(&candidate) {
        return Some(tool);
    }
    if install && candidate == venv {
        let venv_dir = root.join(".venv");
        let pip = venv_dir.join("bin/pip");
        let ok = install_step("python3", &["-m", "venv", &venv_dir.to_string_lossy()])
            && install_step(
                &pip.to_string_lossy(),
                &[
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "azure-iot-hub==2.7.0",
                    "six==1.17.0",
                ],
            );
        if ok {
            return check(&venv);
        }
    }
    None
}

fn find_node(root: &Path, install: bool) -> Option<Tool> {
    let node = PathBuf::from("node");
    let node_version = probe(&node, &["--version"])?;
    let package = node_modules(root).join("azure-iothub/package.json");
    if !package.exists() && install {
        let dir = root.join("crates/iothub-emulator/interop/node");
        install_step(
            "npm",
            &[
                "ci",
                "--prefix",
                &dir.to_string_lossy(),
                "--no-audit",
                "--no-fund",
                "--silent",
            ],
        );
    }
    let text = std::fs::read_to_string(&package).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    let sdk = manifest["version"].as_str()?;
    Some(Tool {
        path: node,
        version: format!("Node {node_version}, azure-iothub {sdk}"),
    })
}

fn find_wrk(install: bool) -> Option<Tool> {
    let wrk = PathBuf::from("wrk");
    // `wrk -v` prints its version and exits non-zero.
    let version = || {
        let out = std::process::Command::new(&wrk)
            .arg("-v")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .next()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
    };
    if let Some(v) = version() {
        return Some(Tool {
            path: wrk,
            version: v,
        });
    }
    let root_user = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|u| u.split_whitespace().next() == Some("0"))
        })
        .unwrap_or(false);
    if install && root_user && Path::new("/usr/bin/apt-get").exists() {
        let ok = install_step("apt-get", &["install", "-y", "-qq", "wrk"])
            || (install_step("apt-get", &["update", "-qq"])
                && install_step("apt-get", &["install", "-y", "-qq", "wrk"]));
        if ok {
            return version().map(|v| Tool {
                path: wrk,
                version: v,
            });
        }
    }
    None
}

/// `wrk` against `GET /devices/{id}` with a SAS token computed once: the emulator's read
/// rate, 2 threads and 16 connections on the machine the emulator also runs on.
async fn run_wrk(
    wrk: &Tool,
    emulator: &crate::emulator::EmulatorChild,
    mode: Mode,
) -> Result<report::WrkNumbers, String> {
    let cs: ConnectionString = emulator
        .connection_string
        .parse()
        .map_err(|e| format!("{e}"))?;
    let token = Credential::from_connection_string(&cs)
        .http_authorization()
        .await
        .map_err(|e| e.to_string())?;
    let seconds = if mode == Mode::Smoke { 2 } else { 10 };
    let url = format!(
        "https://{}/devices/{}?api-version={}",
        emulator.host,
        seeded_id(1),
        iothub_rest_gen::API_VERSION
    );
    let cpu = || measure::cpu_seconds(&emulator.pid).map_err(|e| e.to_string());
    let cpu_before = cpu()?;
    let out = tokio::process::Command::new(&wrk.path)
        .args(["-t2", "-c16", &format!("-d{seconds}s")])
        .arg("-H")
        .arg(format!("Authorization: {}", token.expose_secret()))
        .args(["-H", "Accept: application/json", &url])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| format!("wrk: {e}"))?;
    let emulator_cpu_s = cpu()? - cpu_before;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let requests_per_sec: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("wrk printed no rate:\n{text}"))?;
    // Any non-2xx answer means the numbers are not reads.
    if text.contains("Non-2xx") {
        return Err(format!("wrk saw errors:\n{text}"));
    }
    Ok(report::WrkNumbers {
        seconds,
        requests_per_sec,
        emulator_cpu_s,
        output: text,
    })
}

/// Medians and spreads per case and client.
pub(crate) fn group(samples: &[Sample]) -> BTreeMap<(String, ClientKind), Vec<&Sample>> {
    let mut groups: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for sample in samples {
        groups
            .entry((sample.case.clone(), sample.client))
            .or_default()
            .push(sample);
    }
    groups
}
