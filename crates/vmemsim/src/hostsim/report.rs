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
    /// Its VPID (0 with VPIDs off, or native).
    pub vpid: u16,
    /// The mode's counters.
    pub stats: Stats,
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
        let _ = writeln!(
            s,
            "{:<10} {:<13} {:>7} {:>10} {:>10} {:>9} {:>8} {:>8} {:>9} {:>9} {:>12} {:>9} {:>8}",
            "vm",
            "mode",
            "mem MiB",
            "accesses",
            "TLB miss",
            "+vs alone",
            "exits",
            "w.switch",
            "flushes",
            "used MiB",
            "cycles",
            "seconds",
            "slowdown"
        );
        for v in &self.vms {
            let opt = |x: Option<String>| x.unwrap_or_else(|| "-".into());
            let _ = writeln!(
                s,
                "{:<10} {:<13} {:>7} {:>10} {:>10} {:>9} {:>8} {:>8} {:>9} {:>9.1} {:>8} {:>8} {:>12} {:>9.4} {:>8}",
                v.name,
                v.mode.name(),
                v.mem_mib,
                v.stats.accesses,
                v.stats.tlb_misses,
                opt(v.added_tlb_misses().map(|d| format!("{d:+}"))),
                v.stats.total_exits(),
                v.host.world_switches,
                v.host.no_vpid_flushes + v.host.migration_flushes,
                mib(v.frames),
                v.host_swap_outs,
                v.host_swap_ins,
                v.host_cycles,
                v.seconds,
                opt(v.slowdown().map(|x| format!("{x:.3}x"))),
            );
        }
        for v in &self.vms {
            let _ = writeln!(s, "  {}: {}", v.name, v.input);
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
