//! What content-based sharing did on a host run (`[sharing]` only): per
//! host (shared and saved frames, zero pages, the scanner's work) and per
//! VM (its frames on shared frames, merges, COW breaks), as a table and
//! in the JSON report, with a time series for the chart.

use std::fmt::Write;

use serde::Serialize;

use super::scanner::ScannerStats;
use crate::host::memory::{SharingCounts, SharingSplit};
use crate::host::vm::VmSharing;

/// One VM's sharing at the end of the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmSharingReport {
    /// Guest frames of the VM backed by a shared frame now.
    pub sharing_frames: u64,
    /// Merges, COW breaks, reuses, flushes.
    #[serde(flatten)]
    pub counters: VmSharing,
}

/// Sharing at one moment (with each memory sample).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharingSample {
    /// Host time, seconds.
    pub seconds: f64,
    /// Host frames saved by sharing.
    pub saved_frames: u64,
    /// Of them, zero pages.
    pub saved_zero_frames: u64,
    /// Each VM's guest frames on shared frames, in VM order.
    pub vm_sharing_frames: Vec<u64>,
    /// The saving by kind of content and within / across VMs now.
    pub split: SharingSplit,
}

/// Sharing over a host run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SharingReport {
    /// The host's counts at the end.
    pub host: SharingCounts,
    /// The saving at the end by kind and within / across VMs.
    pub split: SharingSplit,
    /// What the scanner did.
    pub scanner: ScannerStats,
    /// Per VM, in configuration order.
    pub vms: Vec<VmSharingReport>,
    /// Over time.
    pub series: Vec<SharingSample>,
}

impl SharingReport {
    /// COW breaks of every VM.
    pub fn cow_breaks(&self) -> u64 {
        self.vms.iter().map(|v| v.counters.cow_breaks).sum()
    }

    /// The table: a host line, then one row per VM (`names` in order);
    /// `ghz` prices the scanner's CPU time in seconds.
    pub fn to_table(&self, names: &[&str], ghz: f64) -> String {
        let mib = |f: u64| f as f64 / 256.0;
        let h = &self.host;
        let sc = &self.scanner;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "sharing: {:.1} MiB saved ({:.1} MiB zero pages), {} shared frames backing {} guest frames; \
             {} COW breaks; scanner: {} visits in {} cycles, {} shares ({} zero), {} compares, {:.4} s CPU",
            mib(h.saved_frames),
            mib(h.saved_zero_frames),
            h.shared_frames,
            h.sharing_guest_frames,
            self.cow_breaks(),
            sc.visited,
            sc.cycles,
            sc.shares,
            sc.zero_shares,
            sc.compares,
            sc.cpu_cycles as f64 / (ghz * 1e9),
        );
        let k = &self.split.saved_by_kind;
        let _ = writeln!(
            s,
            "  saved by kind: zero {:.1}, file {:.1}, anonymous {:.1}, snapshot {:.1} (file-backed {:.1}) MiB; within a VM {:.1}, across VMs {:.1} MiB",
            mib(k[0]),
            mib(k[1]),
            mib(k[2]),
            mib(k[3]),
            mib(self.split.saved_snapshot_file),
            mib(self.split.saved_within_vm),
            mib(self.split.saved_across_vms),
        );
        let _ = writeln!(
            s,
            "{:<10} {:>10} {:>8} {:>10} {:>11} {:>7} {:>8}",
            "vm", "shared MiB", "merged", "COW breaks", "zero breaks", "reuses", "flushes"
        );
        for (v, name) in self.vms.iter().zip(names) {
            let c = &v.counters;
            let _ = writeln!(
                s,
                "{:<10} {:>10.1} {:>8} {:>10} {:>11} {:>7} {:>8}",
                name,
                mib(v.sharing_frames),
                c.merged,
                c.cow_breaks,
                c.cow_zero_breaks,
                c.cow_reuses,
                c.scan_flushes + c.cow_flushes
            );
        }
        s
    }
}
