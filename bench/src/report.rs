//! Statistics over the repetitions, the targets, and `BENCHMARKS.md`.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use crate::client::Scenario;
use crate::driver::{Case, ClientKind, Mode, Sample, Tools, group};

/// A median with the spread (min–max) over repetitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Stat {
    pub(crate) median: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
}

impl Stat {
    /// `None` for no values. The median of an even count is the mean of the middle two.
    pub(crate) fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn cell(&self) -> String {
        if self.min == self.max {
            num(self.median)
        } else {
            format!("{} ({}–{})", num(self.median), num(self.min), num(self.max))
        }
    }
}

/// Three significant digits, thousands separated.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    let a = x.abs();
    if a >= 1000.0 {
        thousands(x.round() as u64)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `12345` as `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Per case and client, from the repetitions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Summary {
    pub(crate) wall_s: Stat,
    pub(crate) ops_per_s: Stat,
    pub(crate) cpu_us_per_op: Stat,
    pub(crate) rss_mib: Stat,
    pub(crate) emulator_cpu_us_per_op: Stat,
}

/// What `wrk` measured.
#[derive(Clone, Debug)]
pub(crate) struct WrkNumbers {
    pub(crate) seconds: u64,
    pub(crate) requests_per_sec: f64,
    pub(crate) emulator_cpu_s: f64,
    pub(crate) output: String,
}

/// The emulator's own numbers.
#[derive(Clone, Debug)]
pub(crate) struct EmulatorNumbers {
    pub(crate) seeded: u64,
    pub(crate) seed_secs: f64,
    pub(crate) rss_empty_kib: u64,
    pub(crate) rss_seeded_kib: u64,
    pub(crate) wrk: Option<WrkNumbers>,
    /// The import/export scenario through Azurite; `None` when Azurite was not running.
    pub(crate) import_export: Option<crate::jobs::ImportExportNumbers>,
    /// The MQTT devices scenario; `None` when left out (`--mqtt-devices 0`).
    pub(crate) devices: Option<crate::devices::DeviceNumbers>,
}

/// Where and how the run happened.
#[derive(Clone, Debug)]
pub(crate) struct Environment {
    rows: Vec<(&'static str, String)>,
    pub(crate) mode: Mode,
    pub(crate) reps: usize,
}

fn first_line_of(path: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(path).ok()?.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

fn command_output(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Environment {
    /// Reads the machine, versions and conditions.
    pub(crate) fn collect(
        root: &Path,
        tools: &Tools,
        mode: Mode,
        reps: usize,
        load_before: &str,
        started: Instant,
    ) -> Self {
        let unknown = || "unknown".to_owned();
        let load = |s: &str| s.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let tool = |t: &Option<crate::driver::Tool>| {
            t.as_ref()
                .map_or_else(|| "not used".to_owned(), |t| t.version.clone())
        };
        let rows = vec![
            (
                "Date (UTC)",
                chrono::Utc::now().format("%Y-%m-%d %H:%M").to_string(),
            ),
            (
                "CPU",
                first_line_of("/proc/cpuinfo", "model name").unwrap_or_else(unknown),
            ),
            (
                "Cores",
                std::thread::available_parallelism().map_or_else(|_| unknown(), |n| n.to_string()),
            ),
            (
                "Memory",
                first_line_of("/proc/meminfo", "MemTotal")
                    .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<f64>().ok())
                    .map_or_else(unknown, |kb| format!("{:.1} GiB", kb / 1024.0 / 1024.0)),
            ),
            (
                "Kernel",
                std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map_or_else(|_| unknown(), |s| s.trim().to_owned()),
            ),
            (
                "Load average (1, 5, 15 min) before / after",
                format!("{} / {}", load(load_before), load(&load_after)),
            ),
            (
                "Commit",
                command_output("git", &["describe", "--always", "--dirty"], root)
                    .unwrap_or_else(unknown),
            ),
            (
                "Build",
                if cfg!(debug_assertions) {
                    "debug (numbers not representative; use --release)".to_owned()
                } else {
                    "release".to_owned()
                },
            ),
            (
                "Rust",
                command_output("rustc", &["--version"], root).unwrap_or_else(unknown),
            ),
            (
                "iothub-rs",
                format!(
                    "iothub-registry {} (reqwest 0.13, rustls, HTTP/2)",
                    env!("CARGO_PKG_VERSION")
                ),
            ),
            ("Python client", tool(&tools.python)),
            ("Node client", tool(&tools.node)),
            ("wrk", tool(&tools.wrk)),
            (
                "Run time",
                format!("{:.0} s", started.elapsed().as_secs_f64()),
            ),
        ];
        Self { rows, mode, reps }
    }
}

/// Everything the report is made from.
pub(crate) struct Report {
    pub(crate) environment: Environment,
    pub(crate) cases: Vec<Case>,
    pub(crate) samples: Vec<Sample>,
    pub(crate) emulator: EmulatorNumbers,
    /// The `iothub` command-line scenario.
    pub(crate) cli: Option<crate::cli::CliNumbers>,
    /// Things the reader must know (skipped clients, unmeasured scenarios).
    pub(crate) notes: Vec<String>,
    /// `bench/ANALYSIS.md`: the profile findings, written by hand, included verbatim.
    pub(crate) analysis: Option<String>,
}

/// A target: what was measured, and whether it was met (`None`: not measured).
pub(crate) struct Target {
    pub(crate) name: String,
    pub(crate) measured: String,
    pub(crate) met: Option<bool>,
}

impl Report {
    /// Medians and spreads of one case and client.
    pub(crate) fn summary_of(&self, case: &str, client: ClientKind) -> Option<Summary> {
        let groups = group(&self.samples);
        let samples = groups.get(&(case.to_owned(), client))?;
        let ops = |s: &Sample| s.report.ops.max(1) as f64;
        Some(Summary {
            wall_s: Stat::of(samples.iter().map(|s| s.report.wall_s))?,
            ops_per_s: Stat::of(samples.iter().map(|s| ops(s) / s.report.wall_s.max(1e-9)))?,
            cpu_us_per_op: Stat::of(samples.iter().map(|s| s.report.cpu_s / ops(s) * 1e6))?,
            rss_mib: Stat::of(
                samples
                    .iter()
                    .map(|s| s.report.peak_rss_kib as f64 / 1024.0),
            )?,
            emulator_cpu_us_per_op: Stat::of(
                samples.iter().map(|s| s.emulator_cpu_s / ops(s) * 1e6),
            )?,
        })
    }

    /// Median client CPU per operation of `a` over `b`.
    fn cpu_ratio(&self, case: &str, a: ClientKind, b: ClientKind) -> Option<f64> {
        let a = self.summary_of(case, a)?.cpu_us_per_op.median;
        let b = self.summary_of(case, b)?.cpu_us_per_op.median;
        (b > 0.0).then(|| a / b)
    }

    /// The cases with every client at their benchmark size (not the Rust-only full-size
    /// ones, not the memory probe).
    fn compared_cases(&self) -> impl Iterator<Item = &Case> {
        self.cases
            .iter()
            .filter(|c| !c.rust_only && !c.memory_probe)
    }

    /// The largest case of a plan that has both `a` and `b`.
    fn largest_with(&self, plan: &str, a: ClientKind, b: ClientKind) -> Option<&Case> {
        self.cases
            .iter()
            .filter(|c| c.key.starts_with(plan) && c.clients.contains(&a) && c.clients.contains(&b))
            .max_by_key(|c| c.size)
    }

    /// The largest query case with iothub-rs, and the one at a tenth of its size.
    fn query_memory(&self) -> Option<(&Case, Summary, &Case, Summary)> {
        let queries: Vec<&Case> = self
            .cases
            .iter()
            .filter(|c| c.scenario == Scenario::Query && c.clients.contains(&ClientKind::Rust))
            .collect();
        let big = queries.iter().max_by_key(|c| c.size)?;
        let small = queries
            .iter()
            .filter(|c| c.size * 10 == big.size)
            .min_by_key(|c| c.clients.len())?;
        Some((
            big,
            self.summary_of(&big.key, ClientKind::Rust)?,
            small,
            self.summary_of(&small.key, ClientKind::Rust)?,
        ))
    }

    /// The issue's targets against what was measured.
    pub(crate) fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        for plan in ["get_device_seq", "get_device_c32"] {
            let how = if plan.ends_with("seq") {
                "sequential"
            } else {
                "32 in flight"
            };
            let case = self.largest_with(plan, ClientKind::Rust, ClientKind::Bare);
            let ratio =
                case.and_then(|c| self.cpu_ratio(&c.key, ClientKind::Rust, ClientKind::Bare));
            targets.push(Target {
                name: format!("Client CPU per `get_device` ({how}) within 1.2x of the bare loop"),
                measured: match (ratio, case) {
                    (Some(r), Some(c)) => format!("{r:.2}x ({} reads)", thousands(c.size)),
                    _ => "not measured".into(),
                },
                met: ratio.map(|r| r <= 1.2),
            });
        }
        for (other, factor) in [(ClientKind::Python, 20.0), (ClientKind::Node, 5.0)] {
            let ratios: Vec<(String, f64)> = self
                .compared_cases()
                .filter_map(|c| {
                    self.cpu_ratio(&c.key, other, ClientKind::Rust)
                        .map(|r| (c.key.clone(), r))
                })
                .collect();
            let worst = ratios.iter().min_by(|a, b| a.1.total_cmp(&b.1));
            targets.push(Target {
                name: format!(
                    "Client CPU per operation at least {factor:.0}x lower than {}'s, every \
                     scenario at its benchmark size",
                    other.label()
                ),
                // What the limit of the REST path reaches there: no client on this HTTP stack
                // can do better on this machine.
                measured: worst.map_or_else(
                    || "not measured".into(),
                    |(key, r)| match self.cpu_ratio(key, other, ClientKind::Bare) {
                        Some(limit) => {
                            format!("lowest {r:.1}x (`{key}`; the bare loop there: {limit:.1}x)")
                        }
                        None => format!("lowest {r:.1}x (`{key}`)"),
                    },
                ),
                met: worst.map(|(_, r)| *r >= factor),
            });
        }
        match self.query_memory() {
            Some((big, b, small, s)) => {
                let full = big.size >= 100_000;
                let under = b.rss_mib.max < 64.0;
                targets.push(Target {
                    name: "Query streaming of 100,000 twins under 64 MiB client peak RSS".into(),
                    measured: format!(
                        "{} MiB at {} twins (highest of {} runs: {} MiB){}",
                        num(b.rss_mib.median),
                        thousands(big.size),
                        big.reps,
                        num(b.rss_mib.max),
                        if full { "" } else { "; not the full size" }
                    ),
                    met: full.then_some(under),
                });
                let growth = b.rss_mib.median - s.rss_mib.median;
                // Flat: what 10x the twins adds is noise, not a buffer that grows with them.
                let flat = growth <= (s.rss_mib.median * 0.1).max(2.0);
                targets.push(Target {
                    name: "… and flat from 10,000 to 100,000 twins (growth at most 10% or 2 MiB)"
                        .into(),
                    measured: format!(
                        "{} → {} MiB ({}{} MiB) from {} to {} twins",
                        num(s.rss_mib.median),
                        num(b.rss_mib.median),
                        if growth >= 0.0 { "+" } else { "" },
                        num(growth),
                        thousands(small.size),
                        thousands(big.size)
                    ),
                    met: full.then_some(flat),
                });
            }
            None => targets.push(Target {
                name: "Query streaming of 100,000 twins under 64 MiB, flat from 10,000".into(),
                measured: "not measured".into(),
                met: None,
            }),
        }
        targets.push(self.c2d_target());
        targets.extend(self.cli_targets());
        if self.environment.mode == Mode::Smoke || cfg!(debug_assertions) {
            // Smoke sizes and debug builds say nothing about the targets.
            for t in &mut targets {
                t.met = None;
            }
        }
        targets
    }

    /// The command line's targets: its size, `--help`, and `device show` against Python.
    fn cli_targets(&self) -> Vec<Target> {
        let Some(cli) = &self.cli else {
            return vec![Target {
                name: "`iothub` binary at most 15 MB; `--help` under 10 ms; `device show` at \
                       least 10x faster than the Python one-liner"
                    .into(),
                measured: "not measured".into(),
                met: None,
            }];
        };
        let wall = |label: &str| {
            cli.rows
                .iter()
                .find(|r| r.label == label)
                .map(|r| r.wall_s.median)
        };
        let mb = cli.binary_bytes as f64 / 1e6;
        let mut targets = vec![Target {
            name: "`iothub` binary at most 15 MB (the `dist` profile, stripped)".into(),
            measured: format!("{} MB ({})", num(mb), cli.binary),
            met: cli.binary.contains("dist").then_some(mb <= 15.0),
        }];
        let help = wall("iothub --help");
        targets.push(Target {
            name: "`iothub --help` under 10 ms".into(),
            measured: help
                .map_or_else(|| "not measured".into(), |h| format!("{} ms", num(h * 1e3))),
            met: help.map(|h| h < 0.010),
        });
        let ours = wall("iothub device show");
        let python = wall("Python azure-iot-hub device show");
        targets.push(Target {
            name: "`iothub device show` at least 10x faster end to end than the Python one-liner"
                .into(),
            measured: match (ours, python) {
                (Some(o), Some(p)) => format!(
                    "{:.1}x: {} ms against {} ms",
                    p / o.max(1e-9),
                    num(o * 1e3),
                    num(p * 1e3)
                ),
                _ => "not measured".into(),
            },
            met: ours.zip(python).map(|(o, p)| p / o.max(1e-9) >= 10.0),
        });
        targets
    }

    /// The command-line section: one row per command.
    fn cli_section(&self, md: &mut String) {
        let Some(cli) = &self.cli else {
            return;
        };
        let _ = writeln!(md, "## Command line\n");
        let _ = writeln!(
            md,
            "What a script pays for one command, process start included: the `iothub` binary \
             ({}, **{} MB**) against the same operation as a Python `azure-iot-hub` one-liner \
             and a Node `azure-iothub` one-liner (`python -c`, `node -e`), each run {} times, \
             interleaved. *Peak RSS* is the process's `ru_maxrss` from GNU time.\n",
            cli.binary,
            num(cli.binary_bytes as f64 / 1e6),
            cli.reps
        );
        let _ = writeln!(md, "| Command | Wall ms | Peak RSS MiB |\n|---|---|---|");
        for row in &cli.rows {
            let ms = Stat {
                median: row.wall_s.median * 1e3,
                min: row.wall_s.min * 1e3,
                max: row.wall_s.max * 1e3,
            };
            let rss = row.peak_rss_kib.map_or_else(
                || "–".to_owned(),
                |r| {
                    Stat {
                        median: r.median / 1024.0,
                        min: r.min / 1024.0,
                        max: r.max / 1024.0,
                    }
                    .cell()
                },
            );
            let _ = writeln!(md, "| {} | {} | {rss} |", row.label, ms.cell());
        }
        md.push('\n');
    }

    /// iothub-rs's best sustained C2D rate on one connection against Python's (whose send
    /// blocks until the hub settles the message, so it has one in flight).
    fn c2d_target(&self) -> Target {
        let name = "C2D at least 10x Python's sustained rate on one connection".to_owned();
        let rate = |c: &Case, client| self.summary_of(&c.key, client).map(|s| s.ops_per_s.median);
        let c2d: Vec<&Case> = self
            .compared_cases()
            .filter(|c| c.scenario == Scenario::C2d)
            .collect();
        let ours = c2d
            .iter()
            .filter_map(|c| rate(c, ClientKind::Rust).map(|r| (r, *c)))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let python = c2d.iter().find_map(|c| rate(c, ClientKind::Python));
        match (ours, python) {
            (Some((ours, case)), Some(python)) if python > 0.0 => Target {
                name,
                measured: format!(
                    "{:.1}x: {} messages/s ({} in flight) against {} messages/s",
                    ours / python,
                    thousands(ours.round() as u64),
                    case.concurrency,
                    thousands(python.round() as u64)
                ),
                met: Some(ours / python >= 10.0),
            },
            _ => Target {
                name,
                measured: "not measured".into(),
                met: None,
            },
        }
    }

    /// A few lines for the terminal.
    pub(crate) fn summary(&self) -> String {
        let mut out = String::new();
        for t in self.targets() {
            let status = match t.met {
                Some(true) => "met ",
                Some(false) => "MISS",
                None => "n/a ",
            };
            let _ = writeln!(out, "[{status}] {}: {}", t.name, t.measured);
        }
        out.trim_end().to_owned()
    }

    /// `BENCHMARKS.md`.
    pub(crate) fn markdown(&self, chart: &str) -> String {
        let mut md = String::new();
        let env = &self.environment;
        let command = match env.mode {
            Mode::Smoke => "cargo run -p iothub-bench -- --smoke",
            Mode::Budget => "cargo run --release -p iothub-bench",
            Mode::Full => "cargo run --release -p iothub-bench -- --full",
        };
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Generated by `{command}` ({} repetition{}, {}); do not edit by hand, rerun it. \
             iothub-rs is compared with the limit of its REST path (a bare `reqwest` loop) and \
             with the official Python and Node SDKs, side by side in one run on one emulator.\n",
            env.reps,
            if env.reps == 1 { "" } else { "s" },
            match env.mode {
                Mode::Smoke => "smoke sizes: too small to mean anything, for CI",
                Mode::Budget => "sizes fitted to a time budget; `--full` runs the issue's sizes",
                Mode::Full => "the issue's full sizes",
            }
        );
        let _ = writeln!(md, "![Client CPU per operation and peak memory]({chart})\n");

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| Target | Measured | Status |\n|---|---|---|");
        for t in self.targets() {
            let status = match t.met {
                Some(true) => "met",
                Some(false) => "**missed**",
                None if t.measured.starts_with("not measured") => "not measured",
                None => "not evaluated (smoke or debug build)",
            };
            let _ = writeln!(md, "| {} | {} | {status} |", t.name, t.measured);
        }
        md.push('\n');

        let _ = writeln!(md, "## Results\n");
        let _ = writeln!(
            md,
            "Medians over the repetitions, with the range (min–max) in parentheses. *CPU* is \
             the client process's own user + system time per operation during the timed \
             section; *peak RSS* is the client process's high-water mark; *emulator CPU* is \
             what the emulator spent serving that client, for context.\n"
        );
        for case in &self.cases {
            self.case_table(&mut md, case);
        }

        self.emulator_section(&mut md);
        self.cli_section(&mut md);
        method_section(&mut md);

        let _ = writeln!(md, "## Environment\n");
        let _ = writeln!(md, "| | |\n|---|---|");
        for (k, v) in &env.rows {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        md.push('\n');

        if !self.notes.is_empty() {
            let _ = writeln!(md, "## Notes\n");
            for note in &self.notes {
                let _ = writeln!(md, "- {note}");
            }
            md.push('\n');
        }
        if let Some(analysis) = &self.analysis {
            md.push_str(analysis.trim());
            md.push('\n');
        }
        md
    }

    fn case_table(&self, md: &mut String, case: &Case) {
        let _ = writeln!(
            md,
            "### {}\n\n{} {}, {} in flight; {}; {} run{}.\n",
            case.title,
            thousands(case.size),
            match case.scenario {
                Scenario::GetDevice => "reads over 1,000 devices",
                Scenario::TwinPatch => "PATCHes over 1,000 twins, each with the etag of the last",
                Scenario::Query => "twins of `SELECT * FROM devices`",
                Scenario::BulkCreate => "new devices",
                Scenario::C2d => "cloud-to-device messages over 1,000 devices",
            },
            case.concurrency,
            case.sizing,
            case.reps,
            if case.reps == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            md,
            "| Client | Wall s | Ops/s | CPU µs/op | Peak RSS MiB | Emulator CPU µs/op |\n\
             |---|--:|--:|--:|--:|--:|"
        );
        for &client in &case.clients {
            if let Some(s) = self.summary_of(&case.key, client) {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    client.label(),
                    s.wall_s.cell(),
                    s.ops_per_s.cell(),
                    s.cpu_us_per_op.cell(),
                    s.rss_mib.cell(),
                    num(s.emulator_cpu_us_per_op.median)
                );
            }
        }
        let mut ratios = Vec::new();
        let wall = |c| self.summary_of(&case.key, c).map(|s| s.wall_s.median);
        let rust_wall = wall(ClientKind::Rust);
        for (other, label, rust_first) in [
            (ClientKind::Bare, "iothub-rs / bare", true),
            (
                ClientKind::RustMt,
                "iothub-rs multi-thread / current-thread",
                false,
            ),
            (ClientKind::Python, "Python / iothub-rs", false),
            (ClientKind::Node, "Node / iothub-rs", false),
        ] {
            let (a, b) = if rust_first {
                (ClientKind::Rust, other)
            } else {
                (other, ClientKind::Rust)
            };
            if let Some(cpu) = self.cpu_ratio(&case.key, a, b) {
                let wall_ratio = match (wall(a), wall(b)) {
                    (Some(x), Some(y)) if y > 0.0 => format!(", wall {:.2}x", x / y),
                    _ => String::new(),
                };
                ratios.push(format!("{label}: CPU {cpu:.2}x{wall_ratio}"));
            }
        }
        if !ratios.is_empty() && rust_wall.is_some() {
            let _ = writeln!(md, "\nRatios of medians: {}.", ratios.join("; "));
        }
        md.push('\n');
    }

    fn emulator_section(&self, md: &mut String) {
        let e = &self.emulator;
        let _ = writeln!(md, "## The emulator\n");
        match &e.wrk {
            Some(w) => {
                let _ = writeln!(
                    md,
                    "- **Registry reads:** {} requests/s of `GET /devices/{{id}}` over HTTPS \
                     (wrk, 2 threads, 16 connections, HTTP/1.1 keep-alive, {} s, a SAS token \
                     computed once). wrk runs on the same 2 cores; the emulator used {} CPU \
                     seconds in those {} s ({} µs per read).",
                    thousands(w.requests_per_sec.round() as u64),
                    w.seconds,
                    num(w.emulator_cpu_s),
                    w.seconds,
                    num(w.emulator_cpu_s / (w.requests_per_sec * w.seconds as f64).max(1.0) * 1e6)
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "- **Registry reads:** not measured (wrk not installed)."
                );
            }
        }
        let grown = e.rss_seeded_kib.saturating_sub(e.rss_empty_kib) as f64 / 1024.0;
        let per_100k = grown * 100_000.0 / e.seeded.max(1) as f64;
        let _ = writeln!(
            md,
            "- **Memory:** resident {} MiB empty, {} MiB with {} devices with twins (three tags \
             and two desired properties each): **{} MiB per 100,000 devices**{}.",
            num(e.rss_empty_kib as f64 / 1024.0),
            num(e.rss_seeded_kib as f64 / 1024.0),
            thousands(e.seeded),
            num(per_100k),
            if e.seeded == 100_000 {
                String::new()
            } else {
                " (scaled from the devices seeded)".to_owned()
            }
        );
        match &e.import_export {
            Some(j) => {
                let _ = writeln!(
                    md,
                    "- **Import and export through Azurite:** an import job of {} devices \
                     (`devices.txt` of {} MiB, written by `import_file_bytes` in {} s, uploaded \
                     in {} s) ran in **{} s, {} devices/s**; an export job of the registry \
                     ({} devices) in **{} s, {} devices/s**, read back as a stream in {} s. \
                     Each time runs from the job's creation to `JobManager` reading it \
                     `completed` (polling every 100 ms).",
                    thousands(j.imported),
                    num(j.file_bytes as f64 / (1024.0 * 1024.0)),
                    num(j.write_secs),
                    num(j.upload_secs),
                    num(j.import_secs),
                    thousands((j.imported as f64 / j.import_secs.max(1e-9)).round() as u64),
                    thousands(j.exported),
                    num(j.export_secs),
                    thousands((j.exported as f64 / j.export_secs.max(1e-9)).round() as u64),
                    num(j.read_secs),
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "- **Import and export through Azurite:** not measured (Azurite not \
                     running; see the notes)."
                );
            }
        }
        match &e.devices {
            Some(d) => {
                let grown = d.rss_connected_kib.saturating_sub(d.rss_before_kib) as f64;
                let messages = d.senders * d.messages_each;
                let _ = writeln!(
                    md,
                    "- **Connected MQTT devices:** {} devices held connected at once (MQTT \
                     3.1.1 over TLS, SAS tokens, idle), connected in {} s ({} per second, {} \
                     connections opened at once); the service statistics counted {} connected. \
                     Resident memory {} MiB before, {} MiB with all connected: **{} KiB per \
                     connection**.\n- **Telemetry ingest:** {} of those devices sent {} \
                     messages each ({} bytes, QoS 1, {} unacknowledged per device): **{} \
                     messages/s** acknowledged, {} µs of emulator CPU per message.",
                    thousands(d.devices),
                    num(d.connect_secs),
                    thousands((d.devices as f64 / d.connect_secs.max(1e-9)).round() as u64),
                    crate::devices::CONNECTING,
                    thousands(d.counted_connected.max(0) as u64),
                    num(d.rss_before_kib as f64 / 1024.0),
                    num(d.rss_connected_kib as f64 / 1024.0),
                    num(grown / d.devices.max(1) as f64),
                    thousands(d.senders),
                    thousands(d.messages_each),
                    crate::devices::BODY.len(),
                    crate::devices::WINDOW,
                    thousands((messages as f64 / d.ingest_secs.max(1e-9)).round() as u64),
                    num(d.ingest_cpu_s / messages.max(1) as f64 * 1e6),
                );
            }
            None => {
                let _ = writeln!(
                    md,
                    "- **Connected MQTT devices:** not measured (`--mqtt-devices 0`)."
                );
            }
        }
        let _ = writeln!(
            md,
            "- **Seeding:** {} devices through `RegistryManager::bulk` (2 calls of 100 in \
             flight) in {} s, {} devices/s.\n",
            thousands(e.seeded),
            num(e.seed_secs),
            thousands((e.seeded as f64 / e.seed_secs.max(1e-9)).round() as u64)
        );
        if let Some(w) = &e.wrk {
            let _ = writeln!(
                md,
                "<details><summary>wrk output</summary>\n\n```text\n{}\n```\n\n</details>\n",
                w.output.trim()
            );
        }
    }
}

fn method_section(md: &mut String) {
    let _ = writeln!(
        md,
        "## Method\n\n\
         - One command starts the emulator (this binary in a child process, HTTPS on \
         127.0.0.3:443 with a generated CA, request log off), seeds 100,000 devices with twins \
         (2,000 for `--smoke`), then runs every case with every client, interleaved \
         over the repetitions (A B C D, B C D A, C D A B, ...), so drift on a shared machine \
         hits all clients alike and none always follows the same one. The emulator shares the 2 cores with the client under test.\n\
         - Each client is its own process, so its CPU and memory are its own: `iothub-rs` \
         (`iothub-registry`'s `RegistryManager`), `bare reqwest` (one pooled `reqwest` client \
         sending the same URL and headers with a SAS token computed once, reading the whole \
         body and deserializing it into the same generated model: the limit of the REST path), \
         Python `azure-iot-hub` (one `IoTHubRegistryManager`, a `ThreadPoolExecutor` for \
         operations in flight) and Node `azure-iothub` (one `Registry`, a pool of promises). \
         `iothub-rs` and `bare reqwest` run on tokio's current-thread runtime (one thread, as \
         Node's event loop) with the same `reqwest` configuration; `iothub-rs, multi-thread` \
         is iothub-rs on the multi-thread runtime `#[tokio::main]` gives, to show what the \
         runtime choice costs.\n\
         - Every client makes one untimed `get_device` first (connection, TLS handshake, lazy \
         initialization), so the timed section is the steady state.\n\
         - Client CPU is user + system time of the client process, all threads, over the timed \
         section only: Rust `clock_gettime(CLOCK_PROCESS_CPUTIME_ID)`, Python \
         `getrusage(RUSAGE_SELF)`, Node `process.cpuUsage()`. It includes the kernel's work for \
         the client's sockets (on loopback that is also the receive path of what it sends). \
         Peak RSS is the client process's high-water mark, read the same way for all \
         (`VmHWM` in `/proc/self/status`), interpreter included. The emulator's CPU is read \
         from `/proc/<pid>/stat` (10 ms ticks) around each client run.\n\
         - Sizes: `--full` runs the issue's sizes (10,000 reads, 5,000 PATCHes, 100,000 \
         twins, 20,000 devices). The default run calibrates each case with a short run of \
         every client, then picks the largest size whose repetitions fit the case's share of \
         the budget (`--budget`, seconds); where that is below the full size, the Rust clients \
         also run the full size (their runs take seconds) at least 5 times, and the targets \
         against the bare loop and for query memory are read from those. The query also runs \
         at a tenth of its size to show memory stays flat; that probe is not used for CPU \
         targets (its CPU per item carries the one-off cost of growing the heap).\n\
         - Twin PATCHes read each twin's etag first (untimed) and send each PATCH with the \
         etag the previous write returned. Bulk creation uses iothub-rs's auto-chunking \
         `RegistryManager::bulk` (one call in flight) and each other client's bulk call in a \
         loop of 100; created devices are deleted after each run, untimed.\n\
         - C2D: every client sends on one AMQP connection (TLS on port 5671, the port the \
         SDKs dial): iothub-rs `iothub-amqp`'s `ServiceClient::send`, Python \
         `send_c2d_message` (which blocks until the hub settles each message, so it runs \
         sequentially only), Node `Client.send` (a pool of promises). Messages go round-robin \
         to 1,000 devices (at most 11 each per run, well under the queue limit of 50) and the \
         queues are purged after every run, untimed, so each run meets empty queues. The bare \
         loop has no C2D: it is the limit of the REST path.\n\
         - HTTP: the Rust clients negotiate HTTP/2 (ALPN) and multiplex on one connection; \
         Python `requests` and Node speak HTTP/1.1 (Python's pool keeps 10 connections, so 32 \
         threads open extra ones, as its users' code does).\n"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spread() {
        let s = Stat::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stat::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Stat::of([]).is_none());
    }

    #[test]
    fn numbers() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(num(12_345.6), "12,346");
        assert_eq!(num(123.4), "123");
        assert_eq!(num(12.34), "12.3");
        assert_eq!(num(1.234), "1.23");
        assert_eq!(num(0.1234), "0.123");
    }
}
