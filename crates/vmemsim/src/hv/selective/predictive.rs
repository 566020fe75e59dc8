//! The predictive switching policy (ours, `selective`): price the period
//! under the other paging with the linear cost model and switch when the
//! predicted saving outweighs the switch's cost (docs/modes.md).

use super::*;

/// Our policy (`selective`): price the period just ended under the other
/// paging mode from its counters, and switch when the predicted saving
/// over the expected remaining phase outweighs the cost of switching.
///
/// - Walks: a 2-D walk's guest-dimension references are the references a
///   1-D shadow walk of the same tables makes, so from nested the shadow
///   walk cycles are the nested walk cycles scaled by guest refs / all refs;
///   from shadow, the nested walk cycles are the shadow walk cycles times
///   (1 + nested refs per guest ref), that ratio measured the last time the
///   VM ran nested (prior 3).
/// - Exits under shadow, estimated from nested counters: every guest fault
///   intercepted and injected, one hidden fill per guest fault and per frame
///   backed, PT-write traps at the fraction of PTE stores measured the last
///   time in shadow (prior 1/2), one exit per context switch, exec, INVLPG
///   and flush. Exits under nested, estimated from shadow counters: one
///   EPT violation per frame backed.
/// - Shadow fills beyond those caused by faults and backing, during the
///   first `horizon` periods after switching to shadow, are the refill: the
///   switch cost already paid, left out of the comparison.
/// - Switch cost: HAP -> SP, a refill of one hidden fault per frame backed
///   (every page the VM goes on touching is refilled once; the last
///   period's TLB misses, used before, underestimate it after quiet
///   periods); SP -> HAP the same amount, as leaving shadow commits to
///   paying it again on the way back.
/// - Switch when the smoothed saving (mean of the last two periods, both
///   positive) times the horizon exceeds the switch cost, or at once when
///   the last period's saving alone exceeds it. The horizon is the
///   configured minimum or, if longer, the periods spent in the current
///   mode: a phase that has lasted n periods is expected to last about n
///   more.
#[derive(Debug)]
pub struct Predictive {
    horizon: u64,
    prev_saving: f64,
    nested_per_guest_ref: f64,
    ptw_per_pte_write: f64,
}

impl Predictive {
    /// A policy with a minimum horizon of `horizon_periods` periods.
    pub fn new(horizon_periods: u64) -> Self {
        Predictive {
            horizon: horizon_periods,
            prev_saving: 0.0,
            nested_per_guest_ref: 3.0,
            ptw_per_pte_write: 0.5,
        }
    }

    pub(super) fn exit_cost(cost: &CostModel, r: ExitReason, n: f64) -> f64 {
        let mut s = Stats::default();
        s.vm_exits[r as usize] = 1;
        cost.price(&s).hypervisor as f64 * n
    }

    /// Cycles of the period as it ran, and as the other mode would have
    /// run it (the part of the current cost counted as sunk removed from
    /// both).
    pub fn estimate(&mut self, input: &PolicyInput<'_>) -> (f64, f64) {
        let d = input.period;
        let c = input.cost;
        let p = c.price(d);
        let walks = p.walks as f64;
        let hyp = p.hypervisor as f64;
        let g = d.walk_refs_by_dim[Dim::Guest as usize] as f64;
        let n = d.walk_refs_by_dim[Dim::Nested as usize] as f64;
        let faults = d.guest_page_faults as f64;
        let backed = d.host_frames_backed as f64;
        let total = p.total as f64;
        let mut sunk = 0.0;
        let other_walks;
        let other_hyp;
        match input.cur {
            Paging::Nested => {
                if g > 0.0 {
                    self.nested_per_guest_ref = 0.5 * self.nested_per_guest_ref + 0.5 * (n / g);
                }
                other_walks = if g + n > 0.0 {
                    walks * g / (g + n)
                } else {
                    0.0
                };
                let pt_writes = d.guest_pte_writes as f64 * self.ptw_per_pte_write;
                let cr3 = (d.context_switches + d.execs) as f64;
                let inv = (d.invlpgs + d.tlb_flushes) as f64;
                other_hyp = Self::exit_cost(c, ExitReason::GuestFault, faults)
                    + Self::exit_cost(c, ExitReason::ShadowFault, faults + backed)
                    + Self::exit_cost(c, ExitReason::PtWrite, pt_writes)
                    + Self::exit_cost(c, ExitReason::Cr3Write, cr3)
                    + Self::exit_cost(c, ExitReason::Invlpg, inv);
            }
            Paging::Shadow => {
                if d.guest_pte_writes > 0 {
                    let f = d.exits_for(ExitReason::PtWrite) as f64 / d.guest_pte_writes as f64;
                    self.ptw_per_pte_write = 0.5 * self.ptw_per_pte_write + 0.5 * f;
                }
                other_walks = walks * (1.0 + self.nested_per_guest_ref);
                other_hyp = Self::exit_cost(c, ExitReason::EptViolation, backed);
                if input.periods_in_mode <= self.horizon {
                    let refill =
                        (d.exits_for(ExitReason::ShadowFault) as f64 - faults - backed).max(0.0);
                    sunk = Self::exit_cost(c, ExitReason::ShadowFault, refill);
                }
            }
        }
        let other = total - walks - hyp + other_walks + other_hyp;
        (total - sunk, other)
    }
}

impl Policy for Predictive {
    const NAME: &'static str = "selective";
    fn decide(&mut self, input: &PolicyInput<'_>) -> Paging {
        let (cur, other) = self.estimate(input);
        let saving = cur - other;
        let smoothed = 0.5 * (saving + self.prev_saving);
        let both = saving > 0.0 && self.prev_saving > 0.0;
        self.prev_saving = saving;
        // After a switch every page the VM touches is refilled once: the
        // working set of the coming periods, not of the last one (a quiet
        // period says nothing about it). Bounded above by the frames backed.
        let refill_pages = input.backed_frames as f64;
        let switch_cost = Self::exit_cost(input.cost, ExitReason::ShadowFault, refill_pages);
        let horizon = self.horizon.max(input.periods_in_mode) as f64;
        // Overwhelming evidence (one period's saving pays for the switch)
        // needs no confirmation.
        if (both && smoothed * horizon > switch_cost) || saving > switch_cost {
            self.prev_saving = 0.0;
            match input.cur {
                Paging::Nested => Paging::Shadow,
                Paging::Shadow => Paging::Nested,
            }
        } else {
            input.cur
        }
    }
}
