//! The ESX memory manager's chart (`vmemsim host --svg DIR` with `[esx]`):
//! each VM's allocation (solid) and target (dashed) and its balloon
//! (dotted) over host time, MiB, on bands coloured by the host's
//! reclamation state (as [ESX]'s allocation figures, with the states).

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use vmemsim::esx::State;
use vmemsim::hostsim::HostReport;

use crate::chart::VM_COLORS;

/// File name of the chart in `--svg DIR`.
pub const CHART: &str = "esx-memory.svg";

fn band(s: State) -> RGBColor {
    match s {
        State::High => RGBColor(0xff, 0xff, 0xff),
        State::Soft => RGBColor(0xfd, 0xf3, 0xd0),
        State::Hard => RGBColor(0xfb, 0xd9, 0xb0),
        State::Low => RGBColor(0xf4, 0xb0, 0xa8),
    }
}

/// Write the chart of `r` (which must have an ESX report) to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write(r: &HostReport, path: &Path) -> Result<()> {
    let Some(e) = &r.esx else {
        return Ok(());
    };
    let series = &e.manager.series;
    let root = crate::chart::host_canvas(path)?;
    let t_end = series.last().map_or(1.0, |p| p.seconds).max(1e-9);
    let mib = |f: u64| f as f64 / 256.0;
    let top = e.manager.max.iter().copied().max().map_or(1.0, mib) * 1.05;
    let caption = format!(
        "memory per VM (allocation solid, target dashed, balloon dotted), tau = {}",
        e.manager.idle_tax
    );
    let mut chart = crate::chart::host_axes(&root, &caption, 18, t_end, top)?;
    // State bands: a point's state holds until the next point's time.
    let mut i = 0;
    while i < series.len() {
        let s = series[i].state;
        let mut j = i;
        while j + 1 < series.len() && series[j + 1].state == s {
            j += 1;
        }
        let t0 = if i == 0 { 0.0 } else { series[i].seconds };
        let t1 = series.get(j + 1).map_or(t_end, |p| p.seconds);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(t0, 0.0), (t1, top)],
            band(s).filled(),
        )))?;
        i = j + 1;
    }
    chart
        .configure_mesh()
        .x_desc("host time, s (bands: white high, yellow soft, orange hard, red low)")
        .y_desc("MiB")
        .draw()?;
    for (v, vm) in r.vms.iter().enumerate() {
        let c = VM_COLORS[v % VM_COLORS.len()];
        let pts = |f: &dyn Fn(&vmemsim::esx::manager::VmPoint) -> u64| -> Vec<(f64, f64)> {
            series
                .iter()
                .map(|p| (p.seconds, mib(f(&p.vms[v]))))
                .collect()
        };
        chart
            .draw_series(LineSeries::new(pts(&|q| q.alloc), c.stroke_width(2)))?
            .label(format!("{} allocation", vm.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        chart.draw_series(DashedLineSeries::new(
            pts(&|q| q.target),
            6,
            4,
            c.stroke_width(1),
        ))?;
        chart.draw_series(DashedLineSeries::new(
            pts(&|q| q.balloon),
            2,
            3,
            c.stroke_width(1),
        ))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
