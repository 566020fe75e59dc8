//! Reports: per-mode results side by side, as a text table and as JSON.
//!
//! The JSON has a top-level `modes` array, one entry per (workload, mode),
//! with `workload`, `mode`, `accesses`, `tlb_misses`, `walk_refs`,
//! `vm_exits` (object by reason), `guest_page_faults`, `cycles` and more,
//! plus the resolved `config` it was produced with.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::config::Config;
use crate::cost::Cycles;
use crate::sim::{ModeKind, ModeResult};
use crate::stats::{ExitReason, Stats};

/// All modes' results on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadResult {
    /// Short name (built-in name or trace file name).
    pub workload: String,
    /// What it is (parameters or trace path).
    pub description: String,
    /// One result per mode, in run order.
    pub modes: Vec<ModeResult>,
    /// Warnings from reading the input (e.g. a truncated trace).
    pub warnings: Vec<String>,
}

/// One row of the JSON `modes` array.
#[derive(Clone, Debug, Serialize)]
pub struct ModeRow<'a> {
    /// Workload name.
    pub workload: &'a str,
    /// Mode name.
    pub mode: ModeKind,
    /// Which instructions the counts cover.
    pub window: crate::window::WindowReport,
    /// Memory accesses.
    pub accesses: u64,
    /// Instructions (fetches).
    pub instructions: u64,
    /// L1 TLB misses.
    pub l1_tlb_misses: u64,
    /// STLB misses (accesses that walked).
    pub tlb_misses: u64,
    /// Hardware walks.
    pub walks: u64,
    /// Walk references, all dimensions.
    pub walk_refs: u64,
    /// Mean references per walk.
    pub refs_per_walk: f64,
    /// VM exits by reason.
    pub vm_exits: BTreeMap<&'static str, u64>,
    /// All VM exits.
    pub vm_exits_total: u64,
    /// Guest page faults.
    pub guest_page_faults: u64,
    /// Total cycles.
    pub cycles: u64,
    /// Cycles by component.
    pub cycles_breakdown: Cycles,
    /// `cycles / native cycles - 1`, when native ran on the same workload.
    pub overhead_vs_native: Option<f64>,
    /// Every counter.
    pub stats: &'a Stats,
    /// Switches, time in each mode and the per-period series, for switching modes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switching: Option<&'a crate::hv::selective::SwitchReport>,
}

/// The JSON document.
#[derive(Clone, Debug, Serialize)]
pub struct JsonReport<'a> {
    /// vmemsim version.
    pub vmemsim_version: &'static str,
    /// Resolved configuration.
    pub config: &'a Config,
    /// Workloads run.
    pub workloads: Vec<WorkloadMeta<'a>>,
    /// One row per (workload, mode).
    pub modes: Vec<ModeRow<'a>>,
}

/// Workload description in the JSON.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadMeta<'a> {
    /// Name.
    pub workload: &'a str,
    /// Description.
    pub description: &'a str,
    /// Input warnings.
    pub warnings: &'a [String],
}

/// Overhead of `m` against native on the same workload: `cycles / native
/// cycles - 1`, or `None` when native did not run (or took 0 cycles).
pub fn overhead_vs_native(w: &WorkloadResult, m: &ModeResult) -> Option<f64> {
    overhead(m.cycles.total, native_cycles(w))
}

fn native_cycles(w: &WorkloadResult) -> Option<u64> {
    w.modes
        .iter()
        .find(|m| m.mode == ModeKind::Native)
        .map(|m| m.cycles.total)
}

fn overhead(cycles: u64, native: Option<u64>) -> Option<f64> {
    native
        .filter(|&n| n > 0)
        .map(|n| cycles as f64 / n as f64 - 1.0)
}

/// Build the JSON document.
pub fn to_json(cfg: &Config, results: &[WorkloadResult]) -> String {
    let mut rows = Vec::new();
    for w in results {
        let native = native_cycles(w);
        for m in &w.modes {
            let s = &m.stats;
            rows.push(ModeRow {
                workload: &w.workload,
                mode: m.mode,
                window: m.window,
                accesses: s.accesses,
                instructions: s.instructions,
                l1_tlb_misses: s.l1_tlb_misses,
                tlb_misses: s.tlb_misses,
                walks: s.walks,
                walk_refs: s.walk_refs(),
                refs_per_walk: s.refs_per_walk(),
                vm_exits: ExitReason::ALL
                    .iter()
                    .map(|&r| (r.name(), s.exits_for(r)))
                    .collect(),
                vm_exits_total: s.total_exits(),
                guest_page_faults: s.guest_page_faults,
                cycles: m.cycles.total,
                cycles_breakdown: m.cycles,
                overhead_vs_native: overhead(m.cycles.total, native),
                stats: s,
                switching: m.switching.as_ref(),
            });
        }
    }
    let doc = JsonReport {
        vmemsim_version: env!("CARGO_PKG_VERSION"),
        config: cfg,
        workloads: results
            .iter()
            .map(|w| WorkloadMeta {
                workload: &w.workload,
                description: &w.description,
                warnings: &w.warnings,
            })
            .collect(),
        modes: rows,
    };
    serde_json::to_string_pretty(&doc).expect("report serializes")
}

/// The side-by-side text table of one workload.
pub fn to_table(w: &WorkloadResult) -> String {
    let native = native_cycles(w);
    let mut out = String::new();
    let _ = writeln!(out, "workload: {}", w.description);
    if let Some(m) = w.modes.first() {
        let _ = writeln!(out, "measured: {}", m.window.describe());
    }
    for warn in &w.warnings {
        let _ = writeln!(out, "warning: {warn}");
    }
    let mut row = |label: &str, f: &dyn Fn(&ModeResult) -> String| {
        let _ = write!(out, "{label:<26}");
        for m in &w.modes {
            let _ = write!(out, "{:>16}", f(m));
        }
        out.push('\n');
    };
    row("", &|m| m.mode.name().to_string());
    row("accesses", &|m| m.stats.accesses.to_string());
    row("instructions", &|m| m.stats.instructions.to_string());
    row("L1 TLB misses", &|m| m.stats.l1_tlb_misses.to_string());
    row("STLB misses (walks)", &|m| m.stats.tlb_misses.to_string());
    row("walk references", &|m| m.stats.walk_refs().to_string());
    row("  refs per walk", &|m| {
        format!("{:.2}", m.stats.refs_per_walk())
    });
    row("  line-cache hits", &|m| {
        m.stats.walk_ref_cache_hits.to_string()
    });
    row("guest page faults", &|m| {
        m.stats.guest_page_faults.to_string()
    });
    row("VM exits", &|m| m.stats.total_exits().to_string());
    for r in ExitReason::ALL {
        if w.modes.iter().any(|m| m.stats.exits_for(r) > 0) {
            row(&format!("  {}", r.name()), &|m| {
                m.stats.exits_for(r).to_string()
            });
        }
    }
    row("cycles", &|m| m.cycles.total.to_string());
    row("  translation (TLB+walk)", &|m| {
        (m.cycles.stlb + m.cycles.walks).to_string()
    });
    row("  hypervisor", &|m| m.cycles.hypervisor.to_string());
    row("  guest kernel", &|m| m.cycles.guest_kernel.to_string());
    if w.modes.iter().any(|m| m.switching.is_some()) {
        let sw = |m: &ModeResult, f: &dyn Fn(&crate::hv::selective::SwitchReport) -> String| {
            m.switching.as_ref().map_or_else(|| "-".to_string(), f)
        };
        row("mode switches", &|m| sw(m, &|s| s.switches.to_string()));
        row("  instructions in shadow", &|m| {
            sw(m, &|s| {
                let all = (s.instructions_shadow + s.instructions_nested).max(1);
                format!("{:.1}%", 100.0 * s.instructions_shadow as f64 / all as f64)
            })
        });
    }
    row(
        "overhead vs native",
        &|m| match overhead(m.cycles.total, native) {
            Some(o) => format!("{:+.2}%", o * 100.0),
            None => "-".into(),
        },
    );
    out
}
