//! Event counters. Plain integers, added as events happen; the cost model
//! turns them into cycles afterwards, so counting and pricing stay apart and
//! two snapshots subtract into an interval.

use crate::mmu::walk::{WalkRecord, DIMS};
use serde::Serialize;

/// Why the guest left to the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// EPT violation: a guest frame with no host frame behind it (nested mode).
    EptViolation,
    /// Hidden page fault in shadow mode: shadow entry missing or read-only
    /// while the guest entry allows the access; the shadow is filled.
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
        }
    }
}

/// Counters of one run (or one interval of it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Memory accesses simulated (fetches + loads + stores + modifies).
    pub accesses: u64,
    /// Instructions retired (one per fetch).
    pub instructions: u64,
    /// L1 TLB misses (DTLB + ITLB).
    pub l1_tlb_misses: u64,
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
    /// VM exits by reason, indexed as [`ExitReason::ALL`].
    pub vm_exits: [u64; 7],
    /// Guest page faults (#PF the guest OS handles), same in every mode.
    pub guest_page_faults: u64,
    /// Of those: demand-zero faults (first touch).
    pub demand_faults: u64,
    /// Of those: copy-on-write faults.
    pub cow_faults: u64,
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
    /// PTE updates validated by the hypervisor in paravirtual batches.
    pub pv_pte_updates: u64,
    /// Guest frames given a host frame.
    pub host_frames_backed: u64,
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
    }

    /// Count one VM exit.
    #[inline]
    pub fn exit(&mut self, r: ExitReason) {
        self.vm_exits[r as usize] += 1;
    }

    /// Exits of one reason.
    pub fn exits_for(&self, r: ExitReason) -> u64 {
        self.vm_exits[r as usize]
    }

    /// All VM exits.
    pub fn total_exits(&self) -> u64 {
        self.vm_exits.iter().sum()
    }

    /// All walk references.
    pub fn walk_refs(&self) -> u64 {
        self.walk_refs_by_dim.iter().sum()
    }

    /// Mean references per walk (0 when no walk).
    pub fn refs_per_walk(&self) -> f64 {
        if self.walks == 0 {
            0.0
        } else {
            self.walk_refs() as f64 / self.walks as f64
        }
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
        sub!(
            accesses,
            instructions,
            l1_tlb_misses,
            stlb_hits,
            tlb_misses,
            walks,
            walk_ref_cache_hits,
            guest_page_faults,
            demand_faults,
            cow_faults,
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
            pv_pte_updates,
            host_frames_backed,
            processes,
            forks,
            execs,
            exits,
            vma_events
        );
        for i in 0..DIMS {
            self.walk_refs_by_dim[i] -= e.walk_refs_by_dim[i];
        }
        for i in 0..self.vm_exits.len() {
            self.vm_exits[i] -= e.vm_exits[i];
        }
    }
}
