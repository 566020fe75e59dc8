//! What a host run reports: per VM (the mode's counters and cycles, world
//! switches, flushes, slowdown against the VM run alone) and per host
//! (memory over time), as a table and as JSON.

use std::fmt::Write;

use serde::Serialize;

use super::HostVmCounters;
use crate::cost::Cycles;
use crate::host::config::HostConfig;
use crate::hv::SwitchReport;
use crate::sim::ModeResult;
use crate::stats::Stats;
use crate::window::WindowReport;
use crate::ModeKind;

/// The same VM run alone on an unconstrained host (`vmemsim run`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alone {
    /// Its cycles.
    pub cycles: u64,
    /// Its STLB misses.
    pub tlb_misses: u64,
    /// Its seconds at the host's clock rate.
    pub seconds: f64,
}

/// One VM of a host run.
#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    /// Name.
    pub name: String,
    /// Mode.
    pub mode: ModeKind,
    /// What it ran.
    pub input: String,
    /// Guest memory, MiB.
    pub mem_mib: u64,
    /// Its VPID (0 with VPIDs off; a native VM's tags its context the same way).
    pub vpid: u16,
    /// The mode's counters, of the VM's measured window.
    pub stats: Stats,
    /// Which of the VM's own instructions `stats` and the host counters
    /// below cover (`[measure]`, counted on this VM's instructions).
    pub window: WindowReport,
    /// Those counters priced.
    pub cycles: Cycles,
    /// Host counters: world switches, flushes, quanta.
    pub host: HostVmCounters,
    /// `cycles.total` plus its world switches and host swap-in waits, cycles.
    pub host_cycles: u64,
    /// `host_cycles` in seconds at `[cpu] ghz`.
    pub seconds: f64,
    /// Host frames backing it at the end.
    pub frames: u64,
    /// Frames the host swapped out of it.
    pub host_swap_outs: u64,
    /// Frames read back from host swap (each access waited).
    pub host_swap_ins: u64,
    /// Double paging: frames read back from host swap only for the guest
    /// to write them to its own swap (also counted in `host_swap_ins`).
    pub double_pagings: u64,
    /// Switching modes: what the policy did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switching: Option<SwitchReport>,
    /// The same VM run alone, when measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alone: Option<Alone>,
}

impl VmReport {
    /// Host cycles over cycles alone (`None` until [`HostReport::set_alone`]).
    pub fn slowdown(&self) -> Option<f64> {
        self.alone
            .as_ref()
            .map(|a| self.host_cycles as f64 / a.cycles.max(1) as f64)
    }

    /// STLB misses beyond the VM's alone (other VMs' entries evicting its
    /// own, flushes without VPIDs).
    pub fn added_tlb_misses(&self) -> Option<i64> {
        self.alone
            .as_ref()
            .map(|a| self.stats.tlb_misses as i64 - a.tlb_misses as i64)
    }
}

/// Host memory at one moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Host time, seconds.
    pub seconds: f64,
    /// Free frames of the pool.
    pub free_frames: u64,
    /// Hypervisor table pages (EPT, shadow pages, splinters).
    pub table_frames: u64,
    /// Frames backing each VM, in VM order.
    pub vm_frames: Vec<u64>,
    /// Frames of each VM in host swap.
    pub vm_swapped: Vec<u64>,
}

/// The per-VM table's columns: heading, width, left-aligned. Headings and
/// values are laid out by the same widths.
pub const COLUMNS: [(&str, usize, bool); 18] = [
    ("vm", 10, true),
    ("mode", 13, true),
    ("mem MiB", 7, false),
    ("accesses", 10, false),
    ("TLB miss", 10, false),
    ("+vs alone", 9, false),
    ("exits", 8, false),
    ("w.switch", 8, false),
    ("flushes", 8, false),
    ("used MiB", 9, false),
    ("h.swapout", 9, false),
    ("h.swapin", 9, false),
    ("g.swapout", 9, false),
    ("major", 8, false),
    ("dbl.page", 8, false),
    ("cycles", 12, false),
    ("seconds", 9, false),
    ("slowdown", 8, false),
];

/// One line of the per-VM table: `cells` in [`COLUMNS`] order, each padded
/// to its column's width, one space between columns.
fn table_line(s: &mut String, cells: &[String]) {
    for (i, (cell, &(_, w, left))) in cells.iter().zip(&COLUMNS).enumerate() {
        if i > 0 {
            s.push(' ');
        }
        let _ = if left {
            write!(s, "{cell:<w$}")
        } else {
            write!(s, "{cell:>w$}")
        };
    }
    s.push('\n');
}

/// A whole host run.
#[derive(Clone, Debug, Serialize)]
pub struct HostReport {
    /// Host memory, MiB.
    pub mem_mib: u64,
    /// pCPUs.
    pub pcpus: u32,
    /// VPIDs on.
    pub vpid: bool,
    /// Clock rate, GHz.
    pub ghz: f64,
    /// Frames of the pool.
    pub frames: u64,
    /// Most frames in use at once (between operations).
    pub peak_used_frames: u64,
    /// Hypervisor table pages at the end.
    pub table_frames: u64,
    /// Host time at the end (the furthest pCPU clock), seconds.
    pub seconds: f64,
    /// The VMs, in configuration order.
    pub vms: Vec<VmReport>,
    /// Memory over time, one sample per `host.sample_cycles` (and the end).
    pub series: Vec<Sample>,
    /// What the ESX memory manager did (`[esx]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub esx: Option<super::EsxHostReport>,
    /// What content-based page sharing did (`[sharing]` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<super::sharing_report::SharingReport>,
}

impl HostReport {
    /// Record VM `i` run alone (`r`: its `run_mode` result).
    pub fn set_alone(&mut self, i: usize, r: &ModeResult) {
        self.vms[i].alone = Some(Alone {
            cycles: r.cycles.total,
            tlb_misses: r.stats.tlb_misses,
            seconds: r.cycles.total as f64 / (self.ghz * 1e9),
        });
    }

    /// The human-readable report.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let mib = |f: u64| f as f64 / 256.0;
        let _ = writeln!(
            s,
            "host: {} VMs on {} pCPU(s), {} MiB ({} MiB given to VMs), VPIDs {}; peak use {:.1} MiB; {:.4} s at {} GHz",
            self.vms.len(),
            self.pcpus,
            self.mem_mib,
            self.vms.iter().map(|v| v.mem_mib).sum::<u64>(),
            if self.vpid { "on" } else { "off" },
            mib(self.peak_used_frames),
            self.seconds,
            self.ghz
        );
        let mut head = Vec::with_capacity(COLUMNS.len());
        for c in COLUMNS {
            head.push(c.0.to_string());
        }
        table_line(&mut s, &head);
        for v in &self.vms {
            let opt = |x: Option<String>| x.unwrap_or_else(|| "-".into());
            let cells = [
                v.name.clone(),
                v.mode.name().to_string(),
                v.mem_mib.to_string(),
                v.stats.accesses.to_string(),
                v.stats.tlb_misses.to_string(),
                opt(v.added_tlb_misses().map(|d| format!("{d:+}"))),
                v.stats.total_exits().to_string(),
                v.host.world_switches.to_string(),
                (v.host.no_vpid_flushes + v.host.migration_flushes).to_string(),
                format!("{:.1}", mib(v.frames)),
                v.host_swap_outs.to_string(),
                v.host_swap_ins.to_string(),
                v.stats.guest_swap_outs.to_string(),
                v.stats.major_faults.to_string(),
                v.double_pagings.to_string(),
                v.host_cycles.to_string(),
                format!("{:.4}", v.seconds),
                opt(v.slowdown().map(|x| format!("{x:.3}x"))),
            ];
            table_line(&mut s, &cells);
        }
        for v in &self.vms {
            let _ = writeln!(s, "  {}: {}", v.name, v.input);
        }
        let windowed = |w: &WindowReport| w.warmup_instructions > 0 || w.sim_instructions > 0;
        if self.vms.iter().any(|v| windowed(&v.window)) {
            // Per VM on its own instruction count, as ChampSim counts a
            // core's; host time and the memory series cover the whole run.
            let _ = writeln!(
                s,
                "measured (each VM's own instructions; host time and memory series: the whole run):"
            );
            for v in &self.vms {
                let _ = writeln!(s, "  {}: {}", v.name, v.window.describe());
            }
        }
        s
    }

    /// The JSON report, with the resolved host configuration embedded.
    pub fn to_json(&self, cfg: &HostConfig) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            config: String,
            host: &'a HostReport,
        }
        serde_json::to_string_pretty(&Out {
            config: cfg.to_toml(),
            host: self,
        })
        .expect("report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_headings_line_up_with_values() {
        let vm = VmReport {
            name: "db".into(),
            mode: ModeKind::SelectiveW11,
            input: "x".into(),
            mem_mib: 256,
            vpid: 1,
            stats: Stats {
                accesses: 2_000_000,
                tlb_misses: 123_456,
                guest_swap_outs: 4321,
                major_faults: 321,
                ..Stats::default()
            },
            window: WindowReport::default(),
            cycles: Cycles::default(),
            host: HostVmCounters::default(),
            host_cycles: 98_765_432_100,
            seconds: 39.5,
            frames: 65536,
            host_swap_outs: 12345,
            host_swap_ins: 2345,
            double_pagings: 17,
            switching: None,
            alone: None,
        };
        let r = HostReport {
            mem_mib: 537,
            pcpus: 1,
            vpid: true,
            ghz: 2.5,
            frames: 537 * 256,
            peak_used_frames: 0,
            table_frames: 0,
            seconds: 1.0,
            vms: vec![vm],
            series: Vec::new(),
            esx: None,
            sharing: None,
        };
        let t = r.to_table();
        let lines: Vec<&str> = t.lines().collect();
        let (head, row) = (lines[1], lines[2]);
        assert_eq!(head.len(), row.len(), "{head}\n{row}");
        // Each heading and its value lie in the same span of columns:
        // right-aligned ones end where the value ends, left-aligned ones
        // start where it starts.
        let mut at = 0;
        for &(name, w, left) in &COLUMNS {
            let (h, v) = (&head[at..at + w], &row[at..at + w]);
            assert_eq!(h.trim(), name, "heading at {at}");
            let v = if left { v.trim_end() } else { v.trim_start() };
            assert!(!v.is_empty() && !v.contains(' '), "{name}: value {v:?}");
            if left {
                assert!(h.starts_with(name), "{name}");
            } else {
                assert!(h.ends_with(name), "{name}");
            }
            at += w + 1;
        }
        assert_eq!(at, head.len() + 1);
    }
}
