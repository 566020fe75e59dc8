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

mod predictive;
pub mod w11;

pub use predictive::Predictive;
pub use w11::{w11_rules, W11Decision, W11Sample, W11};

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
    fn touch_frame(&mut self, core: &mut Core, mem: &mut GuestMemory, gpfn: Gpfn) {
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
        self.shadow.unmap_frame(host, gpfn, hpfn)
    }
    fn host_mapped(&self, host: &crate::host::HostMemory, gpfn: Gpfn, hpfn: Hpfn) -> bool {
        self.shadow.maps_frame(host, gpfn, hpfn)
    }
    fn host_write_protect(
        &mut self,
        host: &mut crate::host::HostMemory,
        gpfn: Gpfn,
        hpfn: Hpfn,
    ) -> u64 {
        self.shadow.write_protect_frame(host, gpfn, hpfn)
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

/// `selective-w11`: switching with the \[W11\] rules.
pub fn w11_mode(cfg: &Config) -> Selective<W11> {
    Selective::with_policy(W11::new(cfg.selective.w11_sample_switch_costs), cfg)
}

/// `selective`: switching with our [`Predictive`] policy.
pub fn predictive_mode(cfg: &Config) -> Selective<Predictive> {
    Selective::with_policy(Predictive::new(cfg.selective.horizon_periods), cfg)
}
