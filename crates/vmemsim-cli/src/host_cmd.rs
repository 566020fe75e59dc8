//! `vmemsim host`: many VMs on one host. Runs the host and, in parallel on
//! the job runner, each VM alone (for its slowdown); prints the table,
//! writes the JSON report and the memory-over-time chart.

use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;
use vmemsim::host::config::HostConfig;
use vmemsim::hostsim::{open_input, HostReport, HostSim};
use vmemsim::run_mode;
use vmemsim::sim::ModeResult;

use crate::chart::VM_COLORS;
use crate::jobs::{self, Task};
use crate::measure_flags::MeasureFlags;
use crate::output::Outputs;

/// File name of the memory chart in `--svg DIR`.
const CHART: &str = "host-memory.svg";

/// What one task of a host run produced.
enum Out {
    Host(Box<HostReport>),
    Alone(Box<ModeResult>),
}

/// Run the host of `config` (the built-in one when `None`); returns the table.
///
/// # Errors
/// A bad configuration, an unreadable trace, a guest or host out of
/// memory, or a report that cannot be written.
pub fn run(
    config: Option<&Path>,
    json: Option<&Path>,
    svg: Option<&Path>,
    alone: bool,
    measure: MeasureFlags,
    threads: usize,
    force: bool,
) -> Result<String> {
    let mut cfg = match config {
        Some(p) => HostConfig::load(p)?,
        None => HostConfig::builtin(),
    };
    let mut window = cfg.base.measure.clone();
    measure.apply(&mut window);
    cfg.set_measure(&window);
    // Outputs are checked before any work: never an input, never an
    // existing file without --force.
    let traces = cfg.vms.iter().filter_map(|v| match &v.input {
        vmemsim::host::config::VmInput::Trace(p) => Some(p.clone()),
        vmemsim::host::config::VmInput::Builtin(_) => None,
    });
    let outputs = Outputs::new(
        force,
        config.map(Path::to_path_buf).into_iter().chain(traces),
    );
    if let Some(json) = json {
        outputs.check_file(json, "--json")?;
    }
    if let Some(dir) = svg {
        let mut charts = vec![CHART.to_string()];
        if cfg.esx.section.enabled {
            charts.push(crate::esx_chart::CHART.to_string());
        }
        if cfg.sharing.enabled {
            charts.push(crate::sharing_chart::CHART.to_string());
        }
        outputs.check_dir(dir, &charts, "--svg")?;
    }
    let mut tasks: Vec<Task<'_, Out>> = Vec::new();
    let cfg_ref = &cfg;
    tasks.push(Task {
        label: "host".into(),
        expected: None,
        work: Box::new(move |progress| {
            let mut sim = HostSim::new(cfg_ref)?;
            Ok(Out::Host(Box::new(sim.run(progress)?)))
        }),
    });
    if alone {
        for spec in &cfg.vms {
            tasks.push(Task {
                label: format!("{} alone", spec.name),
                expected: None,
                work: Box::new(move |progress| {
                    let mut src = open_input(spec)?;
                    let r = run_mode(spec.mode, &spec.cfg, src.as_mut(), progress)
                        .with_context(|| format!("running VM {} alone", spec.name))?;
                    Ok(Out::Alone(Box::new(r)))
                }),
            });
        }
    }
    let mut outs = jobs::run(tasks, threads)?.into_iter();
    let Some(Out::Host(mut report)) = outs.next() else {
        unreachable!("the host task comes first")
    };
    for (i, o) in outs.enumerate() {
        if let Out::Alone(r) = o {
            report.set_alone(i, &r);
        }
    }
    if let Some(path) = json {
        std::fs::write(path, report.to_json(&cfg))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("JSON report written to {}", path.display());
    }
    if let Some(dir) = svg {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(CHART);
        memory_chart(&report, &path).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("SVG chart written to {}", path.display());
        if report.esx.is_some() {
            let path = dir.join(crate::esx_chart::CHART);
            crate::esx_chart::write(&report, &path)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("SVG chart written to {}", path.display());
        }
        if report.sharing.is_some() {
            let path = dir.join(crate::sharing_chart::CHART);
            crate::sharing_chart::write(&report, &path)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("SVG chart written to {}", path.display());
        }
    }
    let source = config.map_or_else(
        || "the built-in host (`vmemsim host --config FILE` runs yours)".to_string(),
        |p| p.display().to_string(),
    );
    let names: Vec<&str> = report.vms.iter().map(|v| v.name.as_str()).collect();
    let esx = report
        .esx
        .as_ref()
        .map_or_else(String::new, |e| e.to_table(&names));
    let sharing = report
        .sharing
        .as_ref()
        .map_or_else(String::new, |s| s.to_table(&names, report.ghz));
    Ok(format!(
        "{}{esx}{sharing}config: {source}\n",
        report.to_table()
    ))
}

/// Host memory over time as stacked areas (as in [ESX]'s figures): each
/// VM's frames, the hypervisor's table pages, and free memory on top, MiB.
fn memory_chart(r: &HostReport, path: &Path) -> Result<()> {
    let root = crate::chart::host_canvas(path)?;
    let t_end = r.series.last().map_or(1.0, |s| s.seconds).max(1e-9);
    let total = r.frames as f64 / 256.0;
    let mut chart = crate::chart::host_axes(
        &root,
        "host memory by VM (stacked), MiB",
        20,
        t_end,
        total * 1.02,
    )?;
    chart
        .configure_mesh()
        .x_desc("host time, s")
        .y_desc("MiB")
        .draw()?;
    // Layers bottom to top: VMs, tables, free; drawn top down so each
    // cumulative area is covered by the ones below it.
    let layers = r.vms.len() + 2;
    let height = |s: &vmemsim::hostsim::Sample, upto: usize| -> f64 {
        let mut f: u64 = s.vm_frames.iter().take(upto.min(r.vms.len())).sum();
        if upto > r.vms.len() {
            f += s.table_frames;
        }
        if upto > r.vms.len() + 1 {
            f += s.free_frames;
        }
        f as f64 / 256.0
    };
    for layer in (0..layers).rev() {
        let (name, color) = if layer < r.vms.len() {
            (
                r.vms[layer].name.clone(),
                VM_COLORS[layer % VM_COLORS.len()],
            )
        } else if layer == r.vms.len() {
            ("hypervisor tables".to_string(), RGBColor(0x9c, 0x75, 0x5f))
        } else {
            ("free".to_string(), RGBColor(0xdd, 0xdd, 0xdd))
        };
        let mut pts: Vec<(f64, f64)> = vec![(0.0, 0.0)];
        pts.extend(r.series.iter().map(|s| (s.seconds, height(s, layer + 1))));
        pts.push((t_end, 0.0));
        chart
            .draw_series(std::iter::once(Polygon::new(pts, color.filled())))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
