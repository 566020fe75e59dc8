//! The `vmemsim` command: a thin layer that parses flags into validated
//! settings, builds library objects, and prints reports. Errors print their
//! chain and exit with status 2; `record` has its own statuses ([`record`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use vmemsim::report::{self, WorkloadResult};
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim::{run_mode, Config, ModeKind};
use vmemsim_trace::{Format, RecordSource};

mod chart;
mod esx_chart;
mod host_cmd;
mod jobs;
mod measure_flags;
mod merge;
mod output;
mod sharing_chart;
mod snapshot_cmd;
mod sweep;

use output::Outputs;

/// Simulate how a VMM virtualizes memory: native, nested (EPT) and shadow
/// paging compared side by side on real traces or built-in workloads.
#[derive(Parser)]
#[command(name = "vmemsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Replace existing output files (an output never replaces an input).
    #[arg(long, global = true)]
    force: bool,
}

/// `--format`: vmt, lackey, champsim or cloudsuite.
fn parse_format(s: &str) -> Result<Format, String> {
    s.parse()
}

#[derive(Subcommand)]
enum Command {
    /// Run workloads through several modes and print them side by side.
    Compare {
        #[command(flatten)]
        input: Input,
        /// Modes to run, comma separated: native, nested, shadow, direct,
        /// agile, selective-w11, selective (x86, hardware walker),
        /// swtlb-native, swtlb-vmm (software-managed MIPS-style TLB).
        /// Default: every mode the configuration can run (all, or only the
        /// swtlb ones with `[cpu] tlb = "software"`, native and shadow and
        /// swtlb-native with `[cpu] virtualization = "bt"`).
        #[arg(long, value_delimiter = ',')]
        modes: Vec<String>,
    },
    /// Run workloads through one mode.
    Run {
        #[command(flatten)]
        input: Input,
        /// The mode (as `compare --modes`: native, nested, shadow, direct,
        /// agile, selective-w11, selective, swtlb-native, swtlb-vmm).
        #[arg(long)]
        mode: String,
    },
    /// Measure simulation speed (accesses per second) per mode on the built-in workloads.
    Bench {
        /// Accesses per workload.
        #[arg(long, default_value_t = 5_000_000, value_parser = clap::value_parser!(u64).range(1..))]
        accesses: u64,
        /// Workloads (default: seq, random).
        #[arg(long)]
        workload: Vec<String>,
        /// Rounds: each runs every mode once, in turn; the best and median
        /// speed per mode are printed, and "x native" is the median over
        /// rounds of the mode's speed over native's in the same round (on a
        /// shared machine, steadier than a ratio of best runs).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        repeat: u32,
        /// Modes timed at once (default 1: parallel runs share caches and
        /// memory bandwidth, so their speeds are lower than alone).
        #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 1,
              value_parser = clap::value_parser!(u32).range(1..=1024))]
        jobs: u32,
    },
    /// Run a parameter sweep (configs x inputs x modes) from a TOML file,
    /// one JSON line per run; restartable; `--shard I/N`, `--slurm SCRIPT`.
    Sweep(sweep::SweepArgs),
    /// Join sweep results (directories or .jsonl files) into one table,
    /// with optional CSV, JSON and an SVG summary plot.
    Merge(merge::MergeArgs),
    /// Run several VMs on one simulated host (time-sliced on its pCPUs,
    /// sharing its memory) and report per VM and per host; without
    /// --config, a built-in host of three VMs.
    Host {
        /// Host configuration (TOML: [host], [cpu], [[vm]] tables, and any
        /// section of the ordinary config as the baseline).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write an SVG of host memory per VM over time into this directory.
        #[arg(long, value_name = "DIR")]
        svg: Option<PathBuf>,
        /// Skip running each VM alone (no slowdown column).
        #[arg(long)]
        no_alone: bool,
        /// The measured window, per VM on its own instruction count.
        #[command(flatten)]
        measure: measure_flags::MeasureFlags,
        /// Worker threads for the host run and the VMs' alone runs.
        #[arg(short = 'j', long, default_value_t = jobs::default_threads())]
        jobs: usize,
    },
    /// Print the resolved configuration.
    Config {
        /// Print it as TOML (the only form today).
        #[arg(long)]
        dump: bool,
        /// Configuration file to resolve.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A host configuration (`vmemsim host`): `[host]`, `[esx]`,
        /// `[[vm]]` and the baseline; every key with its default without
        /// `--config`.
        #[arg(long)]
        host: bool,
    },
    /// Record a real program under Valgrind into a .vmt trace. Exit status:
    /// 0 complete and the program exited 0; 1 complete but the program
    /// failed (its status is in the trace); 2 error; 3 truncated (interrupted).
    Record {
        /// Output trace file (.vmt).
        #[arg(short, long)]
        output: PathBuf,
        /// Valgrind binary (default: `valgrind` on PATH).
        #[arg(long)]
        valgrind: Option<PathBuf>,
        /// Recording tool: `vmemsim` (built once and cached; buffers its
        /// output), `lackey` (Valgrind's own), or `auto` (vmemsim where it
        /// can be built, else lackey). The trace is the same.
        #[arg(long, default_value = "auto")]
        tool: vmemsim_trace::recorder::RecordTool,
        /// The program and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Snapshot what a live process's pages hold (a hash per present page,
    /// with its VMA and mapped file) from /proc: of `--pid PID` now, or of
    /// `-- CMD` (run as its tracer) when it exits; with `--every-ms N` also
    /// every N ms. Reading another user's or an unrelated process's memory
    /// needs ptrace rights (root, or kernel.yama.ptrace_scope = 0).
    Snapshot {
        /// Output file (JSON; never replaced without --force).
        #[arg(short, long)]
        output: PathBuf,
        /// The process to snapshot.
        #[arg(long)]
        pid: Option<u32>,
        /// Also snapshot every this many milliseconds while it runs.
        #[arg(long)]
        every_ms: Option<u64>,
        /// The program and its arguments (after `--`).
        #[arg(last = true)]
        command: Vec<std::ffi::OsString>,
    },
    /// Print a trace's header, processes, counts and footprint.
    Info {
        /// The trace (.vmt, lackey log, ChampSim).
        file: PathBuf,
        /// The trace's format instead of detecting it.
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
        /// Decode every block of a .vmt file and check its checksums and
        /// the footer's counts (without it, a footer is trusted).
        #[arg(long)]
        verify: bool,
    },
    /// Convert a trace (lackey, ChampSim, .vmt) into a .vmt trace.
    Convert {
        /// Input trace.
        input: PathBuf,
        /// Output .vmt file.
        output: PathBuf,
        /// The input's format instead of detecting it.
        #[arg(long, value_parser = parse_format)]
        format: Option<Format>,
    },
}

#[derive(Args)]
struct Input {
    /// Built-in workloads to run (seq, random, chase, procs, phases); default: all.
    #[arg(long)]
    workload: Vec<String>,
    /// A recorded trace (.vmt, lackey log, ChampSim) to run instead.
    #[arg(long)]
    trace: Option<PathBuf>,
    /// The trace's format (vmt, lackey, champsim, cloudsuite) instead of
    /// detecting it from its content.
    #[arg(long, value_parser = parse_format)]
    format: Option<Format>,
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write SVG charts into this directory: per workload, cycles by
    /// component and VM exits by reason per mode; per switching mode, a timeline.
    #[arg(long, value_name = "DIR")]
    svg: Option<PathBuf>,
    /// Accesses per built-in workload.
    #[arg(long)]
    accesses: Option<u64>,
    /// Footprint of built-in workloads, MiB.
    #[arg(long)]
    footprint_mib: Option<u64>,
    /// Seed of built-in workloads.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    measure: measure_flags::MeasureFlags,
    #[command(flatten)]
    threads: Threads,
}

#[derive(Args)]
struct Threads {
    /// Simulations run at once, one per (workload, mode); default: the
    /// number of cores. The output is the same whatever N.
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    jobs: Option<u32>,
}

impl Threads {
    fn get(&self) -> usize {
        self.jobs.map_or_else(jobs::default_threads, |n| n as usize)
    }
}

/// Print to standard output. A closed pipe (`vmemsim ... | head`) is not
/// an error and stops nothing: the rest of the work (a JSON report, say)
/// still gets done; `println!` would panic there.
macro_rules! outln {
    ($($arg:tt)*) => { write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => { write_stdout(format_args!($($arg)*)) };
}

fn write_stdout(args: std::fmt::Arguments) {
    use std::io::Write;
    if let Err(e) = std::io::stdout().lock().write_fmt(args) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("vmemsim: warning: writing to standard output: {e}");
        }
    }
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => report_error(&e),
    }
}

/// Print an error and its chain; exit with status 2.
fn report_error(e: &anyhow::Error) -> ! {
    {
        let top = e.to_string();
        eprintln!("vmemsim: error: {top}");
        // Library errors often repeat their source in their own message.
        for cause in e
            .chain()
            .skip(1)
            .map(|c| c.to_string())
            .filter(|c| !top.contains(c.as_str()))
        {
            eprintln!("  caused by: {cause}");
        }
    }
    std::process::exit(2);
}

/// Runs the command; returns the exit status.
fn real_main() -> Result<i32> {
    let cli = Cli::parse();
    let force = cli.force;
    match cli.command {
        Command::Compare { input, modes } => {
            // No --modes: every mode the configuration can run.
            let modes = if modes.is_empty() {
                None
            } else {
                Some(
                    modes
                        .iter()
                        .map(|m| ModeKind::parse(m))
                        .collect::<Result<Vec<_>, _>>()?,
                )
            };
            simulate(&input, modes.as_deref(), force).map(|()| 0)
        }
        Command::Run { input, mode } => {
            simulate(&input, Some(&[ModeKind::parse(&mode)?]), force).map(|()| 0)
        }
        Command::Bench {
            accesses,
            workload,
            repeat,
            jobs,
        } => bench(accesses, &workload, repeat, jobs as usize).map(|()| 0),
        Command::Sweep(args) => sweep::sweep(&args).map(|()| 0),
        Command::Merge(args) => merge::merge(&args, force).map(|()| 0),
        Command::Host {
            config,
            json,
            svg,
            no_alone,
            measure,
            jobs,
        } => {
            let text = host_cmd::run(
                config.as_deref(),
                json.as_deref(),
                svg.as_deref(),
                !no_alone,
                measure,
                jobs,
                force,
            )?;
            out!("{text}");
            Ok(0)
        }
        Command::Config {
            dump: _,
            config,
            host,
        } => {
            let text = match (host, config.as_deref()) {
                (true, Some(p)) => vmemsim::host::config::HostConfig::load(p)?.to_toml(),
                (true, None) => vmemsim::host::config::HostConfig::defaults_toml(),
                (false, p) => load_config(p)?.to_toml(),
            };
            out!("{text}");
            Ok(0)
        }
        Command::Record {
            output,
            valgrind,
            tool,
            command,
        } => record(output, valgrind, tool, command, force),
        Command::Snapshot {
            output,
            pid,
            every_ms,
            command,
        } => snapshot_cmd::snapshot(pid, output, every_ms, command, force),
        Command::Info {
            file,
            format,
            verify,
        } => {
            out!("{}", vmemsim_trace::info_with(&file, format, verify)?);
            Ok(0)
        }
        Command::Convert {
            input,
            output,
            format,
        } => {
            Outputs::new(force, [input.clone()]).check_trace(&output, "output")?;
            let summary = vmemsim_trace::convert_as(&input, &output, format)?;
            eprintln!("{summary}");
            Ok(0)
        }
    }
}

/// `vmemsim record`: exit status 0 when the trace is complete and the
/// program exited 0, 1 when it is complete but the program failed (exited
/// non-zero or was killed: its status is in the trace), 3 when the
/// recording was cut short (interrupted); errors exit 2.
fn record(
    output: PathBuf,
    valgrind: Option<PathBuf>,
    tool: vmemsim_trace::recorder::RecordTool,
    command: Vec<std::ffi::OsString>,
    force: bool,
) -> Result<i32> {
    let program = vmemsim_trace::recorder::find_program(&command[0])?;
    Outputs::new(force, [program]).check_trace(&output, "-o")?;
    let opts = vmemsim_trace::recorder::RecordOptions {
        output,
        command,
        valgrind,
        tool,
    };
    let summary = vmemsim_trace::recorder::record(&opts)?;
    eprintln!("{summary}");
    Ok(match (&summary.truncated, summary.exit_code) {
        (Some(_), _) => {
            eprintln!("vmemsim: the recording is truncated (exit status 3)");
            3
        }
        (None, Some(0)) => 0,
        (None, code) => {
            let code = code.map_or("unknown".to_string(), |c| c.to_string());
            eprintln!(
                "vmemsim: the recorded program failed with status {code}; \
                 the trace is complete (exit status 1)"
            );
            1
        }
    })
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// One input to simulate: a trace or a built-in workload.
enum Job {
    Trace(TraceJob),
    Builtin(WorkloadSpec),
}

/// A trace to simulate.
struct TraceJob {
    /// The file read (`-` for standard input, or the file it was spooled to).
    path: PathBuf,
    /// Its format, given or detected (`None`: standard input's lackey log).
    format: Option<Format>,
    /// The workload name in reports: the file name, or `stdin`.
    name: String,
    /// Where it came from, and its format, for reports.
    description: String,
}

impl TraceJob {
    /// The trace at `path` (`-`: standard input), its format given or
    /// detected from its content now, before any work starts.
    fn new(path: &Path, format: Option<Format>) -> Result<Self> {
        if path.as_os_str() == "-" {
            let f = format.unwrap_or(Format::Lackey);
            return Ok(TraceJob {
                path: path.to_path_buf(),
                format: Some(f),
                name: "stdin".into(),
                description: format!("trace from standard input ({f})"),
            });
        }
        let (f, how) = match format {
            Some(f) => (f, "as given by --format".to_string()),
            None => {
                let (f, c) = Format::detect_with_compression(path)?;
                let how = match c {
                    vmemsim_trace::champsim::Compression::None => "detected".to_string(),
                    c => format!("detected, {} compressed", c.name()),
                };
                (f, how)
            }
        };
        Ok(TraceJob {
            path: path.to_path_buf(),
            format: Some(f),
            name: path.file_name().map_or_else(
                || path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            description: format!("trace {} (format {f}, {how})", path.display()),
        })
    }
}

impl Job {
    fn name(&self) -> String {
        match self {
            Job::Trace(t) => t.name.clone(),
            Job::Builtin(s) => s.kind.name().to_string(),
        }
    }
    fn description(&self) -> String {
        match self {
            Job::Trace(t) => t.description.clone(),
            Job::Builtin(s) => s.describe(),
        }
    }
    fn source(&self, cfg: &Config) -> Result<Box<dyn RecordSource>> {
        Ok(match self {
            Job::Trace(t) => vmemsim::sched::open_trace_as(&t.path, t.format, cfg)?,
            Job::Builtin(s) => Box::new(s.source()),
        })
    }
    /// Records expected, for the progress bar.
    fn expected(&self) -> Option<u64> {
        match self {
            Job::Trace(p) => jobs::trace_records(&p.path),
            Job::Builtin(s) => Some(s.accesses),
        }
    }
}

fn jobs(input: &Input) -> Result<Vec<Job>> {
    if let Some(t) = &input.trace {
        if !input.workload.is_empty() {
            bail!("give either --trace or --workload, not both");
        }
        return Ok(vec![Job::Trace(TraceJob::new(t, input.format)?)]);
    }
    let kinds = if input.workload.is_empty() {
        WorkloadKind::ALL.to_vec()
    } else {
        input
            .workload
            .iter()
            .map(|w| WorkloadKind::parse(w))
            .collect::<Result<_, _>>()?
    };
    Ok(kinds
        .into_iter()
        .map(|k| {
            let mut s = WorkloadSpec::default_for(k);
            if let Some(a) = input.accesses {
                s.accesses = a;
            }
            if let Some(f) = input.footprint_mib {
                s.footprint_mib = f;
            }
            if let Some(seed) = input.seed {
                s.seed = seed;
            }
            Job::Builtin(s)
        })
        .collect())
}

fn simulate(input: &Input, modes: Option<&[ModeKind]>, force: bool) -> Result<()> {
    let mut cfg = load_config(input.config.as_deref())?;
    input.measure.apply(&mut cfg.measure);
    let all: Vec<ModeKind> = ModeKind::ALL
        .into_iter()
        .filter(|m| m.runs_with(&cfg))
        .collect();
    let modes = match modes {
        Some(m) => m,
        None => &all,
    };
    for m in modes {
        m.check(&cfg)?;
    }
    if input.format.is_some() && input.trace.is_none() {
        bail!("--format applies to --trace");
    }
    let mut jobs = jobs(input)?;
    let outputs = check_outputs(input, &jobs, modes, force)?;
    // Standard input can be read once: spool it when several modes read it.
    let mut spooled = None;
    if let [Job::Trace(t)] = jobs.as_mut_slice() {
        if t.path.as_os_str() == "-" && modes.len() > 1 {
            let file = vmemsim::sched::spool_stdin_as(&std::env::temp_dir(), t.format)?;
            t.path = file.clone();
            t.format = Some(Format::Vmt);
            spooled = Some(file);
        }
    }
    let result = simulate_jobs(input, &cfg, &jobs, modes, &outputs);
    if let Some(f) = spooled {
        let _ = std::fs::remove_file(f);
    }
    result
}

/// Check `--json` and `--svg` before any work starts: neither may replace
/// an input (the trace, the config), nor an existing file without `--force`.
fn check_outputs(input: &Input, jobs: &[Job], modes: &[ModeKind], force: bool) -> Result<Outputs> {
    let inputs = input.trace.iter().chain(&input.config).cloned();
    let outputs = Outputs::new(force, inputs);
    if let Some(json) = &input.json {
        outputs.check_file(json, "--json")?;
    }
    if let Some(dir) = &input.svg {
        let names: Vec<String> = jobs
            .iter()
            .flat_map(|j| chart::file_names(&j.name(), modes))
            .collect();
        outputs.check_dir(dir, &names, "--svg")?;
    }
    Ok(outputs)
}

fn simulate_jobs(
    input: &Input,
    cfg: &Config,
    jobs: &[Job],
    modes: &[ModeKind],
    outputs: &Outputs,
) -> Result<()> {
    let mut tasks = Vec::new();
    for job in jobs {
        let expected = job.expected();
        for &mode in modes {
            tasks.push(jobs::Task {
                label: format!("{} / {}", job.name(), mode.name()),
                expected,
                work: Box::new(move |progress: &mut dyn FnMut(u64)| {
                    let mut src = job.source(cfg)?;
                    let r = run_mode(mode, cfg, src.as_mut(), progress).with_context(|| {
                        format!("simulating {} in {} mode", job.name(), mode.name())
                    })?;
                    Ok((r, src.warnings()))
                }),
            });
        }
    }
    let mut done = jobs::run(tasks, input.threads.get())?.into_iter();
    let mut results = Vec::new();
    for job in jobs {
        let mut w = WorkloadResult {
            workload: job.name(),
            description: job.description(),
            modes: Vec::new(),
            warnings: Vec::new(),
        };
        for (r, warnings) in done.by_ref().take(modes.len()) {
            if r.stats.accesses == 0 {
                bail!(
                    "{}: no accesses: nothing to simulate (an empty trace, or --accesses 0)",
                    w.description
                );
            }
            if w.warnings.is_empty() {
                w.warnings = warnings;
            }
            w.modes.push(r);
        }
        outln!("{}", report::to_table(&w));
        outln!(
            "config: {} (`vmemsim config --dump` prints it; the JSON report embeds it)\n",
            input.config.as_ref().map_or_else(
                || "built-in defaults".to_string(),
                |p| p.display().to_string()
            )
        );
        results.push(w);
    }
    chart::write_svgs(input.svg.as_deref(), &results, outputs)?;
    if let Some(path) = &input.json {
        outputs.write(path, report::to_json(cfg, &results).as_bytes())?;
        eprintln!("JSON report written to {}", path.display());
    }
    Ok(())
}

fn bench(accesses: u64, workloads: &[String], repeat: u32, threads: usize) -> Result<()> {
    let cfg = Config::default();
    let kinds = if workloads.is_empty() {
        vec![WorkloadKind::Seq, WorkloadKind::Random]
    } else {
        workloads
            .iter()
            .map(|w| WorkloadKind::parse(w))
            .collect::<Result<_, _>>()?
    };
    if cfg!(debug_assertions) {
        eprintln!(
            "warning: a debug build; run `cargo run --release -- bench` for meaningful numbers"
        );
    }
    // Generate each workload once, so the timing covers simulation only;
    // every mode replays the same records.
    let mut inputs = Vec::new();
    for &k in &kinds {
        let spec = WorkloadSpec {
            accesses,
            ..WorkloadSpec::default_for(k)
        };
        let mut records = Vec::new();
        let mut gen = spec.source();
        while gen.next_batch(&mut records, 1 << 16)? > 0 {}
        inputs.push((k, records));
    }
    // Round by round: every mode once per round, so a change of the
    // machine's speed (other load, frequency) hits all modes of a round
    // alike, and each mode's ratio to native is taken within its round.
    let mut tasks = Vec::new();
    for round in 0..repeat {
        for (k, records) in &inputs {
            for mode in ModeKind::ALL {
                let cfg = &cfg;
                tasks.push(jobs::Task {
                    label: format!(
                        "bench {} / {} (round {}/{repeat})",
                        k.name(),
                        mode.name(),
                        round + 1
                    ),
                    expected: Some(records.len() as u64),
                    work: Box::new(move |progress: &mut dyn FnMut(u64)| {
                        time_run(mode, cfg, records, progress)
                    }),
                });
            }
        }
    }
    let runs = jobs::run(tasks, threads)?;
    outln!(
        "{:<10} {:<14} {:>14} {:>12} {:>12} {:>10}",
        "workload",
        "mode",
        "accesses",
        "best M/s",
        "median M/s",
        "x native"
    );
    let modes = ModeKind::ALL.len();
    let per_round = inputs.len() * modes;
    let native = ModeKind::ALL
        .iter()
        .position(|&m| m == ModeKind::Native)
        .expect("native is a mode");
    for (w, (k, _)) in inputs.iter().enumerate() {
        // (accesses, M/s) of mode `m` in each round.
        let of = |m: usize| {
            runs.iter()
                .skip(w * modes + m)
                .step_by(per_round)
                .copied()
                .collect::<Vec<(u64, f64)>>()
        };
        let native_speeds = of(native);
        for (m, mode) in ModeKind::ALL.iter().enumerate() {
            let rounds = of(m);
            let mut speeds: Vec<f64> = rounds.iter().map(|r| r.1).collect();
            let med = median(&mut speeds);
            let best = speeds[speeds.len() - 1]; // sorted by `median`
            let mut ratios: Vec<f64> = rounds
                .iter()
                .zip(&native_speeds)
                .map(|(r, n)| r.1 / n.1)
                .collect();
            outln!(
                "{:<10} {:<14} {:>14} {:>12.1} {:>12.1} {:>10.2}",
                k.name(),
                mode.name(),
                rounds[0].0,
                best,
                med,
                median(&mut ratios)
            );
        }
    }
    Ok(())
}

/// The median of `v` (not empty; the upper one of an even count); leaves
/// `v` sorted.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One timed run of `mode` over `records` (wall clock): (accesses, M
/// accesses per second).
fn time_run(
    mode: ModeKind,
    cfg: &Config,
    records: &[vmemsim_trace::Record],
    progress: &mut dyn FnMut(u64),
) -> Result<(u64, f64)> {
    let mut src = VecSource { records, pos: 0 };
    let t = Instant::now();
    let r = run_mode(mode, cfg, &mut src, progress)?;
    let secs = t.elapsed().as_secs_f64();
    Ok((r.stats.accesses, r.stats.accesses as f64 / secs / 1e6))
}

/// Replays records already in memory.
struct VecSource<'a> {
    records: &'a [vmemsim_trace::Record],
    pos: usize,
}

impl RecordSource for VecSource<'_> {
    fn next_batch(
        &mut self,
        buf: &mut Vec<vmemsim_trace::Record>,
        max: usize,
    ) -> Result<usize, vmemsim_trace::TraceError> {
        let n = max.min(self.records.len() - self.pos);
        buf.extend_from_slice(&self.records[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
