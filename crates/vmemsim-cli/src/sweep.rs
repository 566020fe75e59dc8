//! `vmemsim sweep SWEEP.toml`: every combination of configuration
//! overrides x inputs (built-in workloads, traces) x modes, run in parallel,
//! one JSON line per run, restartable, and sliceable into shards for a
//! Slurm job array (`--shard I/N`, `--slurm SCRIPT`). The file format and
//! the Slurm set-up are in `docs/sweeps.md`.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use vmemsim::workload::{WorkloadKind, WorkloadSpec};
use vmemsim::{run_mode, Config, ModeKind};
use vmemsim_trace::RecordSource;

use crate::jobs;
use crate::measure_flags::MeasureFlags;

/// Flags of `vmemsim sweep`.
#[derive(Args)]
pub struct SweepArgs {
    /// The sweep file (TOML; see docs/sweeps.md).
    pub sweep: PathBuf,
    /// Directory of the results (default: SWEEP's name with `.results`
    /// beside it). Runs whose result is already there are skipped.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Run only the I-th of N slices of the runs (0 <= I < N), as one task
    /// of a job array does.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Write a Slurm batch script running the sweep as a job array of
    /// `--tasks` tasks, instead of running it. An existing file is kept.
    #[arg(long, value_name = "SCRIPT")]
    pub slurm: Option<PathBuf>,
    /// Array tasks in the `--slurm` script.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub tasks: u32,
    /// CPUs per array task in the `--slurm` script (each task runs that
    /// many simulations at once).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub cpus_per_task: u32,
    /// Slurm partition for the `--slurm` script (default: the cluster's).
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per array task for the `--slurm` script (Slurm syntax,
    /// e.g. `2:00:00`).
    #[arg(long)]
    pub time: Option<String>,
    /// Simulations run at once (default: the number of cores).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// The measured window of every run (applied to the base config before
    /// the grid, so it is part of each run's config hash).
    #[command(flatten)]
    pub measure: MeasureFlags,
}

/// The sweep file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    /// Base configuration file, relative to the sweep file.
    config: Option<PathBuf>,
    /// Modes (default: all).
    modes: Option<Vec<String>>,
    #[serde(default)]
    workloads: Vec<String>,
    /// Traces, relative to the sweep file.
    #[serde(default)]
    traces: Vec<PathBuf>,
    accesses: Option<u64>,
    footprint_mib: Option<u64>,
    seed: Option<u64>,
    /// Key -> array of values; every combination is run.
    grid: Option<toml::Table>,
    /// Explicit points, each a table of key -> value.
    list: Option<Vec<toml::Table>>,
}

/// One input of a sweep.
enum Input {
    Builtin(WorkloadSpec),
    /// As written in the sweep file, and resolved against its directory.
    Trace {
        written: PathBuf,
        path: PathBuf,
    },
}

impl Input {
    fn name(&self) -> String {
        match self {
            Input::Builtin(s) => s.kind.name().to_string(),
            Input::Trace { written, .. } => written.file_name().map_or_else(
                || written.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
        }
    }

    fn description(&self) -> String {
        match self {
            Input::Builtin(s) => s.describe(),
            Input::Trace { written, .. } => format!("trace {}", written.display()),
        }
    }

    /// What identifies the input in a run's key: the built-in parameters,
    /// or the trace's path as written plus its length in bytes (so that a
    /// sweep moved between machines keeps its keys).
    fn key(&self) -> Result<String> {
        Ok(match self {
            Input::Builtin(s) => s.describe(),
            Input::Trace { written, path } => {
                let len = std::fs::metadata(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .len();
                format!("trace {} ({len} bytes)", written.display())
            }
        })
    }

    fn source(&self, cfg: &Config) -> Result<Box<dyn RecordSource>> {
        Ok(match self {
            Input::Builtin(s) => Box::new(s.source()),
            Input::Trace { path, .. } => vmemsim::sched::open_trace(path, cfg)?,
        })
    }

    fn expected(&self) -> Option<u64> {
        match self {
            Input::Builtin(s) => Some(s.accesses),
            Input::Trace { path, .. } => jobs::trace_records(path),
        }
    }
}

/// One configuration of the sweep: its overrides and the resolved config.
struct Point {
    overrides: BTreeMap<String, toml::Value>,
    cfg: Config,
    /// First 16 hex digits of the SHA-256 of the resolved config's TOML.
    hash: String,
}

/// One run: a point, an input, a mode.
struct Run {
    index: usize,
    point: usize,
    input: usize,
    mode: ModeKind,
    /// Identifies the run across restarts and shards: a hash of the
    /// resolved config, the input's key and the mode.
    key: String,
}

/// A validated sweep, expanded into its runs (points outermost, modes
/// innermost).
pub struct Plan {
    file: PathBuf,
    points: Vec<Point>,
    inputs: Vec<Input>,
    runs: Vec<Run>,
}

/// One line of a sweep's output: the run's identity and every counter.
#[derive(Serialize)]
struct Line<'a> {
    run: &'a str,
    index: usize,
    runs_total: usize,
    vmemsim_version: &'static str,
    config_hash: &'a str,
    overrides: &'a BTreeMap<String, toml::Value>,
    description: String,
    warnings: Vec<String>,
    #[serde(flatten)]
    row: vmemsim::report::ModeRow<'a>,
}

fn hex16(data: &str) -> String {
    Sha256::digest(data.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Plan {
    /// Read and validate `file`, resolving every point's configuration.
    ///
    /// # Errors
    /// Bad TOML, an unknown key, an unknown mode or workload, a missing
    /// trace, a grid value that is not an array, an override of a key the
    /// configuration does not have or with a value of the wrong type, or a
    /// point whose configuration is invalid; each names the key and value.
    pub fn load(file: &Path, measure: MeasureFlags) -> Result<Plan> {
        let at = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {at}"))?;
        let sweep: SweepFile =
            toml::from_str(&text).with_context(|| format!("{at}: bad sweep file"))?;
        let dir = file.parent().unwrap_or(Path::new(""));
        let mut base = match &sweep.config {
            Some(c) => Config::load(&dir.join(c)).with_context(|| format!("{at}: `config`"))?,
            None => Config::default(),
        };
        measure.apply(&mut base.measure);
        let modes = match &sweep.modes {
            None => ModeKind::ALL.to_vec(),
            Some(m) if m.is_empty() => bail!("{at}: `modes` is empty; leave it out to run all"),
            Some(m) => m
                .iter()
                .map(|m| ModeKind::parse(m))
                .collect::<Result<_, _>>()
                .with_context(|| format!("{at}: `modes`"))?,
        };
        let inputs = inputs(&sweep, dir).with_context(|| at.clone())?;
        let points = points(&sweep, &base, &at)?;
        let mut runs = Vec::new();
        for (p, point) in points.iter().enumerate() {
            let cfg_toml = point.cfg.to_toml();
            for (i, input) in inputs.iter().enumerate() {
                let input_key = input.key()?;
                for &mode in &modes {
                    runs.push(Run {
                        index: runs.len(),
                        point: p,
                        input: i,
                        mode,
                        key: hex16(&format!("{cfg_toml}\n--\n{input_key}\n--\n{}", mode.name())),
                    });
                }
            }
        }
        Ok(Plan {
            file: file.to_path_buf(),
            points,
            inputs,
            runs,
        })
    }

    /// Where results go by default: `NAME.results` beside `NAME.toml`.
    fn default_out(&self) -> PathBuf {
        self.file.with_extension("results")
    }

    fn label(&self, r: &Run) -> String {
        let over: Vec<String> = self.points[r.point]
            .overrides
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "#{} {} / {} {}",
            r.index,
            self.inputs[r.input].name(),
            r.mode.name(),
            over.join(" ")
        )
    }

    /// Simulate run `r` and give its JSON line.
    fn simulate(&self, r: &Run, progress: &mut dyn FnMut(u64)) -> Result<String> {
        let point = &self.points[r.point];
        let input = &self.inputs[r.input];
        let mut src = input.source(&point.cfg)?;
        let result = run_mode(r.mode, &point.cfg, src.as_mut(), progress)?;
        let name = input.name();
        let line = Line {
            run: &r.key,
            index: r.index,
            runs_total: self.runs.len(),
            vmemsim_version: env!("CARGO_PKG_VERSION"),
            config_hash: &point.hash,
            overrides: &point.overrides,
            description: input.description(),
            warnings: src.warnings(),
            row: vmemsim::report::mode_row(&name, &result, None),
        };
        Ok(serde_json::to_string(&line)?)
    }
}

fn inputs(sweep: &SweepFile, dir: &Path) -> Result<Vec<Input>> {
    let mut inputs = Vec::new();
    for w in &sweep.workloads {
        let kind = WorkloadKind::parse(w).context("`workloads`")?;
        let mut s = WorkloadSpec::default_for(kind);
        s.accesses = sweep.accesses.unwrap_or(s.accesses);
        s.footprint_mib = sweep.footprint_mib.unwrap_or(s.footprint_mib);
        s.seed = sweep.seed.unwrap_or(s.seed);
        inputs.push(Input::Builtin(s));
    }
    for t in &sweep.traces {
        let path = dir.join(t);
        if !path.is_file() {
            bail!(
                "`traces`: {} is not a file (paths are relative to the sweep file)",
                path.display()
            );
        }
        inputs.push(Input::Trace {
            written: t.clone(),
            path,
        });
    }
    if inputs.is_empty() {
        bail!("no inputs: give `workloads` (built-in names) and/or `traces` (files)");
    }
    Ok(inputs)
}

/// `key.sub = v` and `"key.sub" = v` both become `("key.sub", v)`.
fn flatten(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
    for (k, v) in t {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(sub) => flatten(&key, sub, out),
            v => out.push((key, v.clone())),
        }
    }
}

fn points(sweep: &SweepFile, base: &Config, at: &str) -> Result<Vec<Point>> {
    let sets: Vec<Vec<(String, toml::Value)>> = match (&sweep.grid, &sweep.list) {
        (Some(_), Some(_)) => bail!("{at}: give either [grid] or [[list]], not both"),
        (None, None) => vec![Vec::new()],
        (None, Some(list)) => {
            if list.is_empty() {
                bail!("{at}: [[list]] has no entries");
            }
            list.iter()
                .map(|t| {
                    let mut kv = Vec::new();
                    flatten("", t, &mut kv);
                    kv
                })
                .collect()
        }
        (Some(grid), None) => {
            let mut axes = Vec::new();
            flatten("", grid, &mut axes);
            let mut sets = vec![Vec::new()];
            for (key, values) in axes {
                let values = match values {
                    toml::Value::Array(a) if !a.is_empty() => a,
                    v => bail!(
                        "{at}: [grid] `{key}` = {v}: a grid key takes a non-empty array of values, e.g. `{key} = [{v}]`"
                    ),
                };
                // The last key varies fastest.
                let mut next = Vec::with_capacity(sets.len() * values.len());
                for set in &sets {
                    for v in &values {
                        let mut s = set.clone();
                        s.push((key.clone(), v.clone()));
                        next.push(s);
                    }
                }
                sets = next;
            }
            sets
        }
    };
    let base_table: toml::Table =
        toml::from_str(&base.to_toml()).expect("the resolved config is TOML");
    let mut out: Vec<Point> = Vec::new();
    for (n, set) in sets.into_iter().enumerate() {
        let mut table = base_table.clone();
        for (key, value) in &set {
            set_key(&mut table, key, value)
                .with_context(|| format!("{at}: override `{key}` = {value}"))?;
        }
        let text = toml::to_string(&table).expect("a table serializes");
        let what = set
            .iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let point = || format!("{at}: point {n} ({what})");
        let cfg = Config::from_toml(&text, &point()).with_context(point)?;
        let cfg_toml = cfg.to_toml();
        let hash = hex16(&cfg_toml);
        if let Some(same) = out.iter().position(|p| p.hash == hash) {
            bail!("{at}: point {n} ({what}) gives the same configuration as point {same}");
        }
        out.push(Point {
            overrides: set.into_iter().collect(),
            cfg,
            hash,
        });
    }
    Ok(out)
}

/// Set `key` (dotted) in the resolved config table, which holds every key:
/// a key it lacks is not a config key; a value must keep its type (an
/// integer may stand for a float).
fn set_key(table: &mut toml::Table, key: &str, value: &toml::Value) -> Result<()> {
    let (path, last) = key.rsplit_once('.').map_or(("", key), |(p, l)| (p, l));
    let mut t = table;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        t = match t.get_mut(part) {
            Some(toml::Value::Table(sub)) => sub,
            _ => bail!("no such configuration key (`vmemsim config --dump` lists them)"),
        };
    }
    let Some(old) = t.get_mut(last) else {
        bail!("no such configuration key (`vmemsim config --dump` lists them)");
    };
    let new = match (&*old, value) {
        (toml::Value::Table(_), _) => {
            bail!("`{key}` is a section; give one of its keys (`vmemsim config --dump` lists them)")
        }
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(*i as f64),
        // `guest.huge_pages` is a size ("none", "2m", "1g") that still reads
        // the booleans of earlier configs.
        (toml::Value::String(_), toml::Value::Boolean(_)) if key == "guest.huge_pages" => {
            value.clone()
        }
        (o, v) if o.same_type(v) => v.clone(),
        (o, _) => bail!("expected a value of type {}, like {o}", o.type_str()),
    };
    *old = new;
    Ok(())
}

/// Parse `I/N` with 0 <= I < N.
fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || anyhow::anyhow!("--shard {s}: expected I/N with 0 <= I < N, e.g. 0/4 .. 3/4");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// Run keys of every whole line of every `.jsonl` file in `dir`. A line
/// cut short (a run killed while writing) is not a result: it runs again.
pub fn results_in(dir: &Path) -> Result<HashSet<String>> {
    #[derive(Deserialize)]
    struct Key {
        run: String,
    }
    let mut keys = HashSet::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(keys),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "jsonl") {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            keys.extend(
                text.lines()
                    .filter_map(|l| serde_json::from_str::<Key>(l).ok())
                    .map(|k| k.run),
            );
        }
    }
    Ok(keys)
}

/// Open `path` for appending lines; if it ends inside a line (a run
/// killed while writing), start on a fresh line so that line stays alone.
fn open_for_lines(path: &Path) -> Result<std::fs::File> {
    let ctx = || format!("opening {}", path.display());
    let ends_mid_line = match std::fs::read(path) {
        Ok(b) => b.last().is_some_and(|&c| c != b'\n'),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(ctx),
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(ctx)?;
    if ends_mid_line {
        f.write_all(b"\n").with_context(ctx)?;
    }
    Ok(f)
}

/// `vmemsim sweep`.
///
/// # Errors
/// A bad sweep file or flag, a run that fails, an output that cannot be
/// written.
pub fn sweep(args: &SweepArgs) -> Result<()> {
    let plan = Plan::load(&args.sweep, args.measure)?;
    let out = args.out.clone().unwrap_or_else(|| plan.default_out());
    if let Some(script) = &args.slurm {
        if args.shard.is_some() {
            bail!("--slurm writes a script for all shards; leave out --shard");
        }
        return write_slurm(&plan, &out, script, args);
    }
    let (shard, shards) = match &args.shard {
        Some(s) => parse_shard(s)?,
        None => (0, 1),
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let done = results_in(&out)?;
    let mine: Vec<&Run> = plan
        .runs
        .iter()
        .filter(|r| r.index % shards == shard)
        .collect();
    let todo: Vec<&Run> = mine
        .iter()
        .copied()
        .filter(|r| !done.contains(&r.key))
        .collect();
    let file_path = out.join(format!("runs-{shard}-of-{shards}.jsonl"));
    eprintln!(
        "sweep {}: {} runs ({} points x {} inputs x modes); shard {shard}/{shards}: {} runs, {} already done, {} to run into {}",
        plan.file.display(),
        plan.runs.len(),
        plan.points.len(),
        plan.inputs.len(),
        mine.len(),
        mine.len() - todo.len(),
        todo.len(),
        file_path.display()
    );
    if todo.is_empty() {
        return Ok(());
    }
    let file = Mutex::new(open_for_lines(&file_path)?);
    let plan = &plan;
    let file = &file;
    let file_path = &file_path;
    let tasks = todo
        .iter()
        .map(|&r| jobs::Task {
            label: plan.label(r),
            expected: plan.inputs[r.input].expected(),
            work: Box::new(move |progress: &mut dyn FnMut(u64)| {
                let mut line = plan.simulate(r, progress)?;
                line.push('\n');
                // One write per line, so lines of parallel runs never mix.
                file.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .write_all(line.as_bytes())
                    .with_context(|| format!("writing {}", file_path.display()))
            }) as jobs::Work<'_, ()>,
        })
        .collect();
    let threads = args.jobs.map_or_else(jobs::default_threads, |n| n as usize);
    jobs::run(tasks, threads)?;
    eprintln!(
        "sweep: {} results written to {}; `vmemsim merge {}` joins them",
        todo.len(),
        file_path.display(),
        out.display()
    );
    Ok(())
}

/// Quote `s` for a POSIX shell.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// Write the sbatch script of a job array running `plan` in `args.tasks`
/// shards into `out`.
fn write_slurm(plan: &Plan, out: &Path, script: &Path, args: &SweepArgs) -> Result<()> {
    let tasks = args.tasks;
    let exe = std::env::current_exe().context("finding the vmemsim executable")?;
    let out = absolute(out)?;
    let sweep_file = absolute(&plan.file)?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut s = String::from("#!/bin/bash\n");
    s += &format!(
        "# vmemsim sweep {} as a Slurm job array: {} runs in {tasks} shards.\n\
         # Submit with `sbatch {}`; when every task has finished, `vmemsim merge {}`.\n\
         # A task that fails or times out can be resubmitted: finished runs are skipped.\n",
        plan.file.display(),
        plan.runs.len(),
        script.display(),
        out.display()
    );
    let name: String = plan
        .file
        .file_stem()
        .map_or("sweep".into(), |n| n.to_string_lossy().into_owned());
    s += &format!("#SBATCH --job-name=vmemsim-{name}\n");
    s += &format!("#SBATCH --array=0-{}\n", tasks - 1);
    s += "#SBATCH --ntasks=1\n";
    s += &format!("#SBATCH --cpus-per-task={}\n", args.cpus_per_task);
    s += &format!("#SBATCH --output={}/slurm-%A_%a.out\n", out.display());
    if let Some(p) = &args.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    if let Some(t) = &args.time {
        s += &format!("#SBATCH --time={t}\n");
    }
    s += "set -euo pipefail\n";
    let window: String = args
        .measure
        .to_args()
        .iter()
        .map(|a| format!(" {a}"))
        .collect();
    s += &format!(
        "exec {} sweep {} --out {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{tasks}\" -j \"${{SLURM_CPUS_PER_TASK:-1}}\"{window}\n",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&sweep_file.to_string_lossy()),
        shell_quote(&out.to_string_lossy()),
    );
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(script)
        .with_context(|| {
            format!(
                "writing {} (an existing file is never replaced)",
                script.display()
            )
        })?;
    f.write_all(s.as_bytes())
        .with_context(|| format!("writing {}", script.display()))?;
    eprintln!(
        "Slurm script written to {}: {} runs in {tasks} array tasks; submit with `sbatch {}`",
        script.display(),
        plan.runs.len(),
        script.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan> {
        let dir = std::env::temp_dir().join(format!("vmemsim-sweep-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let n = std::sync::atomic::AtomicUsize::new(0);
        let f = dir.join(format!(
            "s{}-{}.toml",
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
            hex16(text)
        ));
        std::fs::write(&f, text).unwrap();
        Plan::load(&f, MeasureFlags::default())
    }

    fn err(text: &str) -> String {
        format!("{:#}", plan(text).err().expect("an error"))
    }

    #[test]
    fn a_grid_runs_every_combination_last_key_fastest() {
        let p = plan(
            r#"
            workloads = ["seq", "random"]
            modes = ["native", "nested", "shadow"]
            [grid]
            "tlb.stlb.entries" = [512, 1024]
            guest.huge_pages = [false, true]
            "#,
        )
        .unwrap();
        // 2 x 2 points x 2 inputs x 3 modes.
        assert_eq!(p.runs.len(), 24);
        let over: Vec<String> = p
            .points
            .iter()
            .map(|pt| format!("{:?}", pt.overrides.values().collect::<Vec<_>>()))
            .collect();
        // Keys are sorted (guest.huge_pages first), so it is the slower axis.
        assert_eq!(
            over,
            [
                "[Boolean(false), Integer(512)]",
                "[Boolean(false), Integer(1024)]",
                "[Boolean(true), Integer(512)]",
                "[Boolean(true), Integer(1024)]"
            ]
        );
        assert_eq!(p.points[1].cfg.tlb.stlb.entries, 1024);
        assert_eq!(
            p.points[2].cfg.guest.huge_pages,
            vmemsim::config::HugePages::Huge2M
        );
        let keys: HashSet<&str> = p.runs.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys.len(), 24, "every run has its own key");
        assert_eq!(
            p.label(&p.runs[4]),
            "#4 random / nested guest.huge_pages=false tlb.stlb.entries=512"
        );
    }

    #[test]
    fn keys_are_stable_and_depend_on_config_input_and_mode() {
        let a = plan("workloads = [\"seq\"]\nmodes = [\"native\"]\naccesses = 1000\n").unwrap();
        let b = plan("modes = [\"native\"]\nworkloads = [\"seq\"]\naccesses = 1000\n").unwrap();
        let c = plan("workloads = [\"seq\"]\nmodes = [\"native\"]\naccesses = 1001\n").unwrap();
        let d =
            plan("workloads = [\"seq\"]\nmodes = [\"native\"]\naccesses = 1000\n[list]\n").err();
        assert_eq!(a.runs[0].key, b.runs[0].key);
        assert_ne!(a.runs[0].key, c.runs[0].key);
        assert!(d.is_some());
    }

    #[test]
    fn bad_sweep_files_name_the_key_and_value() {
        let cases = [
            ("workloads = [\"seq\"]\nmodez = [\"native\"]\n", "unknown field `modez`"),
            ("workloads = [\"sequ\"]\n", "`workloads`"),
            ("workloads = [\"seq\"]\nmodes = [\"nestd\"]\n", "`modes`"),
            ("modes = [\"native\"]\n", "no inputs"),
            ("traces = [\"missing.vmt\"]\n", "missing.vmt is not a file"),
            (
                "workloads = [\"seq\"]\n[grid]\n\"tlb.stlb.entrys\" = [1]\n",
                "override `tlb.stlb.entrys` = 1: no such configuration key",
            ),
            (
                "workloads = [\"seq\"]\n[grid]\n\"tlb.stlb.entries\" = 512\n",
                "[grid] `tlb.stlb.entries` = 512: a grid key takes a non-empty array",
            ),
            (
                "workloads = [\"seq\"]\n[grid]\n\"tlb.stlb.entries\" = [\"big\"]\n",
                "override `tlb.stlb.entries` = \"big\": expected a value of type integer, like 512",
            ),
            (
                "workloads = [\"seq\"]\n[grid]\n\"tlb.stlb\" = [1]\n",
                "`tlb.stlb` is a section",
            ),
            (
                "workloads = [\"seq\"]\n[grid]\n\"tlb.stlb.entries\" = [500]\n",
                "point 0 (tlb.stlb.entries = 500)",
            ),
            (
                "workloads = [\"seq\"]\n[[list]]\n\"tlb.stlb.entries\" = 512\n[[list]]\n\"tlb.stlb.entries\" = 512\n",
                "point 1 (tlb.stlb.entries = 512) gives the same configuration as point 0",
            ),
            (
                "workloads = [\"seq\"]\n[grid]\n\"a\" = [1]\n[[list]]\nb = 1\n",
                "either [grid] or [[list]]",
            ),
        ];
        for (text, want) in cases {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.contains(".toml"), "names the file: {e}");
        }
    }

    #[test]
    fn shards_parse_and_reject_out_of_range() {
        assert_eq!(parse_shard("2/4").unwrap(), (2, 4));
        for bad in ["4/4", "1/0", "x/2", "3"] {
            assert!(format!("{}", parse_shard(bad).unwrap_err()).contains(bad));
        }
    }
}
