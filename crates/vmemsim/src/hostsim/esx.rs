//! The host side of the ESX memory manager ([`crate::esx`]): the
//! mechanics its decisions call for, on a running [`HostSim`] — idle
//! sampling invalidations, host swap-outs of random frames, the balloon
//! driver's inflate and deflate, blocking — and the per-VM state they need.

use rand::Rng;
use serde::Serialize;

use super::HostSim;
use crate::esx::config::SharedCharge;
use crate::esx::manager::{EsxReport, HostOps, HostView};
use crate::esx::shares::{self, Claim};

/// What the ESX memory manager did on a host run.
#[derive(Clone, Debug, Serialize)]
pub struct EsxHostReport {
    /// Its decisions: states, targets, estimates, the time series.
    #[serde(flatten)]
    pub manager: EsxReport,
    /// Per VM: balloon and blocking counters.
    pub vms: Vec<EsxVm>,
}

/// The manager's per-VM state on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EsxVm {
    /// Target the balloon driver moves to when the VM runs next, pages.
    pub balloon_target: u64,
    /// Blocked by the low state: the VM does not run.
    pub blocked: bool,
    /// Pages inflated into the balloon.
    pub inflated: u64,
    /// Pages deflated.
    pub deflated: u64,
    /// Host frames freed because the balloon held their guest frames.
    pub balloon_frames_freed: u64,
    /// Guest cycles spent by the balloon driver (`esx.balloon_page_cycles` a page).
    pub balloon_cycles: u64,
    /// Turns skipped while blocked.
    pub blocked_turns: u64,
    /// The manager's own INVEPT single-context for this VM, one per pCPU
    /// flushed (after idle sampling's invalidations and balloon inflates);
    /// also in the VM's host counters, priced at `cost.invept_cycles`.
    pub invepts: u64,
    /// Shadow entries of this VM the manager zapped through the reverse
    /// map (sampling, balloon); also in the host counters, priced at
    /// `cost.rmap_zap_cycles`.
    pub rmap_zaps: u64,
    /// Double paging [ESX 3]: frames the host read back from its swap only
    /// for the guest to write them to its own (at report time, the VM's
    /// `double_pagings`).
    pub double_pagings: u64,
    /// Pages the guest wrote to its own swap (at report time).
    pub guest_swap_outs: u64,
    /// Balloon pages the guest took back on running out of free frames
    /// (deflate on OOM, at report time): the balloon's target asked more
    /// than the guest could give. Not in `deflated`.
    pub oom_deflates: u64,
}

// The manager is taken out of the host while it acts on it.
impl HostView for HostSim {
    fn capacity(&self) -> u64 {
        self.host.capacity()
    }
    fn free_frames(&self) -> u64 {
        self.host.free()
    }
    fn table_frames(&self) -> u64 {
        self.host.table_pages()
    }
    fn vm_count(&self) -> usize {
        self.vms.len()
    }
    fn managed(&self, v: usize) -> bool {
        self.swappable[v]
    }
    fn backed(&self, v: usize) -> u64 {
        self.vms[v].vm().backed_frames
    }
    fn consumed(&self, v: usize) -> u64 {
        let full = self.cfg.esx.section.shared_charge == SharedCharge::Full;
        if self.scanner.is_none() || full {
            return self.backed(v);
        }
        self.consumed_frames()[v].round() as u64
    }
    fn candidates(&self, v: usize) -> Vec<u64> {
        let r = &self.vms[v];
        r.vm()
            .resident()
            .iter()
            .copied()
            .filter(|&g| !r.is_table(g))
            .collect()
    }
    fn touched(&self, v: usize, gpfn: u64) -> bool {
        self.vms[v].touched(&self.host, gpfn)
    }
    fn balloon(&self, v: usize) -> u64 {
        self.vms[v].balloon_size()
    }
    fn accesses(&self, v: usize) -> u64 {
        self.vms[v].vm().stats.accesses
    }
    fn host_swapped(&self, v: usize) -> u64 {
        self.vms[v].vm().swapped_frames
    }
    fn guest_swapped(&self, v: usize) -> u64 {
        self.vms[v].guest().swapped_pages()
    }
    fn vm_cycles(&self, v: usize) -> Option<u64> {
        Some(self.vm_cycles[v])
    }
}

impl HostOps for HostSim {
    fn invalidate(&mut self, v: usize, gpfn: u64) {
        let zaps = self.vms[v].invalidate(&mut self.host, gpfn);
        self.esx_vm[v].rmap_zaps += zaps;
        self.counters[v].rmap_zaps += zaps;
    }
    fn flush(&mut self, v: usize) {
        self.esx_flush(v);
    }
    fn unwatch(&mut self, v: usize) {
        self.vms[v].unwatch();
    }
    fn swap_out(&mut self, v: usize, n: u64) -> u64 {
        // Share before swap [ESX 4]: the least-loaded pCPU runs the scan.
        self.scan_under_pressure(self.idlest_pcpu());
        let sim = self;
        let mut done = 0;
        let mut misses = 0u64;
        while done < n {
            let res = sim.vms[v].vm().resident();
            if res.is_empty() {
                break;
            }
            let g = res[sim.rng.gen_range(0..res.len())];
            if sim.not_victim(v, g) {
                // Page tables are never victims; give up once they are
                // most of what is left.
                misses += 1;
                if misses > 64 + 4 * n {
                    break;
                }
                continue;
            }
            if !sim.swap_out(v, g) {
                break;
            }
            done += 1;
        }
        done
    }
    fn set_balloon_target(&mut self, v: usize, pages: u64) {
        self.esx_vm[v].balloon_target = pages;
    }
    fn set_blocked(&mut self, v: usize, blocked: bool) {
        self.esx_vm[v].blocked = blocked;
    }
}

impl HostSim {
    /// Flush VM `v`'s entries on every pCPU (INVEPT single-context).
    pub(super) fn flush_vm(&mut self, v: usize) {
        let vm = self.vms[v].vm();
        let (tag, vpid) = (vm.ept_tag, vm.vpid);
        for p in &mut self.pcpus {
            p.hw.invept_single(tag, vpid);
        }
    }

    /// The manager flushes VM `v` on every pCPU: counted as its own
    /// INVEPTs (and in the host counters, so priced).
    fn esx_flush(&mut self, v: usize) {
        self.flush_vm(v);
        let n = self.pcpus.len() as u64;
        self.esx_vm[v].invepts += n;
        self.counters[v].invepts += n;
    }

    /// Let the manager act at the current host time (between quanta).
    pub(super) fn esx_tick(&mut self) {
        let Some(mut m) = self.esx.take() else {
            return;
        };
        let now = self.now();
        m.tick(now, self);
        self.esx = Some(m);
    }

    /// The balloon driver of VM `v`, about to run on pCPU `p`, moves to
    /// its target; the host frees the backing of what it inflated and
    /// flushes the VM. Costs `esx.balloon_page_cycles` a page on `p`.
    pub(super) fn esx_balloon(&mut self, p: usize, v: usize) {
        let target = self.esx_vm[v].balloon_target;
        if self.esx.is_none() || self.vms[v].balloon_size() == target {
            return;
        }
        let (inflated, deflated, freed, zaps) =
            self.vms[v].balloon_to(&mut self.pcpus[p].hw, &mut self.host, target);
        if freed > 0 {
            self.esx_flush(v);
        }
        self.esx_vm[v].rmap_zaps += zaps;
        self.counters[v].rmap_zaps += zaps;
        let e = &mut self.esx_vm[v];
        e.inflated += inflated;
        e.deflated += deflated;
        e.balloon_frames_freed += freed;
        let cycles = (inflated + deflated) * self.cfg.esx.section.balloon_page_cycles;
        e.balloon_cycles += cycles;
        self.pcpus[p].cycles += cycles;
    }

    /// The next VM of the queue that is not blocked (a blocked one goes to
    /// the back); when all are blocked, the first (time must go on for
    /// the host to free memory).
    pub(super) fn next_runnable(&mut self) -> Option<usize> {
        for _ in 0..self.queue.len() {
            let v = self.queue.pop_front()?;
            if !self.esx_vm[v].blocked {
                return Some(v);
            }
            self.esx_vm[v].blocked_turns += 1;
            self.queue.push_back(v);
        }
        self.queue.pop_front()
    }

    /// What the manager did, up to now (`None` without `[esx]`).
    pub fn esx_report(&self) -> Option<EsxHostReport> {
        let mut m = self.esx.clone()?;
        let mut vms = self.esx_vm.clone();
        for (e, v) in vms.iter_mut().zip(&self.vms) {
            e.double_pagings = v.vm().double_pagings;
            e.guest_swap_outs = v.vm().stats.guest_swap_outs;
            e.oom_deflates = v.guest().balloon_oom_deflates;
        }
        Some(EsxHostReport {
            manager: m.report(self.now(), self),
            vms,
        })
    }

    /// The VMs as the allocator sees them now, in `[[vm]]` order: shares,
    /// consumed frames as the allocation `P` ([`HostSim::consumed_frames`],
    /// rounded: what sharing saved is not charged), the manager's active
    /// fraction (1 without an `[esx]` section), min and max.
    pub fn claims(&self) -> Vec<Claim> {
        match &self.esx {
            Some(m) => m.claims(self),
            None => self
                .cfg
                .esx
                .vms
                .iter()
                .enumerate()
                .map(|(v, a)| Claim {
                    shares: a.shares,
                    pages: HostView::consumed(self, v),
                    active: 1.0,
                    min: a.min,
                    max: a.max,
                })
                .collect(),
        }
    }

    /// The VM to swap from when the reserve is gone: the lowest
    /// shares-per-page ratio [ESX 5.2] among swappable VMs with resident
    /// frames, above their min ([`HostSim::claims`]; without an `[esx]`
    /// section rho = shares / consumed pages), leaving out the VMs marked
    /// in `exhausted` (none of their frames can be swapped).
    pub(super) fn reclaim_victim(&self, exhausted: &[bool]) -> Option<usize> {
        let tau = self.cfg.esx.section.idle_tax;
        let claims = self.claims();
        shares::victim(&claims, tau, |v| {
            self.swappable[v] && !exhausted[v] && !self.vms[v].vm().resident().is_empty()
        })
    }
}

impl EsxHostReport {
    /// The manager's summary, one row per VM (`names` in `[[vm]]` order),
    /// then the time in each state and the transitions.
    pub fn to_table(&self, names: &[&str]) -> String {
        use std::fmt::Write;
        let m = &self.manager;
        let mib = |f: u64| f as f64 / 256.0;
        let mut out = format!(
            "ESX memory manager: idle tax {}, reclaim {:?}\n{:<10} {:>7} {:>7} {:>8} {:>9} {:>9} {:>10} {:>6} {:>11} {:>10} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8}\n",
            m.idle_tax,
            m.reclaim,
            "vm",
            "min MiB",
            "max MiB",
            "shares",
            "alloc MiB",
            "cons. MiB",
            "target MiB",
            "f",
            "balloon MiB",
            "freed MiB",
            "swap-outs",
            "sampled",
            "touched",
            "blocked",
            "g.swapout",
            "dbl.page",
            "oom.defl",
        );
        let last = m.series.last();
        for (v, name) in names.iter().enumerate() {
            let p = last.map(|p| &p.vms[v]);
            let c = &m.counters[v];
            let _ = writeln!(
                out,
                "{:<10} {:>7.1} {:>7.1} {:>8.0} {:>9.1} {:>9.1} {:>10.1} {:>6.2} {:>11.1} {:>10.1} {:>9} {:>10} {:>8} {:>8} {:>9} {:>8} {:>8}",
                name,
                mib(m.min[v]),
                mib(m.max[v]),
                m.shares[v],
                p.map_or(0.0, |p| mib(p.alloc)),
                p.map_or(0.0, |p| mib(p.consumed)),
                p.map_or(0.0, |p| mib(p.target)),
                p.map_or(1.0, |p| p.active),
                p.map_or(0.0, |p| mib(p.balloon)),
                mib(self.vms[v].balloon_frames_freed),
                c.target_swap_outs,
                c.sampled_frames,
                c.touched_frames,
                c.blocked_polls,
                self.vms[v].guest_swap_outs,
                self.vms[v].double_pagings,
                self.vms[v].oom_deflates,
            );
        }
        let s = m.seconds_in;
        let _ = writeln!(
            out,
            "states: high {:.4} s, soft {:.4} s, hard {:.4} s, low {:.4} s; {} transitions",
            s[0],
            s[1],
            s[2],
            s[3],
            m.transitions.len()
        );
        out
    }
}
