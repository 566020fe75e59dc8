//! Binary translation of a VM's guest kernel (VMware style, \[AA06\]): the
//! VMM's state of one vCPU's translated code, which decides whether a
//! hypervisor intervention traps into the VMM or is a call-out of adapted
//! code. Faults (hidden or true guest page faults) always trap: they come
//! from the hardware, not from an instruction the translator can rewrite.
//! A privileged instruction or page-table store traps until it has trapped
//! `cpu.adapt_threshold` times, then it is retranslated into a call-out
//! (adaptive binary translation). Each reason stands for one static guest
//! kernel instruction (its PTE store, its CR3 write, its INVLPG/INVPCID).

use crate::stats::{ExitReason, Stats};

/// Adaptive binary translation state of one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryTranslator {
    /// Traps after which an instruction is retranslated.
    adapt_threshold: u32,
    /// Traps so far per instruction (indexed as [`ExitReason::ALL`]).
    trapped: [u32; 7],
}

impl BinaryTranslator {
    /// A translator adapting instructions after `adapt_threshold` traps.
    pub fn new(adapt_threshold: u32) -> Self {
        BinaryTranslator {
            adapt_threshold,
            trapped: [0; 7],
        }
    }

    /// Count one intervention of reason `r` in `stats`: a trap or a call-out.
    #[inline]
    pub fn intervene(&mut self, stats: &mut Stats, r: ExitReason) {
        let i = r as usize;
        let adaptable = matches!(
            r,
            ExitReason::PtWrite | ExitReason::Cr3Write | ExitReason::Invlpg
        );
        if adaptable && self.trapped[i] >= self.adapt_threshold {
            stats.bt_callouts[i] += 1;
        } else {
            self.trapped[i] += 1;
            stats.bt_traps[i] += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_adapt_after_the_threshold_faults_never() {
        let mut bt = BinaryTranslator::new(2);
        let mut s = Stats::default();
        for _ in 0..5 {
            bt.intervene(&mut s, ExitReason::PtWrite);
            bt.intervene(&mut s, ExitReason::ShadowFault);
        }
        let (pt, sf) = (
            ExitReason::PtWrite as usize,
            ExitReason::ShadowFault as usize,
        );
        // PTE store: 2 traps, then 3 call-outs; hidden faults: 5 traps.
        assert_eq!((s.bt_traps[pt], s.bt_callouts[pt]), (2, 3));
        assert_eq!((s.bt_traps[sf], s.bt_callouts[sf]), (5, 0));
        assert_eq!(s.total_exits(), 0, "no VM exit under binary translation");
    }
}
