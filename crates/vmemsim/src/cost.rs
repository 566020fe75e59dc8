//! The cost model: turns counted events into cycles. Linear in the counts,
//! so it prices a whole run or any interval of it the same way. Defaults and
//! their sources are in [`crate::config::CostConfig`].

use crate::config::{CostConfig, PtCacheConfig};
use crate::stats::{ExitReason, Stats};
use crate::SimError;
use serde::Serialize;

/// Cycles of a run, split by where they went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cycles {
    /// Instructions at the base CPI.
    pub base: u64,
    /// L1 TLB misses served by the STLB.
    pub stlb: u64,
    /// Page-walk references (line-cache hits and misses).
    pub walks: u64,
    /// VM exit round trips plus hypervisor handlers.
    pub hypervisor: u64,
    /// Guest kernel work: fault handling, zeroing, copying, PTE stores,
    /// context switches, swap-outs, and waiting for reads from guest swap.
    pub guest_kernel: u64,
    /// Sum of the above.
    pub total: u64,
}

impl Cycles {
    /// Cycles from their parts; `total` is their sum (saturating at
    /// `u64::MAX`: [`CostModel::try_price`] reports an overflow instead).
    pub fn from_parts(
        base: u64,
        stlb: u64,
        walks: u64,
        hypervisor: u64,
        guest_kernel: u64,
    ) -> Self {
        Cycles {
            base,
            stlb,
            walks,
            hypervisor,
            guest_kernel,
            total: [stlb, walks, hypervisor, guest_kernel]
                .iter()
                .fold(base, |a, &b| a.saturating_add(b)),
        }
    }

    /// Translation overhead: everything but the base instruction cycles.
    pub fn overhead(&self) -> u64 {
        self.total.saturating_sub(self.base)
    }
}

/// A sum of `count * cycles` products that remembers whether it overflowed.
#[derive(Clone, Copy, Default)]
struct Sum {
    cycles: u64,
    overflow: bool,
}

impl Sum {
    fn add(mut self, count: u64, cycles: u64) -> Sum {
        match count
            .checked_mul(cycles)
            .and_then(|p| self.cycles.checked_add(p))
        {
            Some(c) => self.cycles = c,
            None => {
                self.cycles = u64::MAX;
                self.overflow = true;
            }
        }
        self
    }
}

/// Prices counts with one configuration.
#[derive(Clone, Debug)]
pub struct CostModel {
    c: CostConfig,
    ref_hit: u64,
    ref_miss: u64,
    swap_in_cycles: u64,
}

impl CostModel {
    /// A model with these costs and page-table line latencies.
    pub fn new(c: &CostConfig, pt: &PtCacheConfig) -> Self {
        CostModel {
            c: c.clone(),
            ref_hit: pt.hit_cycles,
            ref_miss: pt.miss_cycles,
            swap_in_cycles: 0,
        }
    }

    /// The model of a whole configuration: as [`CostModel::new`], and a
    /// page read from guest swap waits `guest.swap_latency_us` at `cpu.ghz`.
    pub fn for_config(cfg: &crate::Config) -> Self {
        CostModel {
            swap_in_cycles: cfg.cpu.cycles_of_us(cfg.guest.swap_latency_us),
            ..CostModel::new(&cfg.cost, &cfg.pt_cache)
        }
    }

    /// Cycles of the host's own work for one VM: `swap_outs` of its frames,
    /// `invepts` and `invvpids` (single-context, one per pCPU flushed) and
    /// `rmap_zaps` shadow entries zapped (saturating).
    pub fn host_work_cycles(
        &self,
        swap_outs: u64,
        invepts: u64,
        invvpids: u64,
        rmap_zaps: u64,
    ) -> u64 {
        let c = &self.c;
        Sum::default()
            .add(swap_outs, c.host_swap_out_cycles)
            .add(invepts, c.invept_cycles)
            .add(invvpids, c.invvpid_cycles)
            .add(rmap_zaps, c.rmap_zap_cycles)
            .cycles
    }

    /// Cycles a major fault waits for its read from guest swap.
    pub fn swap_in_cycles(&self) -> u64 {
        self.swap_in_cycles
    }

    /// Handler cycles of one exit of `r`, beyond the exit round trip.
    pub fn handler_cycles(&self, r: ExitReason) -> u64 {
        let c = &self.c;
        match r {
            ExitReason::EptViolation => c.ept_violation_cycles,
            ExitReason::ShadowFault => c.shadow_fill_cycles,
            ExitReason::GuestFault => c.inject_fault_cycles,
            ExitReason::PtWrite => c.pt_write_emulate_cycles,
            ExitReason::Cr3Write => c.cr3_exit_cycles,
            ExitReason::Invlpg => c.invlpg_exit_cycles,
            ExitReason::Hypercall => c.hypercall_cycles,
            ExitReason::TlbMiss => c.tlb_miss_trap_cycles,
            ExitReason::TlbWrite => c.tlb_write_trap_cycles,
        }
    }

    /// Handler cycles of one call-out of `r` under binary translation: a
    /// translated page-table store does its shadow update within the
    /// call-out's cycles \[AA06 "PTE modify"\], the others run the handler.
    pub fn callout_handler_cycles(&self, r: ExitReason) -> u64 {
        match r {
            ExitReason::PtWrite => 0,
            _ => self.handler_cycles(r),
        }
    }

    /// The components of the price of `s`, in [`Cycles`] field order, each
    /// with its name and whether it overflowed (then saturated).
    fn components(&self, s: &Stats) -> [(&'static str, Sum); 5] {
        let c = &self.c;
        let base_f = (s.instructions as f64 * c.base_cpi).round();
        // `as` saturates; 2^64 itself is the first value that does not fit.
        let base = Sum {
            cycles: base_f as u64,
            overflow: base_f >= u64::MAX as f64,
        };
        let stlb = Sum::default().add(s.stlb_hits, c.stlb_hit_cycles);
        let hits = s.walk_ref_cache_hits;
        // A software-managed TLB's refill (exception, handler, its loads
        // through the same caches, the TLB write) is what a walk is to a
        // hardware-walked TLB.
        let load_hits = s.tlb_refill_load_hits;
        let walks = Sum::default()
            .add(hits, self.ref_hit)
            .add(s.walk_refs().saturating_sub(hits), self.ref_miss)
            .add(load_hits, self.ref_hit)
            .add(s.tlb_refill_loads.saturating_sub(load_hits), self.ref_miss)
            .add(s.tlb_refill_exceptions, c.tlb_refill_exception_cycles)
            .add(s.tlb_refills, c.tlb_refill_handler_cycles)
            .add(s.tlb_writes, c.tlb_write_cycles);
        let hypervisor = ExitReason::EVERY
            .iter()
            .fold(Sum::default(), |sum, &r| {
                sum.add(
                    s.exits_for(r),
                    c.vm_exit_cycles.saturating_add(self.handler_cycles(r)),
                )
            })
            .add(s.pv_pte_updates, c.pv_validate_cycles)
            .add(s.shadow_resyncs, c.shadow_resync_cycles)
            .add(s.bt_syscalls, c.bt_syscall_cycles);
        let hypervisor = ExitReason::ALL.iter().fold(hypervisor, |sum, &r| {
            sum.add(
                s.bt_traps[r as usize],
                c.bt_trap_cycles.saturating_add(self.handler_cycles(r)),
            )
            .add(
                s.bt_callouts[r as usize],
                c.bt_callout_cycles
                    .saturating_add(self.callout_handler_cycles(r)),
            )
        });
        let guest_kernel = Sum::default()
            .add(s.guest_page_faults, c.guest_fault_cycles)
            .add(s.frames_zeroed, c.zero_page_cycles)
            .add(s.frames_copied, c.copy_page_cycles)
            .add(s.guest_pte_writes, c.pte_write_cycles)
            .add(s.context_switches, c.context_switch_cycles)
            .add(s.guest_swap_outs, c.guest_swap_out_cycles)
            .add(s.guest_swap_ins, self.swap_in_cycles);
        [
            ("base", base),
            ("stlb", stlb),
            ("walks", walks),
            ("hypervisor", hypervisor),
            ("guest_kernel", guest_kernel),
        ]
    }

    /// Price the counts in `s`, saturating at `u64::MAX` per component
    /// (for estimates such as a switching policy's; reports use
    /// [`CostModel::try_price`]).
    pub fn price(&self, s: &Stats) -> Cycles {
        let [b, t, w, h, g] = self.components(s).map(|(_, sum)| sum.cycles);
        Cycles::from_parts(b, t, w, h, g)
    }

    /// Price the counts in `s` with checked arithmetic.
    ///
    /// # Errors
    /// [`SimError::CostOverflow`] naming the first component (`base`,
    /// `stlb`, `walks`, `hypervisor`, `guest_kernel`, or `total`) whose
    /// cycles exceed `u64::MAX`.
    pub fn try_price(&self, s: &Stats) -> Result<Cycles, SimError> {
        let parts = self.components(s);
        if let Some((component, _)) = parts.iter().find(|(_, sum)| sum.overflow) {
            return Err(SimError::CostOverflow { component });
        }
        let [b, t, w, h, g] = parts.map(|(_, sum)| sum.cycles);
        [t, w, h, g]
            .iter()
            .try_fold(b, |a, &x| a.checked_add(x))
            .ok_or(SimError::CostOverflow { component: "total" })?;
        Ok(Cycles::from_parts(b, t, w, h, g))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_each_count_once() {
        let m = CostModel::new(&CostConfig::default(), &PtCacheConfig::default());
        let mut s = Stats {
            instructions: 1000,
            stlb_hits: 10,
            walk_ref_cache_hits: 3,
            ..Default::default()
        };
        s.walk_refs_by_dim = [4, 0, 0];
        s.exit(ExitReason::Cr3Write);
        s.guest_page_faults = 1;
        let c = m.try_price(&s).unwrap();
        assert_eq!(m.price(&s), c);
        assert_eq!(c.base, 1000);
        assert_eq!(c.stlb, 70);
        assert_eq!(c.walks, 3 * 14 + 200);
        assert_eq!(c.hypervisor, 1200 + 500);
        assert_eq!(c.guest_kernel, 1093);
        assert_eq!(c.total, 1000 + 70 + 242 + 1700 + 1093);
        // Everything but the base instruction cycles.
        assert_eq!(c.overhead(), 70 + 242 + 1700 + 1093);
    }

    #[test]
    fn host_work_and_guest_swap_are_priced() {
        let mut cfg = crate::Config::default();
        cfg.guest.swap_latency_us = 10.0;
        let m = CostModel::for_config(&cfg);
        // 10 us at 2.5 GHz = 25,000 cycles per read from guest swap.
        assert_eq!(m.swap_in_cycles(), 25_000);
        let s = Stats {
            guest_swap_ins: 2,
            guest_swap_outs: 3,
            ..Default::default()
        };
        assert_eq!(m.price(&s).guest_kernel, 2 * 25_000 + 3 * 5000);
        // 2 swap-outs x 5000 + 3 INVEPT x 1000 + 4 INVVPID x 1000 + 5 zaps x 100.
        assert_eq!(m.host_work_cycles(2, 3, 4, 5), 10_000 + 3000 + 4000 + 500);
    }

    #[test]
    fn software_tlb_refills_and_traps_are_priced() {
        let m = CostModel::new(&CostConfig::default(), &PtCacheConfig::default());
        let mut s = Stats {
            tlb_refills: 2,
            tlb_refill_exceptions: 3,
            tlb_refill_loads: 11,
            tlb_refill_load_hits: 7,
            tlb_writes: 5,
            ..Default::default()
        };
        s.exit(ExitReason::TlbMiss);
        s.exit(ExitReason::TlbWrite);
        s.exit(ExitReason::TlbWrite);
        let c = m.price(&s);
        // Loads: 7 hits x 14 + 4 misses x 200; 3 exceptions x 20, 2
        // handlers x 20, 5 TLB writes x 5.
        assert_eq!(c.walks, 98 + 800 + 60 + 40 + 25);
        // One trapped miss (1200 + 300), two trapped writes (1200 + 500).
        assert_eq!(c.hypervisor, 1500 + 2 * 1700);
        assert_eq!(s.total_exits(), 3);
    }

    #[test]
    fn base_cycles_scale_with_the_cpi() {
        // 1000 instructions at CPI 2.5: 2500 base cycles (rounded).
        let c = CostConfig {
            base_cpi: 2.5,
            ..CostConfig::default()
        };
        let m = CostModel::new(&c, &PtCacheConfig::default());
        let s = Stats {
            instructions: 1000,
            ..Default::default()
        };
        assert_eq!(m.price(&s).base, 2500);
    }

    fn overflow_of(cfg: CostConfig, s: &Stats) -> String {
        let m = CostModel::new(&cfg, &PtCacheConfig::default());
        m.try_price(s).unwrap_err().to_string()
    }

    #[test]
    fn an_exit_cost_that_overflows_is_an_error_naming_the_hypervisor() {
        // vm_exit_cycles = i64::MAX (issue 12) wrapped in release: two CR3
        // exits at 2^63 - 1 + 500 cycles each exceed 2^64.
        let cfg = CostConfig {
            vm_exit_cycles: i64::MAX as u64,
            ..CostConfig::default()
        };
        let mut s = Stats::default();
        s.exit(ExitReason::Cr3Write);
        s.exit(ExitReason::Cr3Write);
        assert_eq!(
            overflow_of(cfg.clone(), &s),
            "cost overflow: the hypervisor cycles exceed 2^64 (counts or cost keys too large)"
        );
        // Saturated, not wrapped, where an estimate is enough.
        let m = CostModel::new(&cfg, &PtCacheConfig::default());
        assert_eq!(m.price(&s).hypervisor, u64::MAX);
        assert_eq!(m.price(&s).total, u64::MAX);
    }

    #[test]
    fn a_huge_cpi_is_an_overflow_of_base_not_fewer_cycles() {
        // base_cpi = 1e300 gave fewer cycles than base_cpi = 1 (issue 12).
        let cfg = CostConfig {
            base_cpi: 1e300,
            ..CostConfig::default()
        };
        let s = Stats {
            instructions: 10,
            ..Default::default()
        };
        assert!(overflow_of(cfg, &s).contains("the base cycles exceed 2^64"));
    }

    #[test]
    fn components_that_fit_but_sum_past_2_64_overflow_the_total() {
        // 2^63 base cycles plus 2^63 STLB cycles: each fits, the total not.
        let cfg = CostConfig {
            base_cpi: 1.0,
            stlb_hit_cycles: 1 << 32,
            ..CostConfig::default()
        };
        let s = Stats {
            instructions: 1 << 63,
            stlb_hits: 1 << 31,
            ..Default::default()
        };
        assert!(overflow_of(cfg, &s).contains("the total cycles exceed 2^64"));
    }

    #[test]
    fn every_kernel_and_paravirtual_count_is_priced() {
        // Distinct counts, so that any term dropped, swapped or combined
        // with the wrong operator changes the sums.
        let m = CostModel::new(&CostConfig::default(), &PtCacheConfig::default());
        let s = Stats {
            guest_page_faults: 2,
            frames_zeroed: 3,
            frames_copied: 5,
            guest_pte_writes: 7,
            context_switches: 11,
            pv_pte_updates: 13,
            ..Default::default()
        };
        let c = m.price(&s);
        // 2 x 1093 + 3 x 1000 + 5 x 2000 + 7 x 1 + 11 x 2000.
        assert_eq!(c.guest_kernel, 2186 + 3000 + 10_000 + 7 + 22_000);
        // 13 validations of 100 cycles, no exit.
        assert_eq!(c.hypervisor, 1300);
    }
}
