//! The cycle-cost section (`[cost]`) and the bounds on its values.

use serde::{Deserialize, Serialize};

/// Cycle costs of events. Defaults from facts.md where it gives a number.
/// [`Config::validate`](super::Config::validate) bounds every cycle cost to
/// [`MAX_EVENT_CYCLES`] and `base_cpi` to [`MAX_BASE_CPI`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// Cycles per instruction apart from address translation. Default 1.0 (UNVERIFIED baseline).
    pub base_cpi: f64,
    /// L1 TLB miss that hits the STLB, cycles. Default 7 (UNVERIFIED).
    pub stlb_hit_cycles: u64,
    /// VM exit plus VM entry round trip, cycles. Default 1200: 0.46-0.54 us
    /// at 2.5 GHz for a hypercall/CPUID exit [PVM Table 1].
    pub vm_exit_cycles: u64,
    /// Guest kernel page-fault handling (trap, handler, return), cycles.
    /// Default 1093: native page fault on a 3.8 GHz Pentium 4 \[AA06\].
    pub guest_fault_cycles: u64,
    /// Guest kernel zeroing one 4 KiB frame, cycles. Default 1000 (UNVERIFIED).
    pub zero_page_cycles: u64,
    /// Guest kernel copying one 4 KiB frame (copy-on-write), cycles. Default 2000 (UNVERIFIED).
    pub copy_page_cycles: u64,
    /// Guest kernel writing one PTE, cycles (native cost of a PTE store).
    /// Default 1 [AA06 "PTE modify" native].
    pub pte_write_cycles: u64,
    /// Guest context switch (scheduler work besides the CR3 write), cycles. Default 2000 (UNVERIFIED).
    pub context_switch_cycles: u64,
    /// Hypervisor handling of an EPT violation (allocate a host frame, fill
    /// the EPT), cycles beyond the exit. Default 2000 (UNVERIFIED).
    pub ept_violation_cycles: u64,
    /// Hypervisor shadow fill on a hidden fault (walk guest tables in
    /// software, build shadow entries), cycles beyond the exit. Default 2500 (UNVERIFIED).
    pub shadow_fill_cycles: u64,
    /// Hypervisor emulating one trapped write to a write-protected guest
    /// page-table page, cycles beyond the exit. Default 3000 (UNVERIFIED;
    /// \[AA06\] measured 12733 cycles in all for a trapped PTE write on a P4).
    pub pt_write_emulate_cycles: u64,
    /// Hypervisor resyncing one unsync shadow page (checking its present
    /// entries against the guest table, write-protecting it again), cycles,
    /// within an exit that happens anyway (CR3 write, INVLPG/flush, hidden
    /// fault). Default 2500 (UNVERIFIED: the cost of one shadow fill).
    pub shadow_resync_cycles: u64,
    /// Binary translation: a guest fault or a not yet adapted privileged
    /// instruction entering the VMM (a trap, no world switch), cycles,
    /// instead of `vm_exit_cycles`; the handler cycles come on top. Default
    /// 2834: page fault 3927 under BT minus 1093 native on a 3.8 GHz
    /// Pentium 4 \[AA06\].
    pub bt_trap_cycles: u64,
    /// Binary translation: one call-out of adapted (retranslated) code, in
    /// all for a page-table store, plus the handler for a CR3 write or an
    /// INVLPG. Default 390: PTE modify 391 under BT minus 1 native \[AA06\].
    pub bt_callout_cycles: u64,
    /// Binary translation: extra cycles of one system call. Default 2066:
    /// syscall 2308 under BT minus 242 native \[AA06\] (VT-x: 246, taken as
    /// native).
    pub bt_syscall_cycles: u64,
    /// Hypervisor injecting a true guest #PF, cycles beyond the exit. Default 1000 (UNVERIFIED).
    pub inject_fault_cycles: u64,
    /// Hypervisor handling a trapped CR3 write (find or build the shadow
    /// root), cycles beyond the exit. Default 500 (UNVERIFIED).
    pub cr3_exit_cycles: u64,
    /// Hypervisor handling a trapped INVLPG / INVPCID, cycles beyond the exit. Default 300 (UNVERIFIED).
    pub invlpg_exit_cycles: u64,
    /// Hypervisor handling of a hypercall (paravirtual modes), cycles beyond
    /// the exit. Default 300 (UNVERIFIED).
    pub hypercall_cycles: u64,
    /// Hypervisor validating one PTE update of a paravirtual batch, cycles.
    /// Default 100 (UNVERIFIED).
    pub pv_validate_cycles: u64,
    /// Guest kernel work to swap one page out (unmap through the reverse
    /// map, submit the write), cycles; the write itself is asynchronous.
    /// Default 5000 (UNVERIFIED).
    pub guest_swap_out_cycles: u64,
    /// Hypervisor work to swap one guest frame out (`vmemsim host`: pick
    /// it, clear its EPT entry, submit the write), cycles, beyond the INVEPT
    /// and reverse-map zaps priced below. Default 5000 (UNVERIFIED).
    pub host_swap_out_cycles: u64,
    /// One INVEPT single-context on one pCPU, cycles. Default 1000
    /// (UNVERIFIED; the SDM gives no latency).
    pub invept_cycles: u64,
    /// One INVVPID single-context on one pCPU, cycles. Default 1000
    /// (UNVERIFIED).
    pub invvpid_cycles: u64,
    /// Zapping one shadow entry found through the reverse map when the host
    /// takes a frame away, cycles. Default 100 (UNVERIFIED).
    pub rmap_zap_cycles: u64,
    /// Software-managed TLB: taking one TLB refill exception in the guest
    /// kernel natively (pipeline flush, vector, the ERET back), cycles.
    /// Default 20 (UNVERIFIED: an exception entry and return on a simple
    /// in-order pipeline; the MIPS R4000 manual gives the refill vector,
    /// not its latency).
    pub tlb_refill_exception_cycles: u64,
    /// Software-managed TLB: the refill handler's instructions besides its
    /// page-table loads (read BadVAddr, index each level, move the PTE to
    /// EntryLo), cycles; the loads are priced as page-walk references
    /// (`pt_cache`). Default 20 (UNVERIFIED: Linux's MIPS refill handler
    /// for a 4-level table is about 20 instructions, `arch/mips/mm/tlbex.c`).
    pub tlb_refill_handler_cycles: u64,
    /// Software-managed TLB: one TLB-write instruction (TLBWR) on the real
    /// TLB, cycles. Default 5 (UNVERIFIED).
    pub tlb_write_cycles: u64,
    /// `swtlb-vmm`: the VMM handling a trapped TLB miss (look it up in its
    /// copy of the guest's TLB, then refill from it or reflect the
    /// exception to the guest's refill handler), cycles beyond the trap
    /// round trip `vm_exit_cycles`. Default 300 (UNVERIFIED: as
    /// `invlpg_exit_cycles`, a small emulation).
    pub tlb_miss_trap_cycles: u64,
    /// `swtlb-vmm`: the VMM emulating the guest's trapped TLB write
    /// (decode it, keep the entry in its copy of the guest's TLB, translate
    /// the guest frame to a machine frame through the pmap, write the real
    /// TLB), cycles beyond the trap round trip. Default 500 (UNVERIFIED: as
    /// `cr3_exit_cycles`).
    pub tlb_write_trap_cycles: u64,
}

impl Default for CostConfig {
    fn default() -> Self {
        CostConfig {
            base_cpi: 1.0,
            stlb_hit_cycles: 7,
            vm_exit_cycles: 1200,
            guest_fault_cycles: 1093,
            zero_page_cycles: 1000,
            copy_page_cycles: 2000,
            pte_write_cycles: 1,
            context_switch_cycles: 2000,
            ept_violation_cycles: 2000,
            shadow_fill_cycles: 2500,
            pt_write_emulate_cycles: 3000,
            shadow_resync_cycles: 2500,
            bt_trap_cycles: 2834,
            bt_callout_cycles: 390,
            bt_syscall_cycles: 2066,
            inject_fault_cycles: 1000,
            cr3_exit_cycles: 500,
            invlpg_exit_cycles: 300,
            hypercall_cycles: 300,
            pv_validate_cycles: 100,
            guest_swap_out_cycles: 5000,
            host_swap_out_cycles: 5000,
            invept_cycles: 1000,
            invvpid_cycles: 1000,
            rmap_zap_cycles: 100,
            tlb_refill_exception_cycles: 20,
            tlb_refill_handler_cycles: 20,
            tlb_write_cycles: 5,
            tlb_miss_trap_cycles: 300,
            tlb_write_trap_cycles: 500,
        }
    }
}

/// Largest accepted cost of one event, cycles: a second at 1 GHz, far
/// beyond any architectural event (a VM exit is about 10^3), and small
/// enough that no realistic count times it overflows 64 bits.
pub const MAX_EVENT_CYCLES: u64 = 1_000_000_000;
/// Largest accepted `cost.base_cpi`.
pub const MAX_BASE_CPI: f64 = 1000.0;
