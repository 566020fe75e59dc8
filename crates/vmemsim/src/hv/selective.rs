//! Selective (dynamic switching) paging: one VM switches between nested
//! (HAP) and shadow (SP) paging at sampling-period boundaries \[W11\].
//!
//! Mechanism, as in \[W11\]: the mode holds a [`Shadow`] and a [`Nested`];
//! the p2m/EPT is kept in both. HAP -> SP starts from empty shadows filled
//! on demand (write protection of guest tables restarts from nothing);
//! SP -> HAP drops every shadow page. Either way the VPID's TLB entries and
//! the paging-structure caches are flushed. The switch itself happens in a
//! hypervisor timer tick that exits anyway, so it adds no exit; its cost is
//! the refill that follows.
//!
//! The decision uses only counters: the [`Stats`] delta of the period, and
//! the linear [`CostModel`] to price it. Two policies:
//! - [`W11`]: exactly the rules of \[W11\] (facts.md section 1);
//! - [`Predictive`] (ours, `selective`): prices the period under the other
//!   mode and switches when the predicted saving outweighs the switch cost.
//!   See docs/modes.md.

use std::collections::VecDeque;

use serde::Serialize;

use super::{Core, Fill, GuestFault, Mode, Nested, Shadow};
use crate::addr::{Gpa, Gpfn, Gva, Hpfn};
use crate::config::Config;
use crate::cost::CostModel;
use crate::guest::GuestMemory;
use crate::mmu::{Dim, Rights};
use crate::stats::{ExitReason, Stats};

/// Which paging the VM uses during a period.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Paging {
    /// Hardware-assisted (nested) paging.
    Nested,
    /// Shadow paging.
    Shadow,
}

/// One sampling period of a switching mode.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct IntervalSample {
    /// Paging used during the period.
    pub mode: Paging,
    /// Guest instructions retired in the period.
    pub instructions: u64,
    /// STLB misses (page walks needed).
    pub tlb_misses: u64,
    /// Guest page faults.
    pub guest_faults: u64,
    /// VM exits (and hypercalls).
    pub exits: u64,
    /// Cycles of the period, priced by the cost model.
    pub cycles: u64,
}

/// What a switching mode did over a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SwitchReport {
    /// Sampling period, guest instructions.
    pub period_instructions: u64,
    /// Switches made (either direction).
    pub switches: u64,
    /// Guest instructions retired while in nested paging.
    pub instructions_nested: u64,
    /// Guest instructions retired while in shadow paging.
    pub instructions_shadow: u64,
    /// Cycles spent in nested paging.
    pub cycles_nested: u64,
    /// Cycles spent in shadow paging.
    pub cycles_shadow: u64,
    /// Every period, in order (the last one may be partial).
    pub intervals: Vec<IntervalSample>,
    /// How often each rule of the policy decided, index 0 = rule 1 (the
    /// \[W11\] policy's 7 rules; empty for a policy without numbered rules).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rules_fired: Vec<u64>,
}

/// What a policy sees at a period boundary.
#[derive(Debug)]
pub struct PolicyInput<'a> {
    /// Paging used during the period.
    pub cur: Paging,
    /// The period's counters.
    pub period: &'a Stats,
    /// The cost model.
    pub cost: &'a CostModel,
    /// Guest frames backed so far (an upper bound on pages a refill touches).
    pub backed_frames: u64,
    /// Periods since the last switch, this one included.
    pub periods_in_mode: u64,
}

/// A switching policy: which paging to use for the next period.
pub trait Policy {
    /// Mode name in reports.
    const NAME: &'static str;
    /// Decide from the period that just ended.
    fn decide(&mut self, input: &PolicyInput<'_>) -> Paging;
    /// How often each numbered rule decided so far (none by default).
    fn rules_fired(&self) -> &[u64] {
        &[]
    }
}

/// Nested and shadow paging with switches decided by policy `P`.
#[derive(Debug)]
pub struct Selective<P: Policy> {
    shadow: Shadow,
    nested: Nested,
    cur: Paging,
    policy: P,
    period: u64,
    next: u64,
    cost: CostModel,
    last: Stats,
    /// Counters when the measured window opened inside the current period
    /// (its part before that is not reported).
    window_from: Option<Stats>,
    /// The policy's rule counts when the measured window opened.
    rules_before_window: Vec<u64>,
    periods_in_mode: u64,
    report: SwitchReport,
}

impl<P: Policy> Selective<P> {
    /// Start in nested paging with `policy`, periods from `cfg.selective`.
    pub fn with_policy(policy: P, cfg: &Config) -> Self {
        let period = cfg.selective.period_instructions;
        Selective {
            shadow: Shadow::with_config(&cfg.shadow),
            nested: Nested,
            cur: Paging::Nested,
            policy,
            period,
            next: period,
            cost: CostModel::new(&cfg.cost, &cfg.pt_cache),
            last: Stats::default(),
            window_from: None,
            rules_before_window: Vec::new(),
            periods_in_mode: 0,
            report: SwitchReport {
                period_instructions: period,
                ..SwitchReport::default()
            },
        }
    }

    /// Paging in use now.
    pub fn current(&self) -> Paging {
        self.cur
    }

    /// Switch to `to` now (also used by tests).
    pub fn switch_to(&mut self, core: &mut Core, to: Paging) {
        if to == self.cur {
            return;
        }
        match to {
            Paging::Shadow => self.shadow.activate(core),
            Paging::Nested => self.shadow.drop_all(core),
        }
        core.invvpid();
        self.cur = to;
        self.periods_in_mode = 0;
        self.report.switches += 1;
    }

    /// Record the period since the last boundary (in the report, only its
    /// part inside the measured window); returns its counters.
    fn close_period(&mut self, core: &Core) -> Stats {
        let period = core.vm.stats.since(&self.last);
        self.last = core.vm.stats.clone();
        let d = match self.window_from.take() {
            Some(w) => core.vm.stats.since(&w),
            None => period.clone(),
        };
        let cycles = self.cost.price(&d).total;
        let r = &mut self.report;
        match self.cur {
            Paging::Nested => {
                r.instructions_nested += d.instructions;
                r.cycles_nested += cycles;
            }
            Paging::Shadow => {
                r.instructions_shadow += d.instructions;
                r.cycles_shadow += cycles;
            }
        }
        r.intervals.push(IntervalSample {
            mode: self.cur,
            instructions: d.instructions,
            tlb_misses: d.tlb_misses,
            guest_faults: d.guest_page_faults,
            exits: d.total_exits(),
            cycles,
        });
        self.periods_in_mode += 1;
        period
    }
}

impl<P: Policy + 'static> Mode for Selective<P> {
    fn name(&self) -> &'static str {
        P::NAME
    }
    fn fill(
        &mut self,
        core: &mut Core,
        mem: &mut GuestMemory,
        va: u64,
        r: Rights,
    ) -> Result<Fill, GuestFault> {
        match self.cur {
            Paging::Nested => self.nested.fill(core, mem, va, r),
            Paging::Shadow => self.shadow.fill(core, mem, va, r),
        }
    }
    fn write_pte(&mut self, core: &mut Core, mem: &mut GuestMemory, gpa: Gpa, val: u64) {
        match self.cur {
            Paging::Nested => self.nested.write_pte(core, mem, gpa, val),
            Paging::Shadow => self.shadow.write_pte(core, mem, gpa, val),
        }
    }
    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: u64) {
        match self.cur {
            Paging::Nested => self.nested.touch_frame(core, mem, gpfn),
            Paging::Shadow => self.shadow.touch_frame(core, mem, gpfn),
        }
    }
    fn write_cr3(&mut self, core: &mut Core, mem: &mut GuestMemory, root: u64, pcid: u16) {
        match self.cur {
            Paging::Nested => self.nested.write_cr3(core, mem, root, pcid),
            Paging::Shadow => self.shadow.write_cr3(core, mem, root, pcid),
        }
    }
    fn invlpg(&mut self, core: &mut Core, pcid: u16, va: Gva) {
        match self.cur {
            Paging::Nested => self.nested.invlpg(core, pcid, va),
            Paging::Shadow => self.shadow.invlpg(core, pcid, va),
        }
    }
    fn flush_pcid(&mut self, core: &mut Core, pcid: u16) {
        match self.cur {
            Paging::Nested => self.nested.flush_pcid(core, pcid),
            Paging::Shadow => self.shadow.flush_pcid(core, pcid),
        }
    }
    fn host_unmap(&mut self, host: &mut crate::host::HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> u64 {
        self.shadow.unmap_frame(host, gpfn.0, hpfn.0)
    }
    fn host_mapped(&self, host: &crate::host::HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> bool {
        self.shadow.maps_frame(host, gpfn.0, hpfn.0)
    }
    fn host_write_protect(
        &mut self,
        host: &mut crate::host::HostMemory,
        gpfn: Gpfn,
        hpfn: Hpfn,
    ) -> u64 {
        self.shadow.write_protect_frame(host, gpfn.0, hpfn.0)
    }
    fn next_boundary(&self) -> u64 {
        self.next
    }
    fn boundary(&mut self, core: &mut Core, _mem: &mut GuestMemory) {
        while self.next <= core.vm.stats.instructions {
            self.next += self.period;
        }
        let d = self.close_period(core);
        let input = PolicyInput {
            cur: self.cur,
            period: &d,
            cost: &self.cost,
            backed_frames: core.vm.backed_frames,
            periods_in_mode: self.periods_in_mode,
        };
        let to = self.policy.decide(&input);
        self.switch_to(core, to);
    }
    fn window_start(&mut self, core: &Core) {
        self.report = SwitchReport {
            period_instructions: self.period,
            ..SwitchReport::default()
        };
        self.window_from = (core.vm.stats != self.last).then(|| core.vm.stats.clone());
        self.rules_before_window = self.policy.rules_fired().to_vec();
    }
    fn finish(&mut self, core: &mut Core) {
        if core.vm.stats != self.last {
            self.close_period(core);
        }
    }
    fn switch_report(&self) -> Option<SwitchReport> {
        let before = |i: usize| self.rules_before_window.get(i).copied().unwrap_or(0);
        let rules_fired = (self.policy.rules_fired().iter().enumerate())
            .map(|(i, n)| n - before(i))
            .collect();
        Some(SwitchReport {
            rules_fired,
            ..self.report.clone()
        })
    }
}

// ---------------------------------------------------------------- W11

/// Rates of one \[W11\] sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct W11Sample {
    /// Guest page faults per 1000 instructions.
    pub pf: f64,
    /// TLB misses per 1000 instructions.
    pub tlb: f64,
}

impl W11Sample {
    /// Rates of a period's counters (0 for a period without instructions).
    pub fn of(d: &Stats) -> Self {
        if d.instructions == 0 {
            return W11Sample::default();
        }
        let k = 1000.0 / d.instructions as f64;
        W11Sample {
            pf: d.guest_page_faults as f64 * k,
            tlb: d.tlb_misses as f64 * k,
        }
    }
    /// P-to-T ratio: PF rate / TLB-miss rate (infinite when no TLB miss).
    pub fn p2t(&self) -> f64 {
        if self.tlb == 0.0 {
            f64::INFINITY
        } else {
            self.pf / self.tlb
        }
    }
}

/// \[W11\] thresholds (facts.md section 1).
pub mod w11 {
    /// Page faults per 1000 instructions, upper bound.
    pub const PF_UPPER: f64 = 5000e-7;
    /// Page faults per 1000 instructions, lower bound.
    pub const PF_LOWER: f64 = 100e-7;
    /// TLB misses per 1000 instructions, upper bound.
    pub const TLB_UPPER: f64 = 10.0;
    /// TLB misses per 1000 instructions, lower bound.
    pub const TLB_LOWER: f64 = 0.1;
    /// P-to-T ratio, upper bound.
    pub const P2T_UPPER: f64 = 200e-7;
    /// P-to-T ratio, lower bound.
    pub const P2T_LOWER: f64 = 150e-7;
}

/// A \[W11\] decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum W11Decision {
    /// Use shadow paging.
    Shadow,
    /// Use nested paging.
    Nested,
    /// Keep the current mode.
    Stay,
}

/// The ordered rules of \[W11\]: the first that applies wins. Returns the
/// rule number (1-7) and its decision. `hist` is the history (the mean of
/// the last 3 samples, not counting `cur`).
pub fn w11_rules(cur: W11Sample, hist: W11Sample) -> (u8, W11Decision) {
    use w11::*;
    if cur.tlb > TLB_UPPER && cur.pf < 0.8 * PF_UPPER {
        return (1, W11Decision::Shadow);
    }
    if cur.pf > PF_UPPER && cur.tlb < 0.8 * TLB_UPPER {
        return (2, W11Decision::Nested);
    }
    if cur.pf < PF_LOWER && cur.tlb < TLB_LOWER {
        return (3, W11Decision::Stay);
    }
    if hist.tlb == 0.0 || cur.tlb == 0.0 {
        return (4, W11Decision::Nested);
    }
    if hist.p2t() > P2T_UPPER && cur.p2t() > P2T_UPPER {
        return (5, W11Decision::Nested);
    }
    if hist.p2t() < P2T_LOWER && cur.p2t() < P2T_LOWER {
        return (6, W11Decision::Shadow);
    }
    (7, W11Decision::Stay)
}

/// One \[W11\] sample being accumulated over base periods.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct W11Acc {
    instructions: u64,
    guest_faults: u64,
    tlb_misses: u64,
    cycles: u64,
}

/// The \[W11\] policy: rates per 1000 instructions, history of 3 samples.
/// Before 3 samples exist the history is the mean of those there are (the
/// current sample itself at the very first boundary). The historic P-to-T
/// is the ratio of the historic rates.
///
/// A sample is not one base period (`[selective] period_instructions`)
/// but as many consecutive periods as it takes for its cycles to reach
/// `[selective] w11_sample_switch_costs` (default 1) times the cost of
/// a switch, estimated as
/// a refill of min(frames backed, the sample's TLB misses) hidden faults
/// (each page touched after a switch misses once and is filled once at
/// most). Between samples the policy stays put.
/// \[W11\] measured a switch pair per second within 1% (HAP->SP->HAP) with
/// 5 s samples, so a switch is well under 1% of their sample; with base
/// periods of 1e5 instructions a refill is often larger than the period
/// itself, which is why the rules applied to each period flapped (see
/// docs/modes.md).
#[derive(Debug, Default)]
pub struct W11 {
    history: VecDeque<W11Sample>,
    acc: W11Acc,
    /// Sample length in switch costs.
    sample_switch_costs: f64,
    /// How often each rule fired (index 0 = rule 1).
    pub rule_counts: [u64; 7],
    /// Samples closed (rules evaluated).
    pub samples: u64,
}

impl W11 {
    /// The policy with samples of `sample_switch_costs` switch costs.
    pub fn new(sample_switch_costs: f64) -> Self {
        W11 {
            sample_switch_costs,
            ..W11::default()
        }
    }

    /// Estimated cycles of one switch for a sample with `tlb_misses`.
    fn switch_cost(input: &PolicyInput<'_>, tlb_misses: u64) -> f64 {
        let pages = input.backed_frames.min(tlb_misses) as f64;
        Predictive::exit_cost(input.cost, ExitReason::ShadowFault, pages)
    }
}

impl Policy for W11 {
    const NAME: &'static str = "selective-w11";
    fn decide(&mut self, input: &PolicyInput<'_>) -> Paging {
        let d = input.period;
        let a = &mut self.acc;
        a.instructions += d.instructions;
        a.guest_faults += d.guest_page_faults;
        a.tlb_misses += d.tlb_misses;
        a.cycles += input.cost.price(d).total;
        let a = *a;
        if (a.cycles as f64) < self.sample_switch_costs * Self::switch_cost(input, a.tlb_misses) {
            return input.cur;
        }
        self.acc = W11Acc::default();
        self.samples += 1;
        let cur = W11Sample::of(&Stats {
            instructions: a.instructions,
            guest_page_faults: a.guest_faults,
            tlb_misses: a.tlb_misses,
            ..Stats::default()
        });
        let hist = if self.history.is_empty() {
            cur
        } else {
            let n = self.history.len() as f64;
            W11Sample {
                pf: self.history.iter().map(|s| s.pf).sum::<f64>() / n,
                tlb: self.history.iter().map(|s| s.tlb).sum::<f64>() / n,
            }
        };
        let (rule, d) = w11_rules(cur, hist);
        self.rule_counts[usize::from(rule) - 1] += 1;
        if self.history.len() == 3 {
            self.history.pop_front();
        }
        self.history.push_back(cur);
        match d {
            W11Decision::Shadow => Paging::Shadow,
            W11Decision::Nested => Paging::Nested,
            W11Decision::Stay => input.cur,
        }
    }
    fn rules_fired(&self) -> &[u64] {
        &self.rule_counts
    }
}

// ---------------------------------------------------------------- ours

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

    fn exit_cost(cost: &CostModel, r: ExitReason, n: f64) -> f64 {
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

/// `selective-w11`: switching with the \[W11\] rules.
pub fn w11_mode(cfg: &Config) -> Selective<W11> {
    Selective::with_policy(W11::new(cfg.selective.w11_sample_switch_costs), cfg)
}

/// `selective`: switching with our [`Predictive`] policy.
pub fn predictive_mode(cfg: &Config) -> Selective<Predictive> {
    Selective::with_policy(Predictive::new(cfg.selective.horizon_periods), cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(pf: f64, tlb: f64) -> W11Sample {
        W11Sample { pf, tlb }
    }

    #[test]
    fn w11_rules_in_order() {
        use W11Decision::*;
        let quiet = s(0.0, 1.0);
        // 1: many TLB misses, few faults -> shadow (even if rule 5 would say nested).
        assert_eq!(w11_rules(s(3e-4, 11.0), s(1.0, 1.0)), (1, Shadow));
        // 1 needs PF < 0.8 x upper.
        assert_ne!(w11_rules(s(4.5e-4, 11.0), quiet).0, 1);
        // 2: many faults, few TLB misses -> nested.
        assert_eq!(w11_rules(s(6e-4, 7.0), quiet), (2, Nested));
        assert_ne!(w11_rules(s(6e-4, 9.0), quiet).0, 2);
        // 3: both below the lower bounds -> stay (even with a zero TLB rate, rule 4).
        assert_eq!(w11_rules(s(5e-6, 0.0), quiet), (3, Stay));
        // 4: historic or current TLB rate 0 -> nested.
        assert_eq!(w11_rules(s(1e-4, 0.0), quiet), (4, Nested));
        assert_eq!(w11_rules(s(1e-4, 5.0), s(1e-4, 0.0)), (4, Nested));
        // 5: P-to-T above the upper bound now and in history -> nested.
        assert_eq!(w11_rules(s(1e-4, 1.0), s(1e-4, 1.0)), (5, Nested));
        // 6: below the lower bound in both -> shadow.
        assert_eq!(w11_rules(s(1e-5, 1.0), s(1e-5, 2.0)), (6, Shadow));
        // 7: otherwise stay (P-to-T between the bounds, or mixed).
        assert_eq!(w11_rules(s(1.7e-5, 1.0), s(1.7e-5, 1.0)), (7, Stay));
        assert_eq!(w11_rules(s(1e-4, 1.0), s(1e-5, 1.0)), (7, Stay));
    }

    #[test]
    fn w11_bounds_are_strict() {
        use w11::*;
        use W11Decision::*;
        // [W11]'s rules compare with strict inequalities: a rate exactly
        // at a bound does not fire the rule. Rule 3 needs PF below the
        // lower bound: at it, the zero TLB rate falls to rule 4.
        assert_eq!(w11_rules(s(PF_LOWER, 0.0), s(0.0, 1.0)), (4, Nested));
        assert_eq!(w11_rules(s(PF_LOWER / 2.0, 0.0), s(0.0, 1.0)), (3, Stay));
        // Rule 5 needs P-to-T above the upper bound in history and now:
        // history exactly at it (PF = bound x TLB, TLB 1) is not above.
        let at_upper = s(P2T_UPPER, 1.0);
        let above = s(2.0 * P2T_UPPER, 1.0);
        assert_eq!(at_upper.p2t(), P2T_UPPER);
        assert_eq!(w11_rules(above, at_upper), (7, Stay));
        assert_eq!(w11_rules(at_upper, above), (7, Stay));
        assert_eq!(w11_rules(above, above), (5, Nested));
        // Rule 6 likewise at the lower bound.
        let at_lower = s(P2T_LOWER, 1.0);
        let below = s(P2T_LOWER / 2.0, 1.0);
        assert_eq!(w11_rules(below, at_lower), (7, Stay));
        assert_eq!(w11_rules(at_lower, below), (7, Stay));
        assert_eq!(w11_rules(below, below), (6, Shadow));
    }

    #[test]
    fn w11_history_is_the_last_three_samples() {
        let cfg = Config::default();
        let cost = CostModel::new(&cfg.cost, &cfg.pt_cache);
        let mut p = W11::default();
        let period = |faults: u64, misses: u64| Stats {
            instructions: 1_000_000_000,
            guest_page_faults: faults,
            tlb_misses: misses,
            ..Stats::default()
        };
        let decide = |p: &mut W11, st: &Stats, cur| {
            p.decide(&PolicyInput {
                cur,
                period: st,
                cost: &cost,
                backed_frames: 0,
                periods_in_mode: 1,
            })
        };
        // PF 1e-4 and TLB 1 per 1000 instructions: P-to-T 1e-4 > upper,
        // three times (rule 5): the history is high.
        for _ in 0..3 {
            assert_eq!(
                decide(&mut p, &period(100, 1_000_000), Paging::Shadow),
                Paging::Nested
            );
        }
        assert_eq!(p.rule_counts[4], 3);
        // Now P-to-T 1e-5 < lower, but the history (mean of the last three)
        // stays above the lower bound while any high sample is in it: rule 7.
        for _ in 0..3 {
            assert_eq!(
                decide(&mut p, &period(10, 1_000_000), Paging::Nested),
                Paging::Nested
            );
        }
        assert_eq!(p.rule_counts[6], 3);
        // History all low: rule 6, shadow.
        assert_eq!(
            decide(&mut p, &period(10, 1_000_000), Paging::Nested),
            Paging::Shadow
        );
        assert_eq!(p.rule_counts[5], 1);
    }

    #[test]
    fn w11_sample_spans_periods_until_it_outweighs_a_switch() {
        let cfg = Config::default();
        let cost = CostModel::new(&cfg.cost, &cfg.pt_cache);
        let mut p = W11::new(100.0);
        // A period of 1e6 instructions priced at CPI 1 (1e6 cycles), 20 000
        // TLB misses (20 per 1000 instructions: rule 1, shadow). With 100
        // frames backed a switch costs a refill of 100 hidden faults, 100 x
        // (1200 + 2500) = 370 000 cycles; the sample needs 100 x that,
        // 3.7e7 cycles: 37 periods.
        let period = Stats {
            instructions: 1_000_000,
            tlb_misses: 20_000,
            ..Stats::default()
        };
        let input = PolicyInput {
            cur: Paging::Nested,
            period: &period,
            cost: &cost,
            backed_frames: 100,
            periods_in_mode: 1,
        };
        for i in 1..37 {
            assert_eq!(
                p.decide(&input),
                Paging::Nested,
                "period {i}: no sample yet"
            );
        }
        assert_eq!(p.samples, 0);
        assert_eq!(
            p.decide(&input),
            Paging::Shadow,
            "period 37 closes the sample"
        );
        assert_eq!((p.samples, p.rule_counts[0]), (1, 1));
        // The next sample starts empty.
        assert_eq!(p.decide(&input), Paging::Nested);
        assert_eq!(p.samples, 1);
    }
}
