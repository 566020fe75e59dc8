//! The cost model: turns counted events into cycles. Linear in the counts,
//! so it prices a whole run or any interval of it the same way. Defaults and
//! their sources are in [`crate::config::CostConfig`].

use crate::config::{CostConfig, PtCacheConfig};
use crate::stats::{ExitReason, Stats};
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
    /// Guest kernel work: fault handling, zeroing, copying, PTE stores, context switches.
    pub guest_kernel: u64,
    /// Sum of the above.
    pub total: u64,
}

impl Cycles {
    /// Cycles from their parts; `total` is their sum.
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
            total: base + stlb + walks + hypervisor + guest_kernel,
        }
    }

    /// Translation overhead: everything but the base instruction cycles.
    pub fn overhead(&self) -> u64 {
        self.total - self.base
    }
}

/// Prices counts with one configuration.
#[derive(Clone, Debug)]
pub struct CostModel {
    c: CostConfig,
    ref_hit: u64,
    ref_miss: u64,
}

impl CostModel {
    /// A model with these costs and page-table line latencies.
    pub fn new(c: &CostConfig, pt: &PtCacheConfig) -> Self {
        CostModel {
            c: c.clone(),
            ref_hit: pt.hit_cycles,
            ref_miss: pt.miss_cycles,
        }
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
        }
    }

    /// Price the counts in `s`.
    pub fn price(&self, s: &Stats) -> Cycles {
        let c = &self.c;
        let base = (s.instructions as f64 * c.base_cpi).round() as u64;
        let stlb = s.stlb_hits * c.stlb_hit_cycles;
        let refs = s.walk_refs();
        let walks =
            s.walk_ref_cache_hits * self.ref_hit + (refs - s.walk_ref_cache_hits) * self.ref_miss;
        let hypervisor = ExitReason::ALL
            .iter()
            .map(|&r| s.exits_for(r) * (c.vm_exit_cycles + self.handler_cycles(r)))
            .sum::<u64>()
            + s.pv_pte_updates * c.pv_validate_cycles;
        let guest_kernel = s.guest_page_faults * c.guest_fault_cycles
            + s.frames_zeroed * c.zero_page_cycles
            + s.frames_copied * c.copy_page_cycles
            + s.guest_pte_writes * c.pte_write_cycles
            + s.context_switches * c.context_switch_cycles;
        Cycles::from_parts(base, stlb, walks, hypervisor, guest_kernel)
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
        let c = m.price(&s);
        assert_eq!(c.base, 1000);
        assert_eq!(c.stlb, 70);
        assert_eq!(c.walks, 3 * 14 + 200);
        assert_eq!(c.hypervisor, 1200 + 500);
        assert_eq!(c.guest_kernel, 1093);
        assert_eq!(c.total, 1000 + 70 + 242 + 1700 + 1093);
    }
}
