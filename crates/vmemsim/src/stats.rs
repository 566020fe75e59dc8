//! Event counters. Plain integers, added as events happen; the cost model
//! turns them into cycles afterwards, so counting and pricing stay apart and
//! two snapshots subtract into an interval.

use crate::mmu::walk::{CacheLookups, WalkRecord, DIMS};
use serde::Serialize;

/// Why the guest left to the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// EPT violation: a guest frame with no host frame behind it (nested mode).
    EptViolation,
    /// Hidden page fault in shadow mode: shadow entry missing or read-only
    /// while the guest entry allows the access; the shadow is filled. In
    /// direct (Xen PV) mode, a store the guest's entry allows on a frame
    /// the host shares (a copy-on-write break, docs/sharing.md).
    ShadowFault,
    /// A true guest #PF intercepted in shadow mode and injected into the guest.
    GuestFault,
    /// A guest store to a write-protected guest page-table page, emulated.
    PtWrite,
    /// A guest CR3 write (shadow mode).
    Cr3Write,
    /// A guest INVLPG or INVPCID (shadow mode).
    Invlpg,
    /// A hypercall (paravirtual modes).
    Hypercall,
    /// `swtlb-vmm`: a TLB miss exception trapped by the VMM, which refills
    /// the real TLB from its copy of the guest's TLB or reflects the
    /// exception to the guest's refill handler; also the guest kernel's
    /// first store to a frame with no machine frame yet (the VMM backs it).
    TlbMiss,
    /// `swtlb-vmm`: the guest refill handler's TLB write (TLBWR), trapped
    /// and emulated: any instruction that accesses the TLB must trap
    /// \[Hennessy & Patterson, VM chapter\].
    TlbWrite,
}

impl ExitReason {
    /// Every reason, in report order.
    pub const ALL: [ExitReason; 7] = [
        ExitReason::EptViolation,
        ExitReason::ShadowFault,
        ExitReason::GuestFault,
        ExitReason::PtWrite,
        ExitReason::Cr3Write,
        ExitReason::Invlpg,
        ExitReason::Hypercall,
    ];
    /// The exits of a VMM over a software-managed TLB (`swtlb-vmm`), counted
    /// apart from [`ExitReason::ALL`] (in [`Stats::swtlb_exits`], left out
    /// of the JSON while 0) so that the reports of the x86 modes keep
    /// their form.
    pub const SWTLB: [ExitReason; 2] = [ExitReason::TlbMiss, ExitReason::TlbWrite];

    /// Every reason: [`ExitReason::ALL`] then [`ExitReason::SWTLB`].
    pub const EVERY: [ExitReason; 9] = [
        ExitReason::EptViolation,
        ExitReason::ShadowFault,
        ExitReason::GuestFault,
        ExitReason::PtWrite,
        ExitReason::Cr3Write,
        ExitReason::Invlpg,
        ExitReason::Hypercall,
        ExitReason::TlbMiss,
        ExitReason::TlbWrite,
    ];

    /// snake_case name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::EptViolation => "ept_violation",
            ExitReason::ShadowFault => "shadow_fault",
            ExitReason::GuestFault => "guest_fault",
            ExitReason::PtWrite => "pt_write",
            ExitReason::Cr3Write => "cr3_write",
            ExitReason::Invlpg => "invlpg",
            ExitReason::Hypercall => "hypercall",
            ExitReason::TlbMiss => "tlb_miss",
            ExitReason::TlbWrite => "tlb_write",
        }
    }
}

/// Counters of one run (or one interval of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(serde::Deserialize))]
pub struct Stats {
    /// Memory accesses simulated (fetches + loads + stores + modifies).
    pub accesses: u64,
    /// Instructions retired (one per fetch).
    pub instructions: u64,
    /// L1 TLB misses (DTLB + ITLB): the STLB's accesses.
    pub l1_tlb_misses: u64,
    /// Of those: L1 ITLB misses (instruction fetches).
    pub itlb_misses: u64,
    /// L1 misses that hit the STLB.
    pub stlb_hits: u64,
    /// STLB misses: accesses that needed a page walk.
    pub tlb_misses: u64,
    /// Hardware page walks started (a miss may walk again after a fault).
    pub walks: u64,
    /// Walk references by dimension: [guest/native, nested (EPT), shadow].
    pub walk_refs_by_dim: [u64; DIMS],
    /// Walk references served by the page-table line cache.
    pub walk_ref_cache_hits: u64,
    /// Walks whose paging-structure-cache lookup (guest / 1-D tables) hit,
    /// by cache: `[PDE, PDPTE, PML4E]` (ChampSim's PSCL2, PSCL3, PSCL4).
    pub psc_hits: [u64; 3],
    /// Walks whose PSC lookup hit no cache (the walk starts at the root).
    pub psc_misses: u64,
    /// Walks whose deepest PSC hit was the PML5E cache (5-level tables only;
    /// left out of the JSON while 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub psc_pml5e_hits: u64,
    /// EPT PSC lookups that hit (one lookup per nested TLB miss), `[PDE,
    /// PDPTE, PML4E]` of the EPT.
    pub ept_psc_hits: [u64; 3],
    /// EPT PSC lookups that hit no cache (the EPT walk starts at the root).
    pub ept_psc_misses: u64,
    /// EPT PSC lookups whose deepest hit was the EPT PML5E cache (5-level
    /// EPTs only; left out of the JSON while 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ept_psc_pml5e_hits: u64,
    /// Nested TLB hits (gPA -> hPA translations a 2-D walk did not walk).
    pub nested_tlb_hits: u64,
    /// Nested TLB misses (each an EPT walk).
    pub nested_tlb_misses: u64,
    /// Agile paging: successful walks by where they switched to nested:
    /// `[0]` fully shadowed (1-D), `[1]` at the guest PT, `[2]` the PD,
    /// `[3]` the PDPT, `[4]` at the root (fully nested). 0 in other modes.
    pub walks_by_switch: [u64; 5],
    /// VM exits by reason, indexed as [`ExitReason::ALL`].
    pub vm_exits: [u64; 7],
    /// `swtlb-vmm`'s exits (traps into the VMM) by reason, indexed as
    /// [`ExitReason::SWTLB`]: `[tlb_miss, tlb_write]` (left out of the JSON
    /// while 0).
    #[serde(default, skip_serializing_if = "is_zero2")]
    pub swtlb_exits: [u64; 2],
    /// Software-managed TLB: runs of the guest kernel's TLB refill handler
    /// (natively on each refill exception; under `swtlb-vmm` on each
    /// exception the VMM reflects to it). Left out of the JSON while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tlb_refills: u64,
    /// Software-managed TLB: refill exceptions delivered to the guest
    /// kernel by the hardware (native only: under `swtlb-vmm` the exception
    /// enters the VMM, a `tlb_miss` exit). Left out of the JSON while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tlb_refill_exceptions: u64,
    /// Software-managed TLB: page-table loads of the refill handler (one
    /// per level walked, through the data caches: the page-table line
    /// cache). Not page-walk references. Left out of the JSON while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tlb_refill_loads: u64,
    /// Of those: loads whose line was in the page-table line cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tlb_refill_load_hits: u64,
    /// Software-managed TLB: writes of the real TLB (TLBWR: by the guest
    /// kernel natively, by the VMM under `swtlb-vmm`). Left out of the
    /// JSON while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tlb_writes: u64,
    /// `swtlb-vmm`: TLB misses the VMM refilled from its copy of the
    /// guest's TLB without reflecting them (the real TLB had dropped an
    /// entry the guest's TLB still holds, e.g. one 4 KiB piece of a guest
    /// 2 MiB page over 4 KiB host pages). Left out of the JSON while 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub vmm_tlb_refills: u64,
    /// Guest page faults (#PF the guest OS handles), same in every mode.
    pub guest_page_faults: u64,
    /// Of those: demand-zero faults (first touch).
    pub demand_faults: u64,
    /// Of those: copy-on-write faults.
    pub cow_faults: u64,
    /// Of those: major faults, a page read back from the guest's swap.
    pub major_faults: u64,
    /// Pages the guest wrote to its swap device (guest reclaim).
    pub guest_swap_outs: u64,
    /// Pages the guest read back from its swap device.
    pub guest_swap_ins: u64,
    /// Frames guest reclaim looked at (its clock's steps over mapped frames).
    pub reclaim_scanned: u64,
    /// PTE accessed bits guest reclaim cleared (second chances).
    pub accessed_bits_cleared: u64,
    /// Accesses outside any recorded VMA, mapped as implicit anonymous memory.
    pub implicit_mappings: u64,
    /// Accesses whose kind the VMA's protection did not allow (the VMA is
    /// widened, since the recorded program did make the access).
    pub protection_upgrades: u64,
    /// PTE stores by the guest kernel.
    pub guest_pte_writes: u64,
    /// 4 KiB frames zeroed by the guest kernel.
    pub frames_zeroed: u64,
    /// 4 KiB frames copied by the guest kernel (copy-on-write).
    pub frames_copied: u64,
    /// Context switches (CR3 writes to another process).
    pub context_switches: u64,
    /// INVLPGs issued by the guest.
    pub invlpgs: u64,
    /// Whole-address-space TLB flushes issued by the guest.
    pub tlb_flushes: u64,
    /// Shadow entries filled by the hypervisor.
    pub shadow_fills: u64,
    /// Shadow pages dropped because their guest page stopped being a table.
    pub shadow_unshadows: u64,
    /// Shadow pages that went out of sync (a guest store to a shadowed PT
    /// made it writable instead of being emulated) \[KVM\].
    pub shadow_unsyncs: u64,
    /// Unsync shadow pages resynced with their guest tables (CR3 load,
    /// TLB flush, relinked by a hidden fault) \[KVM\].
    pub shadow_resyncs: u64,
    /// Shadow pages zapped by write-flood detection \[KVM\].
    pub shadow_flood_zaps: u64,
    /// System calls of the trace (fork, exec, exit, mmap, munmap, brk,
    /// mprotect events), same in every mode.
    pub syscalls: u64,
    /// Binary translation: hypervisor interventions that trapped into the
    /// VMM (faults, and privileged instructions before adaptation), by
    /// reason as [`ExitReason::ALL`]; they are not VM exits.
    pub bt_traps: [u64; 7],
    /// Binary translation: interventions made by call-outs of adapted
    /// code, by reason as [`ExitReason::ALL`].
    pub bt_callouts: [u64; 7],
    /// Binary translation: system calls that paid its extra cost.
    pub bt_syscalls: u64,
    /// PTE updates validated by the hypervisor in paravirtual batches.
    pub pv_pte_updates: u64,
    /// Guest frames given a host frame (with huge host pages, every frame
    /// of each host page backed).
    pub host_frames_backed: u64,
    /// Distinct guest frames the guest wrote, counted with huge host pages
    /// only (left out of the JSON while 0): `host_frames_backed` minus this
    /// is the bloat, frames backed that the guest never used.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub guest_frames_touched: u64,
    /// Processes created (initial, fork).
    pub processes: u64,
    /// Forks.
    pub forks: u64,
    /// Execs.
    pub execs: u64,
    /// Exits.
    pub exits: u64,
    /// mmap, munmap, brk and mprotect events applied.
    pub vma_events: u64,
}

impl Stats {
    /// Count one finished walk.
    #[inline]
    pub fn add_walk(&mut self, rec: &WalkRecord) {
        self.walks += 1;
        for (n, d) in self.walk_refs_by_dim.iter_mut().zip(rec.by_dim()) {
            *n += u64::from(d);
        }
        self.walk_ref_cache_hits += u64::from(rec.cache_hits());
        let l = rec.lookups_made();
        for i in 0..3 {
            self.psc_hits[i] += u64::from(l.psc[i]);
            self.ept_psc_hits[i] += u64::from(l.ept_psc[i]);
        }
        self.psc_pml5e_hits += u64::from(l.psc[3]);
        self.ept_psc_pml5e_hits += u64::from(l.ept_psc[3]);
        self.psc_misses += u64::from(l.psc[CacheLookups::MISS]);
        self.ept_psc_misses += u64::from(l.ept_psc[CacheLookups::MISS]);
        self.nested_tlb_hits += u64::from(l.nested_tlb_hits);
        self.nested_tlb_misses += u64::from(l.nested_tlb_misses);
    }

    /// Count one VM exit.
    #[inline]
    pub fn exit(&mut self, r: ExitReason) {
        match r {
            ExitReason::TlbMiss => self.swtlb_exits[0] += 1,
            ExitReason::TlbWrite => self.swtlb_exits[1] += 1,
            _ => self.vm_exits[r as usize] += 1,
        }
    }

    /// Binary translation: trapped interventions of all reasons.
    pub fn total_bt_traps(&self) -> u64 {
        self.bt_traps.iter().sum()
    }

    /// Binary translation: call-outs of all reasons.
    pub fn total_bt_callouts(&self) -> u64 {
        self.bt_callouts.iter().sum()
    }

    /// Exits of one reason.
    pub fn exits_for(&self, r: ExitReason) -> u64 {
        match r {
            ExitReason::TlbMiss => self.swtlb_exits[0],
            ExitReason::TlbWrite => self.swtlb_exits[1],
            _ => self.vm_exits[r as usize],
        }
    }

    /// All VM exits.
    pub fn total_exits(&self) -> u64 {
        self.vm_exits.iter().sum::<u64>() + self.swtlb_exits.iter().sum::<u64>()
    }

    /// Software-managed TLB: traps into the VMM per TLB miss (`tlb_miss`
    /// and `tlb_write` exits per STLB miss; 0 when no miss).
    pub fn swtlb_traps_per_miss(&self) -> f64 {
        ratio(self.swtlb_exits.iter().sum(), self.tlb_misses)
    }

    /// All walk references.
    pub fn walk_refs(&self) -> u64 {
        self.walk_refs_by_dim.iter().sum()
    }

    /// Mean references per walk (0 when no walk).
    pub fn refs_per_walk(&self) -> f64 {
        ratio(self.walk_refs(), self.walks)
    }

    /// Mean walk references per STLB miss (0 when none), the figure \[AP16\]
    /// quotes: it includes the walk again after a fault.
    pub fn refs_per_stlb_miss(&self) -> f64 {
        ratio(self.walk_refs(), self.tlb_misses)
    }

    /// L1 DTLB lookups (loads, stores, read-modify-writes).
    pub fn dtlb_accesses(&self) -> u64 {
        self.accesses - self.instructions
    }

    /// L1 DTLB misses.
    pub fn dtlb_misses(&self) -> u64 {
        self.l1_tlb_misses - self.itlb_misses
    }

    /// L1 ITLB lookups (one per instruction fetch).
    pub fn itlb_accesses(&self) -> u64 {
        self.instructions
    }

    /// `self - earlier`, field by field: the counts of an interval.
    pub fn since(&self, earlier: &Stats) -> Stats {
        let mut d = self.clone();
        d.sub_assign(earlier);
        d
    }

    fn sub_assign(&mut self, e: &Stats) {
        macro_rules! sub {
            ($($f:ident),*) => { $( self.$f -= e.$f; )* };
        }
        macro_rules! sub_each {
            ($($f:ident),*) => { $( for (a, b) in self.$f.iter_mut().zip(e.$f) { *a -= b; } )* };
        }
        sub!(
            accesses,
            instructions,
            l1_tlb_misses,
            itlb_misses,
            stlb_hits,
            tlb_misses,
            walks,
            walk_ref_cache_hits,
            psc_misses,
            psc_pml5e_hits,
            ept_psc_misses,
            ept_psc_pml5e_hits,
            nested_tlb_hits,
            nested_tlb_misses,
            guest_page_faults,
            demand_faults,
            cow_faults,
            major_faults,
            guest_swap_outs,
            guest_swap_ins,
            reclaim_scanned,
            accessed_bits_cleared,
            implicit_mappings,
            protection_upgrades,
            guest_pte_writes,
            frames_zeroed,
            frames_copied,
            context_switches,
            invlpgs,
            tlb_flushes,
            shadow_fills,
            shadow_unshadows,
            shadow_unsyncs,
            shadow_resyncs,
            shadow_flood_zaps,
            syscalls,
            bt_syscalls,
            pv_pte_updates,
            host_frames_backed,
            guest_frames_touched,
            processes,
            forks,
            execs,
            exits,
            vma_events,
            tlb_refills,
            tlb_refill_exceptions,
            tlb_refill_loads,
            tlb_refill_load_hits,
            tlb_writes,
            vmm_tlb_refills
        );
        sub_each!(
            walk_refs_by_dim,
            psc_hits,
            ept_psc_hits,
            walks_by_switch,
            vm_exits,
            swtlb_exits,
            bt_traps,
            bt_callouts
        );
    }
}

/// Serde: leave a counter that only some configurations use out of the
/// JSON while it is 0 (reports of other configurations stay as they were).
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// [`is_zero`] for a pair of counters.
fn is_zero2(n: &[u64; 2]) -> bool {
    *n == [0, 0]
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every counter 1 (every array element too), built from the JSON form
    /// so that a counter added later is included.
    fn ones() -> Stats {
        let mut v = serde_json::to_value(Stats::default()).unwrap();
        for (_, x) in v.as_object_mut().unwrap() {
            match x {
                serde_json::Value::Array(a) => a.iter_mut().for_each(|e| *e = 1.into()),
                _ => *x = 1.into(),
            }
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn since_subtracts_every_counter() {
        let mut one = ones();
        // Counters left out of the JSON while 0 are not in `ones()`.
        one.psc_pml5e_hits = 1;
        one.guest_frames_touched = 1;
        one.ept_psc_pml5e_hits = 1;
        one.swtlb_exits = [1, 1];
        one.tlb_refills = 1;
        one.tlb_refill_exceptions = 1;
        one.tlb_refill_loads = 1;
        one.tlb_refill_load_hits = 1;
        one.tlb_writes = 1;
        one.vmm_tlb_refills = 1;
        assert_ne!(one, Stats::default());
        // An interval of nothing is all zeros: `since` misses no counter.
        assert_eq!(one.since(&one), Stats::default());
    }

    #[test]
    fn per_structure_counts_and_ratios() {
        let s = Stats {
            accesses: 30,
            instructions: 10,
            l1_tlb_misses: 7,
            itlb_misses: 2,
            tlb_misses: 4,
            walks: 5,
            walk_refs_by_dim: [10, 0, 0],
            ..Stats::default()
        };
        assert_eq!(
            (s.dtlb_accesses(), s.dtlb_misses(), s.itlb_accesses()),
            (20, 5, 10)
        );
        assert_eq!(s.refs_per_walk(), 2.0);
        assert_eq!(s.refs_per_stlb_miss(), 2.5);
        assert_eq!(Stats::default().refs_per_stlb_miss(), 0.0);
    }
}
