//! `vmemsim merge DIR|FILE...`: join the JSON lines of `vmemsim sweep`
//! (every shard's file) into one table on standard output, and on request
//! a CSV file, a JSON file and an SVG summary plot (overhead against
//! native per mode, over the first swept key).
//!
//! Runs are identified by their key (a hash of the resolved config, the
//! input and the mode), so a run found in several files counts once, and
//! they are ordered by their index in the sweep: the merged output is the
//! same whatever the shards and whatever order their runs finished in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use plotters::prelude::*;
use serde_json::Value;

/// Flags of `vmemsim merge`.
#[derive(Args)]
pub struct MergeArgs {
    /// Sweep result directories (every `*.jsonl` in them) or `.jsonl` files.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Also write the table as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Also write every run's full record (with `overhead_vs_native`) as
    /// one JSON document to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a summary plot (SVG): overhead against native, per
    /// workload and mode, over the first swept key.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// One run's line, with what the table needs picked out.
struct Run {
    index: u64,
    key: String,
    runs_total: Option<u64>,
    config_hash: String,
    overrides: BTreeMap<String, Value>,
    workload: String,
    description: String,
    mode: String,
    cycles: u64,
    /// `cycles / native cycles - 1` with the same config and input.
    overhead: Option<f64>,
    full: serde_json::Map<String, Value>,
}

impl Run {
    fn parse(v: Value, at: &str) -> Result<Run> {
        let Value::Object(full) = v else {
            bail!("{at}: a run is a JSON object");
        };
        let str_of = |k: &str| -> Result<String> {
            full.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("{at}: no string `{k}` (not a line of vmemsim sweep?)"))
        };
        let u64_of = |k: &str| -> Result<u64> {
            full.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("{at}: no integer `{k}` (not a line of vmemsim sweep?)"))
        };
        let overrides = match full.get("overrides") {
            Some(Value::Object(o)) => o.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            _ => bail!("{at}: no object `overrides` (not a line of vmemsim sweep?)"),
        };
        Ok(Run {
            index: u64_of("index")?,
            key: str_of("run")?,
            runs_total: full.get("runs_total").and_then(Value::as_u64),
            config_hash: str_of("config_hash")?,
            workload: str_of("workload")?,
            description: str_of("description")?,
            mode: str_of("mode")?,
            cycles: u64_of("cycles")?,
            overrides,
            overhead: None,
            full,
        })
    }

    fn count(&self, k: &str) -> String {
        self.full
            .get(k)
            .and_then(Value::as_u64)
            .map_or_else(String::new, |v| v.to_string())
    }
}

/// The `.jsonl` files named by `inputs`: directories give theirs, in name order.
fn files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading {}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "jsonl"))
                .collect();
            if found.is_empty() {
                bail!("{}: no .jsonl results in this directory", p.display());
            }
            found.sort();
            out.extend(found);
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    Ok(out)
}

/// Read every run of `inputs`: one per key, in sweep order, with overheads.
fn load(inputs: &[PathBuf]) -> Result<(Vec<Run>, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut by_key: HashMap<String, Run> = HashMap::new();
    for f in files(inputs)? {
        let text =
            std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        let mut cut = 0;
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            // A run killed while writing leaves a line cut short; the
            // sweep runs it again, so it is skipped here.
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                cut += 1;
                continue;
            };
            let run = Run::parse(v, &format!("{}:{}", f.display(), n + 1))?;
            by_key.entry(run.key.clone()).or_insert(run);
        }
        if cut > 0 {
            warnings.push(format!(
                "{}: {cut} line(s) cut short skipped (runs interrupted while writing; `vmemsim sweep` reruns them)",
                f.display()
            ));
        }
    }
    let mut runs: Vec<Run> = by_key.into_values().collect();
    runs.sort_by(|a, b| a.index.cmp(&b.index).then_with(|| a.key.cmp(&b.key)));
    let native: HashMap<(String, String), u64> = runs
        .iter()
        .filter(|r| r.mode == "native")
        .map(|r| ((r.config_hash.clone(), r.description.clone()), r.cycles))
        .collect();
    for r in &mut runs {
        r.overhead = native
            .get(&(r.config_hash.clone(), r.description.clone()))
            .filter(|&&n| n > 0)
            .map(|&n| r.cycles as f64 / n as f64 - 1.0);
        r.full.insert(
            "overhead_vs_native".into(),
            r.overhead.map_or(Value::Null, Value::from),
        );
    }
    let totals: BTreeSet<u64> = runs.iter().filter_map(|r| r.runs_total).collect();
    match totals.iter().collect::<Vec<_>>()[..] {
        [&t] if (runs.len() as u64) < t => warnings.push(format!(
            "{} of the sweep's {t} runs are here; run the missing shards (or `vmemsim sweep` again) for the rest",
            runs.len()
        )),
        [_, _, ..] => warnings.push(format!(
            "the results come from sweeps of different sizes ({totals:?} runs)"
        )),
        _ => {}
    }
    Ok((runs, warnings))
}

/// Override keys in any run, sorted.
fn keys(runs: &[Run]) -> Vec<String> {
    let k: BTreeSet<&String> = runs.iter().flat_map(|r| r.overrides.keys()).collect();
    k.into_iter().cloned().collect()
}

/// A value as a table cell: strings without quotes.
fn cell(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// The table: a header row and one row per run.
fn table(runs: &[Run], keys: &[String]) -> Vec<Vec<String>> {
    let mut header: Vec<String> = vec!["index".into()];
    header.extend(keys.iter().cloned());
    header.extend(
        [
            "workload",
            "mode",
            "accesses",
            "cycles",
            "overhead_vs_native_%",
            "tlb_misses",
            "walk_refs",
            "vm_exits_total",
            "guest_page_faults",
        ]
        .map(String::from),
    );
    let mut rows = vec![header];
    for r in runs {
        let mut row = vec![r.index.to_string()];
        row.extend(keys.iter().map(|k| cell(r.overrides.get(k))));
        row.push(r.workload.clone());
        row.push(r.mode.clone());
        row.push(r.count("accesses"));
        row.push(r.cycles.to_string());
        row.push(
            r.overhead
                .map_or_else(String::new, |o| format!("{:.2}", o * 100.0)),
        );
        for k in [
            "tlb_misses",
            "walk_refs",
            "vm_exits_total",
            "guest_page_faults",
        ] {
            row.push(r.count(k));
        }
        rows.push(row);
    }
    rows
}

fn text_table(rows: &[Vec<String>]) -> String {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (v, &w))| {
                // Names left, numbers right.
                if v.parse::<f64>().is_ok() || c == 0 {
                    format!("{v:>w$}")
                } else {
                    format!("{v:<w$}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out
}

/// `vmemsim merge`.
///
/// # Errors
/// A missing input, a line that is not a sweep result, an output that
/// cannot be written.
pub fn merge(args: &MergeArgs, force: bool) -> Result<()> {
    // Outputs first: none may replace an input or, without --force, a file.
    let outputs = crate::output::Outputs::new(force, args.inputs.iter().cloned());
    for (path, what) in [
        (&args.csv, "--csv"),
        (&args.json, "--json"),
        (&args.svg, "--svg"),
    ] {
        if let Some(p) = path {
            outputs.check_file(p, what)?;
        }
    }
    let (runs, warnings) = load(&args.inputs)?;
    if runs.is_empty() {
        bail!("no runs in {:?}", args.inputs);
    }
    let keys = keys(&runs);
    let rows = table(&runs, &keys);
    crate::write_stdout(format_args!("{}", text_table(&rows)));
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if let Some(path) = &args.csv {
        let mut w = csv::Writer::from_writer(Vec::new());
        for r in &rows {
            w.write_record(r)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        let bytes = w
            .into_inner()
            .with_context(|| format!("writing {}", path.display()))?;
        outputs.write(path, &bytes)?;
        eprintln!("CSV written to {}", path.display());
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "runs": runs.iter().map(|r| Value::Object(r.full.clone())).collect::<Vec<_>>(),
            "warnings": warnings,
        });
        outputs.write(
            path,
            (serde_json::to_string_pretty(&doc)? + "\n").as_bytes(),
        )?;
        eprintln!("JSON written to {}", path.display());
    }
    if let Some(path) = &args.svg {
        outputs.write(path, summary_svg(&runs, &keys)?.as_bytes())?;
        eprintln!("summary plot written to {}", path.display());
    }
    Ok(())
}

/// A line per (workload, mode, other swept values): overhead against
/// native (%) over the first swept key that is numeric, or over the
/// configuration's position in the sweep when none is. Without native
/// runs, cycles per access instead.
fn summary_svg(runs: &[Run], keys: &[String]) -> Result<String> {
    let numeric = |k: &String| {
        runs.iter()
            .all(|r| r.overrides.get(k).is_some_and(Value::is_number))
    };
    let x_key = keys.iter().find(|k| numeric(k)).cloned();
    let use_overhead = runs.iter().any(|r| r.overhead.is_some());
    // Configurations in sweep order, for the fallback x.
    let mut configs: Vec<&str> = Vec::new();
    for r in runs {
        if !configs.contains(&r.config_hash.as_str()) {
            configs.push(&r.config_hash);
        }
    }
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in runs {
        if use_overhead && r.mode == "native" {
            continue;
        }
        let y = if use_overhead {
            let Some(o) = r.overhead else { continue };
            o * 100.0
        } else {
            let accesses = r
                .full
                .get("accesses")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .max(1);
            r.cycles as f64 / accesses as f64
        };
        let x = match &x_key {
            Some(k) => r.overrides[k].as_f64().unwrap_or(0.0),
            None => configs
                .iter()
                .position(|c| *c == r.config_hash)
                .unwrap_or(0) as f64,
        };
        let others: Vec<String> = keys
            .iter()
            .filter(|k| Some(*k) != x_key.as_ref())
            .filter_map(|k| r.overrides.get(k).map(|v| format!("{k}={}", cell(Some(v)))))
            .collect();
        let mut name = format!("{} / {}", r.workload, r.mode);
        if !others.is_empty() {
            name += &format!(" ({})", others.join(", "));
        }
        series.entry(name).or_default().push((x, y));
    }
    let x_desc = x_key
        .clone()
        .unwrap_or_else(|| "configuration (sweep order)".into());
    let y_desc = if use_overhead {
        "overhead vs native (%)"
    } else {
        "cycles per access"
    };
    let pts = series.values().flatten();
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, 0.0f64, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 >= x1 {
        (x0, x1) = (x0 - 1.0, x0 + 1.0);
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pad = (x1 - x0) * 0.04;
    let mut out = String::new();
    {
        let size = (1000, 600);
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE)?;
        let font = |s: f64| ("sans-serif", s).into_font().color(&BLACK);
        let mut chart = ChartBuilder::on(&root)
            .caption(format!("sweep: {y_desc} by {x_desc}"), font(20.0))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), y0..(y1 * 1.08))?;
        chart
            .configure_mesh()
            .x_desc(&x_desc)
            .y_desc(y_desc)
            .x_label_style(font(13.0))
            .y_label_style(font(13.0))
            .axis_desc_style(font(15.0))
            .draw()?;
        for (i, (name, mut points)) in series.into_iter().enumerate() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font(12.0))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(index: u64, mode: &str, stlb: u64, cycles: u64) -> String {
        format!(
            r#"{{"run":"k{index}","index":{index},"runs_total":4,"config_hash":"c{stlb}","overrides":{{"tlb.stlb.entries":{stlb}}},"workload":"random","description":"random (..)","mode":"{mode}","accesses":100,"cycles":{cycles},"tlb_misses":7,"walk_refs":9,"vm_exits_total":0,"guest_page_faults":3}}"#
        )
    }

    fn write(name: &str, lines: &[String], tail: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vmemsim-merge-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n") + "\n" + tail).unwrap();
        p
    }

    #[test]
    fn runs_join_once_in_sweep_order_with_overhead_against_native_of_the_same_config() {
        // Shard files in any order, one run twice, one line cut short.
        let a = write(
            "a.jsonl",
            &[line(3, "nested", 1024, 150), line(0, "native", 512, 100)],
            "",
        );
        let b = write(
            "b.jsonl",
            &[
                line(2, "native", 1024, 120),
                line(1, "nested", 512, 180),
                line(3, "nested", 1024, 150),
            ],
            "{\"run\":\"k9\",\"ind",
        );
        let (runs, warnings) = load(&[a, b]).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        // 180 / 100 - 1 and 150 / 120 - 1: each against its own config's native.
        let o: Vec<Option<f64>> = runs.iter().map(|r| r.overhead).collect();
        assert_eq!(o, [Some(0.0), Some(0.8), Some(0.0), Some(0.25)]);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("1 line(s) cut short"), "{warnings:?}");
        let t = text_table(&table(&runs, &keys(&runs)));
        assert_eq!(
            t.lines().nth(2).unwrap(),
            "    1               512  random    nested       100     180                 80.00           7          9               0                  3"
        );
        let svg = summary_svg(&runs, &keys(&runs)).unwrap();
        assert!(
            svg.contains("random / nested") && svg.contains("tlb.stlb.entries"),
            "{svg}"
        );
    }

    #[test]
    fn missing_runs_and_foreign_lines_are_reported() {
        let a = write("c.jsonl", &[line(0, "native", 512, 100)], "");
        let (_, w) = load(&[a]).unwrap();
        assert!(w[0].contains("1 of the sweep's 4 runs"), "{w:?}");
        let bad = write("d.jsonl", &["{\"index\":1}".to_string()], "");
        let e = format!("{:#}", load(&[bad]).err().unwrap());
        assert!(
            e.contains("d.jsonl:1: no ") && e.contains("not a line of vmemsim sweep"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            load(&[PathBuf::from("/nonexistent/x")]).err().unwrap()
        );
        assert!(e.contains("/nonexistent/x: no such file"), "{e}");
    }
}
