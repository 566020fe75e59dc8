//! SVG charts of a run (`--svg DIR`): per workload, cycles by component and
//! VM exits by reason, one stacked bar per mode; per switching mode, cycles
//! per sampling period coloured by the paging in use.
//!
//! Drawn with `plotters`' SVG backend and no font feature: labels are SVG
//! `<text>` elements that the viewer lays out, and plotters sizes its label
//! areas with a built-in width estimate, so no system fonts are read.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::coord::ranged1d::{IntoSegmentedCoord, SegmentValue};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use vmemsim::cost::Cycles;
use vmemsim::hv::selective::Paging;
use vmemsim::hv::SwitchReport;
use vmemsim::report::WorkloadResult;
use vmemsim::stats::ExitReason;
use vmemsim::ModeKind;

/// Size of every chart, pixels.
const SIZE: (u32, u32) = (1000, 560);
/// Width of the legend strip on the right, pixels.
const LEGEND_PX: u32 = 190;
/// Font of all labels; the viewer picks any sans-serif face it has.
const FONT: &str = "sans-serif";

/// A cycle component: its name, colour, and how to read it from [`Cycles`].
type Component = (&'static str, RGBColor, fn(&Cycles) -> u64);

/// The cycle components, bottom to top, with their colours.
const COMPONENTS: [Component; 5] = [
    ("base", RGBColor(0xbd, 0xbd, 0xbd), |c| c.base),
    ("stlb", RGBColor(0x4e, 0x79, 0xa7), |c| c.stlb),
    ("walks", RGBColor(0xf2, 0x8e, 0x2b), |c| c.walks),
    ("hypervisor", RGBColor(0xe1, 0x57, 0x59), |c| c.hypervisor),
    ("guest_kernel", RGBColor(0x59, 0xa1, 0x4f), |c| {
        c.guest_kernel
    }),
];

/// Colour of each exit reason, in [`ExitReason::EVERY`] order.
const EXIT_COLORS: [RGBColor; 9] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
];

/// Colour of nested and shadow periods in timelines.
fn paging_color(p: Paging) -> RGBColor {
    match p {
        Paging::Nested => RGBColor(0x4e, 0x79, 0xa7),
        Paging::Shadow => RGBColor(0xf2, 0x8e, 0x2b),
    }
}

fn paging_name(p: Paging) -> &'static str {
    match p {
        Paging::Nested => "nested",
        Paging::Shadow => "shadow",
    }
}

/// Write every chart of `results` into `dir` (created if missing), when
/// `dir` is given, and say where on stderr.
///
/// # Errors
/// The directory cannot be created or a file cannot be written; the error
/// names the path.
pub fn write_svgs(
    dir: Option<&Path>,
    results: &[WorkloadResult],
    outputs: &crate::output::Outputs,
) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    let written = write_all(dir, results, outputs)?;
    eprintln!(
        "{} SVG chart(s) written to {}",
        written.len(),
        dir.display()
    );
    Ok(())
}

/// Write every chart of `results` into `dir`; returns the files written.
/// Every file [`write_svgs`] may write for `workload` run in `modes` (a
/// timeline only for modes that switch), so they can be checked first.
pub fn file_names(workload: &str, modes: &[ModeKind]) -> Vec<String> {
    let stem = file_stem(workload);
    let mut v = vec![format!("{stem}.svg"), format!("{stem}-exits.svg")];
    v.extend(
        modes
            .iter()
            .map(|m| format!("{stem}-{}-timeline.svg", m.name())),
    );
    v
}

fn write_all(
    dir: &Path,
    results: &[WorkloadResult],
    outputs: &crate::output::Outputs,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating SVG directory {}", dir.display()))?;
    let mut written = Vec::new();
    let mut put = |name: String, svg: String| -> Result<()> {
        let path = dir.join(name);
        outputs.write(&path, svg.as_bytes())?;
        written.push(path);
        Ok(())
    };
    for w in results {
        let stem = file_stem(&w.workload);
        put(format!("{stem}.svg"), cycles_svg(w)?)?;
        put(format!("{stem}-exits.svg"), exits_svg(w)?)?;
        for m in &w.modes {
            if let Some(sw) = m.switching.as_ref().filter(|sw| !sw.intervals.is_empty()) {
                put(
                    format!("{stem}-{}-timeline.svg", m.mode.name()),
                    timeline_svg(&w.workload, m.mode, sw)?,
                )?;
            }
        }
    }
    Ok(written)
}

/// A workload name made safe as a file name (trace names are file names already).
fn file_stem(workload: &str) -> String {
    let s: String = workload
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        format!("workload{s}")
    } else {
        s
    }
}

/// A count with an SI suffix: 1234567 -> "1.23M".
fn si(v: f64) -> String {
    let a = v.abs();
    let (d, suffix) = match a {
        _ if a >= 1e12 => (1e12, "T"),
        _ if a >= 1e9 => (1e9, "G"),
        _ if a >= 1e6 => (1e6, "M"),
        _ if a >= 1e3 => (1e3, "k"),
        _ => return format!("{}", (v * 100.0).round() / 100.0),
    };
    let x = v / d;
    let digits = if x.abs() >= 100.0 {
        0
    } else if x.abs() >= 10.0 {
        1
    } else {
        2
    };
    format!("{x:.digits$}{suffix}")
}

/// One stacked bar per mode.
struct Stacked<'a> {
    title: String,
    y_desc: &'a str,
    /// Bar labels (mode names), left to right.
    bars: Vec<&'a str>,
    /// Layers bottom to top: name, colour, one value per bar.
    layers: Vec<(&'a str, RGBColor, Vec<u64>)>,
    /// Text above each bar.
    tops: Vec<String>,
    /// Written in the middle when every value is zero.
    empty_note: &'a str,
}

fn text(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

fn stacked_svg(c: &Stacked<'_>) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_PX);
        let n = c.bars.len().max(1) as u32;
        let totals: Vec<u64> = (0..c.bars.len())
            .map(|i| c.layers.iter().map(|l| l.2[i]).sum())
            .collect();
        let max = totals.iter().copied().max().unwrap_or(0);
        let y_max = if max == 0 { 1.0 } else { max as f64 * 1.12 };
        let mut chart = ChartBuilder::on(&plot)
            .caption(&c.title, text(22.0))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            // A segmented `0..=k` range has k + 1 segments: one per bar.
            .build_cartesian_2d((0..n - 1).into_segmented(), 0.0..y_max)?;
        let names = &c.bars;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(n as usize)
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names
                    .get(*i as usize)
                    .map_or(String::new(), |s| s.to_string()),
                _ => String::new(),
            })
            .x_label_style(text(15.0))
            .y_label_formatter(&|v| si(*v))
            .y_label_style(text(14.0))
            .y_desc(c.y_desc)
            .axis_desc_style(text(15.0))
            .draw()?;
        let mut base = vec![0u64; c.bars.len()];
        for (_, color, values) in &c.layers {
            let rects: Vec<_> = values
                .iter()
                .enumerate()
                .filter(|&(_, &v)| v > 0)
                .map(|(i, &v)| {
                    let x = i as u32;
                    let lo = base[i];
                    base[i] += v;
                    let mut r = Rectangle::new(
                        [
                            (SegmentValue::Exact(x), lo as f64),
                            (SegmentValue::Exact(x + 1), base[i] as f64),
                        ],
                        color.filled(),
                    );
                    r.set_margin(0, 0, 14, 14);
                    r
                })
                .collect();
            chart.draw_series(rects)?;
        }
        let top_style = text(15.0).pos(Pos::new(HPos::Center, VPos::Bottom));
        chart.draw_series(
            c.tops
                .iter()
                .zip(&totals)
                .enumerate()
                .map(|(i, (label, &total))| {
                    EmptyElement::at((SegmentValue::CenterOf(i as u32), total as f64))
                        + Text::new(label.clone(), (0, -5), top_style.clone())
                }),
        )?;
        if max == 0 {
            let (w, h) = plot.dim_in_pixel();
            plot.draw(&Text::new(
                c.empty_note,
                (w as i32 / 2, h as i32 / 2),
                text(18.0).pos(Pos::new(HPos::Center, VPos::Center)),
            ))?;
        }
        draw_legend(
            &legend,
            c.layers
                .iter()
                .rev()
                .map(|(name, color, _)| (*name, *color)),
        )?;
        root.present()?;
    }
    Ok(out)
}

/// A column of colour swatches and names, top aligned with the plot.
fn draw_legend<'n>(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    items: impl Iterator<Item = (&'n str, RGBColor)>,
) -> Result<()> {
    let label = text(15.0).pos(Pos::new(HPos::Left, VPos::Center));
    for (k, (name, color)) in items.enumerate() {
        let y = 70 + 26 * k as i32;
        area.draw(&Rectangle::new([(6, y - 8), (22, y + 8)], color.filled()))?;
        area.draw(&Text::new(name, (30, y), label.clone()))?;
    }
    Ok(())
}

/// Cycles by component, one stacked bar per mode, overhead vs native above.
fn cycles_svg(w: &WorkloadResult) -> Result<String> {
    stacked_svg(&Stacked {
        title: format!("{}: cycles by component", w.workload),
        y_desc: "cycles",
        bars: w.modes.iter().map(|m| m.mode.name()).collect(),
        layers: COMPONENTS
            .iter()
            .map(|&(name, color, get)| {
                (
                    name,
                    color,
                    w.modes.iter().map(|m| get(&m.cycles)).collect(),
                )
            })
            .collect(),
        tops: w
            .modes
            .iter()
            .map(|m| {
                vmemsim::report::overhead_vs_native(w, m)
                    .map_or(String::new(), |o| format!("{:+.2}%", o * 100.0))
            })
            .collect(),
        empty_note: "no cycles",
    })
}

/// VM exits by reason, one stacked bar per mode, the total above.
fn exits_svg(w: &WorkloadResult) -> Result<String> {
    let reasons = ExitReason::EVERY
        .iter()
        .zip(EXIT_COLORS)
        .filter(|(&r, _)| w.modes.iter().any(|m| m.stats.exits_for(r) > 0));
    stacked_svg(&Stacked {
        title: format!("{}: VM exits by reason", w.workload),
        y_desc: "VM exits",
        bars: w.modes.iter().map(|m| m.mode.name()).collect(),
        layers: reasons
            .map(|(&r, color)| {
                (
                    r.name(),
                    color,
                    w.modes.iter().map(|m| m.stats.exits_for(r)).collect(),
                )
            })
            .collect(),
        tops: w
            .modes
            .iter()
            .map(|m| si(m.stats.total_exits() as f64))
            .collect(),
        empty_note: "no VM exits in any mode",
    })
}

/// Cycles of each sampling period of a switching mode, coloured by the
/// paging used in it; x is guest instructions retired.
fn timeline_svg(workload: &str, mode: ModeKind, sw: &SwitchReport) -> Result<String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(SIZE.0 - LEGEND_PX);
        let x_end = sw
            .intervals
            .iter()
            .map(|s| s.instructions)
            .sum::<u64>()
            .max(1) as f64;
        let y_max = sw
            .intervals
            .iter()
            .map(|s| s.cycles)
            .max()
            .unwrap_or(0)
            .max(1) as f64
            * 1.08;
        let mut chart = ChartBuilder::on(&plot)
            .caption(
                format!(
                    "{workload} / {}: cycles per period of {} instructions",
                    mode.name(),
                    si(sw.period_instructions as f64)
                ),
                text(20.0),
            )
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..x_end, 0.0..y_max)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|v| si(*v))
            .y_label_formatter(&|v| si(*v))
            .x_label_style(text(14.0))
            .y_label_style(text(14.0))
            .x_desc("guest instructions")
            .y_desc("cycles per period")
            .axis_desc_style(text(15.0))
            .draw()?;
        // Each period's box: from its first to its last instruction, up to its cycles.
        let mut start = 0u64;
        let boxes: Vec<_> = sw
            .intervals
            .iter()
            .map(|s| {
                let x0 = start as f64;
                start += s.instructions;
                ([(x0, 0.0), (start as f64, s.cycles as f64)], s.mode)
            })
            .collect();
        chart.draw_series(
            boxes
                .iter()
                .map(|&(b, mode)| Rectangle::new(b, paging_color(mode).filled())),
        )?;
        // Thin white edges tell neighbouring periods apart while they are wide enough.
        if boxes.len() <= 150 {
            chart.draw_series(
                boxes
                    .iter()
                    .map(|&(b, _)| Rectangle::new(b, WHITE.stroke_width(1))),
            )?;
        }
        draw_legend(
            &legend,
            [Paging::Nested, Paging::Shadow]
                .into_iter()
                .map(|p| (paging_name(p), paging_color(p))),
        )?;
        let note = text(14.0).pos(Pos::new(HPos::Left, VPos::Center));
        legend.draw(&Text::new(
            format!("{} switches", sw.switches),
            (6, 70 + 26 * 2 + 10),
            note.clone(),
        ))?;
        legend.draw(&Text::new(
            format!("{} periods", sw.intervals.len()),
            (6, 70 + 26 * 3 + 10),
            note,
        ))?;
        root.present()?;
    }
    Ok(out)
}

/// Colours of the VMs in the host charts (`host-memory.svg`,
/// `esx-memory.svg`, `host-sharing.svg`), cycled.
pub const VM_COLORS: [RGBColor; 6] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0xb0, 0x7a, 0xa1),
];

/// A host chart's canvas: the 1000 x 560 px SVG drawing area of `path`,
/// filled white.
pub fn host_canvas(path: &Path) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A host chart's axes on `root`: host time from 0 to `t_end` seconds
/// against 0 to `top` MiB, under `caption` (`caption_px` high).
pub fn host_axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    caption: &str,
    caption_px: u32,
    t_end: f64,
    top: f64,
) -> Result<ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    Ok(ChartBuilder::on(root)
        .caption(caption, ("sans-serif", caption_px))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..t_end, 0.0..top)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmemsim::stats::Stats;
    use vmemsim::ModeResult;

    fn mode(mode: ModeKind, scale: u64, exits: &[(ExitReason, u64)]) -> ModeResult {
        let mut stats = Stats::default();
        for &(r, n) in exits {
            for _ in 0..n {
                stats.exit(r);
            }
        }
        let cycles = Cycles::from_parts(1000, 50 * scale, 120 * scale, 80 * scale, 30 * scale);
        ModeResult {
            mode,
            stats,
            window: Default::default(),
            cycles,
            switching: None,
        }
    }

    fn fake() -> WorkloadResult {
        WorkloadResult {
            workload: "fake".into(),
            description: "a fake workload".into(),
            modes: vec![
                mode(ModeKind::Native, 1, &[]),
                mode(ModeKind::Nested, 2, &[(ExitReason::EptViolation, 3)]),
                mode(
                    ModeKind::Shadow,
                    3,
                    &[(ExitReason::ShadowFault, 5), (ExitReason::Cr3Write, 2)],
                ),
            ],
            warnings: Vec::new(),
        }
    }

    /// `<rect>` elements filled with `c`.
    fn rects_of(svg: &str, c: RGBColor) -> usize {
        let fill = format!("fill=\"#{:02X}{:02X}{:02X}\"", c.0, c.1, c.2);
        svg.lines()
            .filter(|l| l.trim_start().starts_with("<rect") && l.contains(&fill))
            .count()
    }

    fn has_text(svg: &str, s: &str) -> bool {
        svg.split("<text").skip(1).any(|t| {
            t.split_once('>')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(s))
        })
    }

    #[test]
    fn cycles_chart_labels_every_mode_and_stacks_every_component() {
        let w = fake();
        let svg = cycles_svg(&w).unwrap();
        for m in &w.modes {
            assert!(
                has_text(&svg, m.mode.name()),
                "no <text> for {}",
                m.mode.name()
            );
        }
        for (name, color, _) in COMPONENTS {
            assert!(has_text(&svg, name), "no legend for {name}");
            // One bar segment per mode plus the legend swatch.
            assert_eq!(rects_of(&svg, color), w.modes.len() + 1, "bars of {name}");
        }
        // Overheads vs native: native (1000+280), nested (1000+560), shadow (1000+840).
        for o in ["+0.00%", "+21.88%", "+43.75%"] {
            assert!(has_text(&svg, o), "no overhead label {o}");
        }
    }

    #[test]
    fn exits_chart_shows_only_reasons_that_happened() {
        let w = fake();
        let svg = exits_svg(&w).unwrap();
        for m in &w.modes {
            assert!(has_text(&svg, m.mode.name()));
        }
        assert!(
            has_text(&svg, "ept_violation")
                && has_text(&svg, "shadow_fault")
                && has_text(&svg, "cr3_write")
        );
        assert!(!has_text(&svg, "hypercall"));
        assert_eq!(
            rects_of(&svg, EXIT_COLORS[0]),
            1 + 1,
            "ept_violation: nested bar and swatch"
        );
    }

    #[test]
    fn unwritable_dir_error_names_the_path() {
        let file = std::env::temp_dir().join(format!("vmemsim-chart-test-{}", std::process::id()));
        std::fs::write(&file, "not a directory").unwrap();
        let dir = file.join("sub");
        let err = write_all(&dir, &[fake()], &Default::default()).unwrap_err();
        std::fs::remove_file(&file).unwrap();
        assert!(
            format!("{err:#}").contains(&dir.display().to_string()),
            "{err:#}"
        );
    }

    #[test]
    fn si_suffixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1234.0), "1.23k");
        assert_eq!(si(12_345_678.0), "12.3M");
        assert_eq!(si(450e9), "450G");
    }
}
