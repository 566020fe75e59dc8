//! The [W11] switching policy: its sampling-period rules exactly as the
//! paper gives them (facts.md section 1), and their adaptation to traces.

use super::*;

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

// [W11] thresholds (facts.md section 1).
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
