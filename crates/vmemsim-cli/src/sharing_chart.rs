//! The page-sharing chart (`vmemsim host --svg DIR` with `[sharing]`):
//! host memory saved by sharing (solid), by kind (zero pages dashed
//! black; file, anonymous and snapshot pages, and the part saved within
//! one VM, short dashes), and each VM's guest frames on shared frames
//! (thin), MiB over host time.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;
use vmemsim::hostsim::HostReport;

use crate::chart::VM_COLORS;

/// File name of the chart in `--svg DIR`.
pub const CHART: &str = "host-sharing.svg";

/// One line of the chart: what it plots of a sample, frames.
type KindOf = fn(&vmemsim::hostsim::sharing_report::SharingSample) -> u64;

/// Write the chart of `r` (nothing without a sharing report) to `path`.
///
/// # Errors
/// The file cannot be written.
pub fn write(r: &HostReport, path: &Path) -> Result<()> {
    let Some(sh) = &r.sharing else {
        return Ok(());
    };
    let series = &sh.series;
    let mib = |f: u64| f as f64 / 256.0;
    let t_end = series.last().map_or(1.0, |p| p.seconds).max(1e-9);
    let top = series
        .iter()
        .flat_map(|p| p.vm_sharing_frames.iter().copied().chain([p.saved_frames]))
        .max()
        .map_or(1.0, mib)
        .max(0.1)
        * 1.05;
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "page sharing: host memory saved (solid), by kind and within a VM (dashed), guest memory on shared frames per VM",
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("host time, s")
        .y_desc("MiB")
        .draw()?;
    chart
        .draw_series(LineSeries::new(
            series.iter().map(|p| (p.seconds, mib(p.saved_frames))),
            BLACK.stroke_width(3),
        ))?
        .label("saved (host)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(3)));
    chart
        .draw_series(DashedLineSeries::new(
            series.iter().map(|p| (p.seconds, mib(p.saved_zero_frames))),
            8,
            5,
            BLACK.stroke_width(2),
        ))?
        .label("saved: zero pages")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    // The saving by kind and within one VM, over time (the table's
    // second sharing line at every sample).
    let kinds: [(&str, RGBColor, KindOf); 4] = [
        ("saved: file pages", RGBColor(0x8c, 0x56, 0x4b), |p| {
            p.split.saved_by_kind[1]
        }),
        ("saved: anonymous", RGBColor(0x9d, 0x9d, 0x9d), |p| {
            p.split.saved_by_kind[2]
        }),
        ("saved: snapshot pages", RGBColor(0xbc, 0xbd, 0x22), |p| {
            p.split.saved_by_kind[3]
        }),
        ("saved within a VM", RGBColor(0x17, 0xbe, 0xcf), |p| {
            p.split.saved_within_vm
        }),
    ];
    for (name, c, f) in kinds {
        chart
            .draw_series(DashedLineSeries::new(
                series.iter().map(|p| (p.seconds, mib(f(p)))),
                4,
                3,
                c.stroke_width(2),
            ))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    for (i, v) in r.vms.iter().enumerate() {
        let c = VM_COLORS[i % VM_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                series
                    .iter()
                    .map(|p| (p.seconds, mib(p.vm_sharing_frames[i]))),
                c.stroke_width(1),
            ))?
            .label(format!("{}: on shared frames", v.name))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
