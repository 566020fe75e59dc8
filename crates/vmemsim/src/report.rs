//! Reports: per-mode results side by side, as a text table and as JSON.
//!
//! The JSON has a top-level `modes` array, one entry per (workload, mode),
//! with `workload`, `mode`, `window`, `accesses`, `tlb_misses`, `walk_refs`,
//! `vm_exits` (object by reason), `guest_page_faults`, `cycles`, per-structure
//! counts (`dtlb`, `itlb`, `stlb`, `psc`, `ept_psc`, `nested_tlb`,
//! `pt_line_cache`; how they map to ChampSim's is in docs/champsim.md) and
//! more, plus the resolved `config` it was produced with.

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
    /// Mean walk references per STLB miss (re-walks after faults included).
    pub refs_per_stlb_miss: f64,
    /// L1 DTLB lookups (loads and stores), hits, misses.
    pub dtlb: Lookups,
    /// L1 ITLB lookups (instruction fetches), hits, misses.
    pub itlb: Lookups,
    /// STLB lookups (L1 misses), hits, misses (= `tlb_misses`).
    pub stlb: Lookups,
    /// Paging-structure caches of the guest / 1-D tables, one lookup per walk.
    pub psc: PscLookups,
    /// Paging-structure caches of the EPT, one lookup per nested TLB miss.
    pub ept_psc: PscLookups,
    /// Nested TLB (gPA -> hPA in 2-D walks).
    pub nested_tlb: Lookups,
    /// The page-table line cache: walk references, line hits, misses.
    pub pt_line_cache: Lookups,
    /// Agile paging: walks by where they switched to nested (agile only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub walks_by_switch: Option<BTreeMap<&'static str, u64>>,
    /// Software-managed TLB modes (`swtlb-*`) only: refills, loads, TLB
    /// writes, traps per miss, overhead against `swtlb-native`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swtlb: Option<SwTlbRow>,
    /// VM exits by reason (`tlb_miss` and `tlb_write` only where not 0).
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

/// What a software-managed TLB did (JSON `swtlb` of the `swtlb-*` modes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SwTlbRow {
    /// Runs of the guest kernel's refill handler.
    pub refills: u64,
    /// Refill exceptions the hardware delivered to the guest kernel (native).
    pub refill_exceptions: u64,
    /// The handler's page-table loads, line-cache hits, misses.
    pub refill_loads: Lookups,
    /// Writes of the real TLB.
    pub tlb_writes: u64,
    /// Misses the VMM refilled from its copy of the guest's TLB.
    pub vmm_refills: u64,
    /// `tlb_miss` and `tlb_write` exits per STLB miss.
    pub traps_per_tlb_miss: f64,
    /// `cycles / swtlb-native cycles - 1`, when `swtlb-native` ran on the
    /// same workload.
    pub overhead_vs_swtlb_native: Option<f64>,
}

/// Lookups of one structure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Lookups {
    /// Lookups.
    pub accesses: u64,
    /// Lookups that found their entry.
    pub hits: u64,
    /// `accesses - hits`.
    pub misses: u64,
}

impl Lookups {
    fn of(accesses: u64, misses: u64) -> Self {
        Lookups {
            accesses,
            hits: accesses - misses,
            misses,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Lookups of the paging-structure caches of one table dimension.
/// A lookup uses the deepest cache that hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PscLookups {
    /// Lookups.
    pub accesses: u64,
    /// The PML5E cache gave the deepest hit (5-level tables only; left out
    /// of the JSON while 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub pml5e_hits: u64,
    /// The PML4E cache gave the deepest hit (ChampSim's PSCL4).
    pub pml4e_hits: u64,
    /// The PDPTE cache did (PSCL3).
    pub pdpte_hits: u64,
    /// The PDE cache did (PSCL2).
    pub pde_hits: u64,
    /// No cache hit: the walk starts at the root.
    pub misses: u64,
}

impl PscLookups {
    fn of(hits: [u64; 3], pml5e_hits: u64, misses: u64) -> Self {
        let [pde_hits, pdpte_hits, pml4e_hits] = hits;
        PscLookups {
            accesses: hits.iter().sum::<u64>() + pml5e_hits + misses,
            pml5e_hits,
            pml4e_hits,
            pdpte_hits,
            pde_hits,
            misses,
        }
    }
}

/// Names of [`Stats::walks_by_switch`]'s entries, in its order.
pub const SWITCH_LEVELS: [&str; 5] = ["fully_shadowed", "at_pt", "at_pd", "at_pdpt", "at_root"];

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
    cycles_of(w, ModeKind::Native)
}

fn cycles_of(w: &WorkloadResult, mode: ModeKind) -> Option<u64> {
    w.modes
        .iter()
        .find(|m| m.mode == mode)
        .map(|m| m.cycles.total)
}

fn overhead(cycles: u64, native: Option<u64>) -> Option<f64> {
    native
        .filter(|&n| n > 0)
        .map(|n| cycles as f64 / n as f64 - 1.0)
}

/// One mode's JSON row on workload `workload`; `native_cycles` (the
/// native run's total on the same workload, if any) gives
/// `overhead_vs_native`.
pub fn mode_row<'a>(
    workload: &'a str,
    m: &'a ModeResult,
    native_cycles: Option<u64>,
) -> ModeRow<'a> {
    mode_row_with(workload, m, native_cycles, None)
}

/// [`mode_row`] with the `swtlb-native` run's total on the same workload
/// (`swtlb_native_cycles`, if any), for the `swtlb-*` modes' overhead.
pub fn mode_row_with<'a>(
    workload: &'a str,
    m: &'a ModeResult,
    native_cycles: Option<u64>,
    swtlb_native_cycles: Option<u64>,
) -> ModeRow<'a> {
    let s = &m.stats;
    ModeRow {
        workload,
        mode: m.mode,
        window: m.window,
        accesses: s.accesses,
        instructions: s.instructions,
        l1_tlb_misses: s.l1_tlb_misses,
        tlb_misses: s.tlb_misses,
        walks: s.walks,
        walk_refs: s.walk_refs(),
        refs_per_walk: s.refs_per_walk(),
        refs_per_stlb_miss: s.refs_per_stlb_miss(),
        dtlb: Lookups::of(s.dtlb_accesses(), s.dtlb_misses()),
        itlb: Lookups::of(s.itlb_accesses(), s.itlb_misses),
        stlb: Lookups::of(s.l1_tlb_misses, s.tlb_misses),
        psc: PscLookups::of(s.psc_hits, s.psc_pml5e_hits, s.psc_misses),
        ept_psc: PscLookups::of(s.ept_psc_hits, s.ept_psc_pml5e_hits, s.ept_psc_misses),
        nested_tlb: Lookups::of(s.nested_tlb_hits + s.nested_tlb_misses, s.nested_tlb_misses),
        pt_line_cache: Lookups::of(s.walk_refs(), s.walk_refs() - s.walk_ref_cache_hits),
        walks_by_switch: (m.mode == ModeKind::Agile)
            .then(|| SWITCH_LEVELS.into_iter().zip(s.walks_by_switch).collect()),
        swtlb: m.mode.software_tlb().then(|| SwTlbRow {
            refills: s.tlb_refills,
            refill_exceptions: s.tlb_refill_exceptions,
            refill_loads: Lookups::of(
                s.tlb_refill_loads,
                s.tlb_refill_loads - s.tlb_refill_load_hits,
            ),
            tlb_writes: s.tlb_writes,
            vmm_refills: s.vmm_tlb_refills,
            traps_per_tlb_miss: s.swtlb_traps_per_miss(),
            overhead_vs_swtlb_native: overhead(m.cycles.total, swtlb_native_cycles),
        }),
        vm_exits: ExitReason::ALL
            .iter()
            .map(|&r| (r.name(), s.exits_for(r)))
            .chain(
                ExitReason::SWTLB
                    .iter()
                    .map(|&r| (r.name(), s.exits_for(r)))
                    .filter(|&(_, n)| n > 0),
            )
            .collect(),
        vm_exits_total: s.total_exits(),
        guest_page_faults: s.guest_page_faults,
        cycles: m.cycles.total,
        cycles_breakdown: m.cycles,
        overhead_vs_native: overhead(m.cycles.total, native_cycles),
        stats: s,
        switching: m.switching.as_ref(),
    }
}

/// Build the JSON document.
pub fn to_json(cfg: &Config, results: &[WorkloadResult]) -> String {
    let mut rows = Vec::new();
    for w in results {
        let native = native_cycles(w);
        let swtlb_native = cycles_of(w, ModeKind::SwtlbNative);
        for m in &w.modes {
            rows.push(mode_row_with(&w.workload, m, native, swtlb_native));
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
    let count = |f: fn(&Stats) -> u64| move |m: &ModeResult| f(&m.stats).to_string();
    row("instructions", &count(|s| s.instructions));
    row("accesses", &count(|s| s.accesses));
    row("L1 DTLB accesses", &count(Stats::dtlb_accesses));
    row("  DTLB misses", &count(Stats::dtlb_misses));
    row("L1 ITLB accesses", &count(Stats::itlb_accesses));
    row("  ITLB misses", &count(|s| s.itlb_misses));
    row("STLB accesses (L1 misses)", &count(|s| s.l1_tlb_misses));
    row("  STLB hits", &count(|s| s.stlb_hits));
    row("  STLB misses", &count(|s| s.tlb_misses));
    row("page walks", &count(|s| s.walks));
    if w.modes.iter().any(|m| m.stats.psc_pml5e_hits > 0) {
        // 5-level tables only: the row is absent from 4-level reports.
        row("  PSC PML5E hits (PSCL5)", &count(|s| s.psc_pml5e_hits));
    }
    row("  PSC PML4E hits (PSCL4)", &count(|s| s.psc_hits[2]));
    row("  PSC PDPTE hits (PSCL3)", &count(|s| s.psc_hits[1]));
    row("  PSC PDE hits (PSCL2)", &count(|s| s.psc_hits[0]));
    row("  nested TLB hits", &count(|s| s.nested_tlb_hits));
    row(
        "  EPT PSC hits",
        &count(|s| s.ept_psc_hits.iter().sum::<u64>() + s.ept_psc_pml5e_hits),
    );
    row("walk references", &count(Stats::walk_refs));
    row("  per STLB miss", &|m| {
        format!("{:.2}", m.stats.refs_per_stlb_miss())
    });
    row("  per walk", &|m| format!("{:.2}", m.stats.refs_per_walk()));
    row("  line-cache hits", &count(|s| s.walk_ref_cache_hits));
    if w.modes.iter().any(|m| m.stats.guest_frames_touched > 0) {
        // Huge host pages only: frames backed the guest never wrote.
        row("host frames backed", &count(|s| s.host_frames_backed));
        row("  bloat (never touched)", &|m| {
            let s = &m.stats;
            if s.guest_frames_touched == 0 || s.host_frames_backed == 0 {
                "-".to_string()
            } else {
                (s.host_frames_backed as i64 - s.guest_frames_touched as i64).to_string()
            }
        });
    }
    row("guest page faults", &|m| {
        m.stats.guest_page_faults.to_string()
    });
    if w.modes.iter().any(|m| m.stats.guest_swap_outs > 0) {
        row("  major (from guest swap)", &count(|s| s.major_faults));
        row("guest swap-outs", &count(|s| s.guest_swap_outs));
        row(
            "  accessed bits cleared",
            &count(|s| s.accessed_bits_cleared),
        );
    }
    if w.modes.iter().any(|m| m.stats.tlb_refills > 0) {
        // Software-managed TLB modes only.
        row("TLB refill handler runs", &count(|s| s.tlb_refills));
        row("  refill exceptions", &count(|s| s.tlb_refill_exceptions));
        row("  handler loads", &count(|s| s.tlb_refill_loads));
        row("    line-cache hits", &count(|s| s.tlb_refill_load_hits));
        row("  TLB writes", &count(|s| s.tlb_writes));
        row("  VMM refills (no guest)", &count(|s| s.vmm_tlb_refills));
        row("  traps per TLB miss", &|m| {
            if m.mode.software_tlb() {
                format!("{:.2}", m.stats.swtlb_traps_per_miss())
            } else {
                "-".into()
            }
        });
    }
    row("VM exits", &|m| m.stats.total_exits().to_string());
    for r in ExitReason::EVERY {
        if w.modes.iter().any(|m| m.stats.exits_for(r) > 0) {
            row(&format!("  {}", r.name()), &|m| {
                m.stats.exits_for(r).to_string()
            });
        }
    }
    if w.modes
        .iter()
        .any(|m| m.stats.total_bt_traps() + m.stats.total_bt_callouts() > 0)
    {
        row("BT traps into the VMM", &count(Stats::total_bt_traps));
        for r in ExitReason::ALL {
            if w.modes.iter().any(|m| m.stats.bt_traps[r as usize] > 0) {
                row(&format!("  {}", r.name()), &|m| {
                    m.stats.bt_traps[r as usize].to_string()
                });
            }
        }
        row("BT call-outs", &count(Stats::total_bt_callouts));
        for r in ExitReason::ALL {
            if w.modes.iter().any(|m| m.stats.bt_callouts[r as usize] > 0) {
                row(&format!("  {}", r.name()), &|m| {
                    m.stats.bt_callouts[r as usize].to_string()
                });
            }
        }
        row("BT system calls", &count(|s| s.bt_syscalls));
    }
    if w.modes.iter().any(|m| {
        let s = &m.stats;
        s.shadow_unsyncs + s.shadow_resyncs + s.shadow_flood_zaps > 0
    }) {
        row("shadow unsyncs", &count(|s| s.shadow_unsyncs));
        row("  resyncs", &count(|s| s.shadow_resyncs));
        row("  write-flood zaps", &count(|s| s.shadow_flood_zaps));
    }
    row("cycles", &|m| m.cycles.total.to_string());
    row("  base (instructions)", &|m| m.cycles.base.to_string());
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
        row("  % instrs in shadow", &|m| {
            sw(m, &|s| {
                let all = (s.instructions_shadow + s.instructions_nested).max(1);
                format!("{:.1}%", 100.0 * s.instructions_shadow as f64 / all as f64)
            })
        });
        let rules = w.modes.iter().filter_map(|m| m.switching.as_ref());
        let n_rules = rules.map(|s| s.rules_fired.len()).max().unwrap_or(0);
        for i in 0..n_rules {
            let fired = |s: &crate::hv::selective::SwitchReport| {
                s.rules_fired
                    .get(i)
                    .map_or_else(|| "-".into(), u64::to_string)
            };
            row(&format!("  W11 rule {} decided", i + 1), &|m| sw(m, &fired));
        }
    }
    if w.modes.iter().any(|m| m.mode == ModeKind::Agile) {
        row("agile walks shadowed", &|m| agile(m, 0));
        for (i, at) in ["PT", "PD", "PDPT", "root"].iter().enumerate() {
            row(&format!("  switched at {at}"), &|m| agile(m, i + 1));
        }
    }
    row(
        "overhead vs native",
        &|m| match overhead(m.cycles.total, native) {
            Some(o) => format!("{:+.2}%", o * 100.0),
            None => "-".into(),
        },
    );
    let swtlb_native = cycles_of(w, ModeKind::SwtlbNative);
    if swtlb_native.is_some() && w.modes.iter().any(|m| m.mode == ModeKind::SwtlbVmm) {
        row(
            "overhead vs swtlb-native",
            &|m| match overhead(m.cycles.total, swtlb_native) {
                Some(o) if m.mode.software_tlb() => format!("{:+.2}%", o * 100.0),
                _ => "-".into(),
            },
        );
    }
    out
}

/// Agile's walks switched at `walks_by_switch[i]`, `-` for other modes.
fn agile(m: &ModeResult, i: usize) -> String {
    if m.mode == ModeKind::Agile {
        m.stats.walks_by_switch[i].to_string()
    } else {
        "-".into()
    }
}
